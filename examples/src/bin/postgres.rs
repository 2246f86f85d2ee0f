//! A PostgreSQL-backed service under drover: a notes API whose every
//! worker process has its own connection pool.
//!
//! ```text
//! cargo run -p drover-examples --bin postgres -- \
//!     --database-url 'host=/var/run/postgresql user=postgres dbname=postgres' \
//!     -w 2 --pool-size 4 -b 127.0.0.1:3000
//! curl -d 'buy milk' http://127.0.0.1:3000/notes   # the new note's id
//! curl http://127.0.0.1:3000/notes                 # every note, one per line
//! curl http://127.0.0.1:3000/healthz               # ok, or 503 and why
//! ```
//!
//! The pool is [deadpool-postgres] on [tokio-postgres], not sqlx: a small
//! async pool over a plain client, with no compile-time database, no
//! macros and no query checking at build time, so the example builds
//! anywhere. One pool per worker process, sized by `--pool-size`: the
//! database sees at most `workers × pool size` connections.
//!
//! What runs where: the supervisor only parses the command line (a bad
//! `--database-url` is refused there, exit 2) and never connects. Each
//! worker, in drover's factory, builds its own pool (connections are
//! sockets: they must not be shared across processes), names its
//! connections `drover-example-<worker pid>` (`application_name`, so
//! `pg_stat_activity` shows which process holds which), and checks the
//! database before it reports ready: a worker that cannot reach it fails
//! to boot, with the reason. At the first start drover then exits 1; in a
//! rolling restart (HUP) the restart stops and the old workers serve on.
//!
//! A database that goes away and comes back: every connection taken from
//! the pool is verified first (`RecyclingMethod::Verified`, one empty
//! query); a broken one is dropped and a new one opened. While the
//! database is down, requests fail fast with 503; once it is back, the
//! next request reconnects, and no worker needs restarting.
//!
//! [deadpool-postgres]: https://docs.rs/deadpool-postgres
//! [tokio-postgres]: https://docs.rs/tokio-postgres

use std::num::NonZeroUsize;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use clap::Parser;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use drover::{with_sources, Drover, Worker};
use tokio_postgres::NoTls;

/// A notes service on PostgreSQL, served by drover.
#[derive(Debug, Parser)]
#[command(name = "drover-postgres-example", version, after_help = drover::SIGNALS_HELP)]
struct Cli {
    /// The database, as a libpq key-value string (`host=/tmp/sock
    /// user=postgres dbname=postgres`; a host that is a directory means
    /// the Unix socket in it) or a `postgresql://` URL.
    /// Its value is not shown in `--help` (it may hold a password).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = database_config)]
    database_url: tokio_postgres::Config,

    /// Database connections per worker process.
    #[arg(long, default_value_t = NonZeroUsize::new(4).expect("not zero"))]
    pool_size: NonZeroUsize,

    #[command(flatten)]
    drover: drover::Args,
}

fn database_config(text: &str) -> Result<tokio_postgres::Config, String> {
    text.parse()
        .map_err(|error: tokio_postgres::Error| with_sources(&error))
}

/// How long a request waits for a pooled connection, and how long opening
/// or verifying one may take: a database that does not answer fails the
/// request (503), it does not hold it.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);

/// The response header naming the worker process that answered.
const WORKER_PID: &str = "x-worker-pid";

/// Built once in every worker: the pool, the start-up check, the routes.
async fn app(
    _worker: Worker,
    database: tokio_postgres::Config,
    pool_size: NonZeroUsize,
) -> anyhow::Result<Router> {
    let pool = pool(database, pool_size).context("building the connection pool")?;
    let client = pool.get().await.context("connecting to the database")?;
    // Two workers starting together may both create the table: CREATE
    // TABLE IF NOT EXISTS is not safe against a concurrent one (the loser
    // fails on a catalog unique index), so the creations take turns.
    client
        .batch_execute(
            "BEGIN;
             SELECT pg_advisory_xact_lock(hashtext('drover-example notes'));
             CREATE TABLE IF NOT EXISTS notes (id serial PRIMARY KEY, body text NOT NULL);
             COMMIT;",
        )
        .await
        .context("creating the notes table")?;
    drop(client);
    Ok(Router::new()
        .route("/notes", get(list_notes).post(add_note))
        .route("/healthz", get(healthz))
        .route(
            "/pid",
            get(|| async { format!("{}\n", std::process::id()) }),
        )
        .layer(axum::middleware::map_response(tag_worker))
        .with_state(pool))
}

/// This worker's pool: at most `size` connections, each named after this
/// process, each verified before it is handed out.
fn pool(mut database: tokio_postgres::Config, size: NonZeroUsize) -> anyhow::Result<Pool> {
    database.application_name(format!("drover-example-{}", std::process::id()));
    let manager = Manager::from_config(
        database,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Verified,
        },
    );
    Ok(Pool::builder(manager)
        .max_size(size.get())
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_TIMEOUT))
        .create_timeout(Some(POOL_TIMEOUT))
        .recycle_timeout(Some(POOL_TIMEOUT))
        .build()?)
}

/// A failed request: its status and the error with its causes.
type Failure = (StatusCode, String);

/// No connection to be had (the database is down or every connection
/// busy): 503, and why.
fn unavailable(error: deadpool_postgres::PoolError) -> Failure {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{}\n", with_sources(&error)),
    )
}

/// A query that failed: 503 if the connection broke under it, else 500.
fn query_failed(error: tokio_postgres::Error) -> Failure {
    let status = if error.is_closed() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    (status, format!("{}\n", with_sources(&error)))
}

/// `GET /notes`: every note's body, oldest first, one per line.
async fn list_notes(State(pool): State<Pool>) -> Result<String, Failure> {
    let client = pool.get().await.map_err(unavailable)?;
    let select = client
        .prepare_cached("SELECT body FROM notes ORDER BY id")
        .await
        .map_err(query_failed)?;
    let rows = client.query(&select, &[]).await.map_err(query_failed)?;
    Ok(rows
        .iter()
        .map(|row| format!("{}\n", row.get::<_, &str>(0)))
        .collect())
}

/// `POST /notes`: the request body is a new note; answers its id.
async fn add_note(State(pool): State<Pool>, body: String) -> Result<(StatusCode, String), Failure> {
    let client = pool.get().await.map_err(unavailable)?;
    let insert = client
        .prepare_cached("INSERT INTO notes (body) VALUES ($1) RETURNING id")
        .await
        .map_err(query_failed)?;
    let row = client
        .query_one(&insert, &[&body])
        .await
        .map_err(query_failed)?;
    Ok((StatusCode::CREATED, format!("{}\n", row.get::<_, i32>(0))))
}

/// `GET /healthz`: `ok` if a pooled connection answers `SELECT 1`, else
/// 503 and why.
async fn healthz(State(pool): State<Pool>) -> Result<&'static str, Failure> {
    let client = pool.get().await.map_err(unavailable)?;
    client.simple_query("SELECT 1").await.map_err(|error| {
        let why = format!("{}\n", with_sources(&error));
        (StatusCode::SERVICE_UNAVAILABLE, why)
    })?;
    Ok("ok")
}

/// Every response says which worker process answered it.
async fn tag_worker(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(WORKER_PID, HeaderValue::from(std::process::id()));
    response
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let (database, pool_size) = (cli.database_url, cli.pool_size);
    Drover::new(cli.drover).serve(move |worker| app(worker, database.clone(), pool_size))
}
