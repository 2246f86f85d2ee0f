//! What systemd hears (sd_notify): readiness, reloads, stops, the main pid
//! after a binary upgrade, and watchdog pings. Without `NOTIFY_SOCKET`
//! every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

/// Serving: `READY=1` with `STATUS=<status>`; after an upgrade also
/// `MAINPID=<this pid>`, so that systemd follows the new supervisor (it
/// accepts that from a process other than the main one only with
/// `NotifyAccess=all`).
pub(crate) fn ready(status: &str, new_main_pid: bool) {
    let pid = NotifyState::MainPid(std::process::id());
    let mut states = vec![NotifyState::Ready, NotifyState::Status(status)];
    if new_main_pid {
        states.insert(0, pid);
    }
    send(&states);
}

/// A rolling restart begins: `RELOADING=1` with `MONOTONIC_USEC`, which
/// systemd wants with it; `READY=1` follows when it ends (even when it
/// stops half-way: the service still serves).
pub(crate) fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// The supervisor is stopping: `STOPPING=1`.
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// How often to ping systemd's watchdog: half of `WATCHDOG_USEC` when it
/// is set for this process; `None` otherwise.
pub(crate) fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|usec| !usec.is_zero())
        .map(|usec| usec / 2)
}

/// `WATCHDOG=1`: the supervisor's loop is alive.
pub(crate) fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "cannot notify systemd");
    }
}
