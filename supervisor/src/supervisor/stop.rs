//! How the supervisor ends: a graceful stop (TERM, INT), an immediate one
//! (QUIT, a second TERM, a failed first boot), giving up during start, and
//! the last cleanup.

use std::process::ExitCode;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;

use super::{Phase, Rollout, Supervisor};
use crate::notify;

impl Supervisor<'_> {
    /// Tells every active worker to close, idle connections getting
    /// `drain` (zero: a fast close; the drain window: leaving while others
    /// serve), with the graceful timeout.
    pub(super) fn close_workers(&mut self, drain: Duration) {
        let graceful = self.config.graceful_timeout;
        for worker in self.workers.iter_mut().filter(|w| w.is_active()) {
            worker.close(drain, graceful);
        }
    }

    pub(super) fn stop_gracefully(&mut self, signal: i32) {
        if self.finish_pending_upgrade() {
            tracing::info!(signal, "the new supervisor was ready: leaving to it");
            return;
        }
        if self.speaks_for_service() {
            notify::stopping();
        }
        self.sockets.close();
        tracing::info!(signal, graceful_timeout = ?self.config.graceful_timeout, "stopping gracefully");
        self.end_changes();
        // A full stop closes fast: nothing would serve a client kept waiting.
        self.close_workers(Duration::ZERO);
        self.phase = Phase::Stopping;
    }

    pub(super) fn stop_now(&mut self, why: &str) {
        self.finish_pending_upgrade();
        if self.speaks_for_service() {
            notify::stopping();
        }
        self.sockets.close();
        tracing::warn!(why, "stopping now");
        self.end_changes();
        for worker in &mut self.workers {
            worker.cut();
        }
        if self.phase != Phase::HandedOver {
            self.phase = Phase::Stopping;
        }
    }

    /// At a stop: no restart goes on, no replacement starts, and a new
    /// supervisor being upgraded to is abandoned.
    pub(super) fn end_changes(&mut self) {
        self.rollout = Rollout::Idle;
        self.respawn_at = None;
        self.cancel_upgrade();
    }

    /// Gives up during start: kills and reaps the workers already started,
    /// removes the socket files, leaves nothing running or bound.
    pub(super) fn abandon(&mut self) {
        for worker in self.workers.drain(..) {
            let _ = kill(worker.pid, Signal::SIGKILL);
            let _ = waitpid(worker.pid, None);
        }
        self.sockets.remove_files();
    }

    pub(super) fn finish(&mut self) -> ExitCode {
        self.sockets.remove_files();
        // After a binary upgrade the file holds the new supervisor's pid.
        if let Some(path) = &self.config.pid_file {
            let ours = std::fs::read_to_string(path)
                .is_ok_and(|pid| pid.trim() == std::process::id().to_string());
            if ours {
                let _ = std::fs::remove_file(path);
            }
        }
        tracing::info!(pid = std::process::id(), "stopped");
        self.exit_code
    }
}
