//! Helpers shared by the worker's integration tests: a small app whose
//! handlers report what they are doing, a real HTTP client, and bounded
//! waits that fail with a message.
#![allow(dead_code)] // each test binary uses its own part of this

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use drover_worker::{ListenAddr, ServerHandle};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{Notify, OnceCell};
use tokio::task::JoinHandle;

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `fut`, failing the test with `what` if it takes longer than WAIT.
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// Signals between a test and the app's handlers.
#[derive(Default)]
pub struct Probe {
    /// Notified when `/hold` has been entered.
    pub entered: Notify,
    /// `/hold` answers once this is notified.
    pub release: Notify,
    /// The server's handle, for `/close`.
    pub handle: OnceCell<ServerHandle>,
    /// Set when a `/hold` handler has been dropped or has returned.
    pub left: AtomicBool,
}

/// `/` → "hello"; `/hold` → waits for `probe.release`; `/stream` → a
/// chunked body that never ends; `/close` → closes the server from inside
/// the handler and answers "closing".
pub fn app(probe: Arc<Probe>) -> Router {
    Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/hold", get(hold))
        .route("/stream", get(stream))
        .route("/close", get(close_from_handler))
        .with_state(probe)
}

async fn hold(State(probe): State<Arc<Probe>>) -> &'static str {
    struct Leaving<'a>(&'a Probe);
    impl Drop for Leaving<'_> {
        fn drop(&mut self) {
            self.0.left.store(true, Ordering::SeqCst);
        }
    }
    let _leaving = Leaving(&probe);
    let released = probe.release.notified();
    probe.entered.notify_one();
    released.await;
    "held"
}

async fn stream() -> axum::body::Body {
    axum::body::Body::new(Ticks(tokio::time::interval(Duration::from_millis(20))))
}

async fn close_from_handler(State(probe): State<Arc<Probe>>) -> &'static str {
    probe.handle.get().expect("test sets the handle").close();
    "closing"
}

/// A response body that sends a line every tick and never ends.
struct Ticks(tokio::time::Interval);

impl http_body::Body for Ticks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_tick(cx)
            .map(|_| Some(Ok(Frame::data(Bytes::from_static(b"tick\n")))))
    }
}

/// A server on `127.0.0.1:0` built by `builder`, serving [`app`], and the
/// address it listens on.
pub async fn serve(
    builder: drover_worker::Builder,
    probe: Arc<Probe>,
) -> (drover_worker::Server, ListenAddr) {
    let server = builder.bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = server.local_addrs()[0].clone();
    server
        .start_serving(app(probe))
        .await
        .expect("start_serving");
    (server, addr)
}

/// An HTTP/1.1 client on one keep-alive connection; `closed` resolves when
/// the server ends the connection.
pub struct Client {
    sender: http1::SendRequest<Empty<Bytes>>,
    pub closed: JoinHandle<Result<(), hyper::Error>>,
}

impl Client {
    pub async fn connect(addr: &ListenAddr) -> std::io::Result<Self> {
        match addr {
            ListenAddr::Tcp(a) => Ok(Self::over(TcpStream::connect(a).await?).await),
            ListenAddr::Unix(p) => Ok(Self::over(UnixStream::connect(p).await?).await),
        }
    }

    async fn over<S>(stream: S) -> Self
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .expect("client handshake does no I/O");
        let closed = tokio::spawn(connection);
        Self { sender, closed }
    }

    /// Sends `GET path`; the response with its head (body not read).
    pub async fn send(&mut self, path: &str) -> hyper::Result<Response<Incoming>> {
        self.sender.ready().await?;
        let request = Request::get(path)
            .header("host", "test")
            .body(Empty::new())
            .expect("valid request");
        self.sender.send_request(request).await
    }

    /// Sends `GET path` and reads the whole body.
    pub async fn get(&mut self, path: &str) -> (Response<()>, String) {
        let response = self.send(path).await.expect("response");
        read_body(response).await
    }
}

pub async fn read_body(response: Response<Incoming>) -> (Response<()>, String) {
    let (head, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (
        Response::from_parts(head, ()),
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

/// One GET on a fresh connection: status and body.
pub async fn get_once(addr: &ListenAddr, path: &str) -> (u16, String) {
    let mut client = Client::connect(addr).await.expect("connect");
    let (head, body) = client.get(path).await;
    (head.status().as_u16(), body)
}

/// Whether a fresh TCP connect to `addr` is refused.
pub async fn connect_refused(addr: &ListenAddr) -> bool {
    match addr {
        ListenAddr::Tcp(a) => TcpStream::connect(a).await.is_err(),
        ListenAddr::Unix(p) => UnixStream::connect(p).await.is_err(),
    }
}

/// A tracing subscriber for debugging failing tests (`RUST_LOG=debug`,
/// or `RUST_LOG=drover_worker=trace`).
pub fn init_logs() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter: tracing_subscriber::filter::Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| directives.parse().ok())
        .unwrap_or_default();
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_test_writer())
        .try_init();
}
