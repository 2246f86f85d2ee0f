//! [`ServerCore`]: one server as its tasks and handles share it: the
//! lifecycle, the listeners, how connections speak HTTP, the tracked tasks
//! and the counters; and the closing operations that involve more than the
//! state machine.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::counters::Counters;
use crate::error::Error;
use crate::hooks::{ShutdownHook, StartupHook};
use crate::lifecycle::Lifecycle;
use crate::limits::Limits;
use crate::listeners::ListenerSlot;
use crate::protocol::ConnectionConfig;

/// A server's options, as a [`Builder`](crate::Builder) collects them.
pub(crate) struct ServerConfig {
    /// After close, how long connections may take before they are aborted
    /// (`None`: for ever).
    pub(crate) graceful_timeout: Option<Duration>,
    pub(crate) keep_alive_timeout: Option<Duration>,
    pub(crate) header_read_timeout: Option<Duration>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) access_log: bool,
    pub(crate) limits: Limits,
    pub(crate) request_quota: Option<u64>,
    pub(crate) startup: Vec<StartupHook>,
    pub(crate) shutdown: Vec<ShutdownHook>,
    pub(crate) tls: Option<crate::tls::Tls>,
    /// Names of listeners served plain even with `tls`.
    pub(crate) plain_names: Vec<String>,
}

/// What `start_serving` needs, kept in the `Bound` state until it runs.
pub(crate) struct StartOptions {
    pub(crate) graceful_timeout: Option<Duration>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) startup: Vec<StartupHook>,
    pub(crate) shutdown: Vec<ShutdownHook>,
}

/// Everything the server's tasks and handles share, behind one `Arc`.
pub(crate) struct ServerCore {
    pub(crate) lifecycle: Lifecycle<StartOptions>,
    pub(crate) listeners: Vec<ListenerSlot>,
    /// How connections speak HTTP (kept here rather than behind an Arc of
    /// their own: one allocation fewer per server, one Arc fewer to clone
    /// per connection).
    pub(crate) connections: ConnectionConfig,
    /// The accept loop's connections and HTTP/2 streams: `wait_closed`
    /// waits for all of them.
    pub(crate) tasks: TaskTracker,
    pub(crate) counters: Counters,
}

impl ServerCore {
    /// A bound server on `listeners` (not empty), nothing accepting yet.
    pub(crate) fn new(listeners: Vec<ListenerSlot>, config: ServerConfig) -> Self {
        let start = StartOptions {
            graceful_timeout: config.graceful_timeout,
            max_connections: config.max_connections,
            startup: config.startup,
            shutdown: config.shutdown,
        };
        let lifecycle = Lifecycle::new(start);
        let tasks = TaskTracker::new();
        let mut connections = ConnectionConfig::new(
            config.keep_alive_timeout,
            config.header_read_timeout,
            config.access_log,
            config.limits,
            tasks.clone(),
            Arc::clone(lifecycle.abort_signal()),
        );
        connections.tls = config.tls;
        Self {
            lifecycle,
            listeners,
            connections,
            tasks,
            counters: Counters::new(config.request_quota),
        }
    }

    /// Closes the listeners, then the lifecycle with `drain` as the idle
    /// window (zero: idle connections end at once). Idempotent.
    pub(crate) fn close(&self, drain: Duration) {
        self.close_listeners(drain);
        self.lifecycle.close(drain);
    }

    /// Records an error the server cannot go on after, then closes.
    pub(crate) fn fail(&self, error: Error) {
        tracing::error!(%error, "server failing");
        self.close_listeners(Duration::ZERO);
        self.lifecycle.fail(error);
    }

    /// Closes and cuts every connection now.
    pub(crate) fn abort(&self) {
        self.close_listeners(Duration::ZERO);
        self.lifecycle.abort();
    }

    /// Closing → Closed, with the counters' report (or the fatal error).
    pub(crate) fn finish(&self) {
        self.lifecycle.finish(self.counters.report());
    }

    fn close_listeners(&self, drain: Duration) {
        // Sockets go first, so that once close() returns (or a waiter wakes)
        // a connect is refused, unless another process holds the socket. A
        // draining close of a serving server first takes the connections
        // already queued (the accept loop serves them).
        let sweep = !drain.is_zero() && self.lifecycle.is_serving();
        for listener in &self.listeners {
            listener.close(sweep);
        }
    }
}

/// Fails and finishes the server with `error` if dropped before
/// [`disarm`](Self::disarm): for work that must reach its end even when its
/// future is dropped or panics (the start, the close driver), so that
/// `wait_closed` never waits for ever.
pub(crate) struct FailUnlessDisarmed<'a> {
    core: Option<&'a ServerCore>,
    error: Option<Error>,
}

impl<'a> FailUnlessDisarmed<'a> {
    pub(crate) fn new(core: &'a ServerCore, error: Error) -> Self {
        Self {
            core: Some(core),
            error: Some(error),
        }
    }

    pub(crate) fn disarm(mut self) {
        self.core = None;
    }
}

impl Drop for FailUnlessDisarmed<'_> {
    fn drop(&mut self) {
        if let (Some(core), Some(error)) = (self.core, self.error.take()) {
            core.fail(error);
            core.finish();
        }
    }
}
