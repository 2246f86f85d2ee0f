//! The server's lifecycle: its state machine, the close and abort signals
//! every task waits on, and the counters behind the close report.
//!
//! ```text
//!   Bound ──start_serving──▶ Starting ──hooks ok──▶ Serving
//!     │                        │  └──hook failed──▶ Closed(Err)
//!     │ close()                │ close()              │ close() / fatal accept error
//!     ▼                        ▼                      ▼
//!   Closed(Ok) ◀── shutdown hooks ── Closing ◀────────┘
//! ```
//!
//! `close()` is synchronous: it moves the state, closes every listening
//! socket and fires the close signal before it returns. Tasks never poll
//! a flag; they wait on the signal, so closing pre-empts every wait at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

use crate::accept::ListenerSlot;
use crate::connection::ConnectionConfig;
use crate::Error;

/// Where a server is in its life.
#[derive(Debug, Clone)]
pub(crate) enum State {
    /// Listeners open, nothing accepting yet.
    Bound,
    /// `start_serving` is running the startup hooks.
    Starting,
    /// Accepting on every listener.
    Serving,
    /// Listeners closed; connections finishing; shutdown hooks to run.
    Closing,
    /// Every connection has ended and the shutdown hooks have run.
    Closed(Result<CloseReport, Error>),
}

/// What a server's close did, returned by
/// [`wait_closed`](crate::ServerHandle::wait_closed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseReport {
    /// Connections open at close that finished on their own (answered
    /// their in-flight requests, or were idle and closed).
    pub drained: u64,
    /// Connections still open at the graceful deadline, or at
    /// [`abort`](crate::ServerHandle::abort), and cut.
    pub aborted: u64,
    /// Requests the server received over its whole life.
    pub requests_served: u64,
}

/// Live counters of a serving server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Requests received so far.
    pub requests_served: u64,
    /// Connections open now.
    pub open_connections: u64,
}

/// Everything the server's tasks and handles share.
pub(crate) struct Lifecycle {
    state: Mutex<State>,
    /// Notified when the state becomes `Closed`.
    closed: Notify,
    close: CancellationToken,
    abort: CancellationToken,
    /// How long an idle connection may stay after close; set by the first
    /// close (`u64::MAX`: not closed yet).
    drain_window_ns: AtomicU64,
    fatal: Mutex<Option<Error>>,
    pub(crate) listeners: Vec<ListenerSlot>,
    /// The HTTP settings every connection uses (kept here rather than in an
    /// Arc of their own: one allocation fewer per server, one Arc fewer to
    /// clone per connection).
    pub(crate) connections: ConnectionConfig,
    /// Accept loops and connections: `wait_closed` waits for all of them.
    pub(crate) tasks: TaskTracker,
    requests: AtomicU64,
    open_connections: AtomicU64,
    drained: AtomicU64,
    aborted: AtomicU64,
}

impl Lifecycle {
    pub(crate) fn new(listeners: Vec<ListenerSlot>, connections: ConnectionConfig) -> Self {
        Self {
            connections,
            state: Mutex::new(State::Bound),
            closed: Notify::new(),
            close: CancellationToken::new(),
            abort: CancellationToken::new(),
            drain_window_ns: AtomicU64::new(u64::MAX),
            fatal: Mutex::new(None),
            listeners,
            tasks: TaskTracker::new(),
            requests: AtomicU64::new(0),
            open_connections: AtomicU64::new(0),
            drained: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
        }
    }

    /// Bound → Starting. Any other state is an error for the caller.
    pub(crate) fn begin_start(&self) -> Result<(), Error> {
        let mut state = self.lock_state();
        match *state {
            State::Bound => {
                *state = State::Starting;
                Ok(())
            }
            State::Starting | State::Serving => Err(Error::AlreadyStarted),
            State::Closing | State::Closed(_) => Err(Error::Closed),
        }
    }

    /// Starting → Serving, unless a close came in meanwhile.
    pub(crate) fn started(&self) -> Result<(), Error> {
        let mut state = self.lock_state();
        if matches!(*state, State::Starting) {
            *state = State::Serving;
            Ok(())
        } else {
            Err(Error::Closed)
        }
    }

    /// Closes with `drain` as the idle window (zero: idle connections end
    /// at once). Idempotent; the first close sets the window.
    pub(crate) fn close(&self, drain: Duration) {
        let window = u64::try_from(drain.as_nanos()).unwrap_or(u64::MAX - 1);
        let _ = self.drain_window_ns.compare_exchange(
            u64::MAX,
            window,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        let first = {
            let mut state = self.lock_state();
            match *state {
                // Nothing was ever started: there is nothing to wait for.
                State::Bound => {
                    *state = State::Closed(Ok(CloseReport::default()));
                    self.closed.notify_waiters();
                    true
                }
                State::Starting | State::Serving => {
                    *state = State::Closing;
                    true
                }
                State::Closing | State::Closed(_) => false,
            }
        };
        // Sockets go before the signal, so that once close() returns a
        // connect is refused (when no other process holds the socket).
        for listener in &self.listeners {
            listener.close();
        }
        self.close.cancel();
        if first {
            tracing::debug!("server closing");
        }
    }

    /// Closes and cuts every connection now.
    pub(crate) fn abort(&self) {
        self.close(Duration::ZERO);
        self.abort.cancel();
    }

    /// Records an error the server cannot go on after, then closes.
    pub(crate) fn fail(&self, error: Error) {
        tracing::error!(%error, "server failing");
        self.fatal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(error);
        self.close(Duration::ZERO);
    }

    /// Closing (or Starting, after a failed hook) → Closed.
    pub(crate) fn finish(&self) {
        let result = match self.fatal.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(error) => Err(error),
            None => Ok(self.report()),
        };
        tracing::debug!(?result, "server closed");
        *self.lock_state() = State::Closed(result);
        self.closed.notify_waiters();
    }

    pub(crate) async fn wait_closed(&self) -> Result<CloseReport, Error> {
        loop {
            // Register before looking, so a close between the two is seen.
            let notified = self.closed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let State::Closed(result) = &*self.lock_state() {
                return result.clone();
            }
            notified.await;
        }
    }

    pub(crate) fn is_serving(&self) -> bool {
        matches!(*self.lock_state(), State::Serving)
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        // Transitions cannot panic half-way; a poisoned lock holds a state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.close.is_cancelled()
    }

    /// Resolves once `close()` (or `abort()`) has been called.
    pub(crate) fn closing(&self) -> WaitForCancellationFuture<'_> {
        self.close.cancelled()
    }

    /// Resolves once connections must be cut.
    pub(crate) fn aborting(&self) -> WaitForCancellationFuture<'_> {
        self.abort.cancelled()
    }

    pub(crate) fn drain_window(&self) -> Duration {
        match self.drain_window_ns.load(Ordering::Relaxed) {
            u64::MAX => Duration::ZERO,
            ns => Duration::from_nanos(ns),
        }
    }

    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection as open until the guard is dropped.
    pub(crate) fn connection_opened(self: &Arc<Self>) -> OpenConnection {
        self.open_connections.fetch_add(1, Ordering::Relaxed);
        OpenConnection(Arc::clone(self))
    }

    pub(crate) fn count_drained(&self) {
        self.drained.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_aborted(&self) {
        self.aborted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> ServerStats {
        ServerStats {
            requests_served: self.requests.load(Ordering::Relaxed),
            open_connections: self.open_connections.load(Ordering::Relaxed),
        }
    }

    fn report(&self) -> CloseReport {
        CloseReport {
            drained: self.drained.load(Ordering::Relaxed),
            aborted: self.aborted.load(Ordering::Relaxed),
            requests_served: self.requests.load(Ordering::Relaxed),
        }
    }
}

/// One open connection, for [`ServerStats::open_connections`].
pub(crate) struct OpenConnection(Arc<Lifecycle>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}
