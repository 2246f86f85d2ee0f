//! Serving one connection: HTTP/1.1 or HTTP/2, its keep-alive timeout, and
//! how it ends when the server closes.
//!
//! # Keep-alive
//!
//! hyper starts its request-head timer the moment an HTTP/1 connection
//! begins waiting for a request, before any byte arrives, so one timer
//! bounds both the time a keep-alive connection may sit idle and the time
//! a client may take to send a head (slowloris). The connection gets the
//! shorter of `keep_alive_timeout` and `header_read_timeout`, and this
//! module adds no timer of its own while the server runs.
//!
//! # Closing: fast or draining, one mechanism
//!
//! When the server closes, a connection in the middle of a request is told
//! to finish (hyper's graceful shutdown: HTTP/1 stops keep-alive, so the
//! response carries `connection: close`; HTTP/2 sends GOAWAY). An idle
//! HTTP/1 connection is given the *drain window*: a request arriving in it
//! is answered with `connection: close` and the connection then ends
//! cleanly; a connection that stays quiet for the whole window is closed.
//!
//! `close()` uses a window of zero (idle connections close at once: what a
//! test fixture wants); `close_draining(w)` a longer one, for a worker
//! being replaced under load. Closing an idle connection races with a
//! client that is just sending its next request on it: the bytes arrive
//! after our FIN, the kernel answers with a reset and the client sees an
//! error. Busy keep-alive clients send a request within any reasonable
//! window, get `connection: close` and stop reusing the connection; the
//! window shrinks the race to clients that were quiet for all of it.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

use crate::accept::Stream;
use crate::activity::{Activity, Tracked};
use crate::lifecycle::Lifecycle;
use crate::service::HttpService;

/// How a server speaks HTTP on its connections.
pub(crate) struct ConnectionConfig {
    http: auto::Builder<TokioExecutor>,
}

impl ConnectionConfig {
    /// `keep_alive`: how long an idle HTTP/1 connection stays open (`None`:
    /// no limit; zero: no keep-alive at all). `header_read_timeout`: how
    /// long a client may take to send a request head.
    pub(crate) fn new(keep_alive: Option<Duration>, header_read_timeout: Option<Duration>) -> Self {
        let head_timer = match (keep_alive.filter(|ka| !ka.is_zero()), header_read_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (one, other) => one.or(other),
        };
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(head_timer)
            .keep_alive(keep_alive != Some(Duration::ZERO));
        // No HTTP/2 timer: it only drives keep-alive pings, which are off.
        Self { http }
    }
}

/// How far a connection is on its way out.
enum Phase {
    /// Serving.
    Open,
    /// The server closed while this connection was idle: it ends after
    /// answering one more request, or after `window` of quiet from `since`.
    Draining {
        since: Instant,
        window: Duration,
        timer: Pin<Box<Sleep>>,
    },
    /// hyper was told to finish: in-flight requests complete, then it ends.
    Finishing,
}

/// Serves `stream` until the client leaves, the connection is closed by the
/// rules above, or the server aborts connections.
pub(crate) async fn serve_connection<S: HttpService>(
    stream: Stream,
    service: S,
    lifecycle: Arc<Lifecycle>,
    _permit: Option<OwnedSemaphorePermit>,
) {
    let _open = lifecycle.connection_opened();
    let activity = Arc::new(Activity::new());
    let service = Tracked::new(service, Arc::clone(&activity), Arc::clone(&lifecycle));
    let connection = lifecycle
        .connections
        .http
        .serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);

    let mut phase = Phase::Open;
    let result = loop {
        tokio::select! {
            biased;
            result = connection.as_mut() => break Some(result),
            () = lifecycle.aborting() => break None,
            () = lifecycle.closing(), if matches!(phase, Phase::Open) => {
                let window = lifecycle.drain_window();
                let idle_http1 = activity.idle_since().is_some() && !activity.is_http2();
                phase = if idle_http1 && !window.is_zero() {
                    let since = Instant::now();
                    let timer = Box::pin(tokio::time::sleep_until(since + window));
                    Phase::Draining { since, window, timer }
                } else {
                    connection.as_mut().graceful_shutdown();
                    Phase::Finishing
                };
            }
            () = drain_timer(&mut phase), if matches!(phase, Phase::Draining { .. }) => {
                // Requests never touch the timer, so when it fires, see
                // whether the connection really was quiet for the window.
                let Phase::Draining { since, window, timer } = &mut phase else {
                    unreachable!("the drain timer only runs while draining")
                };
                match activity.idle_since() {
                    Some(idle) if idle.max(*since) + *window > Instant::now() => {
                        timer.as_mut().reset(idle.max(*since) + *window);
                    }
                    // Quiet for the window, or a request came in during
                    // it: answer what is in flight, then end.
                    _ => {
                        connection.as_mut().graceful_shutdown();
                        phase = Phase::Finishing;
                    }
                }
            }
        }
    };

    match result {
        None => {
            lifecycle.count_aborted();
            tracing::debug!("connection aborted");
        }
        Some(result) => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
            if lifecycle.is_closing() {
                lifecycle.count_drained();
            }
        }
    }
}

/// Fires when the drain window of a draining connection ends.
async fn drain_timer(phase: &mut Phase) {
    match phase {
        Phase::Draining { timer, .. } => timer.as_mut().await,
        _ => std::future::pending().await,
    }
}
