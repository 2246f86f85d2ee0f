//! Lifecycle timings of drover-worker against axum's own server, in one
//! invocation: `cargo bench -p drover-worker --bench lifecycle`.
//!
//! Each figure is the median over `CYCLES` fresh servers on a
//! current-thread runtime (the shape of a test fixture), loopback only.
//! The baseline is `axum::serve(listener, app).with_graceful_shutdown(..)`
//! with the same app. Ratios are baseline ÷ drover for times (above 1:
//! drover is faster) and drover ÷ baseline for rates.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use bytes::Bytes;
use drover_worker::Server;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// Cycles per subject under `cargo bench`; `cargo test --benches` runs one
/// block as a smoke test.
const CYCLES: usize = 500;
const IDLE_CONNECTIONS: usize = 100;
const BLOCK: usize = 25;

fn app() -> Router {
    Router::new().route("/", get(|| async { "hello" }))
}

/// A server under test: drover's lifecycle or axum's serve.
trait Subject {
    /// Binds 127.0.0.1:0, serves, and returns the address a client
    /// connects to, each the subject's own way (a fixture on port 0 needs
    /// the port).
    fn start(&mut self) -> impl Future<Output = SocketAddr>;
    /// Close and wait until closed.
    fn stop(&mut self) -> impl Future<Output = ()>;
}

#[derive(Default)]
struct Drover(Option<Server>);

impl Subject for Drover {
    async fn start(&mut self) -> SocketAddr {
        let server = Server::bind("127.0.0.1:0").await.unwrap();
        server.start_serving(app()).await.unwrap();
        let addr = server.local_addrs()[0].tcp().unwrap();
        self.0 = Some(server);
        addr
    }

    async fn stop(&mut self) {
        let server = self.0.take().unwrap();
        server.close();
        server.wait_closed().await.unwrap();
    }
}

#[derive(Default)]
struct Axum(Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>);

impl Subject for Axum {
    async fn start(&mut self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // The same socket option drover sets on every connection, as
        // axum's own documentation shows it.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let (tx, rx) = oneshot::channel();
        let serve = axum::serve(listener, app()).with_graceful_shutdown(async {
            let _ = rx.await;
        });
        let task = tokio::spawn(async move { serve.await.unwrap() });
        self.0 = Some((tx, task));
        addr
    }

    async fn stop(&mut self) {
        let (tx, task) = self.0.take().unwrap();
        let _ = tx.send(());
        task.await.unwrap();
    }
}

/// An HTTP/1.1 keep-alive connection that has made one request and now
/// sits idle.
async fn idle_connection(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("/")
        .header("host", "bench")
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert!(response.status().is_success());
    sender
}

/// Idle keep-alive clients on a thread and runtime of their own, so that
/// the close timings count the server's work, not the clients' reaction to
/// being closed.
struct IdleClients {
    requests: std::sync::mpsc::Sender<(std::net::SocketAddr, std::sync::mpsc::Sender<()>)>,
}

impl IdleClients {
    fn start() -> Self {
        let (requests, incoming) =
            std::sync::mpsc::channel::<(std::net::SocketAddr, std::sync::mpsc::Sender<()>)>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let mut held = Vec::new();
            for (addr, done) in incoming {
                held.clear();
                runtime.block_on(async {
                    for _ in 0..IDLE_CONNECTIONS {
                        held.push(idle_connection(addr).await);
                    }
                });
                done.send(()).unwrap();
                // The next batch's block_on also lets these see their EOFs.
            }
        });
        Self { requests }
    }
}

/// Samples of one subject, one per cycle.
#[derive(Default)]
struct Samples {
    start_returns: Vec<Duration>,
    start_to_first_response: Vec<Duration>,
    close_idle0: Vec<Duration>,
    close_idle100: Vec<Duration>,
    full_cycle: Vec<Duration>,
}

/// One cycle of every measurement on a fresh `S`.
async fn cycle<S: Subject + Default>(samples: &mut Samples, clients: &IdleClients) {
    // start, first response, close with no connection left open
    let mut subject = S::default();
    let begun = Instant::now();
    let addr = subject.start().await;
    samples.start_returns.push(begun.elapsed());
    drop(idle_connection(addr).await);
    samples.start_to_first_response.push(begun.elapsed());
    let closing = Instant::now();
    subject.stop().await;
    samples.close_idle0.push(closing.elapsed());

    // close with 100 idle keep-alive connections (opened from the
    // clients' own thread while this runtime serves them)
    let mut subject = S::default();
    let addr = subject.start().await;
    let requests = clients.requests.clone();
    tokio::task::spawn_blocking(move || {
        let (done, finished) = std::sync::mpsc::channel();
        requests.send((addr, done)).unwrap();
        finished.recv().unwrap();
    })
    .await
    .unwrap();
    let closing = Instant::now();
    subject.stop().await;
    samples.close_idle100.push(closing.elapsed());
}

/// `count` bare fixture cycles back to back, as a test suite runs them:
/// bind port 0, serve, learn the port, close, closed.
async fn bare_cycles<S: Subject + Default>(samples: &mut Samples, count: usize) {
    for _ in 0..count {
        let begun = Instant::now();
        let mut subject = S::default();
        subject.start().await;
        subject.stop().await;
        samples.full_cycle.push(begun.elapsed());
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test` this is a smoke test.
    let cycles = if std::env::args().any(|a| a == "--bench") {
        CYCLES
    } else {
        BLOCK * 2
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let clients = IdleClients::start();
    let (mut drover, mut axum) = (Samples::default(), Samples::default());
    runtime.block_on(async {
        // Warm-up rounds (page faults, allocator).
        for _ in 0..20 {
            cycle::<Drover>(&mut Samples::default(), &clients).await;
            cycle::<Axum>(&mut Samples::default(), &clients).await;
        }
        bare_cycles::<Drover>(&mut Samples::default(), BLOCK).await;
        bare_cycles::<Axum>(&mut Samples::default(), BLOCK).await;
        // Blocks of BLOCK cycles in A-B-B-A order: each subject runs on
        // caches warmed by itself (cycle-by-cycle alternation penalises
        // whichever runs on the other's leftovers), and the order cancels
        // drift over the run.
        for round in 0..cycles / BLOCK {
            let drover_first = round % 2 == 0;
            for turn in 0..2 {
                for _ in 0..BLOCK {
                    if (turn == 0) == drover_first {
                        cycle::<Drover>(&mut drover, &clients).await;
                    } else {
                        cycle::<Axum>(&mut axum, &clients).await;
                    }
                }
            }
        }
        // The bare cycles in blocks of their own, in the same order.
        for round in 0..cycles / BLOCK {
            let drover_first = round % 2 == 0;
            for turn in 0..2 {
                if (turn == 0) == drover_first {
                    bare_cycles::<Drover>(&mut drover, BLOCK).await;
                } else {
                    bare_cycles::<Axum>(&mut axum, BLOCK).await;
                }
            }
        }
    });

    println!("drover-worker lifecycle vs axum::serve + with_graceful_shutdown");
    println!("median of {cycles} fresh servers each; current-thread runtime; loopback\n");
    println!(
        "bind + start_serving return (accepting):           {:>12}   (axum has no call that returns once accepting)",
        us(median(drover.start_returns.clone()))
    );
    println!(
        "\n{:<44} {:>12} {:>12} {:>8}",
        "figure (median)", "drover", "axum", "ratio"
    );
    let rows = [
        (
            "start → first response answered",
            median(drover.start_to_first_response),
            median(axum.start_to_first_response),
        ),
        (
            "close → closed, 0 connections",
            median(drover.close_idle0),
            median(axum.close_idle0),
        ),
        (
            "close → closed, 100 idle keep-alive conns",
            median(drover.close_idle100.clone()),
            median(axum.close_idle100),
        ),
    ];
    let mut slower = false;
    for (name, d, a) in rows {
        let ratio = a.as_secs_f64() / d.as_secs_f64();
        slower |= ratio < 1.0;
        println!("{name:<44} {:>12} {:>12} {ratio:>7.2}x", us(d), us(a));
    }
    let (d_rate, a_rate) = (
        1.0 / median(drover.full_cycle).as_secs_f64(),
        1.0 / median(axum.full_cycle).as_secs_f64(),
    );
    slower |= d_rate < a_rate;
    println!(
        "{:<44} {:>12.0} {:>12.0} {:>7.2}x",
        "bind→serve→close→closed, back to back, /s",
        d_rate,
        a_rate,
        d_rate / a_rate
    );
    println!(
        "\nratio: axum time ÷ drover time (rates: drover ÷ axum); above 1.00x drover is faster"
    );
    println!(
        "targets: start_serving ≤ 100 µs: {}",
        verdict(median(drover.start_returns) <= Duration::from_micros(100))
    );
    println!(
        "         close → closed with 100 idle ≤ 2 ms: {}",
        verdict(median(drover.close_idle100) <= Duration::from_millis(2))
    );
    println!("         no figure slower than axum: {}", verdict(!slower));
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT MET"
    }
}
