//! The drover-worker lifecycle API on its own, in one process, no
//! supervisor: serves a few routes on `127.0.0.1:8000` (or the address
//! given as the first argument) until SIGINT/SIGTERM; a second signal cuts
//! the connections left.
//!
//! ```text
//! cargo run --release --example hello [ADDR]
//! curl http://127.0.0.1:8000/
//! ```

use axum::routing::get;
use axum::Router;
use drover_worker::Server;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .init();
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8000".into());

    let app = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/pid",
            get(|| async { format!("{}\n", std::process::id()) }),
        );

    let server = Server::bind(&addr).await?;
    server.handle().close_on_signals()?;
    server.start_serving(app).await?;
    eprintln!(
        "drover demo: serving on http://{} (Ctrl-C to stop)",
        server.local_addrs()[0]
    );
    let report = server.wait_closed().await?;
    eprintln!(
        "closed: {} requests served, {} connections drained, {} aborted",
        report.requests_served, report.drained, report.aborted
    );
    Ok(())
}
