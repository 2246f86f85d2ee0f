//! The names of drover's lifecycle events: the `event` field of the log
//! line each one writes (`--log-format json` makes it a JSON field). They
//! are the stable part of the log, what operators grep and alert on and
//! what drover's own end-to-end tests wait for; the message text around
//! them may be reworded.
//!
//! Fields are plain values, never a Rust `Debug` rendering: durations in
//! milliseconds as numbers, named `*_ms` ([`millis`]); addresses as the
//! strings `--bind` takes, joined by ", " ([`addrs`]); signals by name.
//!
//! Every name is listed in [`ALL`], and README's "Log events" table says
//! what each means (`tests/tests/docs.rs` checks that it lists them all).

// The supervisor and its fleet.
/// The supervisor starts: its pid, the worker count, the addresses.
pub const STARTING: &str = "starting";
/// Every first worker is ready: the pid file is written, systemd told.
pub const READY: &str = "ready";
/// A phase change of the supervisor (debug level).
pub const PHASE: &str = "phase";
/// A stop began (TERM, INT): the workers close, gracefully.
pub const STOPPING: &str = "stopping";
/// A stop that cannot wait (QUIT, a second stop, a failed first boot).
pub const STOPPING_NOW: &str = "stopping_now";
/// A second stop signal within 1 s of the first: the same stop, ignored.
pub const STOP_REPEATED: &str = "stop_repeated";
/// The supervisor exits.
pub const STOPPED: &str = "stopped";

// One worker, as the supervisor sees it.
/// A worker process was started (`replaces`: the worker it will replace).
pub const WORKER_STARTED: &str = "worker_started";
/// A worker reported that it serves.
pub const WORKER_READY: &str = "worker_ready";
/// A worker reported that it cannot start, and why.
pub const WORKER_CANNOT_START: &str = "worker_cannot_start";
/// A worker failed to boot: during the first boot (drover exits 1) or as
/// a replacement (the one it was to replace serves on).
pub const BOOT_FAILED: &str = "boot_failed";
/// A worker is told to close (replaced, scaled down, recycled).
pub const WORKER_CLOSING: &str = "worker_closing";
/// A closing worker reported its close: drained and aborted connections.
pub const WORKER_CLOSED: &str = "worker_closed";
/// A worker that was told to close has exited.
pub const WORKER_LEFT: &str = "worker_left";
/// A worker that was serving died unasked; it is replaced.
pub const WORKER_DIED: &str = "worker_died";
/// A worker is killed: not ready in time, silent, garbage on its control
/// socket, or still running past the graceful timeout.
pub const WORKER_KILLED: &str = "worker_killed";
/// A worker exited while the supervisor stops.
pub const WORKER_STOPPED: &str = "worker_stopped";
/// Workers keep dying: the next replacement waits (`delay`).
pub const BACKOFF: &str = "backoff";

// Changing the fleet while it serves.
/// A rolling restart began (HUP).
pub const RESTART_BEGUN: &str = "restart_begun";
/// A rolling restart replaced every worker.
pub const RESTART_COMPLETE: &str = "restart_complete";
/// A rolling restart stopped at a new worker that failed to boot; the
/// old workers serve on.
pub const RESTART_STOPPED: &str = "restart_stopped";
/// A worker reached its request quota and is being replaced.
pub const RECYCLING: &str = "recycling";
/// The wanted worker count changed (TTIN, TTOU).
pub const SCALED: &str = "scaled";
/// A binary upgrade began (USR2): `new_supervisor` is its pid.
pub const UPGRADE_BEGUN: &str = "upgrade_begun";
/// The new supervisor took over; this one drains and exits.
pub const UPGRADE_COMPLETE: &str = "upgrade_complete";
/// A binary upgrade failed; this supervisor serves on.
pub const UPGRADE_FAILED: &str = "upgrade_failed";
/// In the new supervisor: it took over from the old one.
pub const TOOK_OVER: &str = "took_over";
/// In the new supervisor: it gives up; the old one serves on.
pub const TAKEOVER_ABANDONED: &str = "takeover_abandoned";
/// A certificate and key were read and checked (at start, USR1, HUP), or
/// (in a worker) swapped in for new handshakes.
pub const TLS_LOADED: &str = "tls_loaded";
/// A certificate reload was refused (a file missing, a pair that does not
/// parse or match): the old one serves on.
pub const TLS_RELOAD_FAILED: &str = "tls_reload_failed";
/// The served certificate expires within 14 days, or has expired (a
/// warning, at start and at every reload).
pub const TLS_EXPIRING: &str = "tls_expiring";

// In a worker process.
/// The worker's server accepts (the server library's own line).
pub const SERVING: &str = "serving";
/// The worker's server has closed: every connection is gone.
pub const CLOSED: &str = "closed";
/// The worker reached its request quota and asks for a replacement.
pub const QUOTA_REACHED: &str = "quota_reached";
/// The worker's supervisor is gone: it closes.
pub const SUPERVISOR_GONE: &str = "supervisor_gone";
/// Accepting failed for want of resources (EMFILE...): backing off.
pub const ACCEPT_BACKOFF: &str = "accept_backoff";
/// A worker starts: its descriptor limits (soft raised to hard) and the
/// connection limit it serves with.
pub const FD_LIMITS: &str = "fd_limits";

/// Every event name, for the README's table and the tests.
pub const ALL: [&str; 37] = [
    STARTING,
    READY,
    PHASE,
    STOPPING,
    STOPPING_NOW,
    STOP_REPEATED,
    STOPPED,
    WORKER_STARTED,
    WORKER_READY,
    WORKER_CANNOT_START,
    BOOT_FAILED,
    WORKER_CLOSING,
    WORKER_CLOSED,
    WORKER_LEFT,
    WORKER_DIED,
    WORKER_KILLED,
    WORKER_STOPPED,
    BACKOFF,
    RESTART_BEGUN,
    RESTART_COMPLETE,
    RESTART_STOPPED,
    RECYCLING,
    SCALED,
    UPGRADE_BEGUN,
    UPGRADE_COMPLETE,
    UPGRADE_FAILED,
    TOOK_OVER,
    TAKEOVER_ABANDONED,
    TLS_LOADED,
    TLS_RELOAD_FAILED,
    TLS_EXPIRING,
    SERVING,
    CLOSED,
    QUOTA_REACHED,
    SUPERVISOR_GONE,
    ACCEPT_BACKOFF,
    FD_LIMITS,
];

/// A duration as a log field: milliseconds, as a number (fractions kept).
pub fn millis(duration: std::time::Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Addresses as a log field: each as `--bind` spells it, joined by ", ".
pub fn addrs(addrs: &[crate::ListenAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for name in super::ALL {
            assert!(seen.insert(name), "{name} twice");
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
        }
    }
}
