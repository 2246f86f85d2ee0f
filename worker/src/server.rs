//! [`Server`]: open, start, serve, close.

use drover_shared::events;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use drover_shared::ListenAddr;
use tokio::sync::Semaphore;

use crate::accept::accept_loop;
use crate::error::Error;
use crate::handle::ServerHandle;
use crate::report::CloseReport;
use crate::server_core::FailUnlessDisarmed;
use crate::service::IntoHttpService;
use crate::shutdown::drive_close;

/// An HTTP/1.1 and HTTP/2 server whose life you drive from code, after
/// Python's `asyncio.Server`:
///
/// ```
/// # async fn demo() -> Result<(), drover_worker::Error> {
/// use drover_worker::Server;
/// let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
///
/// let server = Server::bind("127.0.0.1:0").await?;
/// server.start_serving(app).await?;         // accepting now, or Err
/// let addr = server.local_addrs()[0].clone();
/// // ... requests to addr ...
/// server.close();                           // sync: listeners closed on return
/// let report = server.wait_closed().await?; // every connection gone
/// # Ok(()) }
/// ```
///
/// Its constructors ([`bind`](Self::bind), [`from_sockets`](Self::from_sockets),
/// [`from_env`](Self::from_env)) and [`builder`](Self::builder) are
/// [`Builder`](crate::Builder)'s, with default options.
///
/// Dropping a `Server` does not stop it: a started server runs until
/// [`close`](Self::close) is called here or on a [`ServerHandle`]. For a
/// server that stops by itself when a piece of code is done, see
/// [`serve_while`](Self::serve_while).
pub struct Server {
    handle: ServerHandle,
}

impl Server {
    pub(crate) fn new(handle: ServerHandle) -> Self {
        Self { handle }
    }

    /// Runs the startup hooks, then accepts on every listener, serving
    /// `service` (an axum `Router`, any `tower::Service`, or a hyper
    /// `service_fn`) over HTTP/1.1 and HTTP/2 (with prior knowledge).
    ///
    /// Returns once the server is accepting: a connect made after it
    /// returns is answered. Never hangs on a failure: if registering a
    /// listener or a startup hook fails, it returns the error, every
    /// listener is closed and [`wait_closed`](Self::wait_closed) returns
    /// the same error. The server's tasks run on the calling runtime.
    ///
    /// Only the first call starts the server. A later call returns
    /// [`Error::AlreadyStarted`] while it is starting or serving, and
    /// [`Error::Closed`] once it is closing or closed (also when `close()`
    /// came while the startup hooks ran); the running server is never
    /// affected. If this future is dropped before it returns, or a hook
    /// panics, the server is closed and `wait_closed` returns
    /// [`Error::StartCancelled`].
    ///
    /// Needs a tokio runtime with I/O and time enabled (what
    /// `#[tokio::main]` and `#[tokio::test]` build).
    pub async fn start_serving<S, K>(&self, service: S) -> Result<(), Error>
    where
        S: IntoHttpService<K>,
    {
        let core = &self.handle.core;
        let options = core.lifecycle.begin_start()?;
        let begun = Instant::now();
        // Until the server's task runs, this future owns the start: if it
        // is dropped or a hook panics, the guard closes the server, so that
        // nothing is left half-started and wait_closed still resolves.
        let guard = FailUnlessDisarmed::new(core, Error::StartCancelled);

        let prepared = async {
            for slot in &core.listeners {
                slot.register().map_err(|e| Error::Adopt(Arc::new(e)))?;
            }
            for hook in options.startup {
                hook().await.map_err(|e| Error::Startup(Arc::from(e)))?;
            }
            Ok::<(), Error>(())
        };
        if let Err(error) = prepared.await {
            guard.disarm();
            core.fail(error.clone());
            core.finish();
            return Err(error);
        }

        // Serving from here, unless a close came during the hooks; then the
        // task below only runs the shutdown hooks and reports.
        let serving = core.lifecycle.started();
        let limit = options.max_connections.map(|n| Arc::new(Semaphore::new(n)));
        let accept = accept_loop(Arc::clone(core), service.into_http_service(), limit);
        let close = drive_close(Arc::clone(core), options.graceful_timeout, options.shutdown);
        // One task per server: the accept loop, then the close driver. It is
        // not tracked, as the driver waits for the tracked tasks.
        tokio::spawn(async move {
            accept.await;
            close.await;
        });
        guard.disarm();
        serving?;
        if tracing::enabled!(tracing::Level::INFO) {
            tracing::info!(
                event = events::SERVING,
                addrs = %events::addrs(&self.local_addrs()),
                took_ms = events::millis(begun.elapsed()),
                "serving"
            );
        }
        Ok(())
    }

    /// Starts serving, then waits until the server is closed (by a handle,
    /// a handler, [`close_on_signals`](ServerHandle::close_on_signals) or a
    /// fatal error). Returns what [`wait_closed`](Self::wait_closed) does.
    pub async fn serve_forever<S, K>(&self, service: S) -> Result<CloseReport, Error>
    where
        S: IntoHttpService<K>,
    {
        self.start_serving(service).await?;
        self.wait_closed().await
    }

    /// The scoped form, Rust's `async with server:`: serves while `scope`
    /// runs, then closes and waits until closed, and returns `scope`'s
    /// output. If `scope` panics or this future is dropped, the server is
    /// closed all the same (without waiting).
    ///
    /// ```
    /// # async fn demo() -> Result<(), drover_worker::Error> {
    /// # let app = axum::Router::new();
    /// let server = drover_worker::Server::bind("127.0.0.1:0").await?;
    /// let addr = server.local_addrs()[0].clone();
    /// let answer = server.serve_while(app, async move {
    ///     // ... talk to addr ...
    ///     42
    /// }).await?;
    /// assert!(!server.is_serving());
    /// # Ok(()) }
    /// ```
    pub async fn serve_while<S, K, F>(&self, service: S, scope: F) -> Result<F::Output, Error>
    where
        S: IntoHttpService<K>,
        F: Future,
    {
        self.start_serving(service).await?;
        let guard = CloseOnDrop(&self.handle);
        let output = scope.await;
        drop(guard);
        self.wait_closed().await?;
        Ok(output)
    }

    /// A handle to this server, for other tasks, threads and handlers.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    // Only asyncio.Server's own methods are repeated from the handle; the
    // rest (close_draining, abort, listeners, stats...) is on the handle.

    /// See [`ServerHandle::close`]. On `Server` too, as `asyncio.Server.close`:
    /// a fixture that holds its server needs no handle to stop it.
    pub fn close(&self) {
        self.handle.close();
    }

    /// See [`ServerHandle::wait_closed`]. On `Server` too, as
    /// `asyncio.Server.wait_closed`: a fixture that holds its server needs
    /// no handle to wait for it.
    pub async fn wait_closed(&self) -> Result<CloseReport, Error> {
        self.handle.wait_closed().await
    }

    /// See [`ServerHandle::is_serving`]. On `Server` too, as
    /// `asyncio.Server.is_serving`: a fixture that holds its server needs no
    /// handle to ask.
    pub fn is_serving(&self) -> bool {
        self.handle.is_serving()
    }

    /// See [`ServerHandle::local_addrs`]. On `Server` too, as
    /// `asyncio.Server.sockets`: a fixture that holds its server needs no
    /// handle to know where to connect.
    pub fn local_addrs(&self) -> Vec<ListenAddr> {
        self.handle.local_addrs()
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Server").field(&self.handle).finish()
    }
}

/// Closes the server when dropped (the scoped form's guard).
struct CloseOnDrop<'a>(&'a ServerHandle);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}
