//! Every deadline the supervisor keeps, listed once ([`Supervisor::timers`]):
//! the nearest is the event loop's poll timeout, and those that have
//! passed are what [`Supervisor::on_timers`] acts on.

use std::time::{Duration, Instant};

use drover_shared::events;
use nix::poll::PollTimeout;

use super::exit_reason::ExitReason;
use super::fleet;
use super::worker::WorkerTimer;
use super::{Phase, Supervisor};
use crate::notify;

/// A deadline and what it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// A worker's own (see [`WorkerTimer`]).
    Worker(u64, WorkerTimer),
    /// A backoff delay ends: fill the empty slots.
    Respawn,
    /// The new supervisor of a binary upgrade is late.
    Upgrade,
    /// A recycling may be tried again (the loop's reconcile does it).
    RecycleRetry,
    /// Time to ping systemd's watchdog.
    Watchdog,
    /// An operator's client stalls, or a query for the workers' counters
    /// reaches its bound.
    Operator,
    /// The session-ticket key rotates.
    TicketRotation,
}

/// When to ping systemd's watchdog.
pub(super) struct Watchdog {
    every: Duration,
    next: Instant,
}

impl Watchdog {
    /// Half of `WATCHDOG_USEC` when systemd set one for this process.
    pub(super) fn from_env() -> Option<Self> {
        notify::watchdog_interval().map(|every| Self {
            every,
            next: Instant::now(),
        })
    }
}

/// The poll timeout until `deadline` (none: wait for ever), rounded up: a
/// deadline 0.4 ms away must not be polled at 0.
pub(super) fn poll_timeout(deadline: Option<Instant>) -> PollTimeout {
    let Some(deadline) = deadline else {
        return PollTimeout::NONE;
    };
    let wait = deadline.saturating_duration_since(Instant::now());
    let millis = wait.as_millis() as u64 + u64::from(wait.subsec_nanos() % 1_000_000 != 0);
    PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX)
}

impl Supervisor<'_> {
    /// Every deadline there is now.
    pub(super) fn timers(&self) -> impl Iterator<Item = (Instant, Timer)> + '_ {
        let heartbeat = self.config.worker_timeout;
        let workers = self.workers.iter().filter_map(move |w| {
            w.timer(heartbeat)
                .map(|(at, timer)| (at, Timer::Worker(w.id, timer)))
        });
        let now = Instant::now();
        let others = [
            self.respawn_at.map(|at| (at, Timer::Respawn)),
            self.upgrade.deadline().map(|at| (at, Timer::Upgrade)),
            fleet::next_recycle_retry(&self.workers, now).map(|at| (at, Timer::RecycleRetry)),
            self.watchdog.as_ref().map(|w| (w.next, Timer::Watchdog)),
            self.operator
                .next_deadline()
                .map(|at| (at, Timer::Operator)),
            self.tls
                .as_ref()
                .map(|t| (t.rotate_at, Timer::TicketRotation)),
        ];
        workers.chain(others.into_iter().flatten())
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.timers().map(|(at, _)| at).min()
    }

    /// Acts on every deadline that has passed by `now`.
    pub(super) fn on_timers(&mut self, now: Instant) {
        let due: Vec<Timer> = self
            .timers()
            .filter(|(at, _)| *at <= now)
            .map(|(_, timer)| timer)
            .collect();
        for timer in due {
            match timer {
                Timer::Worker(id, timer) => self.on_worker_timer(id, timer),
                Timer::Respawn if self.phase == Phase::Running => self.fill_slots(),
                Timer::Respawn | Timer::RecycleRetry => {}
                Timer::Upgrade => {
                    // It may have said Ready just now.
                    self.read_successor();
                    if self.upgrade.deadline().is_some_and(|at| at <= now) {
                        self.upgrade_timed_out();
                    }
                }
                Timer::Operator => self.on_operator_timer(now),
                Timer::TicketRotation => self.rotate_ticket_key(),
                Timer::Watchdog => {
                    notify::watchdog();
                    if let Some(watchdog) = self.watchdog.as_mut() {
                        watchdog.next = now + watchdog.every;
                    }
                }
            }
        }
    }

    fn on_worker_timer(&mut self, id: u64, timer: WorkerTimer) {
        let (boot_timeout, silence) = (self.config.boot_timeout, self.config.worker_timeout);
        if timer == WorkerTimer::Straggler && self.phase == Phase::Stopping {
            // A stop that had to cut a worker: drover exits 1.
            self.exit_code = std::process::ExitCode::FAILURE;
        }
        let Some(worker) = self.worker_mut(id) else {
            return;
        };
        let pid = worker.pid.as_raw();
        match timer {
            WorkerTimer::Boot => {
                let within = boot_timeout.unwrap_or_default();
                let reason = format!("not ready within {within:?} (--boot-timeout)");
                tracing::error!(event = events::WORKER_KILLED, worker = id, pid, %reason, "killing worker");
                worker.kill_for_fault(reason, ExitReason::BootFailed);
            }
            WorkerTimer::Silence => {
                tracing::error!(
                    event = events::WORKER_KILLED,
                    worker = id,
                    pid,
                    silent_for_ms = events::millis(silence.unwrap_or_default()),
                    "worker missed its heartbeats: killing it"
                );
                worker.kill_for_fault("missed its heartbeats".to_owned(), ExitReason::Timeout);
            }
            WorkerTimer::Straggler => {
                tracing::warn!(
                    event = events::WORKER_KILLED,
                    worker = id,
                    pid,
                    "still running past the graceful timeout: killing it"
                );
                worker.kill_now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::poll_timeout;
    use nix::poll::PollTimeout;
    use std::time::{Duration, Instant};

    #[test]
    fn no_deadline_waits_for_ever_and_a_near_one_is_rounded_up() {
        assert_eq!(poll_timeout(None), PollTimeout::NONE);
        let soon = Instant::now() + Duration::from_micros(400);
        assert_eq!(poll_timeout(Some(soon)), PollTimeout::from(1u8));
        let past = Instant::now() - Duration::from_secs(1);
        assert_eq!(poll_timeout(Some(past)), PollTimeout::ZERO);
    }
}
