//! A real service's `main` under drover: flags of its own next to drover's
//! (`drover::Args` flattened into its parser, so `--help` and `--version`
//! are the service's), code-side defaults, and an async start-up that may
//! fail, run in every worker with the worker's context.
//!
//! ```text
//! echo bonjour > /tmp/greeting
//! cargo run -p drover --example service -- --greeting-file /tmp/greeting -b 127.0.0.1:3000
//! curl http://127.0.0.1:3000/            # bonjour from worker 0 (generation 0)
//! cargo run -p drover --example service -- --greeting-file /nonexistent   # exits 1, says why
//! ```

use std::num::NonZeroUsize;
use std::path::PathBuf;

use anyhow::Context;
use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use clap::Parser;
use drover::{Drover, Worker};

/// An example service: answers with a greeting read at start-up.
#[derive(Debug, Parser)]
#[command(name = "greeter", version = "3.1.4", after_help = drover::SIGNALS_HELP)]
struct Cli {
    /// The file whose first line `/` answers with; read by every worker as
    /// it starts (a worker that cannot read it fails to boot).
    #[arg(long, env = "GREETER_GREETING_FILE")]
    greeting_file: PathBuf,

    #[command(flatten)]
    drover: drover::Args,
}

/// Built once in every worker: awaits a blocking read (any I/O would do),
/// and fails with the reason and its cause when the file cannot be read.
async fn app(worker: Worker, greeting_file: PathBuf) -> anyhow::Result<Router> {
    let path = greeting_file.clone();
    let text = tokio::task::spawn_blocking(move || std::fs::read_to_string(path))
        .await?
        .with_context(|| format!("reading the greeting from {}", greeting_file.display()))?;
    let greeting = text.lines().next().unwrap_or_default().to_owned();
    let index = worker.index();
    let generation = worker.generation();
    let jobs = worker.clone();
    Ok(Router::new()
        .route(
            "/job/{ms}",
            get(move |Path(ms): Path<u64>| async move { start_job(&jobs, ms) }),
        )
        .route(
            "/",
            get(move || async move {
                format!("{greeting} from worker {index} (generation {generation})\n")
            }),
        )
        .route(
            "/pid",
            get(|| async { format!("{}\n", std::process::id()) }),
        )
        .route(
            "/identity",
            get(move || async move {
                let env_index = std::env::var("DROVER_WORKER_INDEX").unwrap_or_default();
                format!(
                    "pid={} index={index} generation={generation} env_index={env_index}\n",
                    std::process::id()
                )
            }),
        ))
}

/// `/job/{ms}`: a background job of `ms` milliseconds, spawned as the
/// worker's tracked work (`Worker::spawn`): a worker that closes meanwhile
/// lets it finish before its process exits, up to the graceful timeout.
fn start_job(worker: &Worker, ms: u64) -> String {
    worker.spawn(async move {
        // sleep-ok: the job's own work, simulated
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        eprintln!(
            "greeter: job of {ms} ms finished in worker {}",
            std::process::id()
        );
    });
    "started\n".to_owned()
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let greeting_file = cli.greeting_file;
    Drover::new(cli.drover)
        .default_workers(NonZeroUsize::new(2).expect("not zero"))
        .serve(move |worker| app(worker, greeting_file.clone()))
}
