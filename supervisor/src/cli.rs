//! The `drover` command line. Every flag can also come from the environment
//! as `DROVER_<FLAG>`.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use drover_shared::ListenerSpec;
use drover_worker::supervised::WorkerSettings;

/// Runs an HTTP service as a pre-fork fleet of worker processes on sockets
/// drover owns. Signals: TERM/INT graceful stop (twice: at once), QUIT
/// immediate stop, HUP rolling restart, USR2 binary upgrade, TTIN/TTOU one
/// worker more/fewer.
#[derive(Debug, Clone, Parser)]
#[command(name = "drover", version, about, long_about = None)]
pub struct Cli {
    /// Where to listen: HOST:PORT, [V6]:PORT, unix:PATH or fd://N; repeat
    /// for several. Ignored when systemd passes sockets (LISTEN_FDS).
    #[arg(
        short = 'b',
        long = "bind",
        env = "DROVER_BIND",
        value_delimiter = ',',
        default_value = "127.0.0.1:8000"
    )]
    pub bind: Vec<ListenerSpec>,

    /// Worker processes [default: available CPUs].
    #[arg(short = 'w', long, env = "DROVER_WORKERS")]
    pub workers: Option<NonZeroUsize>,

    /// How workers start: exec (a fresh exec of this binary: picks up a
    /// new build) or fork (no exec: state built before fork is shared).
    #[arg(long, env = "DROVER_SPAWN", value_enum, default_value_t = SpawnMode::Exec)]
    pub spawn: SpawnMode,

    /// Tokio threads per worker (one runtime thread per worker process
    /// measures fastest on small machines: the processes are the
    /// parallelism).
    #[arg(long, env = "DROVER_THREADS", default_value_t = NonZeroUsize::MIN)]
    pub threads: NonZeroUsize,

    /// Seconds connections get to finish after a stop before they are cut.
    #[arg(long, env = "DROVER_GRACEFUL_TIMEOUT", value_parser = seconds, default_value = "30")]
    pub graceful_timeout: Duration,

    /// Seconds without a heartbeat before a worker is killed (0: off).
    #[arg(long, env = "DROVER_WORKER_TIMEOUT", value_parser = seconds, default_value = "30")]
    pub worker_timeout: Duration,

    /// Seconds a worker gets to report ready before it is killed.
    #[arg(long, env = "DROVER_BOOT_TIMEOUT", value_parser = seconds, default_value = "30")]
    pub boot_timeout: Duration,

    /// Seconds an idle keep-alive connection stays open.
    #[arg(long, env = "DROVER_KEEP_ALIVE", value_parser = seconds, default_value = "5")]
    pub keep_alive: Duration,

    /// Seconds a client may take to send a request head [default: 30].
    #[arg(long, env = "DROVER_HEADER_READ_TIMEOUT", value_parser = seconds)]
    pub header_read_timeout: Option<Duration>,

    /// Connections per worker; beyond it they wait in the backlog.
    #[arg(long, env = "DROVER_MAX_CONNECTIONS")]
    pub max_connections: Option<NonZeroUsize>,

    /// Replace a worker once it has served about this many requests (its
    /// replacement is ready before it closes; 0: never).
    #[arg(long, env = "DROVER_MAX_REQUESTS", default_value_t = 0)]
    pub max_requests: u64,

    /// Up to this many requests more, at random per worker, so that
    /// workers are not all replaced at once.
    #[arg(long, env = "DROVER_MAX_REQUESTS_JITTER", default_value_t = 0)]
    pub max_requests_jitter: u64,

    /// Run the workers as this user (name or uid), with its groups; drover
    /// must start as root. Unix socket files drover creates are given to
    /// this user.
    #[arg(long, env = "DROVER_USER")]
    pub user: Option<String>,

    /// Run the workers with this primary group (name or gid) [default: the
    /// user's]. Alone, without --user, the workers keep root's user.
    #[arg(long, env = "DROVER_GROUP")]
    pub group: Option<String>,

    /// The listen backlog of the sockets drover opens.
    #[arg(long, env = "DROVER_BACKLOG", default_value_t = 2048)]
    pub backlog: u32,

    /// Write the supervisor's pid here once every worker is ready.
    #[arg(long, env = "DROVER_PID_FILE")]
    pub pid_file: Option<PathBuf>,

    /// Mode of the Unix socket files drover creates, in octal (e.g. 660).
    #[arg(long, env = "DROVER_UDS_MODE", value_parser = octal)]
    pub uds_mode: Option<u32>,

    /// Log format (the level comes from RUST_LOG, default info).
    #[arg(long, env = "DROVER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log one line per request.
    #[arg(long, env = "DROVER_ACCESS_LOG")]
    pub access_log: bool,
}

/// How the supervisor starts a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SpawnMode {
    /// fork, then exec this binary again.
    Exec,
    /// fork only.
    Fork,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Cli {
    /// How long an idle keep-alive connection of a worker being replaced
    /// stays open for one more request: as long as it would have stayed
    /// anyway (the keep-alive timeout), within the graceful timeout.
    pub fn drain_window(&self) -> Duration {
        self.keep_alive.min(self.graceful_timeout)
    }

    /// Worker processes to run.
    pub fn worker_count(&self) -> usize {
        self.workers.map_or_else(
            || std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            NonZeroUsize::get,
        )
    }

    /// How often workers send heartbeats: four per worker timeout (at
    /// least every millisecond).
    pub fn heartbeat_interval(&self) -> Option<Duration> {
        (!self.worker_timeout.is_zero())
            .then(|| (self.worker_timeout / 4).max(Duration::from_millis(1)))
    }

    /// What every worker is told.
    pub fn worker_settings(&self) -> WorkerSettings {
        WorkerSettings {
            threads: self.threads.get(),
            keep_alive_timeout: Some(self.keep_alive),
            header_read_timeout: Some(self.header_read_timeout.unwrap_or(Duration::from_secs(30))),
            max_connections: self.max_connections.map(NonZeroUsize::get),
            graceful_timeout: Some(self.graceful_timeout),
            heartbeat_interval: self.heartbeat_interval(),
            access_log: self.access_log,
            max_requests: (self.max_requests > 0).then_some(self.max_requests),
            max_requests_jitter: self.max_requests_jitter,
        }
    }
}

/// A number of seconds from 0 to a year (deadlines far past that would
/// overflow the clock, and mean "never" anyway: use 0 where it is allowed).
fn seconds(text: &str) -> Result<Duration, String> {
    const YEAR: f64 = 365.0 * 86_400.0;
    text.parse::<f64>()
        .ok()
        .filter(|s| (0.0..=YEAR).contains(s))
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("`{text}` is not a number of seconds from 0 to {YEAR}"))
}

fn octal(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|mode| *mode <= 0o7777)
        .ok_or_else(|| format!("`{text}` is not an octal file mode"))
}
