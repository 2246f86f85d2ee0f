//! A fixed-rate HTTP/1.1 load generator: what wrk cannot do (wrk sends
//! as fast as it can, so on a shared machine it measures saturation).
//!
//! ```text
//! cargo run --release -p drover-tests --example loadgen -- ADDR RATE CONNECTIONS SECONDS [PATH]
//! ```
//!
//! Opens CONNECTIONS keep-alive connections to ADDR (loopback) and sends
//! `GET PATH` (default `/`) on each at RATE / CONNECTIONS per second, for
//! SECONDS; prints one line: `sent`, `achieved_rps`, `errors`, and latency
//! percentiles in microseconds (from the moment a request is written to
//! the moment its whole response is read). One runtime thread, so that
//! the generator takes as little CPU from the servers as it can.
//!
//! Sends are scheduled on tokio's timer, which has millisecond
//! resolution: requests due within the same millisecond go out together,
//! the same bursts for every server measured.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Args {
    addr: SocketAddr,
    rate: f64,
    connections: usize,
    duration: Duration,
    path: String,
}

fn parse_args() -> Result<Args, String> {
    let usage = "usage: loadgen ADDR RATE CONNECTIONS SECONDS [PATH]";
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !(4..=5).contains(&args.len()) {
        return Err(usage.into());
    }
    let number = |i: usize, what: &str| -> Result<f64, String> {
        args[i]
            .parse::<f64>()
            .ok()
            .filter(|n| *n > 0.0)
            .ok_or_else(|| format!("{what} must be a positive number\n{usage}"))
    };
    Ok(Args {
        addr: args[0]
            .parse()
            .map_err(|e| format!("ADDR {:?}: {e}\n{usage}", args[0]))?,
        rate: number(1, "RATE")?,
        connections: number(2, "CONNECTIONS")? as usize,
        duration: Duration::from_secs_f64(number(3, "SECONDS")?),
        path: args.get(4).cloned().unwrap_or_else(|| "/".into()),
    })
}

/// Reads one response (headers and a `content-length` body) from `stream`,
/// keeping any bytes beyond it in `buffer`.
async fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buffer[..end]).unwrap_or("");
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .ok_or_else(|| std::io::Error::other("response without content-length"))?;
            let total = end + 4 + length;
            if buffer.len() >= total {
                buffer.drain(..total);
                return Ok(());
            }
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// One connection's share of the load; returns its latencies (µs) and
/// its error count.
async fn connection(args: &Args, index: usize, begun: Instant) -> (Vec<u32>, u64) {
    let interval = Duration::from_secs_f64(args.connections as f64 / args.rate);
    // Connections are spread over one interval, not all due at once.
    let offset = interval.mul_f64(index as f64 / args.connections as f64);
    let request = format!("GET {} HTTP/1.1\r\nhost: loadgen\r\n\r\n", args.path);
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut stream = None;
    let mut buffer = Vec::new();
    let mut due = begun + offset;
    while due < begun + args.duration {
        tokio::time::sleep_until(due.into()).await; // sleep-ok: the send schedule itself
        due += interval;
        if stream.is_none() {
            match TcpStream::connect(args.addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    stream = Some(s);
                    buffer.clear();
                }
                Err(_) => {
                    errors += 1;
                    continue;
                }
            }
        }
        let s = stream.as_mut().expect("connected above");
        let sent = Instant::now();
        let answered = match s.write_all(request.as_bytes()).await {
            Ok(()) => read_response(s, &mut buffer).await,
            Err(e) => Err(e),
        };
        match answered {
            Ok(()) => latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32),
            Err(_) => {
                errors += 1;
                stream = None;
            }
        }
    }
    (latencies, errors)
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let args = std::sync::Arc::new(args);
    let (mut latencies, errors) = runtime.block_on(async {
        let begun = Instant::now();
        let tasks: Vec<_> = (0..args.connections)
            .map(|i| {
                let args = std::sync::Arc::clone(&args);
                tokio::spawn(async move { connection(&args, i, begun).await })
            })
            .collect();
        let mut all = Vec::new();
        let mut errors = 0;
        for task in tasks {
            let (latencies, e) = task.await.expect("a connection task");
            all.extend(latencies);
            errors += e;
        }
        (all, errors)
    });
    latencies.sort_unstable();
    println!(
        "sent={} achieved_rps={:.0} errors={} p50_us={} p90_us={} p99_us={} p999_us={} max_us={}",
        latencies.len() as u64 + errors,
        latencies.len() as f64 / args.duration.as_secs_f64(),
        errors,
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 99.9),
        latencies.last().copied().unwrap_or(0),
    );
    std::process::ExitCode::SUCCESS
}
