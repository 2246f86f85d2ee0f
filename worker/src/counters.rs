//! The server's counters: requests, open connections and how connections
//! ended (for [`ServerStats`] and [`CloseReport`]), and the request quota.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::latch::Latch;
use crate::report::{CloseReport, ServerStats};

/// Counted from any task or thread, without a lock; every count is
/// `Relaxed`, as no other memory is published through them.
pub(crate) struct Counters {
    requests: AtomicU64,
    /// The request count that fires `quota_signal` (`u64::MAX`: none).
    request_quota: u64,
    quota_signal: Latch,
    open_connections: AtomicU64,
    /// Requests handed to the application whose responses have not been
    /// sent in full (nor dropped) yet.
    in_flight: AtomicU64,
    drained: AtomicU64,
    aborted: AtomicU64,
    tls_failures: AtomicU64,
}

impl Counters {
    /// All zero; `request_quota` requests fire [`quota_reached`](Self::quota_reached).
    pub(crate) fn new(request_quota: Option<u64>) -> Self {
        Self {
            requests: AtomicU64::new(0),
            request_quota: request_quota.unwrap_or(u64::MAX),
            quota_signal: Latch::default(),
            open_connections: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            drained: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
            tls_failures: AtomicU64::new(0),
        }
    }

    pub(crate) fn count_request(&self) {
        // One request reaches the quota exactly; a comparison is all the
        // other requests pay.
        if self.requests.fetch_add(1, Ordering::Relaxed) + 1 == self.request_quota {
            self.quota_signal.fire();
        }
    }

    /// A request is in flight until [`request_ended`](Self::request_ended).
    pub(crate) fn request_began(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn request_ended(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Resolves once the request quota is reached (never without one).
    pub(crate) fn quota_reached(&self) -> impl Future<Output = ()> + Send + '_ {
        self.quota_signal.fired()
    }

    /// Counts a connection as open until the guard is dropped.
    pub(crate) fn connection_opened(&self) -> OpenConnection<'_> {
        self.open_connections.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self)
    }

    /// A connection ended on its own while the server was closing.
    pub(crate) fn count_drained(&self) {
        self.drained.fetch_add(1, Ordering::Relaxed);
    }

    /// A TLS handshake failed.
    pub(crate) fn count_tls_failure(&self) {
        self.tls_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection was cut.
    pub(crate) fn count_aborted(&self) {
        self.aborted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> ServerStats {
        ServerStats {
            requests_served: self.requests.load(Ordering::Relaxed),
            open_connections: self.open_connections.load(Ordering::Relaxed),
            requests_in_flight: self.in_flight.load(Ordering::Relaxed),
            tls_handshake_failures: self.tls_failures.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn report(&self) -> CloseReport {
        CloseReport {
            drained: self.drained.load(Ordering::Relaxed),
            aborted: self.aborted.load(Ordering::Relaxed),
            requests_served: self.requests.load(Ordering::Relaxed),
        }
    }
}

/// One open connection, for [`ServerStats::open_connections`]. It borrows
/// the counters (the connection task holds the server for its whole life),
/// so opening a connection clones no `Arc`.
pub(crate) struct OpenConnection<'a>(&'a Counters);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Counters;

    #[tokio::test]
    async fn the_quota_fires_at_its_request_and_stays_fired() {
        let counters = Counters::new(Some(2));
        counters.count_request();
        assert!(!counters.quota_signal.is_fired());
        counters.count_request();
        counters.count_request();
        tokio::time::timeout(Duration::from_secs(10), counters.quota_reached())
            .await
            .expect("the quota did not fire at its request");
        assert_eq!(counters.stats().requests_served, 3);
    }

    #[test]
    fn without_a_quota_nothing_fires() {
        let counters = Counters::new(None);
        for _ in 0..1000 {
            counters.count_request();
        }
        assert!(!counters.quota_signal.is_fired());
    }

    #[test]
    fn an_open_connection_counts_until_its_guard_drops() {
        let counters = Counters::new(None);
        let first = counters.connection_opened();
        let second = counters.connection_opened();
        assert_eq!(counters.stats().open_connections, 2);
        drop(first);
        assert_eq!(counters.stats().open_connections, 1);
        drop(second);
        counters.request_began();
        counters.request_began();
        counters.request_ended();
        assert_eq!(counters.stats().requests_in_flight, 1);
        counters.count_drained();
        counters.count_aborted();
        counters.count_aborted();
        counters.count_request();
        assert_eq!(counters.stats().open_connections, 0);
        let report = counters.report();
        assert_eq!(
            (report.drained, report.aborted, report.requests_served),
            (1, 2, 1)
        );
    }
}
