//! The WebSocket example (src/bin/websocket.rs) end to end: the real
//! binary under its own supervisor, a real WebSocket client, a rolling
//! restart (HUP) while the client is connected, then a stop (TERM).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use drover_tests::{events, free_addr, get, Drover, WAIT};
use futures_util::{SinkExt, StreamExt};
use nix::sys::signal::Signal;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client's connection to `/ws`.
type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `--graceful-timeout`, in seconds: long, so that a socket closed by it
/// (the worker not saying goodbye) cannot pass for one the app closed.
const GRACEFUL_TIMEOUT: u64 = 30;

/// How long after the signal the Close frame may take: well under the
/// graceful timeout (the replacement's boot comes first).
const CLOSE_WITHIN: Duration = Duration::from_secs(10);

/// The reason the example sends with its 1001.
const GOING_AWAY_REASON: &str = "server restarting";

#[tokio::test(flavor = "current_thread")]
async fn a_rolling_restart_sends_going_away_and_the_client_reconnects_to_a_new_worker() {
    let addr = free_addr();
    let mut drover = start(addr);
    let old_workers = drover.worker_pids();
    assert_eq!(old_workers.len(), 2, "two workers: {old_workers:?}");
    let (status, body) = get(addr, "/pid").expect("GET /pid");
    let answered: i32 = body.trim().parse().expect("/pid answers a pid");
    assert_eq!(status, 200);
    assert!(
        body.ends_with('\n') && old_workers.contains(&answered),
        "/pid: {body:?}"
    );

    let (mut client, first_pid) = connect(addr).await;
    assert!(
        old_workers.contains(&first_pid),
        "the hello names a worker of this supervisor: {first_pid} not in {old_workers:?}"
    );
    exchange(&mut client, "first connection").await;

    // The rolling restart: replaces workers 1 and 2, one at a time.
    let since = drover.log.len();
    drover.signal(Signal::SIGHUP);
    expect_going_away(&mut client, "the rolling restart").await;
    drover.wait_for_event_since(since, events::RESTART_COMPLETE, |_| true);
    for id in [1, 2] {
        drover.wait_for_event_since(since, events::WORKER_LEFT, |e| e.is_of_worker(id));
    }
    let new_workers = drover.worker_pids();
    assert_all_gone(&old_workers, &new_workers);

    let (mut client, second_pid) = connect(addr).await;
    assert!(
        new_workers.contains(&second_pid) && second_pid != first_pid,
        "reconnected to {second_pid}: not a new worker ({new_workers:?}; old {old_workers:?})"
    );
    exchange(&mut client, "second connection").await;

    // A stop closes the sockets the same way.
    drover.signal(Signal::SIGTERM);
    expect_going_away(&mut client, "the stop").await;
    assert_eq!(drover.wait_exit(), 0, "{}", drover.log.join("\n"));
}

/// Many sockets, on workers with two runtime threads each: every one gets
/// its goodbye before its worker exits (the worker waits for the sockets'
/// tracked work), not only the ones a single-threaded runtime happens to
/// run first.
#[tokio::test(flavor = "current_thread")]
async fn every_socket_of_a_multi_threaded_worker_gets_its_goodbye() {
    let addr = free_addr();
    let mut drover = start_with(addr, &["--threads", "2"]);
    let mut clients = Vec::new();
    for _ in 0..64 {
        let (client, _pid) = connect(addr).await;
        clients.push(client);
    }
    drover.signal(Signal::SIGTERM);
    for (n, client) in clients.iter_mut().enumerate() {
        expect_going_away(client, &format!("the stop (socket {n})")).await;
    }
    assert_eq!(drover.wait_exit(), 0, "{}", drover.log.join("\n"));
}

/// The example on `addr`, two workers, once it is ready.
fn start(addr: SocketAddr) -> Drover {
    start_with(addr, &[])
}

/// The example on `addr`, two workers and `args`, once it is ready.
fn start_with(addr: SocketAddr, args: &[&str]) -> Drover {
    let mut command = Command::new(env!("CARGO_BIN_EXE_websocket"));
    let graceful = GRACEFUL_TIMEOUT.to_string();
    let bind = addr.to_string();
    command.args(["-w", "2", "-b", &bind, "--graceful-timeout", &graceful]);
    command.args(args);
    let mut drover = Drover::spawn(command);
    drover.wait_for_event(events::READY);
    drover
}

/// Connects to `/ws` and reads the server's hello: the client and the pid
/// of the worker it landed on. No retry: the listening socket is open
/// throughout a rolling restart, so a failed connect is a failure.
async fn connect(addr: SocketAddr) -> (Client, i32) {
    let url = format!("ws://{addr}/ws");
    let (mut client, _response) =
        tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(&url))
            .await
            .unwrap_or_else(|_| panic!("no WebSocket handshake with {url} within {WAIT:?}"))
            .unwrap_or_else(|error| panic!("connecting to {url}: {error}"));
    let hello = next_message(&mut client, "the hello").await;
    let Message::Text(hello) = hello else {
        panic!("the first message is not the hello text: {hello:?}");
    };
    let pid = hello
        .strip_prefix("hello from ")
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("not a hello with a pid: {hello:?}"));
    (client, pid)
}

/// Sends a few text and binary messages (all before reading, so some are
/// in flight together) and checks that each comes back exactly, in order.
async fn exchange(client: &mut Client, label: &str) {
    let sent: Vec<Message> = (0..5)
        .flat_map(|n| {
            [
                Message::text(format!("{label}: message {n} ✓")),
                Message::binary(vec![n, 0, 255, n]),
            ]
        })
        .chain([Message::text(""), Message::binary(vec![7; 70_000])])
        .collect();
    for message in &sent {
        client
            .send(message.clone())
            .await
            .unwrap_or_else(|error| panic!("sending {message:?} ({label}): {error}"));
    }
    for message in &sent {
        let echo = next_message(client, &format!("the echo of {message:?}")).await;
        assert_eq!(&echo, message, "{label}: not an exact echo");
    }
}

/// The next message from the server (pings and pongs skipped); fails after
/// WAIT, or if the connection ends or fails first.
async fn next_message(client: &mut Client, what: &str) -> Message {
    let next = async {
        loop {
            match client.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(message)) => return message,
                Some(Err(error)) => panic!("the connection failed before {what}: {error}"),
                None => panic!("the connection ended before {what}"),
            }
        }
    };
    tokio::time::timeout(WAIT, next)
        .await
        .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
}

/// Waits (at most CLOSE_WITHIN) for the server's Close frame, which must
/// come first (no other message) and say Going Away; then the closing
/// handshake ends the connection.
async fn expect_going_away(client: &mut Client, cause: &str) {
    let what = format!("the Close frame of {cause}");
    let message = tokio::time::timeout(CLOSE_WITHIN, next_message(client, &what))
        .await
        .unwrap_or_else(|_| panic!("no Close frame within {CLOSE_WITHIN:?} of {cause}"));
    let expected = CloseFrame {
        code: CloseCode::Away,
        reason: GOING_AWAY_REASON.into(),
    };
    assert_eq!(message, Message::Close(Some(expected)), "{cause}");
    // tungstenite has queued the reply; the stream ends once it is sent.
    let end = tokio::time::timeout(WAIT, client.next())
        .await
        .unwrap_or_else(|_| panic!("the connection still open {WAIT:?} after {cause}'s Close"));
    assert!(
        matches!(end, None | Some(Err(_))),
        "a message after the Close frame: {end:?}"
    );
}

/// The workers before the restart (`old`) have exited and are no longer
/// among the supervisor's workers (`new`, as many as before).
fn assert_all_gone(old: &HashSet<i32>, new: &HashSet<i32>) {
    assert_eq!(new.len(), old.len(), "as many workers as before: {new:?}");
    assert!(
        new.is_disjoint(old),
        "every worker replaced: {old:?} → {new:?}"
    );
    for &pid in old {
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None);
        assert_eq!(
            alive,
            Err(nix::errno::Errno::ESRCH),
            "old worker {pid} still exists"
        );
    }
}
