//! Who the client is, in every request: axum's own `ConnectInfo` extractor
//! works with no `into_make_service_with_connect_info`, and the same
//! values (with `LocalAddr`) are there for any framework.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::{Extension, Router};
use drover_worker::{LocalAddr, Server, UnixPeer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends one `GET path` with `connection: close` on `stream`; the body.
async fn get_on<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    path: &str,
) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response.split("\r\n\r\n").nth(1).unwrap().to_owned()
}

#[tokio::test]
async fn axums_connect_info_extractor_gets_the_clients_address() {
    let app = Router::new()
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        )
        .route(
            "/ends",
            get(
                |Extension(drover_worker::ConnectInfo(peer)): Extension<
                    drover_worker::ConnectInfo<SocketAddr>,
                >,
                 Extension(LocalAddr(local)): Extension<LocalAddr>| async move {
                    format!("{peer} {local}")
                },
            ),
        );
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    server.start_serving(app).await.unwrap();
    let addr = server.local_addrs()[0].tcp().unwrap();

    let client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let client_addr = client.local_addr().unwrap();
    assert_eq!(get_on(client, "/peer").await, client_addr.to_string());

    let client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let client_addr = client.local_addr().unwrap();
    assert_eq!(
        get_on(client, "/ends").await,
        format!("{client_addr} {addr}")
    );
    server.close();
    server.wait_closed().await.unwrap();
}

#[tokio::test]
async fn a_unix_socket_client_is_known_by_its_credentials() {
    let app = Router::new().route(
        "/who",
        get(|ConnectInfo(peer): ConnectInfo<UnixPeer>| async move {
            let credentials = peer.credentials.expect("SO_PEERCRED");
            format!("{} {:?}", credentials.uid(), credentials.pid())
        }),
    );
    let dir = std::env::temp_dir().join(format!("drover-connect-info-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s");
    let _ = std::fs::remove_file(&path);
    let spec = format!("unix:{}", path.display());
    let server = Server::bind(spec.as_str()).await.unwrap();
    server.start_serving(app).await.unwrap();

    let client = tokio::net::UnixStream::connect(&path).await.unwrap();
    let expected = format!(
        "{} {:?}",
        nix::unistd::getuid().as_raw(),
        Some(std::process::id() as i32)
    );
    assert_eq!(get_on(client, "/who").await, expected);
    server.close();
    server.wait_closed().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
