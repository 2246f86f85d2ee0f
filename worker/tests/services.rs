//! What start_serving accepts (axum, tower, hyper service_fn) and the
//! protocols it speaks (HTTP/1.1, HTTP/2 with prior knowledge).

mod common;

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use common::{get_once, serve, within, Probe};
use drover_worker::RequestBody;
use drover_worker::Server;
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

#[tokio::test]
async fn axum_router_is_served_with_no_adapter() {
    let router = axum::Router::new().route("/", axum::routing::get(|| async { "from axum" }));
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addrs()[0].clone();
    server.start_serving(router).await.unwrap();
    assert_eq!(get_once(&addr, "/").await, (200, "from axum".into()));
    server.close();
    within("wait_closed", server.wait_closed()).await.unwrap();
}

#[tokio::test]
async fn hyper_service_fn_is_served_with_no_adapter() {
    let service = hyper::service::service_fn(|request: Request<RequestBody>| async move {
        let body = format!("hyper saw {}", request.uri().path());
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
    });
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addrs()[0].clone();
    server.start_serving(service).await.unwrap();
    assert_eq!(get_once(&addr, "/x").await, (200, "hyper saw /x".into()));
    server.close();
    within("wait_closed", server.wait_closed()).await.unwrap();
}

/// A plain tower Service, neither axum nor hyper.
#[derive(Clone)]
struct Teapot;

impl tower_service::Service<Request<RequestBody>> for Teapot {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<RequestBody>) -> Self::Future {
        let mut response = Response::new(Full::new(Bytes::from_static(b"short and stout")));
        *response.status_mut() = http::StatusCode::IM_A_TEAPOT;
        ready(Ok(response))
    }
}

#[tokio::test]
async fn tower_service_is_served_with_no_adapter() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addrs()[0].clone();
    server.start_serving(Teapot).await.unwrap();
    assert_eq!(get_once(&addr, "/").await, (418, "short and stout".into()));
    server.close();
    within("wait_closed", server.wait_closed()).await.unwrap();
}

async fn http2_client(
    addr: std::net::SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    (sender, tokio::spawn(connection))
}

fn h2_get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("http://test{path}"))
        .version(Version::HTTP_2)
        .body(Empty::new())
        .unwrap()
}

#[tokio::test]
async fn http2_prior_knowledge_is_answered() {
    let (server, addr) = serve(Server::builder(), Default::default()).await;
    let addr = addr.tcp().unwrap();
    let (mut sender, _connection) = http2_client(addr).await;
    let response = within("h2 response", sender.send_request(h2_get("/")))
        .await
        .unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "hello");
    server.close();
    within("wait_closed", server.wait_closed()).await.unwrap();
}

#[tokio::test]
async fn http2_connection_gets_goaway_on_close_and_its_stream_completes() {
    let probe = Arc::new(Probe::default());
    // No idle limit: only the close may end the connection.
    let (server, addr) = serve(
        Server::builder()
            .keep_alive_timeout(None)
            .header_read_timeout(None),
        probe.clone(),
    )
    .await;
    let addr = addr.tcp().unwrap();
    let (mut sender, connection) = http2_client(addr).await;
    let held = tokio::spawn(sender.send_request(h2_get("/hold")));
    within("the handler to start", probe.entered.notified()).await;

    server.close();
    probe.release.notify_one();
    let response = within("the held h2 response", held).await.unwrap().unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "held");
    // After GOAWAY and the last stream, the server ends the connection.
    within("the h2 connection to end", connection)
        .await
        .unwrap()
        .unwrap();
    let report = within("wait_closed", server.wait_closed()).await.unwrap();
    assert_eq!((report.drained, report.aborted), (1, 0));
}

#[tokio::test]
async fn abort_stops_http2_handlers_before_wait_closed_returns() {
    let probe = Arc::new(Probe::default());
    let (server, addr) = serve(Server::builder(), probe.clone()).await;
    let addr = addr.tcp().unwrap();
    let (mut sender, _connection) = http2_client(addr).await;
    let held = tokio::spawn(sender.send_request(h2_get("/hold")));
    within("the handler to start", probe.entered.notified()).await;

    server.handle().abort();
    within("wait_closed", server.wait_closed()).await.unwrap();
    // hyper runs each HTTP/2 request on a task of its own: the server
    // tracks those too, so the handler is gone by now.
    assert!(probe.left.load(std::sync::atomic::Ordering::SeqCst));
    assert!(within("the held request", held).await.unwrap().is_err());
}

#[tokio::test]
async fn idle_http2_connection_is_closed_at_the_idle_limit() {
    let (server, addr) = serve(
        Server::builder().keep_alive_timeout(std::time::Duration::from_millis(50)),
        Default::default(),
    )
    .await;
    let addr = addr.tcp().unwrap();
    let (mut sender, connection) = http2_client(addr).await;
    let response = sender.send_request(h2_get("/")).await.unwrap();
    response.into_body().collect().await.unwrap();
    within("GOAWAY on an idle HTTP/2 connection", connection)
        .await
        .unwrap()
        .unwrap();
    server.close();
    within("wait_closed", server.wait_closed()).await.unwrap();
}

#[tokio::test]
async fn draining_close_ends_http2_connections_within_the_window() {
    let (server, addr) = serve(
        Server::builder()
            .keep_alive_timeout(None)
            .header_read_timeout(None)
            .graceful_timeout(None),
        Default::default(),
    )
    .await;
    let addr = addr.tcp().unwrap();
    // Connected, preface sent, no request yet: the server cannot tell it
    // is HTTP/2 from its requests.
    let (mut sender, connection) = http2_client(addr).await;
    server
        .handle()
        .close_draining(std::time::Duration::from_millis(100));
    // A request in the window is answered; the connection still ends.
    let response = within(
        "a request in the drain window",
        sender.send_request(h2_get("/")),
    )
    .await
    .unwrap();
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "hello"
    );
    within("the h2 connection to end", connection)
        .await
        .unwrap()
        .unwrap();
    within("wait_closed", server.wait_closed()).await.unwrap();
}

/// A client's stream whose writes go out at most `CHUNK` bytes at a time
/// (with TCP_NODELAY: one segment each), so that the server may see the
/// HTTP/2 preface arrive in pieces.
struct Trickle(TcpStream);

impl Trickle {
    const CHUNK: usize = 5;
}

impl tokio::io::AsyncRead for Trickle {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Trickle {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let end = buf.len().min(Self::CHUNK);
        std::pin::Pin::new(&mut self.0).poll_write(cx, &buf[..end])
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn http2_preface_sent_in_pieces_is_still_http2() {
    let (server, addr) = serve(Server::builder(), Default::default()).await;
    let stream = TcpStream::connect(addr.tcp().unwrap()).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(Trickle(stream)))
            .await
            .unwrap();
    let _connection = tokio::spawn(connection);
    let response = within("h2 response", sender.send_request(h2_get("/")))
        .await
        .unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "hello");
    server.close();
    within("wait_closed", server.wait_closed()).await.unwrap();
}

/// Reads until EOF (or a reset), bounded; returns what was read.
async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    let _ = within(
        "the server to end the connection",
        stream.read_to_end(&mut answer),
    )
    .await;
    answer
}

#[tokio::test]
async fn beginning_of_a_preface_then_silence_is_closed_at_the_idle_limit() {
    use tokio::io::AsyncWriteExt;
    let (server, addr) = serve(
        Server::builder().header_read_timeout(std::time::Duration::from_millis(100)),
        Default::default(),
    )
    .await;
    let mut stream = TcpStream::connect(addr.tcp().unwrap()).await.unwrap();
    stream.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    read_to_end(&mut stream).await;
    server.close();
    within("wait_closed", server.wait_closed()).await.unwrap();
}

#[tokio::test]
async fn beginning_of_a_preface_then_shutdown_ends_the_connection() {
    use tokio::io::AsyncWriteExt;
    // No idle limit: only the client's EOF may end the connection.
    let (server, addr) = serve(
        Server::builder()
            .keep_alive_timeout(None)
            .header_read_timeout(None),
        Default::default(),
    )
    .await;
    let mut stream = TcpStream::connect(addr.tcp().unwrap()).await.unwrap();
    stream.write_all(b"PRI * HTTP").await.unwrap();
    stream.shutdown().await.unwrap();
    // As HTTP/1: hyper reads a broken head, then EOF, and ends it.
    read_to_end(&mut stream).await;
    server.close();
    let report = within("wait_closed", server.wait_closed()).await.unwrap();
    assert_eq!(report.aborted, 0);
}
