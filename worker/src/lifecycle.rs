//! The server's lifecycle: its state machine, the close and abort signals
//! every task waits on, and the counters behind the close report.
//!
//! ```text
//!   Bound ──start_serving──▶ Starting ──hooks ok──▶ Serving
//!     │                        │  └──hook failed, start cancelled──▶ Closing(fatal) ─▶ Closed(Err)
//!     │ close()                │ close()              │ close(), fatal accept error
//!     ▼                        ▼                      ▼
//!   Closed(Ok) ◀─ hooks, report ─ Closing { drain window, fatal error } ◀──┘
//! ```
//!
//! `close()` is synchronous: it closes every listening socket, moves the
//! state and fires the close signal before it returns. Tasks never poll a
//! flag; they wait on the signal, so closing pre-empts every wait at once.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use crate::builder::{ShutdownHook, StartupHook};
use crate::connection::ConnectionConfig;
use crate::latch::Latch;
use crate::listeners::ListenerSlot;
use crate::report::{CloseReport, ServerStats};
use crate::Error;

/// What `start_serving` needs, kept in the `Bound` state until it runs.
pub(crate) struct StartOptions {
    pub(crate) graceful_timeout: Option<Duration>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) startup: Vec<StartupHook>,
    pub(crate) shutdown: Vec<ShutdownHook>,
}

/// Where a server is in its life.
enum State {
    /// Listeners open, nothing accepting yet.
    Bound(StartOptions),
    /// `start_serving` is running the startup hooks.
    Starting,
    /// Accepting on every listener.
    Serving,
    /// Listeners closed; connections finishing; shutdown hooks to run.
    Closing {
        /// How long an idle HTTP/1 connection may stay (zero: none).
        drain: Duration,
        /// The error that closed the server, if one did.
        fatal: Option<Error>,
    },
    /// Every connection has ended and the shutdown hooks have run.
    Closed(Result<CloseReport, Error>),
}

/// Everything the server's tasks and handles share.
pub(crate) struct Lifecycle {
    state: Mutex<State>,
    /// Notified when the state becomes `Closed`.
    closed: Notify,
    close_signal: Latch,
    /// Fired when a fast close follows a draining one: connections still
    /// in their drain window end now.
    hurry_signal: Latch,
    /// Shared with the HTTP/2 stream tasks, which outlive a borrow.
    abort_signal: Arc<Latch>,
    pub(crate) listeners: Vec<ListenerSlot>,
    /// How connections speak HTTP (kept here rather than behind an Arc of
    /// their own: one allocation fewer per server, one Arc fewer to clone
    /// per connection).
    pub(crate) connections: ConnectionConfig,
    /// The accept loop's connections and HTTP/2 streams: `wait_closed`
    /// waits for all of them.
    pub(crate) tasks: TaskTracker,
    requests: AtomicU64,
    /// The request count that fires `quota_signal` (`u64::MAX`: none).
    request_quota: u64,
    quota_signal: Latch,
    open_connections: AtomicU64,
    drained: AtomicU64,
    aborted: AtomicU64,
}

impl Lifecycle {
    pub(crate) fn new(
        listeners: Vec<ListenerSlot>,
        options: StartOptions,
        keep_alive: Option<Duration>,
        header_read_timeout: Option<Duration>,
        access_log: bool,
        request_quota: Option<u64>,
    ) -> Self {
        let tasks = TaskTracker::new();
        let abort_signal = Arc::new(Latch::default());
        let connections = ConnectionConfig::new(
            keep_alive,
            header_read_timeout,
            access_log,
            tasks.clone(),
            Arc::clone(&abort_signal),
        );
        Self {
            state: Mutex::new(State::Bound(options)),
            closed: Notify::new(),
            close_signal: Latch::default(),
            hurry_signal: Latch::default(),
            abort_signal,
            listeners,
            connections,
            tasks,
            requests: AtomicU64::new(0),
            request_quota: request_quota.unwrap_or(u64::MAX),
            quota_signal: Latch::default(),
            open_connections: AtomicU64::new(0),
            drained: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
        }
    }

    /// Bound → Starting, handing over the start options. Any other state is
    /// an error for the caller and changes nothing.
    pub(crate) fn begin_start(&self) -> Result<StartOptions, Error> {
        let mut state = self.lock_state();
        match &*state {
            State::Bound(_) => match std::mem::replace(&mut *state, State::Starting) {
                State::Bound(options) => Ok(options),
                _ => unreachable!("matched Bound just above"),
            },
            State::Starting | State::Serving => Err(Error::AlreadyStarted),
            State::Closing { .. } | State::Closed(_) => Err(Error::Closed),
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
        self.close_with(drain, None);
    }

    /// Records an error the server cannot go on after, then closes.
    pub(crate) fn fail(&self, error: Error) {
        tracing::error!(%error, "server failing");
        self.close_with(Duration::ZERO, Some(error));
    }

    fn close_with(&self, drain: Duration, error: Option<Error>) {
        // Sockets go first, so that once close() returns (or a waiter wakes)
        // a connect is refused, unless another process holds the socket. A
        // draining close of a serving server first takes the connections
        // already queued (the accept loop serves them).
        let sweep = !drain.is_zero() && matches!(*self.lock_state(), State::Serving);
        for listener in &self.listeners {
            listener.close(sweep);
        }
        {
            let mut state = self.lock_state();
            match &mut *state {
                // Nothing was ever started: there is nothing to wait for.
                State::Bound(_) => {
                    *state = State::Closed(error.map_or(Ok(CloseReport::default()), Err));
                    self.closed.notify_waiters();
                }
                State::Starting | State::Serving => {
                    tracing::debug!(?drain, "server closing");
                    *state = State::Closing {
                        drain,
                        fatal: error,
                    };
                }
                State::Closing {
                    fatal,
                    drain: window,
                } => {
                    if fatal.is_none() {
                        *fatal = error;
                    }
                    if drain < *window {
                        *window = drain;
                        if drain.is_zero() {
                            self.hurry_signal.fire();
                        }
                    }
                }
                State::Closed(_) => {}
            }
        }
        self.close_signal.fire();
    }

    /// Closes and cuts every connection now.
    pub(crate) fn abort(&self) {
        self.close(Duration::ZERO);
        self.abort_signal.fire();
    }

    /// Closing → Closed, with the report or the error that closed it.
    pub(crate) fn finish(&self) {
        let mut state = self.lock_state();
        let fatal = match &mut *state {
            State::Closing { fatal, .. } => fatal.take(),
            _ => None,
        };
        let result = fatal.map_or_else(|| Ok(self.report()), Err);
        tracing::debug!(?result, "server closed");
        *state = State::Closed(result);
        drop(state);
        self.closed.notify_waiters();
    }

    pub(crate) async fn wait_closed(&self) -> Result<CloseReport, Error> {
        loop {
            // Register before looking, so that a close in between is seen.
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

    pub(crate) fn is_closing(&self) -> bool {
        self.close_signal.is_fired()
    }

    /// Resolves once `close()` (or `abort()`, or a fatal error) happened.
    pub(crate) fn closing(&self) -> impl Future<Output = ()> + Send + '_ {
        self.close_signal.fired()
    }

    /// Resolves once a fast close has followed a draining one.
    pub(crate) fn hurrying(&self) -> impl Future<Output = ()> + Send + '_ {
        self.hurry_signal.fired()
    }

    /// Resolves once connections must be cut.
    pub(crate) fn aborting(&self) -> impl Future<Output = ()> + Send + '_ {
        self.abort_signal.fired()
    }

    /// The drain window of a closing server (zero otherwise).
    pub(crate) fn drain_window(&self) -> Duration {
        match &*self.lock_state() {
            State::Closing { drain, .. } => *drain,
            _ => Duration::ZERO,
        }
    }

    pub(crate) fn count_request(&self) {
        // One request reaches the quota exactly; a comparison is all the
        // other requests pay.
        if self.requests.fetch_add(1, Ordering::Relaxed) + 1 == self.request_quota {
            self.quota_signal.fire();
        }
    }

    /// Resolves once the request quota is reached (never without one).
    pub(crate) fn quota_reached(&self) -> impl Future<Output = ()> + Send + '_ {
        self.quota_signal.fired()
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

    fn lock_state(&self) -> MutexGuard<'_, State> {
        // Transitions cannot panic half-way; a poisoned lock holds a state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One open connection, for [`ServerStats::open_connections`].
pub(crate) struct OpenConnection(Arc<Lifecycle>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Moves the server to `Closed(Err(error))` if dropped before
/// [`disarm`](Self::disarm): for work that must reach its end even when its
/// future is dropped or panics (the start, the close driver), so that
/// `wait_closed` never waits for ever.
pub(crate) struct FailUnlessDisarmed<'a> {
    lifecycle: Option<&'a Lifecycle>,
    error: Option<Error>,
}

impl<'a> FailUnlessDisarmed<'a> {
    pub(crate) fn new(lifecycle: &'a Lifecycle, error: Error) -> Self {
        Self {
            lifecycle: Some(lifecycle),
            error: Some(error),
        }
    }

    pub(crate) fn disarm(mut self) {
        self.lifecycle = None;
    }
}

impl Drop for FailUnlessDisarmed<'_> {
    fn drop(&mut self) {
        if let (Some(lifecycle), Some(error)) = (self.lifecycle, self.error.take()) {
            lifecycle.fail(error);
            lifecycle.finish();
        }
    }
}
