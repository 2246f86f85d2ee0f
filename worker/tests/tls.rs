//! TLS on a server's TCP listeners, against real clients: curl over
//! HTTP/1.1 and HTTP/2 (ALPN), and rustls's own client across a
//! certificate swap. Test certificates are made here (rcgen).

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use drover_worker::{CertifiedPair, Server, Tls, TlsError, TlsVersion};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// A self-signed certificate for `localhost` and its key, PEM.
fn certificate() -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    (made.cert.pem(), made.signing_key.serialize_pem())
}

async fn tls_server(cert: &str, key: &str) -> (Server, Tls, SocketAddr) {
    tls_server_with(cert, key, |builder| builder).await
}

/// A TLS server answering `hi` at `/`, built with `options` too.
async fn tls_server_with(
    cert: &str,
    key: &str,
    options: impl FnOnce(drover_worker::Builder) -> drover_worker::Builder,
) -> (Server, Tls, SocketAddr) {
    let pair = CertifiedPair::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let tls = Tls::new(pair, TlsVersion::Tls12).unwrap();
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "hi\n" }));
    let server = options(Server::builder().tls(tls.clone()))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    server.start_serving(app).await.unwrap();
    let addr = server.local_addrs()[0].tcp().unwrap();
    (server, tls, addr)
}

/// curl against `addr` as `localhost`, trusting `ca` (a PEM file's
/// contents): its exit code, and what it printed (the body, then the HTTP
/// version).
async fn curl(addr: SocketAddr, ca: &str, extra: &[&str]) -> (i32, String) {
    let dir =
        std::env::temp_dir().join(format!("drover-tls-{}-{}", std::process::id(), addr.port()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join(format!("ca-{}.pem", rand_name(ca)));
    std::fs::write(&ca_file, ca).unwrap();
    let port = addr.port();
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(&ca_file)
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(["-w", "%{http_version}\n"])
        .args(extra)
        .arg(format!("https://localhost:{port}/"))
        .output()
        .await
        .expect("run curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

fn rand_name(text: &str) -> usize {
    text.len() ^ (text.as_bytes()[text.len() / 2] as usize) << 8
}

#[tokio::test]
async fn curl_is_served_over_https_with_http1_and_http2() {
    assert!(
        Command::new("curl").arg("--version").output().is_ok(),
        "curl is needed (scripts/test.sh installs it)"
    );
    let (cert, key) = certificate();
    let (server, _tls, addr) = tls_server(&cert, &key).await;
    let (code, out) = curl(addr, &cert, &["--http1.1"]).await;
    assert_eq!((code, out.as_str()), (0, "hi\n1.1\n"));
    let (code, out) = curl(addr, &cert, &["--http2"]).await;
    assert_eq!((code, out.as_str()), (0, "hi\n2\n"), "ALPN h2");
    // A plain-HTTP client on the TLS port fails alone, counted.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut answer)).await;
    assert!(!answer.starts_with(b"HTTP/1.1 200"));
    assert_eq!(server.handle().stats().tls_handshake_failures, 1);
    let (code, _) = curl(addr, &cert, &[]).await;
    assert_eq!(code, 0, "others are served");
    server.close();
    server.wait_closed().await.unwrap();
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused() {
    let (cert, _) = certificate();
    let (_, other_key) = certificate();
    let refused = CertifiedPair::from_pem(cert.as_bytes(), other_key.as_bytes()).unwrap_err();
    assert!(matches!(refused, TlsError::KeyMismatch), "{refused}");
    assert!(matches!(
        CertifiedPair::from_pem(b"", other_key.as_bytes()).unwrap_err(),
        TlsError::NoCertificate
    ));
    assert!(matches!(
        CertifiedPair::from_pem(cert.as_bytes(), b"not a key").unwrap_err(),
        TlsError::NoKey(_)
    ));
}

/// A rustls client connection to `addr` trusting `ca` alone.
async fn connect(
    addr: SocketAddr,
    ca: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

/// One keep-alive request on `stream`; the status line.
async fn request<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
) -> String {
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).await.unwrap();
    let mut line = String::new();
    // The rest of the head, then the 3-byte body.
    loop {
        line.clear();
        reader.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
    }
    let mut body = [0u8; 3];
    reader.read_exact(&mut body).await.unwrap();
    status
}

#[tokio::test]
async fn a_replaced_certificate_serves_new_handshakes_and_open_connections_go_on() {
    let (old_cert, old_key) = certificate();
    let (new_cert, new_key) = certificate();
    let (server, tls, addr) = tls_server(&old_cert, &old_key).await;
    let mut open = connect(addr, &old_cert).await.unwrap();
    assert!(request(&mut open).await.starts_with("HTTP/1.1 200"));

    tls.replace(CertifiedPair::from_pem(new_cert.as_bytes(), new_key.as_bytes()).unwrap());
    assert!(
        request(&mut open).await.starts_with("HTTP/1.1 200"),
        "the open connection keeps its certificate"
    );
    assert!(
        connect(addr, &old_cert).await.is_err(),
        "a new handshake gets the new certificate, which the old one does not sign"
    );
    let mut fresh = connect(addr, &new_cert).await.unwrap();
    assert!(request(&mut fresh).await.starts_with("HTTP/1.1 200"));
    drop((open, fresh));
    server.close();
    server.wait_closed().await.unwrap();
}

#[tokio::test]
async fn stalled_garbage_and_distrusting_handshakes_end_alone_and_are_counted() {
    let (cert, key) = certificate();
    let (server, _tls, addr) = tls_server_with(&cert, &key, |b| {
        b.header_read_timeout(Duration::from_millis(300))
    })
    .await;

    // Silent after the connect; a record header and nothing more; garbage.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let mut garbage = tokio::net::TcpStream::connect(addr).await.unwrap();
    garbage.write_all(&[0xff; 64]).await.unwrap();
    // Meanwhile, a real client is served.
    let mut served = connect(addr, &cert).await.unwrap();
    assert!(request(&mut served).await.starts_with("HTTP/1.1 200"));
    // A client that does not trust the certificate (another one's CA, as
    // with a wrong name) refuses it: its handshake fails on both sides.
    let (stranger, _) = certificate();
    assert!(connect(addr, &stranger).await.is_err());
    // At once (within its own 300 ms between requests), while the bad
    // ones are still open.
    assert!(
        request(&mut served).await.starts_with("HTTP/1.1 200"),
        "the served connection goes on"
    );
    for (what, client) in [
        ("silent", &mut silent),
        ("stalled", &mut stalled),
        ("garbage", &mut garbage),
    ] {
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut rest));
        assert!(ended.await.is_ok(), "the {what} handshake was never cut");
    }
    assert_eq!(server.handle().stats().tls_handshake_failures, 4);
    drop(served);
    server.close();
    server.wait_closed().await.unwrap();
}

#[tokio::test]
async fn an_idle_connection_closed_at_its_timeout_ends_with_close_notify() {
    let (cert, key) = certificate();
    let (server, _tls, addr) = tls_server_with(&cert, &key, |b| {
        b.keep_alive_timeout(Duration::from_millis(200))
    })
    .await;
    let mut idle = connect(addr, &cert).await.unwrap();
    assert!(request(&mut idle).await.starts_with("HTTP/1.1 200"));
    // rustls's client reads a close without close_notify as an error
    // (UnexpectedEof): a clean 0 is the alert.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut rest)).await;
    let read = read.expect("the idle connection was never closed");
    assert_eq!(read.map_err(|e| e.kind()).ok(), Some(0), "{rest:?}");
    server.close();
    server.wait_closed().await.unwrap();
}

/// A response body that sends one chunk, then waits for `fail` and
/// fails.
struct FailingBody {
    sent: bool,
    fail: tokio::sync::oneshot::Receiver<()>,
}

impl hyper::body::Body for FailingBody {
    type Data = hyper::body::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if !self.sent {
            self.sent = true;
            let chunk = hyper::body::Bytes::from_static(b"first\n");
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(chunk))));
        }
        let _ = std::task::ready!(std::future::Future::poll(
            std::pin::Pin::new(&mut self.fail),
            cx
        ));
        std::task::Poll::Ready(Some(Err(std::io::Error::other("the body failed"))))
    }
}

#[tokio::test]
async fn a_connection_cut_in_the_middle_of_a_response_ends_without_close_notify() {
    let (cert, key) = certificate();
    let pair = CertifiedPair::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let (fail, failing) = tokio::sync::oneshot::channel();
    let failing = Arc::new(std::sync::Mutex::new(Some(failing)));
    let body = move || {
        let fail = failing.lock().unwrap().take().expect("one request");
        async move { axum::body::Body::new(FailingBody { sent: false, fail }) }
    };
    let app = axum::Router::new().route("/failing", axum::routing::get(body));
    let server = Server::builder()
        .tls(Tls::new(pair, TlsVersion::Tls12).unwrap())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    server.start_serving(app).await.unwrap();
    let addr = server.local_addrs()[0].tcp().unwrap();
    let mut client = connect(addr, &cert).await.unwrap();
    client
        .write_all(b"GET /failing HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut reader = BufReader::new(client);
    let mut line = String::new();
    while !line.contains("first") {
        line.clear();
        assert!(
            reader.read_line(&mut line).await.unwrap() > 0,
            "no first chunk"
        );
    }
    // The body fails halfway: hyper ends the connection.
    fail.send(()).unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut rest)).await;
    let read = read.expect("the cut connection was never closed");
    assert_eq!(
        read.map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::UnexpectedEof),
        "a cut response must not end with close_notify"
    );
    server.close();
    server.wait_closed().await.unwrap();
}
