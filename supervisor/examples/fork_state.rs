//! State built before `drover::run` is shared by `--spawn fork` workers:
//! a log file opened in `main` that every worker appends to, one line per
//! request; and the application's own signal handler (`tokio::signal`),
//! which a worker runs like any tokio program.
//!
//! ```text
//! FORK_STATE_LOG=/tmp/requests.log \
//!   cargo run -p drover --example fork_state -- --spawn fork -w 2
//! curl http://127.0.0.1:8000/    # a line in /tmp/requests.log
//! kill -HUP <a worker's pid>     # the worker says so on stderr, and serves on
//! ```

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::routing::get;
use axum::Router;

/// What a request writes to the log (never to a client).
pub const MARKER: &str = "fork-state-request";

fn app(log: Arc<Mutex<File>>) -> Router {
    // The application's own HUP handler, in each worker.
    if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                eprintln!("fork_state: SIGHUP in worker {}", std::process::id());
            }
        });
    }
    Router::new()
        .route(
            "/",
            get(move || async move {
                // One write(2) per line: with O_APPEND, the workers' lines
                // never interleave.
                let line = format!("{MARKER} {}\n", std::process::id());
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                match log.write_all(line.as_bytes()) {
                    Ok(()) => "ok\n".to_owned(),
                    Err(error) => format!("cannot log: {error}\n"),
                }
            }),
        )
        .route(
            "/pid",
            get(|| async { format!("{}\n", std::process::id()) }),
        )
}

fn main() -> std::process::ExitCode {
    let path = std::env::var_os("FORK_STATE_LOG").expect("FORK_STATE_LOG: the log's path");
    let log = File::options()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the log");
    let log = Arc::new(Mutex::new(log));
    drover::run(move || app(Arc::clone(&log)))
}
