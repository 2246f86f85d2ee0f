//! A WebSocket echo server under drover, whose sockets say goodbye when
//! their worker is replaced.
//!
//! drover closes a worker gracefully (a rolling restart on HUP, a scale
//! down on TTOU, a stop): it stops accepting, lets the requests in flight
//! finish, then the worker exits. A WebSocket is not a request in flight:
//! once upgraded, the connection leaves the HTTP server, which neither
//! tracks nor waits for it. So the worker exits as soon as its plain HTTP
//! connections are done, cutting every socket still open (a bare TCP
//! close, no WebSocket Close frame: to the client, a network failure).
//!
//! The pattern: every socket's task also watches
//! [`Worker::closing`](drover::Worker::closing), which resolves when the
//! worker starts to close, and then ends the socket itself, with a Close
//! frame of code 1001 (Going Away). A client takes that as "reconnect",
//! and its new connection lands on a worker that stays (the replacement
//! accepts on the same sockets before the old worker is told to close).
//!
//! Routes:
//! - `/ws`: a WebSocket whose first message from the server is
//!   `hello from <pid>` (which worker answered); then every text or
//!   binary message is echoed back exactly.
//! - `/pid`: the worker's pid and a newline.
//!
//! ```text
//! cargo run -p drover-examples --bin websocket -- -w 2 -b 127.0.0.1:3000
//! websocat ws://127.0.0.1:3000/ws        # hello from 4242, then echoes
//! kill -HUP <supervisor pid>             # the socket closes: 1001 server restarting
//! ```

use std::future::Future;
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use drover::{Drover, Worker};

/// The reason sent with the Close frame when the worker closes.
const GOING_AWAY_REASON: &str = "server restarting";

/// How long a closing socket waits for the client's Close frame in reply
/// to its own before dropping the connection anyway.
const CLOSE_REPLY_TIMEOUT: Duration = Duration::from_secs(1);

/// The application, built once in every worker: the worker's context goes
/// into the router's state, for each socket to watch its closing.
async fn app(worker: Worker) -> Result<Router, std::convert::Infallible> {
    Ok(Router::new()
        .route("/ws", get(upgrade))
        .route(
            "/pid",
            get(|| async { format!("{}\n", std::process::id()) }),
        )
        .with_state(worker))
}

/// `/ws`: upgrades the connection and runs [`echo`] on it, tracked by the
/// worker (`Worker::track`): its process does not exit before the socket
/// has said goodbye (bounded by the graceful timeout).
async fn upgrade(State(worker): State<Worker>, upgrade: WebSocketUpgrade) -> Response {
    let tracked = worker.track();
    upgrade.on_upgrade(move |socket| async move {
        echo(socket, worker.closing()).await;
        drop(tracked);
    })
}

/// One socket: says which worker answers, echoes every text and binary
/// message, and when `closing` resolves says goodbye ([`going_away`]).
/// Ends when the client closes, the connection fails or the worker closes.
async fn echo(mut socket: WebSocket, closing: impl Future<Output = ()>) {
    let hello = format!("hello from {}", std::process::id());
    if socket.send(Message::Text(hello.into())).await.is_err() {
        return;
    }
    let mut closing = std::pin::pin!(closing);
    loop {
        let received = tokio::select! {
            () = &mut closing => return going_away(socket).await,
            received = socket.recv() => received,
        };
        let reply = match received {
            Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => message,
            // Pings are answered by the socket itself; pongs need nothing.
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            // The client closed (the socket replies to its Close frame), or
            // the connection failed.
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
        };
        if socket.send(reply).await.is_err() {
            return;
        }
    }
}

/// Ends `socket` because its worker closes: a Close frame with 1001 (Going
/// Away), then a bounded wait for the client's reply, as the protocol's
/// closing handshake asks (messages the client sent meanwhile are dropped:
/// it has been told to go elsewhere).
async fn going_away(mut socket: WebSocket) {
    let frame = CloseFrame {
        code: close_code::AWAY,
        reason: GOING_AWAY_REASON.into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let reply = async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_REPLY_TIMEOUT, reply).await;
}

/// drover's command line, its defaults, and [`app`] in every worker.
fn main() -> std::process::ExitCode {
    Drover::parse().serve(app)
}
