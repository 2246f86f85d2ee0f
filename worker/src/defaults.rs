//! What a [`Builder`](crate::Builder) uses for every option it is not
//! given, in one place.

use std::time::Duration;

/// How long connections may take to finish after close before they are
/// aborted: 30 s.
pub const GRACEFUL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an idle connection is kept open between requests: 5 s.
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client may take to send a complete HTTP/1 request head: 30 s.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The listen backlog of sockets a server opens itself: 2048 (the kernel
/// caps it at `somaxconn`).
pub use drover_shared::DEFAULT_BACKLOG as BACKLOG;

/// How long a request body may go without a byte while the application
/// waits for one: 60 s (nginx's `client_body_timeout`).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a connection's writes may make no progress (a client that does
/// not read) before it is cut: 60 s (nginx's `send_timeout`).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest request line (method, target, version): 8 KiB; beyond it,
/// 414.
pub const LIMIT_REQUEST_LINE: usize = 8 * 1024;

/// The longest header field (`name: value`): 8 KiB; beyond it, 431.
pub const LIMIT_REQUEST_FIELD_SIZE: usize = 8 * 1024;

/// The most header fields in a request: 100 (hyper's own default, which
/// costs no allocation); beyond it, 431.
pub const LIMIT_REQUEST_FIELDS: usize = 100;

/// The largest request head, all lines together: 64 KiB; beyond it, 431
/// (on HTTP/2: the header list size the server announces).
pub const LIMIT_REQUEST_HEAD: usize = 64 * 1024;

/// HTTP/2: the most streams a client may have open on one connection at
/// once: 100.
pub const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 100;

/// HTTP/2: the most response bytes buffered per stream for a client that
/// does not read: 64 KiB (with [`HTTP2_MAX_CONCURRENT_STREAMS`], at most
/// 6.4 MiB per connection, against hyper's 200 × 400 KB).
pub const HTTP2_MAX_SEND_BUF_SIZE: usize = 64 * 1024;

/// HTTP/2: the receive window of a stream (256 KiB) and of a whole
/// connection (1 MiB): what a client may send ahead of the application.
pub const HTTP2_STREAM_WINDOW: u32 = 256 * 1024;
/// See [`HTTP2_STREAM_WINDOW`].
pub const HTTP2_CONNECTION_WINDOW: u32 = 1024 * 1024;
