//! max_connections: beyond the limit, connections wait in the backlog.

mod common;

use std::sync::Arc;

use common::{app, within, Client, Probe};
use drover_worker::Server;

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
    assert_eq!(server.stats().open_connections, 1);
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
