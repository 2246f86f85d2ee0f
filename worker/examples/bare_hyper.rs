//! The baseline of `scripts/bench-conn-memory.py`: bare hyper, nothing
//! else. A tokio listener on a current-thread runtime, one task per
//! connection served by hyper's `http1::Builder` (or, with `auto` as the
//! second argument, hyper-util's `auto::Builder`, which also speaks HTTP/2),
//! answering `hello\n` to every request. No timeouts, no limits, no
//! shutdown: it runs until killed.
//!
//! ```text
//! cargo run --release -p drover-worker --example bare_hyper -- 127.0.0.1:8002 [http1|auto]
//! ```

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

async fn hello(_: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"hello\n"))))
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8002".into());
    let auto = match args.next().as_deref() {
        None | Some("http1") => false,
        Some("auto") => true,
        Some(other) => {
            return Err(std::io::Error::other(format!(
                "unknown mode {other:?} (http1 or auto)"
            )))
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    eprintln!("accept: {error}");
                    continue;
                }
            };
            let io = TokioIo::new(tcp);
            if auto {
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service_fn(hello))
                        .await;
                });
            } else {
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service_fn(hello))
                        .await;
                });
            }
        }
    })
}
