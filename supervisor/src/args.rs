//! drover's command line, [`Args`]: what the `drover` binary parses, and
//! what an application flattens into its own `clap::Parser` next to its
//! own flags. Every flag can also come from the environment as
//! `DROVER_<FLAG>`.

use std::fmt;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Parser, ValueEnum};
use drover_shared::env::flags;
use drover_shared::ListenerSpec;
use drover_worker::defaults;

use crate::operator::{ControlMode, CtlArgs};

/// drover's whole command line (every flag, each also read from its
/// `DROVER_<FLAG>` variable), as a `clap::Args` group.
///
/// An application with flags of its own flattens it into its `Parser`, and
/// gets its own `--help` and `--version` listing both:
///
/// ```no_run
/// use clap::Parser;
///
/// /// My service.
/// #[derive(Parser)]
/// #[command(version, after_help = drover::SIGNALS_HELP)]
/// struct Cli {
///     /// Where the database is.
///     #[arg(long, env = "DATABASE_URL")]
///     database_url: String,
///     #[command(flatten)]
///     drover: drover::Args,
/// }
///
/// let cli = Cli::parse();
/// # let _ = cli.database_url;
/// drover::Drover::new(cli.drover);
/// ```
///
/// Every process of the fleet parses the same command line: an exec'd
/// worker is the binary started again with the same arguments, so the
/// application's own flags reach its workers too. The fields are drover's
/// business; [`Drover`](crate::Drover) reads them, with the application's
/// code-side defaults for the flags that were not given.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Where to listen: HOST:PORT, [V6]:PORT, unix:PATH or fd://N; repeat
    /// for several. Ignored when systemd passes sockets (LISTEN_FDS)
    /// [default: 127.0.0.1:8000].
    #[arg(short = 'b', long = "bind", env = flags::BIND, value_delimiter = ',')]
    pub(crate) bind: Vec<ListenerSpec>,

    /// Also listen here, served plain HTTP even with --certfile (a health
    /// check port, a proxy on the host): the same forms as --bind; repeat
    /// for several. Under systemd, a socket with FileDescriptorName=insecure
    /// is served plain instead.
    #[arg(long, env = flags::INSECURE_BIND, value_delimiter = ',', value_name = "BIND")]
    pub(crate) insecure_bind: Vec<ListenerSpec>,

    /// Worker processes [default: available CPUs].
    #[arg(short = 'w', long, env = flags::WORKERS)]
    pub(crate) workers: Option<NonZeroUsize>,

    /// How workers start: exec (a fresh exec of this binary: picks up a
    /// new build) or fork (no exec: state built before fork is shared)
    /// [default: exec].
    #[arg(long, env = flags::SPAWN, value_enum)]
    pub(crate) spawn: Option<SpawnMode>,

    /// Tokio threads per worker (one runtime thread per worker process
    /// measures fastest on small machines: the processes are the
    /// parallelism) [default: 1].
    #[arg(long, env = flags::THREADS)]
    pub(crate) threads: Option<NonZeroUsize>,

    /// Seconds connections get to finish after a stop before they are cut
    /// (0: cut at once, no grace).
    #[arg(long, env = flags::GRACEFUL_TIMEOUT, value_parser = seconds, default_value_t = Seconds(defaults::GRACEFUL_TIMEOUT))]
    pub(crate) graceful_timeout: Seconds,

    /// Seconds without a heartbeat before a worker is killed (0: off).
    #[arg(long, env = flags::WORKER_TIMEOUT, value_parser = seconds, default_value_t = Seconds(WORKER_TIMEOUT))]
    pub(crate) worker_timeout: Seconds,

    /// Seconds a worker gets to report ready before it is killed (0: off,
    /// no boot deadline; a new supervisor of a binary upgrade then has none
    /// either).
    #[arg(long, env = flags::BOOT_TIMEOUT, value_parser = seconds, default_value_t = Seconds(BOOT_TIMEOUT))]
    pub(crate) boot_timeout: Seconds,

    /// The options of every worker's HTTP server.
    #[command(flatten)]
    pub(crate) server: ServerArgs,

    /// Replace a worker once it has served about this many requests (its
    /// replacement is ready before it closes; 0: never).
    #[arg(long, env = flags::MAX_REQUESTS, default_value_t = 0)]
    pub(crate) max_requests: u64,

    /// Up to this many requests more, at random per worker, so that
    /// workers are not all replaced at once.
    #[arg(long, env = flags::MAX_REQUESTS_JITTER, default_value_t = 0)]
    pub(crate) max_requests_jitter: u64,

    /// Run the workers as this user (name or uid), with its groups; drover
    /// must start as root. Unix socket files drover creates are given to
    /// this user.
    #[arg(long, env = flags::USER)]
    pub(crate) user: Option<String>,

    /// Run the workers with this primary group (name or gid) [default: the
    /// user's]. Alone, without --user, the workers keep root's user.
    #[arg(long, env = flags::GROUP)]
    pub(crate) group: Option<String>,

    /// The listen backlog of the sockets drover opens.
    #[arg(long, env = flags::BACKLOG, default_value_t = defaults::BACKLOG)]
    pub(crate) backlog: u32,

    /// Write the supervisor's pid here once every worker is ready.
    #[arg(long, env = flags::PID_FILE)]
    pub(crate) pid_file: Option<PathBuf>,

    /// Mode of the Unix socket files drover creates, in octal (e.g. 660).
    #[arg(long, env = flags::UDS_MODE, value_parser = octal)]
    pub(crate) uds_mode: Option<u32>,

    /// Log format (the level comes from RUST_LOG, default info).
    #[arg(long, env = flags::LOG_FORMAT, value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,

    /// Open the operator's control socket here (a Unix socket file, mode
    /// 0600: root and this user only), which `drover ctl` talks to. Off
    /// unless given.
    #[arg(long = "control-socket", env = flags::CONTROL_SOCKET, value_name = "PATH")]
    pub(crate) control_socket: Option<PathBuf>,

    /// What the control socket allows: every command, or status and
    /// metrics only.
    #[arg(long, env = flags::CONTROL_SOCKET_MODE, value_enum, default_value_t = ControlMode::ReadWrite)]
    pub(crate) control_socket_mode: ControlMode,

    /// Serve Prometheus metrics at GET /metrics on HOST:PORT or
    /// unix:PATH (off unless given; bind it to loopback or a private
    /// network: it is not authenticated).
    #[arg(long, env = flags::METRICS, value_name = "ADDR")]
    pub(crate) metrics: Option<ListenerSpec>,

    /// Serve HTTPS on the TCP listeners with this PEM certificate chain
    /// (the server's certificate first); needs --keyfile. Unix sockets stay
    /// plain. The supervisor reads both files: workers never do.
    #[arg(long, env = flags::CERTFILE, value_name = "PATH", requires = "keyfile")]
    pub(crate) certfile: Option<PathBuf>,

    /// The PEM private key of --certfile (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = flags::KEYFILE, value_name = "PATH", requires = "certfile")]
    pub(crate) keyfile: Option<PathBuf>,

    /// Verify client certificates against these PEM CA certificates (read
    /// by the supervisor, as the key is); see --cert-reqs.
    #[arg(long, env = flags::CA_CERTS, value_name = "PATH", requires = "certfile")]
    pub(crate) ca_certs: Option<PathBuf>,

    /// Whether clients must present a certificate --ca-certs signed:
    /// none (not asked), optional (asked; one without is served), required.
    #[arg(long, env = flags::CERT_REQS, value_enum, default_value_t = CertReqs::None)]
    pub(crate) cert_reqs: CertReqs,

    /// The lowest TLS version accepted.
    #[arg(long, env = flags::TLS_MIN_VERSION, value_enum, default_value_t = MinVersion::V1_2)]
    pub(crate) tls_min_version: MinVersion,

    /// A subcommand instead of serving (`ctl`).
    #[command(subcommand)]
    pub(crate) command: Option<DroverCommand>,
}

/// `--cert-reqs` (gunicorn's name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CertReqs {
    /// Clients are not asked for a certificate.
    None,
    /// Asked; one without a certificate is served.
    Optional,
    /// Asked; one without a valid certificate is refused.
    Required,
}

/// `--tls-min-version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum MinVersion {
    /// TLS 1.2 and 1.3.
    #[value(name = "1.2")]
    V1_2,
    /// TLS 1.3 only.
    #[value(name = "1.3")]
    V1_3,
}

/// What drover's command line runs instead of serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DroverCommand {
    /// Talk to a running drover through its control socket: status,
    /// reload, upgrade, scale, recycle, stop.
    Ctl(CtlArgs),
}

/// The flags that become options of every worker's HTTP server (see
/// `Config::server_builder`): a new server option is one field here and
/// one line there.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ServerArgs {
    /// Seconds an idle keep-alive connection stays open (0: no keep-alive,
    /// one request per connection).
    #[arg(long, env = flags::KEEP_ALIVE, value_parser = seconds, default_value_t = Seconds(defaults::KEEP_ALIVE_TIMEOUT))]
    pub(crate) keep_alive: Seconds,

    /// Seconds a client may take to send a request head (0: no limit of
    /// its own; --keep-alive still bounds the wait).
    #[arg(long, env = flags::HEADER_READ_TIMEOUT, value_parser = seconds, default_value_t = Seconds(defaults::HEADER_READ_TIMEOUT))]
    pub(crate) header_read_timeout: Seconds,

    /// Connections per worker; beyond it they wait in the backlog
    /// [default: below the worker's descriptor limit, see README].
    #[arg(long, env = flags::MAX_CONNECTIONS)]
    pub(crate) max_connections: Option<NonZeroUsize>,

    /// Seconds a request body may go without a byte while the app waits
    /// for one (0: off).
    #[arg(long, env = flags::BODY_READ_TIMEOUT, value_parser = seconds, default_value_t = Seconds(defaults::BODY_READ_TIMEOUT))]
    pub(crate) body_read_timeout: Seconds,

    /// Seconds a connection's writes may make no progress (a client that
    /// does not read) before it is cut (0: off).
    #[arg(long, env = flags::SEND_TIMEOUT, value_parser = seconds, default_value_t = Seconds(defaults::SEND_TIMEOUT))]
    pub(crate) send_timeout: Seconds,

    /// Longest request line in bytes, else 414 (0: only the 64 KiB head
    /// limit).
    #[arg(long, env = flags::LIMIT_REQUEST_LINE, default_value_t = defaults::LIMIT_REQUEST_LINE)]
    pub(crate) limit_request_line: usize,

    /// Longest header field in bytes, else 431 (0: only the 64 KiB head
    /// limit).
    #[arg(long, env = flags::LIMIT_REQUEST_FIELD_SIZE, default_value_t = defaults::LIMIT_REQUEST_FIELD_SIZE)]
    pub(crate) limit_request_field_size: usize,

    /// Most header fields in a request, else 431.
    #[arg(long, env = flags::LIMIT_REQUEST_FIELDS, default_value_t = defaults::LIMIT_REQUEST_FIELDS, value_parser = field_count)]
    pub(crate) limit_request_fields: usize,

    /// Log one line per request.
    #[arg(long, env = flags::ACCESS_LOG, value_parser = BoolishValueParser::new())]
    pub(crate) access_log: bool,
}

/// How the supervisor starts a worker (`--spawn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SpawnMode {
    /// fork, then exec this binary again: every worker runs `main` from
    /// the start (and picks up a new build on disk).
    Exec,
    /// fork only: a worker goes on from the supervisor's memory, so state
    /// built before [`Drover::serve`](crate::Drover::serve) is shared
    /// (copy-on-write).
    Fork,
}

impl SpawnMode {
    /// Its name, as `--spawn` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Fork => "fork",
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// drover's flags alone, as the `drover` binary (and [`Drover::parse`](crate::Drover::parse))
/// parses them: named for the binary it runs in.
#[derive(Debug, Clone, Parser)]
#[command(version, about, long_about = None, after_help = SIGNALS_HELP)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

/// Parses this process's command line and `DROVER_*` variables as drover's
/// flags alone; on a bad value, exits 2 with clap's message, and names the
/// variable when the value came from the environment rather than from a
/// flag. `--help` and `--version` name the binary they run in; the version
/// is drover's (an application with a version of its own flattens
/// [`Args`] into its own parser).
pub(crate) fn parse() -> Args {
    use clap::{CommandFactory, FromArgMatches};
    let binary = std::env::args_os()
        .next()
        .and_then(|arg0| Some(PathBuf::from(arg0).file_name()?.to_owned()))
        .filter(|name| name != "drover");
    let parsed = match binary {
        // The stock binary: the command as derived.
        None => Cli::try_parse(),
        // An application's binary: its name, drover's version said as such.
        Some(name) => Cli::command()
            .name(name.to_string_lossy().into_owned())
            .version(format!("(drover {})", env!("CARGO_PKG_VERSION")))
            .try_get_matches()
            .and_then(|matches| Cli::from_arg_matches(&matches)),
    };
    parsed.map(|cli| cli.args).unwrap_or_else(|error| {
        let from_env = error
            .get(clap::error::ContextKind::InvalidArg)
            .and_then(|arg| variable_behind(&arg.to_string()));
        if let Some(variable) = from_env {
            let _ = error.print();
            eprintln!("(the value came from the environment: {variable})");
            std::process::exit(2);
        }
        error.exit()
    })
}

/// `DROVER_<FLAG>` for a flag as clap names it in an error (`--max-requests
/// <MAX_REQUESTS>`), when that variable is set and the flag is not on the
/// command line.
fn variable_behind(arg: &str) -> Option<String> {
    let flag = arg.split_whitespace().next()?.strip_prefix("--")?;
    let on_command_line = std::env::args()
        .skip(1)
        .any(|a| a == format!("--{flag}") || a.starts_with(&format!("--{flag}=")));
    let variable = format!("DROVER_{}", flag.replace('-', "_").to_ascii_uppercase());
    (!on_command_line && std::env::var_os(&variable).is_some()).then_some(variable)
}

/// Where drover listens when neither `--bind` nor systemd says.
pub(crate) const DEFAULT_BIND: &str = "127.0.0.1:8000";

/// The supervisor's own defaults (the server's are `drover_worker::defaults`).
const WORKER_TIMEOUT: Duration = Duration::from_secs(30);
const BOOT_TIMEOUT: Duration = Duration::from_secs(30);

/// What drover's `--help` says of signals, after the flags: for an
/// application's own parser (`#[command(after_help = drover::SIGNALS_HELP)]`).
pub const SIGNALS_HELP: &str = "\
Signals to the supervisor:
  TERM, INT   stop gracefully: listeners close, in-flight requests finish,
              stragglers are cut at --graceful-timeout; a second one at
              least 1 s later: at once (sooner, it is the same stop: TERM
              to the process and to its group at once)
  QUIT        stop at once (exit code 1 if it cut running workers)
  HUP         rolling restart: workers replaced one by one, each new one
              ready before an old one closes; a new worker that fails to
              boot stops the restart and the old ones serve on
  USR1        TLS: re-read --certfile, --keyfile and --ca-certs and swap
              them in every worker (new handshakes; a pair that does not
              check is refused)
  USR2        binary upgrade: a new supervisor from the binary on disk takes
              over the sockets once its workers are ready
  TTIN, TTOU  one worker more, one fewer (never below one)";

/// A duration given in seconds (`30`, `0.5`), shown the same way in
/// `--help`'s defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Seconds(pub(crate) Duration);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.as_secs_f64())
    }
}

/// A number of seconds from 0 to a year (deadlines far past that would
/// overflow the clock, and mean "never" anyway: use 0 where it is allowed).
fn seconds(text: &str) -> Result<Seconds, String> {
    const YEAR: f64 = 365.0 * 86_400.0;
    text.parse::<f64>()
        .ok()
        .filter(|s| (0.0..=YEAR).contains(s))
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .map(Seconds)
        .ok_or_else(|| format!("`{text}` is not a number of seconds from 0 to {YEAR}"))
}

/// A number of header fields, 1 to 32768 (gunicorn's bounds).
fn field_count(text: &str) -> Result<usize, String> {
    text.parse::<usize>()
        .ok()
        .filter(|n| (1..=32768).contains(n))
        .ok_or_else(|| format!("`{text}` is not a number of header fields from 1 to 32768"))
}

fn octal(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|mode| *mode <= 0o7777)
        .ok_or_else(|| format!("`{text}` is not an octal file mode"))
}
