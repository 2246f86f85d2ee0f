//! How a server speaks HTTP on its connections: hyper's HTTP/1 and HTTP/2
//! builders with the server's idle limits, and the executor its HTTP/2
//! streams run on.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioTimer;
use tokio_util::task::TaskTracker;

use crate::defaults;
use crate::latch::Latch;
use crate::limits::Limits;

/// How a server speaks HTTP on its connections.
pub(crate) struct ConnectionConfig {
    /// Built at the first connection of each version: a server that never
    /// gets one (a test fixture's port check) does not pay for hyper's
    /// builders.
    http1: OnceLock<http1::Builder>,
    http2: OnceLock<http2::Builder<StreamExecutor>>,
    keep_alive: Option<Duration>,
    executor: StreamExecutor,
    /// The idle limit (see the `connection` module's docs); `None`: none.
    idle_limit: Option<Duration>,
    /// Log one line per request (target `drover::access`).
    pub(crate) access_log: bool,
    /// What each request is held to.
    pub(crate) limits: Limits,
    /// TLS on the TCP listeners' connections, if the server has it.
    pub(crate) tls: Option<crate::tls::Tls>,
}

impl ConnectionConfig {
    /// `keep_alive`: how long an idle HTTP/1 connection stays open (`None`:
    /// no limit of its own; zero: no keep-alive at all).
    /// `header_read_timeout`: how long a client may take to send a request
    /// head. HTTP/2 streams run on `tasks` and stop at `abort`.
    pub(crate) fn new(
        keep_alive: Option<Duration>,
        header_read_timeout: Option<Duration>,
        access_log: bool,
        limits: Limits,
        tasks: TaskTracker,
        abort: Arc<Latch>,
    ) -> Self {
        let idle_limit = match (keep_alive.filter(|ka| !ka.is_zero()), header_read_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (one, other) => one.or(other),
        };
        Self {
            http1: OnceLock::new(),
            http2: OnceLock::new(),
            keep_alive,
            executor: StreamExecutor { tasks, abort },
            idle_limit,
            access_log,
            limits,
            tls: None,
        }
    }

    /// The shorter of the keep-alive and header read timeouts: how long a
    /// connection may wait for a request (`None`: no limit).
    pub(crate) fn idle_limit(&self) -> Option<Duration> {
        self.idle_limit
    }

    /// hyper's HTTP/1 connection builder, the same for every connection.
    ///
    /// Request heads over [`defaults::LIMIT_REQUEST_HEAD`] (hyper's read
    /// buffer) or with more fields than the limit get 431 from hyper; the
    /// request line and single fields are checked per request (`limits`).
    pub(crate) fn http1(&self) -> &http1::Builder {
        self.http1.get_or_init(|| {
            let mut http = http1::Builder::new();
            // half_close: a client may shut down its sending side once
            // its request is out (`shutdown(SHUT_WR)`, `curl` with a
            // request body from stdin); it still wants the answer. The
            // price: a client that leaves in the middle of a request is
            // noticed when its answer is written, not before, so a slow
            // handler runs to its end for nobody.
            //
            // The head limit twice: `max_buf_size` bounds hyper's read
            // buffer, but hyper reads into the buffer's whole spare
            // capacity, which can be larger (how much depends on how the
            // head arrived in pieces), so a head over the limit could still
            // parse; `max_header_size` is the exact bound (it is also the
            // limit of chunked trailers, 16 KiB otherwise).
            http.half_close(true)
                .timer(TokioTimer::new())
                .header_read_timeout(self.idle_limit)
                .keep_alive(self.keep_alive != Some(Duration::ZERO))
                .max_buf_size(defaults::LIMIT_REQUEST_HEAD)
                .max_header_size(defaults::LIMIT_REQUEST_HEAD);
            // hyper's default is 100 fields, kept on the stack; setting it
            // moves them to the heap, one allocation per request: only for
            // another limit.
            if self.limits.request_fields != defaults::LIMIT_REQUEST_FIELDS {
                http.max_headers(self.limits.request_fields);
            }
            http
        })
    }

    /// hyper's HTTP/2 connection builder, the same for every connection
    /// that starts with the HTTP/2 preface (prior knowledge; there is no
    /// TLS, so no ALPN).
    ///
    /// At most [`defaults::HTTP2_MAX_CONCURRENT_STREAMS`] streams,
    /// [`defaults::HTTP2_MAX_SEND_BUF_SIZE`] of buffered response per
    /// stream, receive windows of [`defaults::HTTP2_STREAM_WINDOW`] and
    /// [`defaults::HTTP2_CONNECTION_WINDOW`], a header list of at most the
    /// head limit; and hyper's rapid-reset protections stay on: at most 20
    /// streams reset by the client before the server accepted them
    /// (`max_pending_accept_reset_streams`, CVE-2023-44487) and 1024 reset
    /// by the server for the client's protocol errors
    /// (`max_local_error_reset_streams`), past which the connection gets
    /// GOAWAY.
    pub(crate) fn http2(&self) -> &http2::Builder<StreamExecutor> {
        self.http2.get_or_init(|| {
            let mut http = http2::Builder::new(self.executor.clone());
            // No HTTP/2 timer: it only drives keep-alive pings, which are off.
            http.max_concurrent_streams(defaults::HTTP2_MAX_CONCURRENT_STREAMS)
                .max_send_buf_size(defaults::HTTP2_MAX_SEND_BUF_SIZE)
                .initial_stream_window_size(defaults::HTTP2_STREAM_WINDOW)
                .initial_connection_window_size(defaults::HTTP2_CONNECTION_WINDOW)
                .max_header_list_size(defaults::LIMIT_REQUEST_HEAD as u32)
                .max_pending_accept_reset_streams(20)
                .max_local_error_reset_streams(1024);
            http
        })
    }
}

/// Runs hyper's HTTP/2 stream tasks among the server's tracked tasks, so
/// that `wait_closed` waits for them and an abort stops them.
#[derive(Clone)]
pub(crate) struct StreamExecutor {
    tasks: TaskTracker,
    abort: Arc<Latch>,
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, stream: F) {
        let abort = Arc::clone(&self.abort);
        self.tasks.spawn(async move {
            tokio::select! {
                biased;
                () = abort.fired() => {}
                _ = stream => {}
            }
        });
    }
}
