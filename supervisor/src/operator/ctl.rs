//! `drover ctl`: the operator's client for the control socket, in the
//! stock binary and in every application built on drover (the `ctl`
//! subcommand comes with [`Args`](crate::Args)).
//!
//! One request, one reply: `--json` prints the reply as it came, else a
//! table (`status`) or its message. Exit code 0 when the supervisor said
//! `ok`, 1 with the error on stderr otherwise, so a deploy script can say
//! `drover ctl reload && echo deployed`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use drover_shared::env::flags;

use super::figures::Figures;
use super::wire::{Order, Reply, ScaleTo};

/// `drover ctl`'s command line.
#[derive(Debug, Clone, clap::Args)]
pub struct CtlArgs {
    /// The supervisor's control socket (its --control-socket).
    #[arg(long = "control-socket", env = flags::CONTROL_SOCKET, value_name = "PATH")]
    control_socket: Option<PathBuf>,

    /// Print the supervisor's reply as it came (one JSON object).
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
enum CtlCommand {
    /// The supervisor and every worker, fresh: counters, memory, CPU,
    /// accept queues, exits by reason.
    Status {
        /// Redraw once a second, like top, until Ctrl-C.
        #[arg(long)]
        watch: bool,
    },
    /// The metrics, as /metrics serves them.
    Metrics,
    /// Rolling restart (as HUP); returns once it completed or stopped.
    Reload,
    /// Binary upgrade (as USR2); returns once the new supervisor took
    /// over or the upgrade failed.
    Upgrade,
    /// Run N workers (or +N, -N more or fewer); returns once exactly that
    /// many serve.
    Scale {
        /// N, +N or -N.
        #[arg(allow_hyphen_values = true, value_parser = ScaleTo::parse)]
        workers: ScaleTo,
    },
    /// Replace one worker (its ID from status), the new one ready before
    /// the old one closes; returns once the replacement serves.
    Recycle {
        /// The worker's ID (status's ID column).
        id: u64,
    },
    /// Stop gracefully (as TERM), or --now (as QUIT); returns once every
    /// worker is gone.
    Stop {
        /// At once: workers are killed.
        #[arg(long)]
        now: bool,
    },
    /// The certificate and key (--certfile, --keyfile).
    Tls {
        #[command(subcommand)]
        action: TlsAction,
    },
}

#[derive(Debug, Clone, Copy, clap::Subcommand)]
enum TlsAction {
    /// Re-read and check them, and hand them to every worker (as USR1):
    /// new handshakes get them, open connections keep theirs.
    Reload,
}

impl CtlCommand {
    fn order(&self) -> Order {
        match *self {
            Self::Status { .. } => Order::Status,
            Self::Metrics => Order::Metrics,
            Self::Reload => Order::Reload,
            Self::Upgrade => Order::Upgrade,
            Self::Scale { workers } => Order::Scale(workers),
            Self::Recycle { id } => Order::Recycle { worker: id },
            Self::Stop { now } => Order::Stop { now },
            Self::Tls {
                action: TlsAction::Reload,
            } => Order::TlsReload,
        }
    }
}

/// Runs `drover ctl`; the exit code is the process's.
/// `serving_socket`: the top-level `--control-socket`, if `ctl`'s own was
/// not given.
pub(crate) fn run(args: &CtlArgs, serving_socket: Option<&Path>) -> ExitCode {
    match run_inner(args, serving_socket) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("drover ctl: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run_inner(args: &CtlArgs, serving_socket: Option<&Path>) -> Result<ExitCode, String> {
    let path = args.control_socket.as_deref().or(serving_socket).ok_or(
        "no control socket: give --control-socket PATH (or DROVER_CONTROL_SOCKET), as the supervisor was",
    )?;
    let mut session = Session::open(path)?;
    let order = args.command.order();
    let watch = matches!(args.command, CtlCommand::Status { watch: true });
    loop {
        let (line, reply) = session.ask(order)?;
        if args.json {
            print!("{line}");
        } else if reply.ok && watch {
            // Home and clear, then the table: a screen redrawn in place.
            print!("\x1b[H\x1b[2J{}", render_status(&reply.data)?);
        } else if reply.ok {
            print!("{}", render(order, &reply.data)?);
        }
        let _ = std::io::stdout().flush();
        if !reply.ok {
            return Err(reply.error.unwrap_or_else(|| "failed".into()));
        }
        if !watch {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_secs(1)); // sleep-ok: pacing a display, like top
    }
}

/// One connection to the control socket.
struct Session {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
}

impl Session {
    fn open(path: &Path) -> Result<Self, String> {
        let stream = UnixStream::connect(path)
            .map_err(|e| format!("cannot reach {}: {e}", path.display()))?;
        let reader = stream
            .try_clone()
            .map_err(|e| format!("control socket: {e}"))?;
        Ok(Self {
            writer: stream,
            reader: BufReader::new(reader),
            next_id: 1,
        })
    }

    /// Sends `order`, waits for its reply: the line as it came, and read.
    fn ask(&mut self, order: Order) -> Result<(String, Reply), String> {
        let id = self.next_id;
        self.next_id += 1;
        // A supervisor that refuses us says why and closes, perhaps before
        // it read our request: its line is read even when sending failed.
        let sent = self.writer.write_all(order.request_line(id).as_bytes());
        let mut line = String::new();
        let read = self.reader.read_line(&mut line);
        match (read, sent) {
            (Ok(1..), _) => {}
            (_, Err(error)) => return Err(format!("cannot send: {error}")),
            (Err(error), Ok(())) => return Err(format!("no reply: {error}")),
            (Ok(_), Ok(())) => {
                return Err("the supervisor closed the connection without a reply".into())
            }
        }
        let reply: Reply =
            serde_json::from_str(&line).map_err(|e| format!("a reply that is not one: {e}"))?;
        Ok((line, reply))
    }
}

/// A command's reply for a person.
fn render(order: Order, data: &serde_json::Value) -> Result<String, String> {
    match order {
        Order::Status => render_status(data),
        Order::Metrics => Ok(data["text"].as_str().unwrap_or_default().to_owned()),
        _ => Ok(format!("{}\n", data["message"].as_str().unwrap_or("done"))),
    }
}

/// `status` as a table.
fn render_status(data: &serde_json::Value) -> Result<String, String> {
    let figures: Figures = serde_json::from_value(data.clone())
        .map_err(|e| format!("a status that is not one: {e}"))?;
    Ok(status_table(&figures))
}

fn status_table(f: &Figures) -> String {
    use std::fmt::Write as _;
    let s = &f.supervisor;
    let mut out = String::new();
    let serving = f.workers.iter().filter(|w| w.state == "ready").count();
    let _ = writeln!(
        out,
        "drover pid {}  {}  up {}  generation {}  spawn {}  workers {serving}/{}{}{}",
        s.pid,
        s.phase,
        duration(s.uptime_s),
        s.generation,
        s.spawn,
        s.workers_wanted,
        if s.reloading { "  reloading" } else { "" },
        s.upgrading_to
            .map(|pid| format!("  upgrading to pid {pid}"))
            .unwrap_or_default(),
    );
    let _ = writeln!(
        out,
        "requests {}  in flight {}  connections {}  tls handshake failures {}",
        f.requests_total, f.requests_in_flight, f.connections_open, f.tls_handshake_failures_total
    );
    for l in &f.listeners {
        let queue = match (l.queue_depth, l.queue_limit) {
            (Some(depth), Some(limit)) => format!("accept queue {depth}/{limit}"),
            _ => "accept queue: not reported for this socket".into(),
        };
        let tls = if l.tls { "  tls" } else { "" };
        let _ = writeln!(out, "listener {}{tls}  {queue}", l.addr);
    }
    let _ = writeln!(
        out,
        "\n{:>4} {:>5} {:>8} {:>4} {:<9} {:>8} {:>8} {:>9} {:>6} {:>6} {:>9} {:>8} {:>8}",
        "ID",
        "INDEX",
        "PID",
        "GEN",
        "STATE",
        "AGE",
        "READY_IN",
        "REQUESTS",
        "FLIGHT",
        "CONNS",
        "RSS",
        "CPU",
        "HEARD"
    );
    for w in &f.workers {
        let late = if w.late { " (late)" } else { "" };
        let _ = writeln!(
            out,
            "{:>4} {:>5} {:>8} {:>4} {:<9} {:>8} {:>8} {:>9} {:>6} {:>6} {:>9} {:>8} {:>8}{late}",
            w.id,
            w.index,
            w.pid,
            w.generation,
            w.state,
            duration(w.age_s),
            w.ready_in_ms.map_or("-".into(), |ms| format!("{ms}ms")),
            w.requests,
            w.in_flight,
            w.connections,
            w.rss_bytes.map_or("-".into(), bytes),
            w.cpu_s.map_or("-".into(), |cpu| format!("{cpu:.2}s")),
            format!("{:.1}s", w.last_heard_ms as f64 / 1000.0),
        );
    }
    let exits: Vec<String> = f.exits.iter().map(|(r, n)| format!("{r} {n}")).collect();
    let _ = writeln!(out, "\nexits: {}", exits.join(", "));
    let reloads: Vec<String> = f.reloads.iter().map(|(r, n)| format!("{r} {n}")).collect();
    let _ = writeln!(out, "reloads: {}", reloads.join(", "));
    out
}

fn duration(seconds: f64) -> String {
    let total = seconds as u64;
    match total {
        0..60 => format!("{seconds:.1}s"),
        60..3600 => format!("{}m{:02}s", total / 60, total % 60),
        _ => format!("{}h{:02}m", total / 3600, total % 3600 / 60),
    }
}

fn bytes(n: u64) -> String {
    format!("{:.1}M", n as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::figures::{ListenerFigures, WorkerFigures};

    #[test]
    fn the_status_table_has_a_row_per_worker_and_marks_the_late() {
        let figures = Figures {
            workers: vec![
                WorkerFigures {
                    id: 3,
                    index: 0,
                    pid: 1234,
                    state: "ready".into(),
                    requests: 99,
                    rss_bytes: Some(10 * 1024 * 1024),
                    ..WorkerFigures::default()
                },
                WorkerFigures {
                    id: 4,
                    index: 1,
                    state: "booting".into(),
                    late: true,
                    ..WorkerFigures::default()
                },
            ],
            listeners: vec![ListenerFigures {
                addr: "127.0.0.1:8000".into(),
                queue_depth: Some(2),
                queue_limit: Some(1024),
                tls: false,
            }],
            exits: [("crash".into(), 1)].into(),
            ..Figures::default()
        };
        let table = status_table(&figures);
        assert!(table.contains("accept queue 2/1024"), "{table}");
        let row = table.lines().find(|l| l.contains("1234")).unwrap();
        assert!(
            row.contains("ready") && row.contains("99") && row.contains("10.0M"),
            "{row}"
        );
        assert!(table
            .lines()
            .any(|l| l.contains("booting") && l.ends_with("(late)")));
        assert!(table.contains("exits: crash 1"));
        assert_eq!(duration(75.0), "1m15s");
        assert_eq!(duration(7300.0), "2h01m");
    }
}
