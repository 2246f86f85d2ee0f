//! How the supervisor ends: the ways out while it runs, one function for
//! all of them ([`Supervisor::leave`]); giving up during start; and the
//! last cleanup.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use drover_shared::events;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;

use super::command::{signal_name, Requester};
use super::exit_reason::ExitReason;
use super::{Phase, Rollout, Supervisor};
use crate::notify;
use crate::pid_file;

/// A way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Leave {
    /// A stop (TERM, INT): the listening sockets close, the workers close
    /// fast (nothing would serve a client kept waiting), stragglers are
    /// killed at the graceful timeout.
    Gracefully(Requester),
    /// QUIT, a second stop (at least `SAME_STOP` after the first), a failed
    /// first boot: the workers are killed, and drover exits 1 if any was
    /// still running.
    Now(&'static str),
    /// A new supervisor of a binary upgrade gives up (a worker of its
    /// failed to boot): the old one serves on, and the workers this one
    /// had ready, which already accept on the shared sockets, drain.
    GiveUpTakeover,
    /// The new supervisor of a binary upgrade serves: this one's workers
    /// drain, and the socket files are left to the new one.
    HandOver { successor: i32 },
}

/// What happens to the workers on the way out.
enum WorkersGo {
    /// Closed with no drain window.
    Fast,
    /// Closed with the drain window: others serve on the same sockets.
    Draining,
    /// SIGKILL.
    Killed,
}

impl Leave {
    fn workers(self) -> WorkersGo {
        match self {
            Self::Gracefully(_) => WorkersGo::Fast,
            Self::Now(_) => WorkersGo::Killed,
            Self::GiveUpTakeover | Self::HandOver { .. } => WorkersGo::Draining,
        }
    }

    /// The phase after leaving from `from`: a supervisor that handed over
    /// stays handed over whatever follows.
    fn next_phase(self, from: Phase) -> Phase {
        match self {
            Self::HandOver { .. } => Phase::HandedOver,
            _ if from == Phase::HandedOver => Phase::HandedOver,
            _ => Phase::Stopping,
        }
    }

    /// Whether this is the service stopping, for systemd (not an upgrade
    /// moving on, in either direction).
    pub(super) fn stops_the_service(self) -> bool {
        matches!(self, Self::Gracefully(_) | Self::Now(_))
    }
}

impl Supervisor<'_> {
    /// The one way out while running. Every way: the listening sockets
    /// close (so a new client is refused, unless another process holds
    /// them), no restart, replacement or upgrade goes on, the workers
    /// close or are killed, and the phase moves on; the loop exits once
    /// the last worker is reaped.
    pub(super) fn leave(&mut self, how: Leave) {
        // A new supervisor that said Ready in this same loop turn has
        // taken over: a stop then only hands over.
        if how.stops_the_service() && self.finish_pending_upgrade() {
            if let Leave::Gracefully(Requester::Signal(signal)) = how {
                tracing::info!(
                    signal = signal_name(signal),
                    "the new supervisor was ready: leaving to it"
                );
                return;
            }
        }
        if how.stops_the_service() && self.speaks_for_service() {
            notify::stopping();
        }
        if let Leave::HandOver { .. } = how {
            self.sockets.hand_over();
            self.hand_over_endpoints();
        }
        self.sockets.close();
        self.log_leaving(how);
        self.end_changes();
        match how.workers() {
            WorkersGo::Fast => self.close_workers(Duration::ZERO),
            WorkersGo::Draining => self.close_workers(self.config.drain_window),
            WorkersGo::Killed => {
                // Workers still running are cut: the exit says so.
                if !self.workers.is_empty() {
                    self.exit_code = ExitCode::FAILURE;
                }
                self.workers.iter_mut().for_each(|w| w.kill_now());
            }
        }
        if let Leave::Gracefully(_) = how {
            self.stop_began.get_or_insert_with(Instant::now);
        }
        self.enter(how.next_phase(self.phase));
    }

    fn log_leaving(&self, how: Leave) {
        match how {
            Leave::Gracefully(Requester::Signal(signal)) => tracing::info!(
                event = events::STOPPING,
                signal = signal_name(signal),
                graceful_timeout_ms = events::millis(self.config.graceful_timeout),
                "stopping gracefully"
            ),
            Leave::Gracefully(Requester::Operator(_)) => tracing::info!(
                event = events::STOPPING,
                by = "control socket",
                graceful_timeout_ms = events::millis(self.config.graceful_timeout),
                "stopping gracefully"
            ),
            Leave::Now(why) => tracing::warn!(event = events::STOPPING_NOW, why, "stopping now"),
            Leave::GiveUpTakeover => tracing::error!(
                event = events::TAKEOVER_ABANDONED,
                "giving up the takeover: the previous supervisor keeps serving"
            ),
            Leave::HandOver { successor } => tracing::info!(
                event = events::UPGRADE_COMPLETE,
                new_supervisor = successor,
                "binary upgrade complete: the new supervisor serves; closing this one's workers"
            ),
        }
    }

    /// Tells every active worker to close, idle connections getting
    /// `drain` (zero: a fast close; the drain window: leaving while others
    /// serve), with the graceful timeout.
    pub(super) fn close_workers(&mut self, drain: Duration) {
        let graceful = self.config.graceful_timeout;
        for worker in self.workers.iter_mut().filter(|w| w.is_active()) {
            worker.close(drain, graceful, ExitReason::Stop);
        }
    }

    /// On the way out: no restart goes on, no replacement starts, and a
    /// new supervisor being upgraded to is abandoned.
    fn end_changes(&mut self) {
        self.rollout = Rollout::Idle;
        self.respawn_at = None;
        self.cancel_upgrade();
        self.refuse_changes("drover is stopping");
    }

    /// Gives up during start: kills and reaps the workers already started,
    /// removes the socket files, leaves nothing running or bound.
    pub(super) fn abandon(&mut self) {
        for worker in self.workers.drain(..) {
            let _ = kill(worker.pid, Signal::SIGKILL);
            let _ = waitpid(worker.pid, None);
        }
        self.sockets.remove_files();
        self.close_operator();
    }

    pub(super) fn finish(&mut self) -> ExitCode {
        // SIGKILLed: each wait is as short as the kernel's cleanup.
        for pid in self.killed.drain(..) {
            let _ = waitpid(pid, None);
        }
        self.sockets.remove_files();
        self.close_operator();
        if let Some(path) = &self.config.pid_file {
            pid_file::remove_if_ours(path);
        }
        tracing::info!(event = events::STOPPED, pid = std::process::id(), "stopped");
        self.exit_code
    }
}
