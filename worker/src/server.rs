//! [`Server`]: open, start, serve, close.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drover_shared::ListenAddr;
use tokio::sync::Semaphore;

use crate::accept::accept_loop;
use crate::builder::{Builder, ShutdownHook};
use crate::lifecycle::{CloseReport, Lifecycle, ServerStats};
use crate::service::IntoHttpService;
use crate::sockets::IntoListener;
use crate::{Error, ListenerInfo, ServerHandle};

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
/// Dropping a `Server` does not stop it: a started server runs until
/// [`close`](Self::close) is called here or on a [`ServerHandle`]. For a
/// server that stops by itself when a piece of code is done, see
/// [`serve_while`](Self::serve_while).
pub struct Server {
    handle: ServerHandle,
    /// The options, until `start_serving` takes them.
    options: Mutex<Option<Builder>>,
}

impl Server {
    pub(crate) fn new(handle: ServerHandle, options: Mutex<Option<Builder>>) -> Self {
        Self { handle, options }
    }

    /// A [`Builder`] for a server with non-default options or hooks.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// [`Builder::bind`] with default options.
    pub async fn bind(addr: impl AsRef<str>) -> Result<Self, Error> {
        Builder::default().bind(addr).await
    }

    /// [`Builder::from_sockets`] with default options.
    pub fn from_sockets<I>(listeners: I) -> Result<Self, Error>
    where
        I: IntoIterator,
        I::Item: IntoListener,
    {
        Builder::default().from_sockets(listeners)
    }

    /// [`Builder::from_env`] with default options.
    pub fn from_env() -> Result<Self, Error> {
        Builder::default().from_env()
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
    /// affected.
    pub async fn start_serving<S, K>(&self, service: S) -> Result<(), Error>
    where
        S: IntoHttpService<K>,
    {
        let lifecycle = &self.handle.lifecycle;
        lifecycle.begin_start()?;
        let begun = Instant::now();
        let options = self
            .options
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or(Error::AlreadyStarted)?;

        let prepared = async {
            for slot in &lifecycle.listeners {
                slot.register().map_err(|e| Error::Adopt(Arc::new(e)))?;
            }
            for hook in options.startup {
                hook().await.map_err(|e| Error::Startup(Arc::from(e)))?;
            }
            Ok::<(), Error>(())
        };
        if let Err(error) = prepared.await {
            lifecycle.fail(error.clone());
            lifecycle.finish();
            return Err(error);
        }

        let service = service.into_http_service();
        let limit = options.max_connections.map(|n| Arc::new(Semaphore::new(n)));
        let accept =
            |index| accept_loop(Arc::clone(lifecycle), index, service.clone(), limit.clone());
        for index in 1..lifecycle.listeners.len() {
            lifecycle.tasks.spawn(accept(index));
        }
        // The first listener's loop and the close driver share a task: one
        // spawn fewer per server. It is not tracked, as it waits for the
        // tracked tasks; its accept loop has ended before it does.
        let first = accept(0);
        let (lifecycle_, graceful, hooks) = (
            Arc::clone(lifecycle),
            options.graceful_timeout,
            options.shutdown,
        );
        tokio::spawn(async move {
            first.await;
            drive_close(lifecycle_, graceful, hooks).await;
        });
        lifecycle.started()?;
        tracing::info!(
            addrs = %display_addrs(&self.local_addrs()),
            took = ?begun.elapsed(),
            "serving"
        );
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

    /// See [`ServerHandle::close`].
    pub fn close(&self) {
        self.handle.close();
    }

    /// See [`ServerHandle::close_draining`].
    pub fn close_draining(&self, window: Duration) {
        self.handle.close_draining(window);
    }

    /// See [`ServerHandle::abort`].
    pub fn abort(&self) {
        self.handle.abort();
    }

    /// See [`ServerHandle::wait_closed`].
    pub async fn wait_closed(&self) -> Result<CloseReport, Error> {
        self.handle.wait_closed().await
    }

    /// See [`ServerHandle::is_serving`].
    pub fn is_serving(&self) -> bool {
        self.handle.is_serving()
    }

    /// See [`ServerHandle::local_addrs`].
    pub fn local_addrs(&self) -> Vec<ListenAddr> {
        self.handle.local_addrs()
    }

    /// See [`ServerHandle::listeners`].
    pub fn listeners(&self) -> Vec<ListenerInfo> {
        self.handle.listeners()
    }

    /// See [`ServerHandle::stats`].
    pub fn stats(&self) -> ServerStats {
        self.handle.stats()
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Server").field(&self.handle).finish()
    }
}

/// After close: wait for the connections up to the graceful deadline,
/// abort what is left, run the shutdown hooks, report.
async fn drive_close(
    lifecycle: Arc<Lifecycle>,
    graceful_timeout: Option<Duration>,
    shutdown_hooks: Vec<ShutdownHook>,
) {
    lifecycle.closing().await;
    let begun = Instant::now();
    lifecycle.tasks.close();
    let drained = async {
        match graceful_timeout {
            Some(deadline) => tokio::time::timeout(deadline, lifecycle.tasks.wait())
                .await
                .is_ok(),
            None => {
                lifecycle.tasks.wait().await;
                true
            }
        }
    };
    let finished_in_time = tokio::select! {
        finished = drained => finished,
        () = lifecycle.aborting() => false,
    };
    if !finished_in_time {
        lifecycle.abort();
        lifecycle.tasks.wait().await;
    }
    for hook in shutdown_hooks {
        hook().await;
    }
    lifecycle.finish();
    tracing::info!(took = ?begun.elapsed(), stats = ?lifecycle.stats(), "closed");
}

fn display_addrs(addrs: &[ListenAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Closes the server when dropped (the scoped form's guard).
struct CloseOnDrop<'a>(&'a ServerHandle);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}
