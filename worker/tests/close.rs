//! How connections end when the server closes: fast, draining, at the
//! graceful deadline, on abort, and at the keep-alive timeout.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{app, read_body, serve, within, Client, Probe};
use drover_worker::Server;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server whose idle connections stay until closed: the keep-alive limit
/// must not be what ends them in these tests.
async fn server_without_idle_limit() -> Server {
    Server::builder()
        .keep_alive_timeout(None)
        .header_read_timeout(None)
        .bind("127.0.0.1:0")
        .await
        .unwrap()
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_at_once_by_close() {
    let server = server_without_idle_limit().await;
    let addr = server.local_addrs()[0].clone();
    server.start_serving(app(Default::default())).await.unwrap();
    let mut client = Client::connect(&addr).await.unwrap();
    let (head, _) = client.get("/").await;
    assert_ne!(
        head.headers()
            .get("connection")
            .map(|v| v.to_str().unwrap()),
        Some("close"),
        "kept alive before close"
    );

    server.close();
    within("the server to end the idle connection", client.closed)
        .await
        .unwrap()
        .expect("a clean EOF");
    let report = within("wait_closed", server.wait_closed()).await.unwrap();
    assert_eq!((report.drained, report.aborted), (1, 0));
}

#[tokio::test]
async fn in_flight_request_completes_with_connection_close() {
    let probe = Arc::new(Probe::default());
    let (server, addr) = serve(Server::builder(), probe.clone()).await;
    let mut client = Client::connect(&addr).await.unwrap();

    let response = tokio::spawn(async move {
        let (head, body) = client.get("/hold").await;
        (head, body, client.closed)
    });
    within("the handler to start", probe.entered.notified()).await;
    server.close();
    probe.release.notify_one();

    let (head, body, closed) = within("the held response", response).await.unwrap();
    assert_eq!((head.status().as_u16(), body.as_str()), (200, "held"));
    assert_eq!(head.headers()["connection"], "close");
    within("connection end", closed).await.unwrap().unwrap();
    let report = within("wait_closed", server.wait_closed()).await.unwrap();
    assert_eq!((report.drained, report.aborted), (1, 0));
}

#[tokio::test]
async fn endless_stream_is_aborted_at_the_graceful_deadline_and_counted() {
    let (server, addr) = serve(
        Server::builder().graceful_timeout(Duration::from_millis(200)),
        Default::default(),
    )
    .await;
    let mut client = Client::connect(&addr).await.unwrap();
    let mut body = client.send("/stream").await.unwrap().into_body();
    let first = within("the first chunk", body.frame())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "tick\n");

    server.close();
    // Not cut at close: the stream goes on until the deadline.
    let after_close = within("a chunk after close", body.frame())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after_close.into_data().unwrap(), "tick\n");
    let report = within("wait_closed", server.wait_closed()).await.unwrap();
    assert_eq!((report.drained, report.aborted), (0, 1));
    // The client sees the stream cut, not a clean end.
    let rest = within("the cut stream", body.collect()).await;
    assert!(rest.is_err(), "a chunked body cut short is an error");
}

#[tokio::test]
async fn abort_cuts_in_flight_requests_at_once() {
    let probe = Arc::new(Probe::default());
    let (server, addr) = serve(Server::builder(), probe.clone()).await;
    let mut client = Client::connect(&addr).await.unwrap();
    let response = tokio::spawn(async move { client.send("/hold").await });
    within("the handler to start", probe.entered.notified()).await;

    server.handle().abort();
    let report = within("wait_closed", server.wait_closed()).await.unwrap();
    assert_eq!((report.drained, report.aborted), (0, 1));
    assert!(within("the response", response).await.unwrap().is_err());
}

#[tokio::test]
async fn draining_close_answers_a_request_on_an_idle_connection() {
    let server = server_without_idle_limit().await;
    let addr = server.local_addrs()[0].clone();
    server.start_serving(app(Default::default())).await.unwrap();
    let mut client = Client::connect(&addr).await.unwrap();
    client.get("/").await;

    // The window outlasts this test (and any deadline arithmetic): the
    // connection must end because it answered, not because time ran out.
    server.handle().close_draining(Duration::MAX);
    let (head, body) = within("a request during the drain", client.get("/")).await;
    assert_eq!(body, "hello");
    assert_eq!(head.headers()["connection"], "close");
    within("connection end", client.closed)
        .await
        .unwrap()
        .unwrap();
    let report = within("wait_closed", server.wait_closed()).await.unwrap();
    assert_eq!((report.drained, report.aborted), (1, 0));
}

#[tokio::test]
async fn draining_close_ends_a_quiet_connection_after_the_window() {
    let server = server_without_idle_limit().await;
    let addr = server.local_addrs()[0].clone();
    server.start_serving(app(Default::default())).await.unwrap();
    let mut client = Client::connect(&addr).await.unwrap();
    client.get("/").await;

    server.handle().close_draining(Duration::from_millis(50));
    within("the quiet connection to end", client.closed)
        .await
        .unwrap()
        .unwrap();
    let report = within("wait_closed", server.wait_closed()).await.unwrap();
    assert_eq!((report.drained, report.aborted), (1, 0));
}

#[tokio::test]
async fn keep_alive_timeout_closes_idle_connections_while_serving() {
    let (server, addr) = serve(
        Server::builder().keep_alive_timeout(Duration::from_millis(50)),
        Default::default(),
    )
    .await;
    let mut client = Client::connect(&addr).await.unwrap();
    client.get("/").await;
    within("the keep-alive timeout", client.closed)
        .await
        .unwrap()
        .unwrap();
    assert!(server.is_serving());
    assert_eq!(server.handle().stats().open_connections, 0);
    server.close();
    within("wait_closed", server.wait_closed()).await.unwrap();
}

#[tokio::test]
async fn keep_alive_timeout_never_cuts_a_slow_request() {
    let probe = Arc::new(Probe::default());
    let (server, addr) = serve(
        Server::builder().keep_alive_timeout(Duration::from_millis(20)),
        probe.clone(),
    )
    .await;
    let mut busy = Client::connect(&addr).await.unwrap();
    let response = tokio::spawn(async move { busy.send("/hold").await });
    within("the handler to start", probe.entered.notified()).await;

    // An idle connection opened now is cut after the keep-alive limit: once
    // that has happened, the busy one has been busy for longer than it.
    let mut idle = Client::connect(&addr).await.unwrap();
    idle.get("/").await;
    within("the idle connection's keep-alive limit", idle.closed)
        .await
        .unwrap()
        .unwrap();

    probe.release.notify_one();
    let (head, body) = read_body(
        within("the held response", response)
            .await
            .unwrap()
            .unwrap(),
    )
    .await;
    assert_eq!((head.status().as_u16(), body.as_str()), (200, "held"));
    server.close();
    within("wait_closed", server.wait_closed()).await.unwrap();
}

#[tokio::test]
async fn a_client_that_never_sends_anything_is_closed_at_the_idle_limit() {
    let server = Server::builder()
        .keep_alive_timeout(Duration::from_millis(50))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addrs()[0].tcp().unwrap();
    server.start_serving(app(Default::default())).await.unwrap();
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 1];
    let read = within(
        "the server to close a silent connection",
        silent.read(&mut buf),
    )
    .await;
    assert!(matches!(read, Ok(0)), "{read:?}");
    server.close();
    within("wait_closed", server.wait_closed()).await.unwrap();
}

#[tokio::test]
async fn draining_close_answers_a_request_sent_just_before_it() {
    let server = server_without_idle_limit().await;
    let addr = server.local_addrs()[0].tcp().unwrap();
    server.start_serving(app(Default::default())).await.unwrap();
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = b"GET / HTTP/1.1\r\nhost: test\r\n\r\n";
    client.write_all(request).await.unwrap();
    let mut first = Vec::new();
    while !first.ends_with(b"hello") {
        let mut chunk = [0u8; 512];
        let n = within("the first response", client.read(&mut chunk))
            .await
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&first));
        first.extend_from_slice(&chunk[..n]);
    }

    // The next request is in the server's socket when the close runs,
    // before the server has had a chance to read it; the window is far
    // shorter than it takes to notice.
    client.write_all(request).await.unwrap();
    server.handle().close_draining(Duration::from_nanos(1));
    let mut second = String::new();
    within("the second response", client.read_to_string(&mut second))
        .await
        .expect("answered, not reset");
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert!(second.contains("connection: close"), "{second}");
    assert!(second.ends_with("hello"), "{second}");
    within("wait_closed", server.wait_closed()).await.unwrap();
}

#[tokio::test]
async fn a_fast_close_cuts_short_the_drain_window_of_an_earlier_draining_close() {
    let (server, addr) = serve(
        Server::builder()
            .keep_alive_timeout(None)
            .header_read_timeout(None),
        Default::default(),
    )
    .await;
    let mut client = Client::connect(&addr).await.unwrap();
    client.get("/").await;
    server.handle().close_draining(Duration::from_secs(3600));
    server.close();
    within("the idle connection to end after close()", client.closed)
        .await
        .unwrap()
        .unwrap();
    within("wait_closed", server.wait_closed()).await.unwrap();
}

#[tokio::test]
async fn a_panicking_shutdown_hook_still_lets_wait_closed_resolve() {
    let (server, _addr) = serve(
        Server::builder().on_shutdown(|| async { panic!("hook exploded") }),
        Default::default(),
    )
    .await;
    server.close();
    let closed = within("wait_closed", server.wait_closed()).await;
    assert!(
        matches!(closed, Err(drover_worker::Error::ShutdownInterrupted)),
        "{closed:?}"
    );
}
