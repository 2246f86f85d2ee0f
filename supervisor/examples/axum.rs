//! Your own axum app under drover: the same binary is the supervisor and
//! every worker, with drover's whole command line.
//!
//! ```text
//! cargo run --release -p drover --example axum -- -w 2 -b 127.0.0.1:8000
//! curl http://127.0.0.1:8000/
//! ```

use axum::routing::get;
use axum::Router;

fn app() -> Router {
    Router::new()
        .route("/", get(|| async { "hello from my axum app\n" }))
        .route(
            "/pid",
            get(|| async { format!("{}\n", std::process::id()) }),
        )
}

fn main() -> std::process::ExitCode {
    drover::run(app)
}
