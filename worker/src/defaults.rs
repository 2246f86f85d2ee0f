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
