//! The configuration every process of a fleet runs with: the command line
//! ([`Args`], as typed) and the application's code-side defaults
//! ([`CodeDefaults`], for the flags not given) turned once into what the
//! code uses, with every derived value computed here and nowhere else.
//!
//! Supervisor and workers parse the same command line (a worker is this
//! binary started again with the same arguments, or forked), so both hold
//! the same `Config`. Adding a server option touches the worker crate's
//! `Builder`, one CLI field and one line in [`Config::server_builder`].

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use drover_shared::ListenerSpec;

use crate::args::{Args, LogFormat, MinVersion, ServerArgs, SpawnMode, DEFAULT_BIND};
use crate::operator::ControlMode;
use crate::tls_material::TlsFiles;
use drover_worker::TlsVersion;

/// What an application says in code for the flags its users leave out
/// (`Drover::default_workers` and the like); a flag, or its `DROVER_*`
/// variable, wins over these, and these over drover's own defaults.
#[derive(Debug, Clone, Default)]
pub(crate) struct CodeDefaults {
    pub(crate) bind: Vec<ListenerSpec>,
    pub(crate) workers: Option<NonZeroUsize>,
    pub(crate) threads: Option<NonZeroUsize>,
    pub(crate) spawn: Option<SpawnMode>,
}

/// What the supervisor and its workers run with.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Where to listen when no sockets are passed (LISTEN_FDS).
    pub(crate) bind: Vec<ListenerSpec>,
    /// Whether `bind` was given (flag or environment), not the default.
    pub(crate) bind_given: bool,
    /// Where to listen too, served plain even with TLS (`--insecure-bind`).
    pub(crate) insecure_bind: Vec<ListenerSpec>,
    /// The listen backlog of the sockets drover opens.
    pub(crate) backlog: u32,
    /// Mode of the Unix socket files drover creates.
    pub(crate) uds_mode: Option<u32>,
    /// Worker processes to run at start.
    pub(crate) workers: usize,
    pub(crate) spawn: SpawnMode,
    /// Tokio threads per worker (1: a current-thread runtime).
    pub(crate) threads: usize,
    /// How long a worker gets to report ready before it is killed
    /// (`None`: for ever).
    pub(crate) boot_timeout: Option<Duration>,
    /// How long a ready worker may stay silent before it is killed
    /// (`None`: never).
    pub(crate) worker_timeout: Option<Duration>,
    /// How often a worker sends a heartbeat (`None`: never).
    pub(crate) heartbeat_interval: Option<Duration>,
    /// After a stop, connections still open past this are cut.
    pub(crate) graceful_timeout: Duration,
    /// How long an idle keep-alive connection of a worker that leaves
    /// while others serve stays open for one more request.
    pub(crate) drain_window: Duration,
    /// A worker asks for its replacement after about this many requests.
    pub(crate) max_requests: Option<u64>,
    /// Up to this many requests more, drawn per worker.
    pub(crate) max_requests_jitter: u64,
    /// `--user` and `--group`, as given (resolved at start).
    pub(crate) user: Option<String>,
    pub(crate) group: Option<String>,
    pub(crate) pid_file: Option<PathBuf>,
    pub(crate) log_format: LogFormat,
    /// The operator's control socket, and what it allows.
    pub(crate) control_socket: Option<PathBuf>,
    pub(crate) control_socket_mode: ControlMode,
    /// Where the metrics are served.
    pub(crate) metrics: Option<ListenerSpec>,
    /// The certificate and key files, if TLS is on (clap makes sure both
    /// or neither are given).
    pub(crate) tls: Option<TlsFiles>,
    pub(crate) tls_min_version: TlsVersion,
    /// The flags every worker's server is built with.
    server: ServerArgs,
}

impl Config {
    /// The configuration from the command line, `defaults` filling in what
    /// it leaves out.
    pub(crate) fn new(cli: Args, defaults: CodeDefaults) -> Self {
        let worker_timeout = Some(cli.worker_timeout.0).filter(|t| !t.is_zero());
        let graceful_timeout = cli.graceful_timeout.0;
        Self {
            bind_given: !cli.bind.is_empty(),
            bind: match (cli.bind.is_empty(), defaults.bind.is_empty()) {
                (false, _) => cli.bind,
                (true, false) => defaults.bind,
                (true, true) => vec![DEFAULT_BIND.parse().expect("the default address parses")],
            },
            insecure_bind: cli.insecure_bind,
            backlog: cli.backlog,
            uds_mode: cli.uds_mode,
            workers: cli.workers.or(defaults.workers).map_or_else(
                || std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
                NonZeroUsize::get,
            ),
            spawn: cli.spawn.or(defaults.spawn).unwrap_or(SpawnMode::Exec),
            threads: cli
                .threads
                .or(defaults.threads)
                .map_or(1, NonZeroUsize::get),
            boot_timeout: Some(cli.boot_timeout.0).filter(|t| !t.is_zero()),
            worker_timeout,
            // Four per worker timeout, at least every millisecond.
            heartbeat_interval: worker_timeout.map(|t| (t / 4).max(Duration::from_millis(1))),
            graceful_timeout,
            // As long as the connection would have stayed anyway (the
            // keep-alive timeout), within the graceful timeout.
            drain_window: cli.server.keep_alive.0.min(graceful_timeout),
            max_requests: Some(cli.max_requests).filter(|n| *n > 0),
            max_requests_jitter: cli.max_requests_jitter,
            user: cli.user,
            group: cli.group,
            pid_file: cli.pid_file,
            log_format: cli.log_format,
            control_socket: cli.control_socket,
            control_socket_mode: cli.control_socket_mode,
            metrics: cli.metrics,
            tls: cli.certfile.zip(cli.keyfile).map(|(cert, key)| TlsFiles {
                cert,
                key,
                ca: cli.ca_certs,
                cert_reqs: cli.cert_reqs,
            }),
            tls_min_version: match cli.tls_min_version {
                MinVersion::V1_2 => TlsVersion::Tls12,
                MinVersion::V1_3 => TlsVersion::Tls13,
            },
            server: cli.server,
        }
    }

    /// `--max-connections`, if given (a worker without it derives a limit
    /// from its descriptor limit).
    pub(crate) fn max_connections(&self) -> Option<usize> {
        self.server.max_connections.map(NonZeroUsize::get)
    }

    /// The builder of a worker's server: every server option from the
    /// command line. (The request quota is drawn per worker, by the
    /// worker.)
    pub(crate) fn server_builder(&self) -> drover_worker::Builder {
        let server = &self.server;
        let builder = drover_worker::Server::builder()
            .graceful_timeout(self.graceful_timeout)
            .keep_alive_timeout(server.keep_alive.0)
            .header_read_timeout(Some(server.header_read_timeout.0).filter(|t| !t.is_zero()))
            .body_read_timeout(server.body_read_timeout.0)
            .send_timeout(server.send_timeout.0)
            .limit_request_line(server.limit_request_line)
            .limit_request_field_size(server.limit_request_field_size)
            .limit_request_fields(server.limit_request_fields)
            .access_log(server.access_log);
        match server.max_connections {
            Some(limit) => builder.max_connections(limit.get()),
            None => builder,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{CodeDefaults, Config};
    use crate::args::{Args, SpawnMode};
    use clap::Parser;
    use std::num::NonZeroUsize;
    use std::time::Duration;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(args: &[&str]) -> Args {
        Cli::try_parse_from([&["drover"], args].concat())
            .unwrap()
            .args
    }

    fn config(flags: &[&str]) -> Config {
        Config::new(args(flags), CodeDefaults::default())
    }

    fn app_defaults() -> CodeDefaults {
        CodeDefaults {
            bind: vec!["127.0.0.1:3000".parse().unwrap()],
            workers: NonZeroUsize::new(4),
            threads: NonZeroUsize::new(2),
            spawn: Some(SpawnMode::Fork),
        }
    }

    #[test]
    fn code_defaults_fill_in_what_the_command_line_leaves_out() {
        let config = Config::new(args(&[]), app_defaults());
        assert_eq!(config.bind, vec!["127.0.0.1:3000".parse().unwrap()]);
        assert!(
            !config.bind_given,
            "a code default is not an explicit --bind"
        );
        assert_eq!(config.workers, 4);
        assert_eq!(config.threads, 2);
        assert_eq!(config.spawn, SpawnMode::Fork);
    }

    #[test]
    fn flags_win_over_code_defaults() {
        let flags = [
            "-b",
            "127.0.0.1:9",
            "-w",
            "3",
            "--threads",
            "1",
            "--spawn",
            "exec",
        ];
        let config = Config::new(args(&flags), app_defaults());
        assert_eq!(config.bind, vec!["127.0.0.1:9".parse().unwrap()]);
        assert!(config.bind_given);
        assert_eq!(config.workers, 3);
        assert_eq!(config.threads, 1);
        assert_eq!(config.spawn, SpawnMode::Exec);
    }

    #[test]
    fn without_code_defaults_drovers_own_apply() {
        let config = config(&[]);
        assert_eq!(
            config.bind,
            vec![crate::args::DEFAULT_BIND.parse().unwrap()]
        );
        assert_eq!(config.threads, 1);
        assert_eq!(config.spawn, SpawnMode::Exec);
    }

    #[test]
    fn a_worker_timeout_of_zero_means_no_timeout_and_no_heartbeats() {
        let off = config(&["--worker-timeout", "0"]);
        assert_eq!(off.worker_timeout, None);
        assert_eq!(off.heartbeat_interval, None);
        let on = config(&["--worker-timeout", "8"]);
        assert_eq!(on.worker_timeout, Some(Duration::from_secs(8)));
        assert_eq!(on.heartbeat_interval, Some(Duration::from_secs(2)));
        let tiny = config(&["--worker-timeout", "0.001"]);
        assert_eq!(tiny.heartbeat_interval, Some(Duration::from_millis(1)));
    }

    #[test]
    fn a_boot_timeout_of_zero_means_no_boot_deadline() {
        assert_eq!(config(&["--boot-timeout", "0"]).boot_timeout, None);
        let on = config(&["--boot-timeout", "2.5"]).boot_timeout;
        assert_eq!(on, Some(Duration::from_millis(2500)));
    }

    #[test]
    fn the_drain_window_is_the_keep_alive_within_the_graceful_timeout() {
        let keep_alive = config(&["--keep-alive", "5", "--graceful-timeout", "30"]);
        assert_eq!(keep_alive.drain_window, Duration::from_secs(5));
        let graceful = config(&["--keep-alive", "5", "--graceful-timeout", "2"]);
        assert_eq!(graceful.drain_window, Duration::from_secs(2));
    }

    #[test]
    fn max_requests_zero_means_never() {
        assert_eq!(config(&[]).max_requests, None);
        assert_eq!(config(&["--max-requests", "7"]).max_requests, Some(7));
    }

    #[test]
    fn an_explicit_worker_count_wins_over_the_cpus() {
        assert_eq!(config(&["-w", "3"]).workers, 3);
        assert!(config(&[]).workers >= 1);
    }
}
