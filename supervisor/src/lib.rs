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
//! The same binary is the supervisor and, started again by it (or forked),
//! each worker: [`run`] tells which from the environment.
#![deny(missing_docs)]

mod backoff;
pub mod cli;
pub mod demo;
mod sockets;
mod spawn;
mod supervisor;

use std::process::ExitCode;

use clap::Parser;
use drover_shared::ControlSocket;
use drover_worker::supervised::run_worker;
use drover_worker::IntoHttpService;

use crate::cli::{Cli, LogFormat};

/// Parses drover's command line (exit code 2 with one line on a bad flag),
/// then runs the supervisor, or, in a process the supervisor started, a
/// worker serving `app()`. Returns the exit code for `main`.
pub fn run<F, S, K>(app: F) -> ExitCode
where
    F: Fn() -> S,
    S: IntoHttpService<K>,
{
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let settings = cli.worker_settings();
    let worker = || match ControlSocket::from_env() {
        Ok(Some(control)) => run_worker(settings.clone(), control, &app),
        Ok(None) => {
            eprintln!("drover: worker started without a control socket");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("drover: {error}");
            ExitCode::FAILURE
        }
    };
    if std::env::var_os(drover_shared::CONTROL_FD_ENV).is_some() {
        return worker();
    }
    supervisor::run(cli, &worker)
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
