//! Every environment variable drover reads or sets, named once.
//!
//! Three families: systemd's (the LISTEN_FDS convention, sd_notify, the
//! watchdog), which drover both honours and speaks to its own children;
//! the ones the supervisor sets for the processes it starts (`DROVER_*_FD`
//! and the binary upgrade's); and the `DROVER_<FLAG>` form of every
//! command-line flag, which the CLI reads (its names are the flags', so
//! they are listed there by clap, from the constants here).

// systemd: socket activation (`sd_listen_fds`).
/// How many sockets were passed, from descriptor 3 on.
pub const LISTEN_FDS: &str = "LISTEN_FDS";
/// The pid the sockets were passed to.
pub const LISTEN_PID: &str = "LISTEN_PID";
/// The passed sockets' names, colon-separated.
pub const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";

/// drover's own: in a forked worker, the descriptor its LISTEN_FDS
/// sockets start at, when not 3 (they are handed over above every
/// descriptor the process holds, which are the application's state built
/// before the fork).
pub const LISTEN_FDS_START: &str = "DROVER_LISTEN_FDS_START";

// systemd: notifications and the watchdog. The supervisor's alone.
/// Where `sd_notify` messages go.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// The watchdog interval systemd expects pings within.
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// The pid the watchdog interval is meant for.
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";

// Set by the supervisor for the processes it starts.
/// In a worker: the descriptor of its control socket. Its presence is
/// what makes a drover binary run as a worker.
pub const CONTROL_FD: &str = "DROVER_CONTROL_FD";
/// In a worker: its index, a slot number from 0 that a replacement
/// inherits from the worker it replaces (einhorn's `EINHORN_CHILD_INDEX`,
/// Puma's worker index).
pub const WORKER_INDEX: &str = "DROVER_WORKER_INDEX";
/// In a worker: its restart generation, 0 for the first start, one more
/// for each rolling restart (HUP).
pub const WORKER_GENERATION: &str = "DROVER_WORKER_GENERATION";
/// In a new supervisor started by a binary upgrade: the descriptor of its
/// channel to the supervisor it replaces.
pub const UPGRADE_FD: &str = "DROVER_UPGRADE_FD";
/// In a new supervisor: which inherited sockets have files the old one
/// created (indices, comma separated); it removes those at its own stop.
pub const OWNED_SOCKETS: &str = "DROVER_OWNED_SOCKETS";
/// In a new supervisor: how many workers the old one runs (TTIN/TTOU may
/// have changed it since the command line).
pub const UPGRADE_WORKERS: &str = "DROVER_UPGRADE_WORKERS";
/// In a new supervisor: the restart generation its workers start in (one
/// past the old supervisor's), so that generations only move on.
pub const UPGRADE_GENERATION: &str = "DROVER_UPGRADE_GENERATION";

// Read by the supervisor, for the end-to-end tests only.
/// Test only: when set, an exec'd child skips `close_range`, as on a
/// kernel before Linux 5.9 or under a seccomp profile that refuses it, so
/// that the fallback (close-on-exec) is exercised.
pub const TEST_NO_CLOSE_RANGE: &str = "DROVER_TEST_NO_CLOSE_RANGE";

// Read by every process.
/// Log levels: `LEVEL` and `TARGET=LEVEL` directives, comma separated.
pub const RUST_LOG: &str = "RUST_LOG";

/// The `DROVER_<FLAG>` variables, one per command-line flag.
pub mod flags {
    /// `--bind`
    pub const BIND: &str = "DROVER_BIND";
    /// `--insecure-bind`
    pub const INSECURE_BIND: &str = "DROVER_INSECURE_BIND";
    /// `--workers`
    pub const WORKERS: &str = "DROVER_WORKERS";
    /// `--spawn`
    pub const SPAWN: &str = "DROVER_SPAWN";
    /// `--threads`
    pub const THREADS: &str = "DROVER_THREADS";
    /// `--graceful-timeout`
    pub const GRACEFUL_TIMEOUT: &str = "DROVER_GRACEFUL_TIMEOUT";
    /// `--worker-timeout`
    pub const WORKER_TIMEOUT: &str = "DROVER_WORKER_TIMEOUT";
    /// `--boot-timeout`
    pub const BOOT_TIMEOUT: &str = "DROVER_BOOT_TIMEOUT";
    /// `--keep-alive`
    pub const KEEP_ALIVE: &str = "DROVER_KEEP_ALIVE";
    /// `--header-read-timeout`
    pub const HEADER_READ_TIMEOUT: &str = "DROVER_HEADER_READ_TIMEOUT";
    /// `--max-connections`
    pub const MAX_CONNECTIONS: &str = "DROVER_MAX_CONNECTIONS";
    /// `--body-read-timeout`
    pub const BODY_READ_TIMEOUT: &str = "DROVER_BODY_READ_TIMEOUT";
    /// `--send-timeout`
    pub const SEND_TIMEOUT: &str = "DROVER_SEND_TIMEOUT";
    /// `--limit-request-line`
    pub const LIMIT_REQUEST_LINE: &str = "DROVER_LIMIT_REQUEST_LINE";
    /// `--limit-request-field-size`
    pub const LIMIT_REQUEST_FIELD_SIZE: &str = "DROVER_LIMIT_REQUEST_FIELD_SIZE";
    /// `--limit-request-fields`
    pub const LIMIT_REQUEST_FIELDS: &str = "DROVER_LIMIT_REQUEST_FIELDS";
    /// `--max-requests`
    pub const MAX_REQUESTS: &str = "DROVER_MAX_REQUESTS";
    /// `--max-requests-jitter`
    pub const MAX_REQUESTS_JITTER: &str = "DROVER_MAX_REQUESTS_JITTER";
    /// `--user`
    pub const USER: &str = "DROVER_USER";
    /// `--group`
    pub const GROUP: &str = "DROVER_GROUP";
    /// `--backlog`
    pub const BACKLOG: &str = "DROVER_BACKLOG";
    /// `--control-socket` (the supervisor's, and `drover ctl`'s)
    pub const CONTROL_SOCKET: &str = "DROVER_CONTROL_SOCKET";
    /// `--control-socket-mode`
    pub const CONTROL_SOCKET_MODE: &str = "DROVER_CONTROL_SOCKET_MODE";
    /// `--metrics`
    pub const METRICS: &str = "DROVER_METRICS";
    /// `--certfile`
    pub const CERTFILE: &str = "DROVER_CERTFILE";
    /// `--keyfile`
    pub const KEYFILE: &str = "DROVER_KEYFILE";
    /// `--ca-certs`
    pub const CA_CERTS: &str = "DROVER_CA_CERTS";
    /// `--cert-reqs`
    pub const CERT_REQS: &str = "DROVER_CERT_REQS";
    /// `--tls-min-version`
    pub const TLS_MIN_VERSION: &str = "DROVER_TLS_MIN_VERSION";
    /// `--pid-file`
    pub const PID_FILE: &str = "DROVER_PID_FILE";
    /// `--uds-mode`
    pub const UDS_MODE: &str = "DROVER_UDS_MODE";
    /// `--log-format`
    pub const LOG_FORMAT: &str = "DROVER_LOG_FORMAT";
    /// `--access-log`
    pub const ACCESS_LOG: &str = "DROVER_ACCESS_LOG";
}

/// The demo app's fault markers (see `drover::demo`), for the tests.
pub mod demo {
    /// Every worker fails its boot.
    pub const FAIL_BOOT: &str = "DROVER_DEMO_FAIL_BOOT";
    /// A worker fails its boot while this file exists.
    pub const FAIL_BOOT_IF: &str = "DROVER_DEMO_FAIL_BOOT_IF";
    /// Every worker hangs in its boot.
    pub const HANG_BOOT: &str = "DROVER_DEMO_HANG_BOOT";
    /// A worker hangs in its boot while this file exists.
    pub const HANG_BOOT_IF: &str = "DROVER_DEMO_HANG_BOOT_IF";
}
