//! Replacing workers while the service serves: the rolling restart (HUP),
//! recycling at the request quota (`--max-requests`), and scaling
//! (TTIN/TTOU).
//!
//! A replacement always starts first; the worker it replaces is closed
//! only once the new one is ready, so capacity never dips, and a
//! replacement that fails to boot leaves the old worker serving. A worker
//! that leaves while others serve is closed *draining*: an idle keep-alive
//! connection gets the drain window (the keep-alive timeout, within the
//! graceful timeout) for one more request, which it is answered with `connection: close` (see `drover_worker::connection`).
//! The listening sockets stay open in the supervisor, so connections
//! queued in the kernel are served by whichever worker accepts next.
//!
//! Whatever cannot happen when it is asked for (the next step of a restart
//! while a worker still boots, a recycling while the worker has a
//! replacement under way, a TTOU while every worker is being replaced) is
//! taken up by [`reconcile`](Supervisor::reconcile), once per loop turn.

use std::time::{Duration, Instant};

use drover_shared::events;

use super::command::Requester;
use super::exit_reason::ExitReason;
use super::fleet::{self, RolloutStep};
use super::operator::Awaiting;
use super::worker::{Replacing, Worker};
use super::{Phase, Supervisor};
use crate::notify;
use serde_json::json;

/// Where the rolling restart is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Rollout {
    Idle,
    /// Replacing, one at a time, every worker started before generation
    /// `to`.
    Rolling {
        to: u64,
        began: Instant,
    },
}

impl Supervisor<'_> {
    /// Once per loop turn: the recyclings due, workers beyond the wanted
    /// count, and the next step of a restart.
    pub(super) fn reconcile(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        self.recycle_due();
        self.shed_excess();
        self.advance_rollout();
        if fleet::settled(&self.workers, self.wanted) {
            let workers = self.wanted;
            self.settle(
                |a| a == Awaiting::Scale,
                Ok(json!({ "message": format!("{workers} workers serving"), "workers": workers })),
            );
        }
    }

    /// HUP: replace every worker, one at a time; in exec mode the new ones
    /// run the binary on disk now. A HUP during a restart starts it over
    /// for the workers not yet of the newest generation.
    pub(super) fn restart(&mut self) {
        // New workers get the certificate files as they are now (a pair
        // that does not check is refused, logged, and the restart goes on
        // with the old one).
        if self.config.tls.is_some() {
            let _ = self.reload_tls();
        }
        self.generation += 1;
        let to = self.generation;
        let began = match self.rollout {
            Rollout::Rolling { began, .. } => began,
            Rollout::Idle => Instant::now(),
        };
        self.rollout = Rollout::Rolling { to, began };
        notify::reloading();
        tracing::info!(
            event = events::RESTART_BEGUN,
            workers = fleet::slots(&self.workers),
            "rolling restart: replacing the workers one at a time"
        );
        self.advance_rollout();
    }

    /// Starts the next replacement of the rolling restart (see
    /// [`fleet::rollout_step`]); ends the restart when no old worker is
    /// left.
    fn advance_rollout(&mut self) {
        let Rollout::Rolling { to, began } = self.rollout else {
            return;
        };
        match fleet::rollout_step(&self.workers, to) {
            RolloutStep::Replace(old) => {
                let why = ExitReason::Reload;
                if let Err(error) = self.spawn(Some(Replacing { id: old, why })) {
                    self.halt_rollout(&format!("cannot start a worker: {error}"));
                }
            }
            RolloutStep::Done => {
                let (took_ms, workers) =
                    (events::millis(began.elapsed()), fleet::slots(&self.workers));
                tracing::info!(
                    event = events::RESTART_COMPLETE,
                    took_ms,
                    workers,
                    "rolling restart complete"
                );
                self.rollout = Rollout::Idle;
                notify::ready(&self.status(), false);
                self.tally.reloads_completed += 1;
                let message = format!("reload complete: {workers} workers of generation {to} serving, in {took_ms:.0} ms");
                self.settle(
                    |a| a == Awaiting::Reload,
                    Ok(json!({ "message": message, "generation": to, "workers": workers, "took_ms": took_ms })),
                );
            }
            RolloutStep::Wait => {}
        }
    }

    /// Replacement `id` (pid `pid`) is ready: the worker it replaces
    /// closes, and an operator's `recycle` waiting for it is answered.
    pub(super) fn replacement_ready(&mut self, old: Replacing, id: u64, pid: i32) {
        self.retire(old.id, old.why);
        self.settle(
            |a| a == Awaiting::Recycle { replacement: id },
            Ok(json!({
                "message": format!("worker {} replaced by worker {id} (pid {pid})", old.id),
                "replaced": old.id,
                "worker": id,
                "pid": pid,
            })),
        );
    }

    /// A replacement never got ready (it failed to boot, exited, or missed
    /// the boot timeout): the worker it was to replace (`old`) serves on.
    /// In a rolling restart, the restart stops there.
    pub(super) fn replacement_failed(&mut self, new: &Worker, old: u64, reason: String) {
        match self.rollout {
            Rollout::Rolling { to, .. } if new.generation == to => {
                tracing::error!(
                    event = events::BOOT_FAILED,
                    worker = new.id,
                    ?reason,
                    "a new worker failed to boot"
                );
                self.halt_rollout(&reason);
            }
            _ => {
                tracing::error!(
                    event = events::BOOT_FAILED,
                    worker = new.id,
                    replacing = old,
                    ?reason,
                    "a replacement failed to boot: the worker it was to replace keeps serving"
                );
                self.retry_recycling(old);
            }
        }
        self.settle(
            |a| {
                a == Awaiting::Recycle {
                    replacement: new.id,
                }
            },
            Err(format!(
                "the replacement failed to boot: {reason}; worker {old} serves on"
            )),
        );
        // If the worker it was to replace is gone meanwhile, its slot is
        // empty now.
        self.fill_slots();
    }

    fn halt_rollout(&mut self, reason: &str) {
        let Rollout::Rolling { to, .. } = self.rollout else {
            return;
        };
        tracing::error!(
            event = events::RESTART_STOPPED,
            ?reason,
            workers_of_the_previous_version = fleet::older_than(&self.workers, to),
            "rolling restart stopped: the workers already serving keep serving; fix the deploy and send HUP again"
        );
        self.rollout = Rollout::Idle;
        notify::ready(&format!("restart failed: {reason}"), false);
        self.tally.reloads_stopped += 1;
        self.settle(
            |a| a == Awaiting::Reload,
            Err(format!(
                "reload stopped: {reason}; the workers already serving keep serving"
            )),
        );
    }

    /// A worker reached its request quota: it is replaced as soon as it
    /// can be (see [`recycle_due`](Self::recycle_due)).
    pub(super) fn recycle(&mut self, id: u64, requests: u64) {
        if let Some(worker) = self.worker_mut(id) {
            worker.ask_recycle(requests, Instant::now());
        }
    }

    /// Starts the replacement of every serving worker that reached its
    /// quota and has none under way; each closes once its replacement is
    /// ready. One being replaced already (by a restart) waits for a later
    /// turn; if that replacement fails, its own starts then. A recycling
    /// whose replacement fails is tried again, with the crash backoff.
    fn recycle_due(&mut self) {
        for (id, requests) in fleet::recycles_due(&self.workers, Instant::now()) {
            tracing::info!(
                event = events::RECYCLING,
                worker = id,
                requests,
                "request quota reached: replacing the worker"
            );
            let why = ExitReason::MaxRequests;
            if let Err(error) = self.spawn(Some(Replacing { id, why })) {
                tracing::error!(worker = id, %error, "cannot start a replacement: the worker keeps serving");
                self.retry_recycling(id);
            }
        }
    }

    /// The replacement of worker `id` for its quota failed: it serves on,
    /// and another is tried after the crash backoff (at least 100 ms).
    fn retry_recycling(&mut self, id: u64) {
        let now = Instant::now();
        let delay = self.backoff.next_delay(now).max(Duration::from_millis(100));
        if self
            .worker_mut(id)
            .is_some_and(|w| w.postpone_recycle(now + delay))
        {
            tracing::warn!(
                worker = id,
                ?delay,
                "recycling: trying another replacement later"
            );
        }
    }

    /// TTIN: one worker more.
    pub(super) fn scale_up(&mut self) {
        self.warn_if_upgrading("TTIN");
        self.wanted += 1;
        tracing::info!(
            event = events::SCALED,
            workers = self.wanted,
            "TTIN: one worker more"
        );
        self.fill_slots();
    }

    /// TTOU: one worker fewer (never below one): the newest closes,
    /// draining.
    pub(super) fn scale_down(&mut self) {
        if self.wanted <= 1 {
            tracing::warn!("TTOU ignored: one worker is the least");
            return;
        }
        self.warn_if_upgrading("TTOU");
        self.wanted -= 1;
        tracing::info!(
            event = events::SCALED,
            workers = self.wanted,
            "TTOU: one worker fewer"
        );
        self.shed_excess();
    }

    /// `scale`: run `wanted` workers (at least one); the newest close
    /// first, draining.
    pub(super) fn scale_to(&mut self, wanted: usize) {
        self.warn_if_upgrading("scale");
        self.wanted = wanted.max(1);
        tracing::info!(event = events::SCALED, workers = self.wanted, "scale");
        self.fill_slots();
        self.shed_excess();
    }

    /// `recycle`: replace serving worker `id` (its replacement ready before
    /// it closes); the operator is answered once that is done.
    pub(super) fn recycle_worker(&mut self, id: u64, from: Requester) {
        let refusal = match self.workers.iter().find(|w| w.id == id) {
            None => Some(format!("no worker {id} (status lists their ids)")),
            Some(w) if !w.is_ready() => Some(format!(
                "worker {id} is {}: only a serving worker is recycled",
                w.state_name()
            )),
            Some(_) if fleet::has_successor(&self.workers, id) => {
                Some(format!("worker {id} is being replaced already"))
            }
            Some(_) => None,
        };
        if let Some(refusal) = refusal {
            return self.answer(from, Err(refusal));
        }
        tracing::info!(
            event = events::RECYCLING,
            worker = id,
            "recycle: replacing the worker"
        );
        let why = ExitReason::Recycle;
        match self.spawn(Some(Replacing { id, why })) {
            Ok(replacement) => self.expect(from, Awaiting::Recycle { replacement }),
            Err(error) => self.answer(from, Err(format!("cannot start a replacement: {error}"))),
        }
    }

    /// A new supervisor being started took the worker count at its start:
    /// a change now is this one's alone, and is lost if the upgrade
    /// completes. Said, so that the operator sends it again.
    fn warn_if_upgrading(&self, signal: &str) {
        if let Some(pid) = self.upgrade.successor() {
            tracing::warn!(
                signal,
                new_supervisor = pid.as_raw(),
                "during a binary upgrade: the new supervisor keeps the worker count it started with; send this to it once it has taken over"
            );
        }
    }

    /// Closes the newest workers while there are more than wanted.
    fn shed_excess(&mut self) {
        for id in fleet::to_shed(&self.workers, self.wanted) {
            self.retire(id, ExitReason::ScaleDown);
        }
    }

    /// Closes worker `id` draining, if it is still active.
    pub(super) fn retire(&mut self, id: u64, why: ExitReason) {
        let (drain, graceful) = (self.config.drain_window, self.config.graceful_timeout);
        if let Some(worker) = self.worker_mut(id).filter(|w| w.is_active()) {
            tracing::info!(
                event = events::WORKER_CLOSING,
                worker = id,
                pid = worker.pid.as_raw(),
                why = why.label(),
                drain_ms = events::millis(drain),
                "closing worker"
            );
            worker.close(drain, graceful, why);
        }
    }

    /// Starts workers until every wanted slot is filled. While a backoff
    /// delay runs, nothing starts: its timer fills the slots when it ends.
    pub(super) fn fill_slots(&mut self) {
        if self.respawn_at.is_some_and(|at| at > Instant::now()) {
            return;
        }
        self.respawn_at = None;
        for _ in 0..fleet::missing(&self.workers, self.wanted) {
            if let Err(error) = self.spawn(None) {
                tracing::error!(%error, "cannot start a worker");
                let delay = self.backoff.next_delay(Instant::now());
                self.respawn_at = Some(Instant::now() + delay.max(Duration::from_millis(100)));
                return;
            }
        }
    }
}
