//! What a connection holds each request to: the timeouts it carries.

use std::time::Duration;

/// The per-request limits of a server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// See [`RequestBody`](crate::RequestBody); `None`: none.
    pub(crate) body_read_timeout: Option<Duration>,
    /// See the `send_timeout` module; `None`: none.
    pub(crate) send_timeout: Option<Duration>,
}
