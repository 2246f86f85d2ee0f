//! [`ServerHandle`]: stop, watch and wait for a server from anywhere.

use std::sync::Arc;
use std::time::Duration;

use drover_shared::ListenAddr;

use crate::error::Error;
use crate::report::{CloseReport, ServerStats};
use crate::server_core::ServerCore;

/// A cheap, cloneable handle to a [`Server`](crate::Server), usable from
/// any thread or task (it is `Clone`, `Send` and `Sync`), and from inside
/// the server's own request handlers.
#[derive(Clone)]
pub struct ServerHandle {
    pub(crate) core: Arc<ServerCore>,
}

/// One listener of a server (more may be told of it in later releases).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerInfo {
    /// The address it is bound to (port 0 resolved).
    pub addr: ListenAddr,
    /// Its name from `LISTEN_FDNAMES`, for sockets taken by
    /// [`Server::from_env`](crate::Server::from_env) when names were given.
    pub name: Option<String>,
    /// Whether its connections speak TLS: a TCP listener of a server with
    /// [`Builder::tls`](crate::Builder::tls), unless it was named by
    /// [`Builder::plain_listener`](crate::Builder::plain_listener).
    pub tls: bool,
}

impl ServerHandle {
    pub(crate) fn new(core: Arc<ServerCore>) -> Self {
        Self { core }
    }

    /// Stops the server, fast. Synchronous, idempotent, callable from any
    /// thread or task, and from a request handler of this server (whose
    /// response still completes). Before it returns, the server stops
    /// accepting and closes its listening sockets, so a new connect is
    /// refused (unless another process holds the same socket). Then every
    /// connection is asked to finish: idle HTTP/1.1 keep-alive connections
    /// close at once, in-flight requests complete with `connection:
    /// close`, HTTP/2 connections get GOAWAY. Connections still open after
    /// the graceful timeout are aborted. Await
    /// [`wait_closed`](Self::wait_closed) to know when all that is done.
    ///
    /// On a server that never started, it just closes the listeners.
    pub fn close(&self) {
        self.core.close(Duration::ZERO);
    }

    /// Like [`close`](Self::close), but an idle HTTP/1.1 connection is kept
    /// for up to `window`: a request that arrives on it meanwhile is
    /// answered with `connection: close`, then the connection ends. This
    /// is how a worker being replaced under load loses no request to the
    /// race between closing an idle connection and a client reusing it.
    /// If the server is already closing, a shorter `window` replaces the
    /// running one and a longer one changes nothing; a later `close()`
    /// ends the drain windows still running at once.
    /// Sockets inherited by LISTEN_FDS keep their queued connections (the
    /// supervisor or systemd holds them for whoever serves next); other
    /// listeners' queued connections are taken and answered.
    pub fn close_draining(&self, window: Duration) {
        self.core.close(window);
    }

    /// Closes and aborts every connection now, without waiting for the
    /// graceful timeout (a second Ctrl-C). Idempotent.
    pub fn abort(&self) {
        self.core.abort();
    }

    /// Resolves once the server is closed: listeners closed, every
    /// connection ended, shutdown hooks run. Any number of tasks may wait,
    /// before or after `close()`; each gets the same result: a
    /// [`CloseReport`], or the error that closed the server (a failed
    /// startup hook, a listener that broke). Errors of single connections
    /// are logged with `tracing`, not returned. Never resolves for a server
    /// nobody closes.
    pub async fn wait_closed(&self) -> Result<CloseReport, Error> {
        self.core.lifecycle.wait_closed().await
    }

    /// Resolves as soon as the server starts closing (`close()`, `abort()`,
    /// a signal, a fatal error), while connections may still be finishing:
    /// the moment to stop background work that feeds the server.
    pub async fn closing(&self) {
        self.core.lifecycle.closing().await;
    }

    /// Whether the server is accepting: true from a successful
    /// `start_serving` until `close()`.
    pub fn is_serving(&self) -> bool {
        self.core.lifecycle.is_serving()
    }

    /// The addresses the server listens (or listened) on, in the order the
    /// listeners were given, with port 0 resolved to the real port and
    /// Unix listeners as their path.
    pub fn local_addrs(&self) -> Vec<ListenAddr> {
        self.core
            .listeners
            .iter()
            .map(|slot| slot.addr().clone())
            .collect()
    }

    /// Every listener with its address and name.
    pub fn listeners(&self) -> Vec<ListenerInfo> {
        self.core
            .listeners
            .iter()
            .map(|slot| ListenerInfo {
                addr: slot.addr().clone(),
                name: slot.name().map(str::to_owned),
                tls: slot.tls(),
            })
            .collect()
    }

    /// Resolves once the server has taken as many requests as its
    /// [`request_quota`](crate::Builder::request_quota); never without one.
    /// The server goes on serving.
    pub async fn quota_reached(&self) {
        self.core.counters.quota_reached().await;
    }

    /// Requests served so far and connections open now.
    pub fn stats(&self) -> ServerStats {
        self.core.counters.stats()
    }
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addrs", &self.local_addrs())
            .field("serving", &self.is_serving())
            .finish()
    }
}
