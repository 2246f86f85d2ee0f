//! drover: run an HTTP service as a pre-fork fleet of worker processes on
//! sockets the supervisor owns.
//!
//! A binary of your own gets drover's whole command line with one call:
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     drover::run(|| axum::Router::new().route("/", axum::routing::get(|| async { "hi" })))
//! }
//! ```
//!
//! A real service, whose start-up awaits (a database pool) and may fail,
//! and which has flags of its own, uses [`Drover`] with [`Args`] flattened
//! into its own parser; its factory gets the [`Worker`]'s context.
//!
//! The same binary is the supervisor and, started again by it (or forked),
//! each worker: drover tells which from the environment.
#![deny(missing_docs)]

mod app_start;
mod args;
mod backoff;
mod builder;
mod config;
mod control;
mod credentials;
/// The built-in demo app the `drover` binary serves; public so that the
/// benchmarks' single-process baseline (`examples/single_process.rs`)
/// serves the very same app.
pub mod demo;
mod exec_image;
mod notify;
mod operator;
mod pid_file;
mod process_title;
mod signals;
mod sockets;
mod spawn;
mod supervisor;
mod tls_material;
mod unix_mode;
mod worker_context;
mod worker_process;
mod worker_tls;

use std::convert::Infallible;
use std::process::ExitCode;

use drover_worker::IntoHttpService;

use crate::args::LogFormat;

pub use crate::app_start::with_sources;
pub use crate::args::{Args, DroverCommand, SpawnMode, SIGNALS_HELP};
pub use crate::builder::Drover;
pub use crate::operator::{ControlMode, CtlArgs};
pub use crate::worker_context::{TrackedWork, Worker};
pub use drover_shared::ListenerSpec;
pub use drover_worker::{ConnectInfo, LocalAddr, ServerHandle, UnixPeer};

/// The simple case: parses drover's command line (exit code 2 with one
/// line on a bad flag), then runs the supervisor, or, in a process the
/// supervisor started, a worker serving `app()`. Returns the exit code for
/// `main`. The same as [`Drover::parse`] then [`Drover::serve`] with a
/// factory that cannot fail; a panic in `app` fails the worker's boot.
pub fn run<F, S, K>(app: F) -> ExitCode
where
    F: Fn() -> S,
    S: IntoHttpService<K>,
{
    Drover::parse().serve(|_| std::future::ready(Ok::<_, Infallible>(app())))
}

/// Installs drover's log subscriber as the global default, unless the
/// application set one of its own first.
pub(crate) fn init_logs(format: LogFormat) {
    if tracing::dispatcher::has_been_set() {
        return;
    }
    let filter = log_filter(std::env::var(drover_shared::env::RUST_LOG).ok().as_deref());
    let _ = tracing::subscriber::set_global_default(log_subscriber(format, filter));
}

/// Log lines on stderr in `format`, as `filter` lets them through (the
/// filter alone decides: the fmt builder's own level cap, info, would keep
/// `RUST_LOG=debug` from reaching anything).
fn log_subscriber(
    format: LogFormat,
    filter: tracing_subscriber::filter::Targets,
) -> Box<dyn tracing::Subscriber + Send + Sync> {
    use tracing_subscriber::layer::SubscriberExt;
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => Box::new(registry.with(lines)),
        LogFormat::Json => Box::new(registry.with(lines.json())),
    }
}

/// The log filter from `RUST_LOG`: `LEVEL` and `TARGET=LEVEL` directives,
/// comma separated (`info`, `warn,drover=debug`); info when unset. A value
/// that does not parse is reported and replaced by info.
///
/// `Targets` rather than `EnvFilter`: the span and field filters of the
/// latter bring the regex engines, about 0.3 MB of code that every process
/// of the fleet maps, for filters a server's logs do not need.
fn log_filter(rust_log: Option<&str>) -> tracing_subscriber::filter::Targets {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    let info = || Targets::new().with_default(LevelFilter::INFO);
    match rust_log.map(str::trim) {
        None | Some("") => info(),
        Some(directives) => directives.parse().unwrap_or_else(|error| {
            eprintln!("drover: ignoring RUST_LOG={directives:?}: {error}; logging at info");
            info()
        }),
    }
}

// The README's code blocks are compiled as doctests (here, where both
// drover and drover-worker are in scope), and run unless marked no_run.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

#[cfg(test)]
mod tests {
    use super::{log_filter, log_subscriber};
    use crate::args::LogFormat;
    use tracing::Level;

    #[test]
    fn the_installed_subscriber_follows_rust_log_above_and_below_info() {
        for format in [LogFormat::Text, LogFormat::Json] {
            let subscriber = log_subscriber(format, log_filter(Some("warn,drover=trace")));
            tracing::subscriber::with_default(subscriber, || {
                assert!(tracing::enabled!(target: "drover::supervisor", Level::TRACE));
                assert!(!tracing::enabled!(target: "hyper::proto", Level::INFO));
                assert!(tracing::enabled!(target: "hyper::proto", Level::WARN));
            });
        }
    }

    #[test]
    fn rust_log_sets_levels_per_target() {
        let filter = log_filter(Some("warn,drover=debug"));
        assert!(filter.would_enable("drover::supervisor", &Level::DEBUG));
        assert!(!filter.would_enable("hyper", &Level::INFO));
        assert!(filter.would_enable("hyper", &Level::WARN));
    }

    #[test]
    fn unset_empty_or_unparsable_rust_log_means_info() {
        for rust_log in [None, Some(""), Some("drover=loud")] {
            let filter = log_filter(rust_log);
            assert!(filter.would_enable("drover", &Level::INFO), "{rust_log:?}");
            assert!(
                !filter.would_enable("drover", &Level::DEBUG),
                "{rust_log:?}"
            );
        }
    }
}
