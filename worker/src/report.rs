//! What a server tells about itself: live counters and the close report.

/// What a server's close did, returned by
/// [`wait_closed`](crate::ServerHandle::wait_closed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseReport {
    /// Connections that ended on their own once the server was closing:
    /// they answered their in-flight requests, or were idle and closed.
    pub drained: u64,
    /// Connections still open at the graceful deadline, or at
    /// [`abort`](crate::ServerHandle::abort), and cut.
    pub aborted: u64,
    /// Requests handed to the application over the server's whole life.
    pub requests_served: u64,
}

/// Live counters of a server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Requests handed to the application so far.
    pub requests_served: u64,
    /// Connections open now.
    pub open_connections: u64,
    /// Requests handed to the application whose responses are not sent in
    /// full yet (an upgraded connection's request ends with its 101).
    pub requests_in_flight: u64,
    /// TLS handshakes that failed (a plain-HTTP client on a TLS port,
    /// garbage, a stalled handshake), each ending its connection alone.
    pub tls_handshake_failures: u64,
}
