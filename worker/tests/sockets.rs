//! Getting listeners: bind, adopt already-open ones, and the errors.

mod common;

use std::path::PathBuf;

use common::{app, connect_refused, get_once, within};
use drover_worker::{Error, ListenAddr, Listener, Server};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("drover-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn from_sockets_adopts_a_tcp_and_a_unix_listener_at_once() {
    let dir = temp_dir("mixed");
    let path = dir.join("app.sock");
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
    // Left blocking on purpose: the server sets the mode it needs.
    let server = Server::from_sockets([Listener::from(tcp), Listener::from(unix)]).unwrap();
    let addrs = server.local_addrs();
    assert!(matches!(addrs[0], ListenAddr::Tcp(_)));
    assert_eq!(addrs[1], ListenAddr::Unix(path.clone()));
    server.start_serving(app(Default::default())).await.unwrap();

    for addr in &addrs {
        assert_eq!(get_once(addr, "/").await, (200, "hello".into()), "{addr}");
    }
    server.close();
    within("wait_closed", server.wait_closed()).await.unwrap();
    for addr in &addrs {
        assert!(connect_refused(addr).await, "{addr} closed");
    }
    assert!(
        path.exists(),
        "an adopted socket's file belongs to whoever made it"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn from_sockets_adopts_tokio_listeners() {
    let a = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::from_sockets([a, b]).unwrap();
    server.start_serving(app(Default::default())).await.unwrap();
    for addr in server.local_addrs() {
        assert_eq!(get_once(&addr, "/").await.0, 200, "{addr}");
    }
    server.close();
    within("wait_closed", server.wait_closed()).await.unwrap();
}

#[tokio::test]
async fn binds_ipv6_loopback() {
    let server = Server::bind("[::1]:0").await.unwrap();
    let addr = server.local_addrs()[0].clone();
    assert!(addr.tcp().unwrap().is_ipv6());
    server.start_serving(app(Default::default())).await.unwrap();
    assert_eq!(get_once(&addr, "/").await.0, 200);
    server.close();
    within("wait_closed", server.wait_closed()).await.unwrap();
}

#[tokio::test]
async fn binds_a_unix_path_and_removes_the_file_it_created_on_close() {
    let dir = temp_dir("bind-unix");
    let path = dir.join("s.sock");
    let server = Server::bind(format!("unix:{}", path.display()))
        .await
        .unwrap();
    assert_eq!(server.local_addrs(), vec![ListenAddr::Unix(path.clone())]);
    server.start_serving(app(Default::default())).await.unwrap();
    assert_eq!(
        get_once(&server.local_addrs()[0], "/").await,
        (200, "hello".into())
    );
    server.close();
    assert!(!path.exists(), "the socket file goes with close()");
    within("wait_closed", server.wait_closed()).await.unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn bad_addresses_are_clear_errors() {
    for (addr, says) in [
        ("localhost", "expected HOST:PORT"),
        ("127.0.0.1:99999", "port"),
        ("::1:80", "brackets"),
        ("fd://nope", "descriptor number"),
        ("fd://3", "adopted, not opened"),
    ] {
        let err = Server::bind(addr).await.unwrap_err();
        assert!(matches!(err, Error::Bind(_)), "{addr}: {err:?}");
        let text = err.to_string();
        assert!(text.contains(addr) && text.contains(says), "{addr}: {text}");
    }
}

#[tokio::test]
async fn busy_port_is_a_clear_error_and_the_holder_keeps_serving() {
    let first = Server::bind("127.0.0.1:0").await.unwrap();
    let addr = first.local_addrs()[0].clone();
    first.start_serving(app(Default::default())).await.unwrap();
    let err = Server::bind(addr.to_string()).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&addr.to_string()) && text.contains("in use"),
        "{text}"
    );
    assert_eq!(get_once(&addr, "/").await.0, 200);
    first.close();
    within("wait_closed", first.wait_closed()).await.unwrap();
}

#[tokio::test]
async fn from_sockets_refuses_a_socket_that_is_only_bound() {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    let bound_only: std::net::TcpListener = socket.into();
    let err = Server::from_sockets([bound_only]).unwrap_err();
    assert!(matches!(err, Error::Adopt(_)), "{err:?}");
    assert!(err.to_string().contains("not a listening"), "{err}");
}

#[tokio::test]
async fn from_sockets_never_removes_the_socket_file_of_a_listener_it_was_given() {
    let dir = temp_dir("given-file");
    let path = dir.join("s.sock");
    // A listener that owns its file (as ListenerSpec::open makes them)...
    let listener = drover_worker::ListenerSpec::Unix(path.clone())
        .open(16)
        .unwrap();
    assert!(listener.socket_file().is_some());
    // ...handed to a server: the file stays the creator's.
    let server = Server::from_sockets([listener]).unwrap();
    server.start_serving(app(Default::default())).await.unwrap();
    server.close();
    within("wait_closed", server.wait_closed()).await.unwrap();
    assert!(path.exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn from_sockets_needs_at_least_one_listener() {
    let err = Server::from_sockets(Vec::<Listener>::new()).unwrap_err();
    assert!(err.to_string().contains("no listeners"), "{err}");
}
