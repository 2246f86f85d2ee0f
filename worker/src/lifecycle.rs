//! The server's state machine, and the signals every task of the server
//! waits on.
//!
//! ```text
//!              begin_start            started
//!    Bound ───────────────▶ Starting ─────────▶ Serving
//!      │                       │                   │
//!      │ close, fail           │ close, fail       │ close, fail
//!      │                       ▼                   │
//!      │               Closing { drain, fatal } ◀──┘ ↺ close, fail: a shorter
//!      │                       │                     drain (down to zero: hurry
//!      │                       │ finish(report)      fires); the first error stays
//!      ▼                       ▼
//!    Closed(Ok(empty report))  Closed(Err(fatal)) if an error was recorded,
//!    or Closed(Err) by fail    else Closed(Ok(report))
//! ```
//!
//! `fail` is `close` with no drain that records why the server cannot go
//! on: a startup hook that failed, a start cancelled, a listener broken.
//! `abort` is `close` with no drain that also fires the abort signal. In
//! `Closed` every transition changes nothing. `begin_start` anywhere but in
//! `Bound` is an error that changes nothing (`AlreadyStarted` in `Starting`
//! and `Serving`, `Closed` after), and so is `started` after a close came
//! during the start.
//!
//! Every closing transition fires the close signal before it returns;
//! tasks never poll a flag, they wait on the signal, so a close pre-empts
//! every wait at once. Sockets, connections and counters are the server's
//! ([`ServerCore`](crate::server_core::ServerCore)), which closes the listeners
//! before it calls a closing transition here.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use crate::error::Error;
use crate::latch::Latch;
use crate::report::CloseReport;

/// Where a server is in its life. `P`: what the start needs, kept until it
/// runs.
enum State<P> {
    /// Listeners open, nothing accepting yet.
    Bound(P),
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

/// The state machine of one server and its latches. `P` is handed over by
/// [`begin_start`](Self::begin_start).
pub(crate) struct Lifecycle<P> {
    state: Mutex<State<P>>,
    /// Notified when the state becomes `Closed`.
    closed: Notify,
    close_signal: Latch,
    /// Fired when a fast close follows a draining one: connections still
    /// in their drain window end now.
    hurry_signal: Latch,
    /// Shared with the HTTP/2 stream tasks, which outlive a borrow.
    abort_signal: Arc<Latch>,
    /// Notified whenever one of the three signals above fires: a
    /// connection waits on this one instead of on each (one waiter, not
    /// three, in every connection's state), then looks which.
    signalled: Notify,
}

impl<P> Lifecycle<P> {
    /// `Bound`, keeping `start` for [`begin_start`](Self::begin_start).
    pub(crate) fn new(start: P) -> Self {
        Self {
            state: Mutex::new(State::Bound(start)),
            closed: Notify::new(),
            close_signal: Latch::default(),
            hurry_signal: Latch::default(),
            abort_signal: Arc::new(Latch::default()),
            signalled: Notify::new(),
        }
    }

    /// Bound → Starting, handing over what the start needs. Any other state
    /// is an error for the caller and changes nothing.
    pub(crate) fn begin_start(&self) -> Result<P, Error> {
        let mut state = self.lock_state();
        match &*state {
            State::Bound(_) => match std::mem::replace(&mut *state, State::Starting) {
                State::Bound(start) => Ok(start),
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
    /// at once). Idempotent; a later close can only shorten the window.
    pub(crate) fn close(&self, drain: Duration) {
        self.close_with(drain, None);
    }

    /// Closes with no drain, recording an error the server cannot go on
    /// after (the first one recorded is the one `wait_closed` returns).
    pub(crate) fn fail(&self, error: Error) {
        self.close_with(Duration::ZERO, Some(error));
    }

    /// Closes with no drain and fires the abort signal: connections are to
    /// be cut now.
    pub(crate) fn abort(&self) {
        self.close(Duration::ZERO);
        self.abort_signal.fire();
        self.signalled.notify_waiters();
    }

    fn close_with(&self, drain: Duration, error: Option<Error>) {
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
        self.signalled.notify_waiters();
    }

    /// Closing → Closed, with `report`, or with the error that closed the
    /// server if one did.
    pub(crate) fn finish(&self, report: CloseReport) {
        let mut state = self.lock_state();
        let fatal = match &mut *state {
            State::Closing { fatal, .. } => fatal.take(),
            _ => None,
        };
        let result = fatal.map_or(Ok(report), Err);
        tracing::debug!(?result, "server closed");
        *state = State::Closed(result);
        drop(state);
        self.closed.notify_waiters();
    }

    /// Resolves with the result of `Closed` once the server is there.
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

    /// Whether a close (or an abort, or a fatal error) has happened.
    pub(crate) fn is_closing(&self) -> bool {
        self.close_signal.is_fired()
    }

    /// Whether a fast close has followed a draining one.
    pub(crate) fn is_hurrying(&self) -> bool {
        self.hurry_signal.is_fired()
    }

    /// Whether connections must be cut.
    pub(crate) fn is_aborting(&self) -> bool {
        self.abort_signal.is_fired()
    }

    /// Resolves at the next firing of any of the close, hurry and abort
    /// signals (register it, with `enable`, before looking at them).
    pub(crate) fn signalled(&self) -> tokio::sync::futures::Notified<'_> {
        self.signalled.notified()
    }

    /// Resolves once `close()` (or `abort()`, or a fatal error) happened.
    pub(crate) fn closing(&self) -> impl Future<Output = ()> + Send + '_ {
        self.close_signal.fired()
    }

    /// Resolves once connections must be cut.
    pub(crate) fn aborting(&self) -> impl Future<Output = ()> + Send + '_ {
        self.abort_signal.fired()
    }

    /// The abort signal, for tasks that outlive a borrow of the lifecycle
    /// (HTTP/2 streams).
    pub(crate) fn abort_signal(&self) -> &Arc<Latch> {
        &self.abort_signal
    }

    /// The drain window of a closing server (zero otherwise).
    pub(crate) fn drain_window(&self) -> Duration {
        match &*self.lock_state() {
            State::Closing { drain, .. } => *drain,
            _ => Duration::ZERO,
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, State<P>> {
        // Transitions cannot panic half-way; a poisoned lock holds a state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests;
