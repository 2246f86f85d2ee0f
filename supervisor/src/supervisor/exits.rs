//! Reaping children: a worker's exit, read against the state it exited
//! in, and the new supervisor's of a binary upgrade.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use drover_shared::events;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::leave::Leave;
use super::messages::Batch;
use super::operator::Awaiting;
use super::worker::{ExitKind, Worker};
use super::{Phase, Supervisor};

/// A worker that dies sooner than this after it was ready counts as
/// failing at boot (it backs off): long enough to catch a crash at the
/// first request under load, short enough that killing serving workers
/// (chaos tests, the OOM killer) never costs capacity.
const CRASH_LOOP_WINDOW: Duration = Duration::from_millis(100);

impl Supervisor<'_> {
    /// Reaps every child that has exited.
    pub(super) fn reap(&mut self) {
        loop {
            let (pid, how) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, format!("exit code {code}")),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, format!("signal {signal}")),
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(error) => {
                    tracing::warn!(%error, "waitpid failed");
                    return;
                }
            };
            if let Some(at) = self.killed.iter().position(|&killed| killed == pid) {
                self.killed.swap_remove(at);
                continue;
            }
            if self.upgrade.is_successor(pid) {
                self.successor_exited(&how);
                continue;
            }
            let Some(id) = self.workers.iter().find(|w| w.pid == pid).map(|w| w.id) else {
                continue;
            };
            // Its last words (a BootFailed reason) may still be unread.
            self.read_control(id, Batch::LastWords);
            let Some(index) = self.workers.iter().position(|w| w.pid == pid) else {
                continue;
            };
            let worker = self.workers.swap_remove(index);
            self.tally.worker_left(&worker);
            self.on_exit(worker, how);
        }
    }

    fn on_exit(&mut self, worker: Worker, how: String) {
        let (id, pid) = (worker.id, worker.pid.as_raw());
        match (self.phase, worker.exit_kind()) {
            (Phase::Booting, _) => {
                let reason = worker.failure(&how);
                tracing::error!(
                    event = events::BOOT_FAILED,
                    worker = id,
                    pid,
                    ?reason,
                    "worker failed to boot"
                );
                // Quoted: the reason is the worker's text, one line whatever it holds.
                eprintln!("drover: worker {id} failed to boot: {reason:?}");
                self.exit_code = ExitCode::FAILURE;
                if self.predecessor.is_some() {
                    self.leave(Leave::GiveUpTakeover);
                } else {
                    self.leave(Leave::Now("a first worker failed to boot"));
                }
            }
            (Phase::Running, ExitKind::Retired) => {
                tracing::info!(event = events::WORKER_LEFT, worker = id, pid, exited = %how, "worker left");
            }
            // It never got ready: the worker it was to replace serves on.
            (Phase::Running, ExitKind::ReplacementFailed { replaces }) => {
                self.replacement_failed(&worker, replaces, worker.failure(&how));
            }
            (Phase::Running, ExitKind::Died { ready_since }) => {
                tracing::warn!(event = events::WORKER_DIED, worker = id, pid, exited = %how, "worker died; replacing it");
                if ready_since.is_none() {
                    // A `scale` up waits for workers like this one.
                    let why = format!(
                        "a new worker failed to boot: {}; drover keeps trying",
                        worker.failure(&how)
                    );
                    self.settle(|a| a == Awaiting::Scale, Err(why));
                }
                self.replace_dead(ready_since);
            }
            (Phase::Stopping | Phase::HandedOver, _) => {
                tracing::info!(event = events::WORKER_STOPPED, worker = id, pid, exited = %how, "worker stopped");
            }
        }
    }

    /// A worker that had been serving is replaced at once, however often
    /// that happens (kill -9, the OOM killer, a crash under load):
    /// capacity comes first, as in gunicorn. One that died before it was
    /// ready, or within [`CRASH_LOOP_WINDOW`] of it (it crashes at its
    /// first request, or right after its start), is a crash loop in the
    /// making, and backs off.
    fn replace_dead(&mut self, ready_since: Option<Instant>) {
        let now = Instant::now();
        let delay = match ready_since {
            Some(ready) if now.duration_since(ready) >= CRASH_LOOP_WINDOW => Duration::ZERO,
            _ => self.backoff.next_delay(now),
        };
        if delay.is_zero() {
            self.fill_slots();
        } else {
            tracing::warn!(
                event = events::BACKOFF,
                delay_ms = events::millis(delay),
                "workers keep dying: waiting before the next one"
            );
            self.respawn_at = Some(Instant::now() + delay);
        }
    }
}
