//! Serving one connection: HTTP/1.1 or HTTP/2, its idle limits, and how it
//! ends when the server closes.
//!
//! # Idle limits
//!
//! hyper's request-head timer starts the moment an HTTP/1 connection waits
//! for its next request, so after a first request it bounds both the idle
//! time between requests and the time a client takes to send a head
//! (slowloris). The connection gets the shorter of `keep_alive_timeout` and
//! `header_read_timeout` for it. That timer does not run before hyper knows
//! the protocol, nor on HTTP/2, so there the connection keeps a watchdog of
//! its own with the same limit: a client that connects and sends nothing is
//! closed, and so is an HTTP/2 connection idle for the limit (with GOAWAY).
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
//! being replaced under load.
//!
//! A draining close, whose point is that no client sees an error, closes
//! three races:
//! - *The last response vs. the next request.* A response written before
//!   the close carries no `connection: close`, so its client may send its
//!   next request on the connection at any moment after the close. The
//!   connection is therefore not closed while idle, but kept for the drain
//!   window: the request that arrives in it is answered with `connection:
//!   close`, and the connection ends after that answer, when the client
//!   knows not to send more. A request in flight at the close is answered
//!   the same way (hyper turns keep-alive off for it).
//! - *Idle close vs. bytes already in the socket.* The request may have
//!   reached our socket while this task has not read it yet (the runtime
//!   learns of readable sockets only when it next asks the kernel); closing
//!   then would make the kernel reset the connection. Before an idle
//!   connection is closed, at the close or at the end of the window, the
//!   socket is peeked, and unread bytes get [`UNREAD_GRACE`] to become a
//!   request, which is answered with `connection: close`.
//! - *A request still on its way when the window ends.* Closing would make
//!   the kernel answer it with a reset. Only a client quiet for the whole
//!   window (the keep-alive timeout, under drover) can meet this, which is
//!   the same race every keep-alive timeout has; busy clients send within
//!   the window and get `connection: close`.
//!
//! The third place a connection can be lost, the accept queue of a closed
//! listener, is the listeners' (see `ListenerSlot::close`): a socket shared
//! with other processes keeps its queue for them; a server's own socket
//! has its queue taken and served at a draining close.
//!
//! A fast close (`close()`) accepts these races: nothing would serve the
//! client anyway, and a fixture wants the close over at once.
//!
//! Upgraded connections (WebSocket) leave hyper, and with it this module,
//! once upgraded: they belong to the application, which can end them when
//! [`ServerHandle::closing`](crate::ServerHandle::closing) resolves.

use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

use crate::activity::{ConnectionActivity, ConnectionService};
use crate::hyper_conn::HttpConnection;
use crate::lifecycle::Lifecycle;
use crate::peer::Peer;
use crate::server_core::ServerCore;
use crate::service::HttpService;
use crate::stream::{peek, ResponseRecord, Stream, TlsConnection};

/// How long bytes found unread on an idle connection at close get to
/// become a request (they are already there: hyper reads them at its next
/// turn; this only bounds a client that sent part of a request and
/// stopped).
const UNREAD_GRACE: Duration = Duration::from_secs(1);

/// A connection's one timer, allocated the first time it is armed (most
/// connections never arm it: see `serve_connection`).
#[derive(Default)]
struct Timer(Option<Pin<Box<Sleep>>>);

impl Timer {
    /// Arms it for `deadline`.
    fn set(&mut self, deadline: Instant) {
        match &mut self.0 {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.0 = Some(Box::pin(tokio::time::sleep_until(deadline))), // sleep-ok: a deadline timer, reset to exact deadlines, never a polling loop
        }
    }

    /// Resolves at the deadline last set; never if none was.
    async fn wait(&mut self) {
        match &mut self.0 {
            Some(sleep) => sleep.as_mut().await,
            None => std::future::pending().await,
        }
    }
}

/// How far a connection is on its way out.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Serving. `watched`: the watchdog runs (no request yet, or HTTP/2).
    Open { watched: bool },
    /// The server closed while this connection was idle: it ends after
    /// answering one more request, or after `window` of quiet from `since`.
    Draining { since: Instant, window: Duration },
    /// hyper was told to finish: in-flight requests complete, then it ends.
    Finishing,
}

impl Phase {
    /// Whether a signal this phase acts on has fired (close while open,
    /// hurry while draining).
    fn awaits<P>(self, lifecycle: &Lifecycle<P>) -> bool {
        match self {
            Self::Open { .. } => lifecycle.is_closing(),
            Self::Draining { .. } => lifecycle.is_hurrying(),
            Self::Finishing => false,
        }
    }

    /// Whether the connection's timer is waited on in this phase.
    fn timer_armed(self) -> bool {
        match self {
            Self::Open { watched } => watched,
            Self::Draining { .. } => true,
            Self::Finishing => false,
        }
    }

    /// The phase of an open connection once the server closes: finishing,
    /// or draining with the timer set to the end of the window.
    fn at_close(
        core: &ServerCore,
        activity: &ConnectionActivity,
        fd: RawFd,
        timer: &mut Timer,
    ) -> Self {
        let idle_http1 = activity.idle_since().is_some() && !activity.is_http2();
        let window = match core.lifecycle.drain_window() {
            _ if !idle_http1 => Duration::ZERO,
            window if !window.is_zero() && has_unread_bytes(fd) => window.max(UNREAD_GRACE),
            window => window,
        };
        if window.is_zero() {
            // Not through the timer: tokio rounds deadlines up to the next
            // millisecond, and a fast close must be fast.
            Self::Finishing
        } else {
            let since = Instant::now();
            timer.set(later(since, window));
            Self::Draining { since, window }
        }
    }

    /// The phase once the timer fired. Requests never touch the timer:
    /// when it fires, see whether the connection was quiet for long enough;
    /// if not, set it to the moment it will have been.
    fn at_timer(
        self,
        activity: &ConnectionActivity,
        idle_limit: Option<Duration>,
        fd: RawFd,
        timer: &mut Timer,
    ) -> Self {
        let quiet_until = match self {
            Self::Open { .. } => watchdog_deadline(activity, idle_limit),
            Self::Draining { since, window } => drain_deadline(activity, fd, since, window),
            Self::Finishing => None,
        };
        match quiet_until {
            Some(Deadline::At(deadline)) => {
                timer.set(deadline);
                self
            }
            Some(Deadline::Passed) => Self::Finishing,
            // hyper's head timer has taken over.
            None => Self::Open { watched: false },
        }
    }
}

/// Serves `stream` until the client leaves, the connection is closed by the
/// rules above, or the server aborts connections; over the server's TLS
/// when `tls` (its listener speaks TLS).
pub(crate) async fn serve_connection<S: HttpService>(
    stream: Stream,
    peer: Peer,
    tls: bool,
    service: S,
    core: Arc<ServerCore>,
    _permit: Option<OwnedSemaphorePermit>,
) {
    let _open = core.counters.connection_opened();
    let mut stream = match (stream, core.connections.tls.as_ref().filter(|_| tls)) {
        (Stream::Tcp(tcp), Some(tls)) => match handshake(tls, tcp, &core).await {
            Some(tls) => tls,
            None => return,
        },
        (stream, _) => stream,
    };
    let opened = Instant::now();
    // For peeking at unread bytes; valid while hyper holds the stream,
    // which is as long as `connection` below runs.
    let fd = stream.as_raw_fd();
    let certificate = stream.client_certificate();
    let activity = Arc::new(ConnectionActivity::new(
        opened,
        Arc::clone(&core),
        peer,
        certificate,
    ));
    if let Stream::Tls(tls) = &mut stream {
        tls.says_goodbye_when_idle(Arc::clone(&activity) as Arc<dyn ResponseRecord>);
    }
    let service = ConnectionService::new(service, Arc::clone(&activity));
    let config = &core.connections;
    let connection = HttpConnection::new(stream, service, config);
    tokio::pin!(connection);

    // The first poll comes before the watchdog is armed: a client that sent
    // its request with the connect (the usual case) is answered by it, and
    // an HTTP/1 connection then needs no watchdog (hyper's head timer
    // covers the wait for the next request), which spares it a timer
    // (its memory, its registration, and tokio's wake-up of its own driver
    // that goes with a first timer).
    let first_poll = std::future::poll_fn(|cx| Poll::Ready(connection.as_mut().poll(cx))).await;
    let idle_limit = config.idle_limit();
    let mut phase = Phase::Open {
        watched: needs_watchdog(&activity, idle_limit),
    };
    // One timer for the watchdog and the drain window, made when first
    // armed: an idle keep-alive connection carries none.
    let mut timer = Timer::default();
    if phase.timer_armed() {
        timer.set(later(opened, idle_limit.unwrap_or(Duration::ZERO)));
    }
    let lifecycle = &core.lifecycle;
    let result = if let Poll::Ready(result) = first_poll {
        Some(result)
    } else {
        loop {
            // One wait for the server's three signals (close, hurry,
            // abort), registered before they are looked at, so that none
            // fired in between is missed; they only ever go one way.
            let signalled = lifecycle.signalled();
            tokio::pin!(signalled);
            signalled.as_mut().enable();
            let fired = lifecycle.is_aborting() || phase.awaits(lifecycle);
            let next = tokio::select! {
                biased;
                result = connection.as_mut() => break Some(result),
                () = async { if !fired { signalled.await } } => {
                    if lifecycle.is_aborting() {
                        break None;
                    }
                    match phase {
                        Phase::Open { .. } if lifecycle.is_closing() => {
                            Phase::at_close(&core, &activity, fd, &mut timer)
                        }
                        Phase::Draining { .. } if lifecycle.is_hurrying() => Phase::Finishing,
                        unchanged => unchanged,
                    }
                }
                () = timer.wait(), if phase.timer_armed() => {
                    phase.at_timer(&activity, idle_limit, fd, &mut timer)
                }
            };
            // Finishing is entered once (no event leads out of it): hyper
            // is told once.
            if matches!(next, Phase::Finishing) && !matches!(phase, Phase::Finishing) {
                connection.as_mut().graceful_shutdown();
            }
            phase = next;
        }
    };
    count_end(&core, result);
}

/// The TLS handshake on an accepted connection; `None` (counted, logged at
/// debug) when it fails: a plain-HTTP client, a scanner, a stalled
/// handshake, whose connection alone ends.
async fn handshake(tls: &crate::tls::Tls, tcp: TcpStream, core: &ServerCore) -> Option<Stream> {
    // Boxed: the handshake's state (a rustls connection) would otherwise
    // size the connection task's future, plain connections' too.
    match Box::pin(tls.handshake(tcp, core.connections.idle_limit())).await {
        Ok(tls) => Some(Stream::Tls(Box::new(TlsConnection::new(tls)))),
        Err(error) => {
            core.counters.count_tls_failure();
            tracing::debug!(%error, "TLS handshake failed");
            None
        }
    }
}

/// Counts how the connection ended: `None` if it was cut.
fn count_end<E: std::fmt::Display>(core: &ServerCore, result: Option<Result<(), E>>) {
    match result {
        None => {
            core.counters.count_aborted();
            tracing::debug!("connection aborted");
        }
        Some(result) => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
            if core.lifecycle.is_closing() {
                core.counters.count_drained();
            }
        }
    }
}

/// Whether the watchdog (below) has anything to watch.
fn needs_watchdog(activity: &ConnectionActivity, limit: Option<Duration>) -> bool {
    limit.is_some() && (activity.is_http2() || !activity.has_had_requests())
}

/// When a timer check says a connection should end.
enum Deadline {
    At(Instant),
    Passed,
}

impl Deadline {
    fn of(deadline: Instant) -> Self {
        if deadline > Instant::now() {
            Self::At(deadline)
        } else {
            Self::Passed
        }
    }
}

/// The watchdog while serving: a connection with no request yet must send
/// one within the idle limit; an HTTP/2 one must not stay idle longer.
/// `None` once hyper's own timer covers the connection (HTTP/1 after a
/// first request).
fn watchdog_deadline(activity: &ConnectionActivity, limit: Option<Duration>) -> Option<Deadline> {
    let limit = limit.filter(|_| needs_watchdog(activity, limit))?;
    Some(match activity.idle_since() {
        Some(idle) => Deadline::of(later(idle, limit)),
        None => Deadline::At(later(Instant::now(), limit)), // busy: look again later
    })
}

/// The drain window: quiet for `window` since the close (or the last
/// response), and it ends, unless bytes wait unread. A request that came in
/// meanwhile, or any HTTP/2 traffic, ends it at once: hyper answers what is
/// in flight, then closes.
fn drain_deadline(
    activity: &ConnectionActivity,
    fd: RawFd,
    since: Instant,
    window: Duration,
) -> Option<Deadline> {
    Some(match activity.idle_since() {
        Some(idle) if !activity.is_http2() => match Deadline::of(later(idle.max(since), window)) {
            Deadline::Passed if has_unread_bytes(fd) => Deadline::At(Instant::now() + UNREAD_GRACE),
            deadline => deadline,
        },
        _ => Deadline::Passed,
    })
}

/// `at + wait`, or a century on for a wait too long to add (`Duration::MAX`
/// means "until the graceful deadline").
fn later(at: Instant, wait: Duration) -> Instant {
    at.checked_add(wait)
        .unwrap_or_else(|| at + Duration::from_secs(100 * 365 * 86_400))
}

/// Whether bytes wait unread on the socket: a request the client sent that
/// hyper has not seen yet.
fn has_unread_bytes(fd: RawFd) -> bool {
    matches!(peek(fd, &mut [0u8; 1]), Ok(n) if n > 0)
}
