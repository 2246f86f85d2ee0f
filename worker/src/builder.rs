//! Server options, and the three ways to get listeners: bind, adopt,
//! inherit. [`Server`]'s constructors are here too: a builder makes a
//! server, never the other way round.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use drover_shared::listen_fds::inherited_listeners;
use drover_shared::{Listener, ListenerSpec};

use crate::defaults;
use crate::error::Error;
use crate::handle::ServerHandle;
use crate::hooks::{shutdown_hook, startup_hook};
use crate::limits::Limits;
use crate::listeners::{ListenerSlot, Origin};
use crate::server::Server;
use crate::server_core::{ServerConfig, ServerCore};
use crate::service::BoxError;
use crate::sockets::IntoListener;

/// Options for a [`Server`]; finish with [`bind`](Builder::bind),
/// [`from_sockets`](Builder::from_sockets) or [`from_env`](Builder::from_env).
///
/// ```
/// # async fn demo() -> Result<(), drover_worker::Error> {
/// use std::time::Duration;
/// let server = drover_worker::Server::builder()
///     .graceful_timeout(Duration::from_secs(5))
///     .max_connections(1000)
///     .on_startup(|| async { Ok::<_, std::io::Error>(()) })
///     .bind("127.0.0.1:0")
///     .await?;
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until bind, from_sockets or from_env"]
pub struct Builder {
    config: ServerConfig,
    /// Only for the sockets `bind` opens.
    backlog: u32,
}

impl Default for Builder {
    /// The options of [`defaults`], no limit on connections or requests,
    /// no access log, no hooks, no TLS.
    fn default() -> Self {
        Self {
            config: ServerConfig {
                graceful_timeout: Some(defaults::GRACEFUL_TIMEOUT),
                keep_alive_timeout: Some(defaults::KEEP_ALIVE_TIMEOUT),
                header_read_timeout: Some(defaults::HEADER_READ_TIMEOUT),
                max_connections: None,
                access_log: false,
                limits: Limits {
                    body_read_timeout: Some(defaults::BODY_READ_TIMEOUT),
                    send_timeout: Some(defaults::SEND_TIMEOUT),
                    request_line: Some(defaults::LIMIT_REQUEST_LINE),
                    request_field_size: Some(defaults::LIMIT_REQUEST_FIELD_SIZE),
                    request_fields: defaults::LIMIT_REQUEST_FIELDS,
                },
                request_quota: None,
                startup: Vec::new(),
                shutdown: Vec::new(),
                tls: None,
                plain_names: Vec::new(),
            },
            backlog: defaults::BACKLOG,
        }
    }
}

impl Builder {
    /// How long connections may take to finish after close before they
    /// are aborted. Default [`defaults::GRACEFUL_TIMEOUT`] (30 s); `None`
    /// waits for ever.
    pub fn graceful_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.graceful_timeout = timeout.into();
        self
    }

    /// How long an idle connection is kept open between requests (and, on
    /// a new connection, until its first request). Default
    /// [`defaults::KEEP_ALIVE_TIMEOUT`] (5 s).
    /// `Duration::ZERO` turns keep-alive off (one request per connection).
    /// `None` sets no idle limit of its own; `header_read_timeout` still
    /// bounds the wait for the next request head, since hyper measures both
    /// from the moment a connection starts waiting. The shorter of the two
    /// applies.
    pub fn keep_alive_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.keep_alive_timeout = timeout.into();
        self
    }

    /// How long a client may take to send a complete HTTP/1 request head,
    /// measured from when the connection starts waiting for it (slowloris
    /// protection). Default [`defaults::HEADER_READ_TIMEOUT`] (30 s), in effect
    /// capped by `keep_alive_timeout` (see there); `None` for no limit of its
    /// own.
    pub fn header_read_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.header_read_timeout = timeout.into();
        self
    }

    /// How long a request body may go without a byte while the
    /// application waits for one; then the read fails (see
    /// [`RequestBody`](crate::RequestBody)). Default
    /// [`defaults::BODY_READ_TIMEOUT`] (60 s); `None` or zero: no timeout.
    pub fn body_read_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.limits.body_read_timeout = timeout.into().filter(|t| !t.is_zero());
        self
    }

    /// How long a connection's writes may make no progress (its client
    /// reads nothing) before the connection is cut with a reset; HTTP/1
    /// and HTTP/2 alike. No timer runs unless a write waits. Default
    /// [`defaults::SEND_TIMEOUT`] (60 s); `None` or zero: no timeout.
    pub fn send_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.limits.send_timeout = timeout.into().filter(|t| !t.is_zero());
        self
    }

    /// The longest request line (`METHOD TARGET HTTP/1.1`, or its HTTP/2
    /// equivalent), in bytes: longer ones are answered 414 with
    /// `connection: close`, without calling the application. Default
    /// [`defaults::LIMIT_REQUEST_LINE`] (8 KiB); `None` or 0: only the
    /// limit on the whole head ([`defaults::LIMIT_REQUEST_HEAD`], 64 KiB).
    pub fn limit_request_line(mut self, bytes: impl Into<Option<usize>>) -> Self {
        self.config.limits.request_line = bytes.into().filter(|b| *b > 0);
        self
    }

    /// The longest header field (`name: value`), in bytes: a request with
    /// a longer one is answered 431 with `connection: close`, without
    /// calling the application. Default
    /// [`defaults::LIMIT_REQUEST_FIELD_SIZE`] (8 KiB); `None` or 0: only
    /// the limit on the whole head (64 KiB).
    pub fn limit_request_field_size(mut self, bytes: impl Into<Option<usize>>) -> Self {
        self.config.limits.request_field_size = bytes.into().filter(|b| *b > 0);
        self
    }

    /// The most header fields in an HTTP/1 request (at least 1): more get
    /// 431 from hyper. Default [`defaults::LIMIT_REQUEST_FIELDS`] (100),
    /// which hyper keeps on the stack; any other value costs one heap
    /// allocation per request.
    pub fn limit_request_fields(mut self, fields: usize) -> Self {
        self.config.limits.request_fields = fields.max(1);
        self
    }

    /// At most `limit` connections at once (at least 1); beyond it the
    /// server stops accepting and new connections wait in the kernel's
    /// backlog. Default: no limit.
    pub fn max_connections(mut self, limit: usize) -> Self {
        self.config.max_connections = Some(limit.clamp(1, tokio::sync::Semaphore::MAX_PERMITS));
        self
    }

    /// Logs one line per request with `tracing` (target `drover::access`,
    /// level info): method, target, version, status and the time to the
    /// response head. Default off.
    pub fn access_log(mut self, on: bool) -> Self {
        self.config.access_log = on;
        self
    }

    /// TLS on every TCP listener (Unix sockets stay plain: a proxy on the
    /// same host speaks plain HTTP to them; so do the listeners named by
    /// [`plain_listener`](Builder::plain_listener)). The handshake is bounded by
    /// the same limit as a first request head (the shorter of the
    /// keep-alive and header-read timeouts); a failed one is counted
    /// ([`ServerStats::tls_handshake_failures`](crate::ServerStats)) and
    /// logged at debug, and ends that connection alone.
    pub fn tls(mut self, tls: crate::Tls) -> Self {
        self.config.tls = Some(tls);
        self
    }

    /// With [`tls`](Builder::tls), serves the listeners named `name` (their
    /// `LISTEN_FDNAMES` name: systemd's `FileDescriptorName=`, see
    /// [`from_env`](Builder::from_env)) plain HTTP: a health-check port, or
    /// a port behind a proxy that already terminated TLS. Can be given more
    /// than once. [`ListenerInfo::tls`](crate::ListenerInfo::tls) tells
    /// which listeners speak TLS.
    pub fn plain_listener(mut self, name: impl Into<String>) -> Self {
        self.config.plain_names.push(name.into());
        self
    }

    /// After `requests` requests, [`ServerHandle::quota_reached`] resolves.
    /// The server keeps serving: what the quota means is the caller's to
    /// decide (a drover worker asks its supervisor for a replacement and
    /// closes once that one serves: `--max-requests`). Default: none.
    ///
    /// [`ServerHandle::quota_reached`]: crate::ServerHandle::quota_reached
    pub fn request_quota(mut self, requests: impl Into<Option<u64>>) -> Self {
        self.config.request_quota = requests.into();
        self
    }

    /// The listen backlog for sockets [`bind`](Builder::bind) opens
    /// (default [`defaults::BACKLOG`], 2048, capped by the kernel's
    /// `somaxconn`). Adopted sockets
    /// keep theirs.
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.backlog = backlog;
        self
    }

    /// Runs `hook` in [`start_serving`](Server::start_serving) before the
    /// server accepts. Hooks run in the order added; the first error stops
    /// the start: `start_serving` returns [`Error::Startup`] with it, the
    /// listeners are closed and the shutdown hooks do not run.
    pub fn on_startup<F, Fut, E>(mut self, hook: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.config.startup.push(startup_hook(hook));
        self
    }

    /// Runs `hook` after close, once every connection has ended, before
    /// [`wait_closed`](ServerHandle::wait_closed) resolves. Only for a
    /// server whose startup hooks all succeeded.
    pub fn on_shutdown<F, Fut>(mut self, hook: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.config.shutdown.push(shutdown_hook(hook));
        self
    }

    /// Opens a listener on `addr`: `HOST:PORT` (IPv4, or a name resolved
    /// now; its first address is bound), `[V6]:PORT` or `unix:PATH`; port 0
    /// picks a free port. The socket listens at once (connects queue in the
    /// backlog) but nothing is accepted before
    /// [`start_serving`](Server::start_serving). A Unix socket file created
    /// here is removed when the server closes. For several addresses, open
    /// them with [`ListenerSpec::open`] and use
    /// [`from_sockets`](Self::from_sockets); for inherited descriptors,
    /// [`from_env`](Self::from_env).
    pub async fn bind(self, addr: impl AsRef<str>) -> Result<Server, Error> {
        let spec: ListenerSpec = addr.as_ref().parse()?;
        let backlog = self.backlog;
        let listener = match &spec {
            // Resolving a host name may block: off the runtime's threads.
            ListenerSpec::Tcp(text) if text.parse::<std::net::SocketAddr>().is_err() => {
                let opened = tokio::task::spawn_blocking(move || spec.open(backlog)).await;
                opened.unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()))?
            }
            _ => spec.open(backlog)?,
        };
        self.build(vec![(listener, None)], Origin::Opened)
    }

    /// Adopts listeners that are already open: std or tokio
    /// `TcpListener`/`UnixListener`, or [`Listener`]s (to mix kinds in one
    /// call: `[Listener::from(tcp), Listener::from(unix)]`). They must be
    /// listening (a socket that is only bound is an error); the server sets
    /// non-blocking mode itself as it adopts them. Their socket files belong
    /// to whoever created them and are never removed by the server.
    pub fn from_sockets<I>(self, listeners: I) -> Result<Server, Error>
    where
        I: IntoIterator,
        I::Item: IntoListener,
    {
        let listeners = listeners
            .into_iter()
            .map(|l| l.into_listener().map(|l| (l.without_socket_file(), None)))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::Adopt(Arc::new(e)))?;
        self.build(listeners, Origin::Given)
    }

    /// Adopts the sockets passed by systemd socket activation or by the
    /// drover supervisor (the LISTEN_FDS convention: descriptors from 3,
    /// `LISTEN_PID` equal to this process, names from `LISTEN_FDNAMES`
    /// kept as [`ListenerInfo::name`](crate::ListenerInfo::name)). Missing,
    /// malformed or foreign variables, and descriptors that are not
    /// listening sockets, are an [`Error::ListenFds`] that says which.
    pub fn from_env(self) -> Result<Server, Error> {
        let listeners = inherited_listeners()?
            .into_iter()
            .map(|inherited| (inherited.listener, inherited.name))
            .collect();
        self.build(listeners, Origin::Inherited)
    }

    fn build(
        self,
        listeners: Vec<(Listener, Option<String>)>,
        origin: Origin,
    ) -> Result<Server, Error> {
        if listeners.is_empty() {
            return Err(Error::NoListeners);
        }
        let config = &self.config;
        let slots = listeners
            .into_iter()
            .map(|(listener, name)| {
                let plain = name
                    .as_ref()
                    .is_some_and(|n| config.plain_names.contains(n));
                let tls = config.tls.is_some() && !plain;
                ListenerSlot::new(listener, name, origin, tls)
            })
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::Adopt(Arc::new(e)))?;
        let core = ServerCore::new(slots, self.config);
        Ok(Server::new(ServerHandle::new(Arc::new(core))))
    }
}

impl Server {
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
}
