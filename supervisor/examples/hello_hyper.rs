//! drover serving exactly what `worker/examples/bare_hyper.rs` serves: a
//! hyper `service_fn` answering `hello\n` with no headers of its own. The
//! subject `drover-hyper-app` of `scripts/bench-conn-memory.py`, so that
//! the comparison with bare hyper measures drover's own cost per
//! connection and nothing of the application's (the demo app is an axum
//! `Router`: its larger response future and its `content-type` header,
//! whose map hyper keeps per connection for the next request, are the
//! application's).
//!
//! ```text
//! cargo run --release -p drover --example hello_hyper -- -w 1 --bind 127.0.0.1:8003
//! ```

use std::convert::Infallible;

use bytes::Bytes;
use drover_worker::RequestBody;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};

async fn hello(_: Request<RequestBody>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"hello\n"))))
}

fn main() -> std::process::ExitCode {
    drover::run(|| service_fn(hello))
}
