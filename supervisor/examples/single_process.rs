//! The baseline drover is measured against: one process, a multi-threaded
//! tokio runtime (one thread per CPU), `axum::serve` with the demo app.
//! What a Rust user would otherwise run.
//!
//! ```text
//! cargo run --release -p drover --example single_process -- 127.0.0.1:8001
//! ```

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8001".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    // The same socket option drover sets on its connections.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, drover::demo::app()).await
}
