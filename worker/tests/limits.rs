//! max_connections: beyond the limit, connections wait in the backlog.

mod common;

use std::sync::Arc;

use common::{app, serve, within, Client, Probe};
use drover_worker::{Listener, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How many connections wait in the accept queue of the TCP listener on
/// `port` (the kernel's rx_queue of a LISTEN socket in /proc/net/tcp).
fn accept_queue(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(fields[1].rsplit(':').next()?, 16).ok()?;
            let listening = fields[3] == "0A";
            let rx = fields[4].split(':').nth(1)?;
            (listening && local_port == port).then(|| usize::from_str_radix(rx, 16).unwrap())
        })
        .next()
        .expect("the listener is in /proc/net/tcp")
}

#[tokio::test]
async fn beyond_max_connections_clients_wait_in_the_backlog() {
    let probe = Arc::new(Probe::default());
    let server = Server::builder()
        .max_connections(1)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addrs()[0].clone();
    let port = addr.tcp().unwrap().port();
    server.start_serving(app(probe.clone())).await.unwrap();

    let mut first = Client::connect(&addr).await.unwrap();
    assert_eq!(first.get("/").await.1, "hello");
    let mut second = Client::connect(&addr).await.unwrap();
    let waiting = tokio::spawn(async move { second.get("/").await.1 });

    // No event tells that a connection sits in the kernel's accept queue,
    // so watch the queue itself, bounded by `within`.
    within("the second connection to wait in the backlog", async {
        while accept_queue(port) != 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(server.handle().stats().open_connections, 1);
    assert!(!waiting.is_finished());

    drop(first); // frees the only slot
    assert_eq!(
        within("the waiting client", waiting).await.unwrap(),
        "hello"
    );
    assert_eq!(accept_queue(port), 0);
    server.close();
    within("wait_closed", server.wait_closed()).await.unwrap();
}

#[tokio::test]
async fn max_connections_is_shared_by_all_listeners_without_starving_one() {
    let dir = std::env::temp_dir().join(format!("drover-limit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let unix = std::os::unix::net::UnixListener::bind(dir.join("s.sock")).unwrap();
    let server = Server::builder()
        .max_connections(1)
        .from_sockets([Listener::from(tcp), Listener::from(unix)])
        .unwrap();
    server.start_serving(app(Default::default())).await.unwrap();
    // One connection at a time, on either listener, each served in turn.
    for addr in server
        .local_addrs()
        .iter()
        .chain(server.local_addrs().iter())
    {
        let mut client = Client::connect(addr).await.unwrap();
        assert_eq!(
            within("a response", client.get("/")).await.1,
            "hello",
            "{addr}"
        );
        drop(client);
    }
    server.close();
    within("wait_closed", server.wait_closed()).await.unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn draining_close_answers_a_connection_waiting_in_the_accept_queue() {
    let (server, addr) = serve(Server::builder().max_connections(1), Default::default()).await;
    // The only slot is taken, so the next connection waits in the queue
    // with its request already sent.
    let mut first = Client::connect(&addr).await.unwrap();
    first.get("/").await;
    let mut queued = tokio::net::TcpStream::connect(addr.tcp().unwrap())
        .await
        .unwrap();
    queued
        .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();

    server
        .handle()
        .close_draining(std::time::Duration::from_millis(1));
    let mut answer = String::new();
    within(
        "the queued request's answer",
        queued.read_to_string(&mut answer),
    )
    .await
    .expect("answered, not reset");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(answer.ends_with("hello"), "{answer}");
    within("wait_closed", server.wait_closed()).await.unwrap();
}
