//! [`Drover`]: the builder an application's `main` runs drover with.

use std::future::Future;
use std::num::NonZeroUsize;
use std::process::ExitCode;

use drover_shared::ListenerSpec;
use drover_worker::{BoxError, IntoHttpService};

use crate::args::{Args, DroverCommand, SpawnMode};
use crate::config::{CodeDefaults, Config};
use crate::control::ControlSocket;
use crate::worker_context::Worker;
use crate::worker_process::serve_as_worker;

/// drover, as an application runs it: its command line ([`Args`]), the
/// application's own defaults for flags its users leave out, then
/// [`serve`](Self::serve).
///
/// ```no_run
/// use drover::{Drover, Worker};
///
/// async fn app(worker: Worker) -> Result<axum::Router, std::io::Error> {
///     // Awaits freely: a pool, a config file, a warm-up request.
///     let greeting = format!("hello from worker {}\n", worker.index());
///     Ok(axum::Router::new().route("/", axum::routing::get(move || async move { greeting })))
/// }
///
/// fn main() -> std::process::ExitCode {
///     Drover::parse()
///         .default_workers(std::num::NonZeroUsize::new(4).expect("not zero"))
///         .default_bind("0.0.0.0:3000".parse().expect("an address"))
///         .serve(app)
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Drover {
    args: Args,
    defaults: CodeDefaults,
}

impl Drover {
    /// drover with `args`, typically flattened into the application's own
    /// `clap::Parser` (see [`Args`]).
    pub fn new(args: Args) -> Self {
        Self {
            args,
            defaults: CodeDefaults::default(),
        }
    }

    /// drover with this process's command line as drover's flags alone
    /// (exit code 2 and one line on a bad flag, naming the `DROVER_*`
    /// variable when the bad value came from there).
    pub fn parse() -> Self {
        Self::new(crate::args::parse())
    }

    /// Where to listen when neither `--bind` nor systemd's sockets say;
    /// call it again to listen on several addresses. (Without it: drover's
    /// default, 127.0.0.1:8000.)
    pub fn default_bind(mut self, address: ListenerSpec) -> Self {
        self.defaults.bind.push(address);
        self
    }

    /// How many workers to run when `--workers` is not given. (Without it:
    /// one per CPU.)
    pub fn default_workers(mut self, workers: NonZeroUsize) -> Self {
        self.defaults.workers = Some(workers);
        self
    }

    /// Tokio threads per worker when `--threads` is not given. (Without
    /// it: 1.)
    pub fn default_threads(mut self, threads: NonZeroUsize) -> Self {
        self.defaults.threads = Some(threads);
        self
    }

    /// How workers start when `--spawn` is not given. (Without it:
    /// [`SpawnMode::Exec`].)
    pub fn default_spawn(mut self, spawn: SpawnMode) -> Self {
        self.defaults.spawn = Some(spawn);
        self
    }

    /// Runs drover: in the process the user started, the supervisor; in
    /// each worker process it starts, `factory(worker)`, awaited on the
    /// worker's runtime, then the application it returns, served on the
    /// supervisor's sockets. Returns the exit code for `main`.
    ///
    /// `factory` is called once in every worker (a replacement calls it
    /// again), never in the supervisor. `S` is anything
    /// [`start_serving`](drover_worker::Server::start_serving) takes: an
    /// axum `Router`, a tower service, a hyper `service_fn`.
    ///
    /// Failure: an `Err` (any error: `std::io::Error`, `anyhow::Error`, a
    /// boxed one) or a panic, in the call or while it is awaited, fails
    /// the worker's boot. At the first start drover then exits 1, having
    /// written the error and its whole source chain on stderr; in a
    /// rolling restart (HUP) the restart stops and the old workers serve
    /// on. The boot timeout (`--boot-timeout`) bounds how long it may take.
    ///
    /// Call it once, from a plain `fn main` (not `#[tokio::main]`: each
    /// worker builds its own runtime; called inside one, it writes one
    /// line and returns a failure). It installs drover's log subscriber as
    /// the global `tracing` default (`--log-format`, `RUST_LOG`) unless
    /// one was set before; an application that wants its own sets it
    /// before `serve`, and then drover's events go through it.
    ///
    /// What runs where: code in `main` before `serve` runs in the
    /// supervisor. With `--spawn fork`, workers are forks of it, so state
    /// built there (a loaded model, a parsed config) is built once and
    /// shared copy-on-write; the supervisor must then have no other
    /// thread running (a tokio runtime built there must be dropped before
    /// `serve`), or starting a worker fails. With `--spawn exec` each
    /// worker runs `main` again from the start, so that code runs in
    /// every worker too.
    pub fn serve<F, Fut, S, E, K>(self, factory: F) -> ExitCode
    where
        F: Fn(Worker) -> Fut,
        Fut: Future<Output = Result<S, E>>,
        S: IntoHttpService<K>,
        E: Into<BoxError>,
    {
        if let Some(DroverCommand::Ctl(ctl)) = &self.args.command {
            return crate::operator::ctl::run(ctl, self.args.control_socket.as_deref());
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            // Every worker builds its own runtime (and in fork mode the
            // supervisor must have no other thread): from inside one, that
            // would panic in every worker.
            eprintln!(
                "drover: Drover::serve (and drover::run) must be called outside a tokio \
                 runtime: from a plain `fn main`, not `#[tokio::main]`"
            );
            return ExitCode::FAILURE;
        }
        let config = Config::new(self.args, self.defaults);
        crate::init_logs(config.log_format);
        let worker = || match ControlSocket::from_env() {
            Ok(Some(control)) => serve_as_worker(&config, control, &factory),
            Ok(None) => {
                eprintln!("drover: worker started without a control socket");
                ExitCode::FAILURE
            }
            Err(error) => {
                eprintln!("drover: {error}");
                ExitCode::FAILURE
            }
        };
        if std::env::var_os(drover_shared::env::CONTROL_FD).is_some() {
            return worker();
        }
        crate::supervisor::supervise(&config, &worker)
    }
}
