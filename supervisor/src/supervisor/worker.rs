//! One worker process as the supervisor sees it: its pid, its control
//! socket, and where it is in its life, with the data valid in each state
//! carried by the state.
//!
//! ```text
//!   Booting ──Ready──▶ Ready
//!     │  │               │  │
//!     │  └── close() ──▶ Retiring ◀── close() ┘   (replaced, scaled down,
//!     │                  │                          stopping)
//!     │                  └─ past its deadline: kill_now(), still Retiring
//!     │
//!     └─ boot timeout, garbage ──▶ Killed ◀── silent, garbage ── Ready
//! ```
//!
//! Any state can end in an exit (a crash, `kill -9`): the supervisor reads
//! what the state says about it ([`Worker::exit_kind`]).

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::exit_reason::ExitReason;
use super::log_budget::LogBudget;
use crate::control::protocol::{SupervisorMessage, WorkerCounters};
use crate::control::ControlSocket;

pub(super) struct Worker {
    pub(super) id: u64,
    pub(super) pid: Pid,
    /// `None` once the worker closed its end (it is exiting).
    pub(super) control: Option<ControlSocket>,
    pub(super) state: WorkerState,
    pub(super) last_heard: Instant,
    /// The restart generation it was started in (see `Rollout`).
    pub(super) generation: u64,
    /// Its slot number (`drover::Worker::index`): a replacement's is the
    /// replaced worker's.
    pub(super) index: usize,
    /// How much more of what it says may be logged.
    pub(super) log_budget: LogBudget,
    /// When it was started.
    pub(super) started: Instant,
    /// Its counters as it last told them (a heartbeat or a report), and
    /// when.
    pub(super) counters: WorkerCounters,
    pub(super) counters_at: Option<Instant>,
}

/// What a booting replacement is for: the worker it replaces, closed
/// once it is ready, and why that one goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Replacing {
    pub(super) id: u64,
    pub(super) why: ExitReason,
}

/// A worker's pending replacement for `--max-requests`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Recycle {
    /// Requests served when it asked.
    pub(super) requests: u64,
    /// No replacement starts before this (later after one failed).
    pub(super) not_before: Instant,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum WorkerState {
    /// Started; must report `Ready` by `deadline` (`None`: no boot
    /// timeout).
    Booting {
        deadline: Option<Instant>,
        /// The worker it replaces once it is ready.
        replaces: Option<Replacing>,
        /// Why it cannot start, once it said so (`BootFailed`).
        failure: Option<String>,
    },
    Ready {
        since: Instant,
        /// It has served its request quota and is to be replaced.
        recycle: Option<Recycle>,
    },
    /// Told to close (replaced, scaled down, stopping); killed if still
    /// running at `kill_at` (`None` once it was, or at a stop that kills).
    Retiring {
        kill_at: Option<Instant>,
        why: ExitReason,
    },
    /// Killed for a fault (boot timeout, silence, garbage); to be reaped.
    Killed {
        reason: String,
        /// How its exit counts.
        cause: ExitReason,
        /// What it was to replace, if it was a replacement still booting:
        /// until it is reaped, that replacement is still under way.
        replaces: Option<u64>,
        /// When it had become ready, if it had.
        ready_since: Option<Instant>,
    },
}

/// A deadline a worker's state sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WorkerTimer {
    /// Not ready by the boot timeout.
    Boot,
    /// Silent for the worker timeout.
    Silence,
    /// Still running past its graceful deadline while retiring.
    Straggler,
}

/// What a worker's exit means, from the state it exited in.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum ExitKind {
    /// It was told to close: it left.
    Retired,
    /// A replacement that never got ready: what it was to replace.
    ReplacementFailed { replaces: u64 },
    /// It died while it counted for the service; `ready_since` tells a
    /// worker that had been serving from one in a crash loop.
    Died { ready_since: Option<Instant> },
}

impl Worker {
    /// A worker just started, to replace `replaces` once ready.
    pub(super) fn booting(
        id: u64,
        pid: Pid,
        control: Option<ControlSocket>,
        generation: u64,
        index: usize,
        boot_timeout: Option<Duration>,
        replaces: Option<Replacing>,
    ) -> Self {
        let now = Instant::now();
        Self {
            id,
            pid,
            control,
            state: WorkerState::Booting {
                deadline: boot_timeout.map(|timeout| now + timeout),
                replaces,
                failure: None,
            },
            last_heard: now,
            generation,
            index,
            log_budget: LogBudget::new(now),
            started: now,
            counters: WorkerCounters::default(),
            counters_at: None,
        }
    }

    /// Counts towards the service: booting or serving, not on its way out.
    pub(super) fn is_active(&self) -> bool {
        matches!(
            self.state,
            WorkerState::Booting { .. } | WorkerState::Ready { .. }
        )
    }

    pub(super) fn is_booting(&self) -> bool {
        matches!(self.state, WorkerState::Booting { .. })
    }

    pub(super) fn is_ready(&self) -> bool {
        matches!(self.state, WorkerState::Ready { .. })
    }

    pub(super) fn is_retiring(&self) -> bool {
        matches!(self.state, WorkerState::Retiring { .. })
    }

    /// The worker this one is to replace, while that replacement is under
    /// way (booting, or killed at boot and not reaped yet).
    pub(super) fn replaces(&self) -> Option<u64> {
        match self.state {
            WorkerState::Booting { replaces, .. } => replaces.map(|r| r.id),
            WorkerState::Killed { replaces, .. } => replaces,
            _ => None,
        }
    }

    /// Its state's name, for the operator.
    pub(super) fn state_name(&self) -> &'static str {
        match self.state {
            WorkerState::Booting { .. } => "booting",
            WorkerState::Ready { .. } => "ready",
            WorkerState::Retiring { .. } => "retiring",
            WorkerState::Killed { .. } => "killed",
        }
    }

    /// How long it took to get ready, once it did.
    pub(super) fn time_to_ready(&self) -> Option<Duration> {
        match self.state {
            WorkerState::Ready { since, .. } => Some(since.duration_since(self.started)),
            WorkerState::Killed {
                ready_since: Some(since),
                ..
            } => Some(since.duration_since(self.started)),
            _ => None,
        }
    }

    /// Records counters it told.
    pub(super) fn told(&mut self, counters: WorkerCounters, now: Instant) {
        self.counters = counters;
        self.counters_at = Some(now);
    }

    /// How its exit counts, from the state it exited in.
    pub(super) fn exit_reason(&self) -> ExitReason {
        match self.state {
            WorkerState::Booting { .. } => ExitReason::BootFailed,
            WorkerState::Ready { .. } => ExitReason::Crash,
            WorkerState::Retiring { why, .. } => why,
            WorkerState::Killed { cause, .. } => cause,
        }
    }

    /// Its pending recycling, while it serves.
    pub(super) fn recycle(&self) -> Option<Recycle> {
        match self.state {
            WorkerState::Ready { recycle, .. } => recycle,
            _ => None,
        }
    }

    /// Booting → Ready. Returns the worker it replaces, if any; `None`
    /// and no change in any other state.
    pub(super) fn became_ready(&mut self, now: Instant) -> Option<Replacing> {
        let WorkerState::Booting { replaces, .. } = self.state else {
            return None;
        };
        self.state = WorkerState::Ready {
            since: now,
            recycle: None,
        };
        replaces
    }

    /// Records why it cannot start (it exits next).
    pub(super) fn failed_to_boot(&mut self, reason: String) {
        match &mut self.state {
            WorkerState::Booting { failure, .. } => *failure = Some(reason),
            // Its own word (read as its last) explains more than the kill.
            WorkerState::Killed {
                reason: why,
                ready_since: None,
                ..
            } => *why = reason,
            _ => {}
        }
    }

    /// Marks a serving worker to be recycled, once (the first request
    /// count stays).
    pub(super) fn ask_recycle(&mut self, requests: u64, now: Instant) {
        if let WorkerState::Ready { recycle, .. } = &mut self.state {
            recycle.get_or_insert(Recycle {
                requests,
                not_before: now,
            });
        }
    }

    /// Its recycling is tried again no sooner than `at`.
    pub(super) fn postpone_recycle(&mut self, at: Instant) -> bool {
        match &mut self.state {
            WorkerState::Ready {
                recycle: Some(recycle),
                ..
            } => {
                recycle.not_before = at;
                true
            }
            _ => false,
        }
    }

    /// The deadline its state sets, if any, and what it is for.
    /// `heartbeat`: the worker timeout (`None`: off).
    pub(super) fn timer(&self, heartbeat: Option<Duration>) -> Option<(Instant, WorkerTimer)> {
        match self.state {
            WorkerState::Booting { deadline, .. } => deadline.map(|at| (at, WorkerTimer::Boot)),
            WorkerState::Ready { .. } => {
                heartbeat.map(|timeout| (self.last_heard + timeout, WorkerTimer::Silence))
            }
            WorkerState::Retiring { kill_at, .. } => kill_at.map(|at| (at, WorkerTimer::Straggler)),
            WorkerState::Killed { .. } => None,
        }
    }

    /// What its exit means; a booting worker's failure reason (or how it
    /// exited) for the log.
    pub(super) fn exit_kind(&self) -> ExitKind {
        if let Some(replaces) = self.replaces() {
            return ExitKind::ReplacementFailed { replaces };
        }
        match self.state {
            WorkerState::Retiring { .. } => ExitKind::Retired,
            WorkerState::Ready { since, .. } => ExitKind::Died {
                ready_since: Some(since),
            },
            WorkerState::Killed { ready_since, .. } => ExitKind::Died { ready_since },
            WorkerState::Booting { .. } => ExitKind::Died { ready_since: None },
        }
    }

    /// Why it failed, as far as the supervisor knows: what it said or why
    /// it was killed; else that it exited (`how`) before it was ready.
    pub(super) fn failure(&self, how: &str) -> String {
        match &self.state {
            WorkerState::Booting {
                failure: Some(reason),
                ..
            }
            | WorkerState::Killed { reason, .. } => reason.clone(),
            _ => format!("exited before it was ready ({how})"),
        }
    }

    /// Tells it to close: idle connections get `drain` for one more
    /// request, connections still open after `graceful` are aborted, and a
    /// second after that the process is killed if it is still there. A
    /// replacement closed before it was ready no longer replaces anything.
    pub(super) fn close(&mut self, drain: Duration, graceful: Duration, why: ExitReason) {
        let close = SupervisorMessage::Close {
            drain_ms: drain.as_millis() as u64,
            graceful_ms: graceful.as_millis() as u64,
        };
        if let Some(control) = &self.control {
            if let Err(error) = control.send(&close.encode()) {
                tracing::warn!(worker = self.id, %error, "cannot send close");
            }
        }
        self.state = WorkerState::Retiring {
            kill_at: Some(Instant::now() + graceful + Duration::from_secs(1)),
            why,
        };
    }

    /// SIGKILL, for a stop that cannot wait, or a straggler past its
    /// deadline: it is reaped on SIGCHLD, with nothing left to time.
    /// A worker retiring already keeps why it goes; any other counts as
    /// stopped.
    pub(super) fn kill_now(&mut self) {
        let _ = kill(self.pid, Signal::SIGKILL);
        let why = match self.state {
            WorkerState::Retiring { why, .. } => why,
            _ => ExitReason::Stop,
        };
        self.state = WorkerState::Retiring { kill_at: None, why };
    }

    /// SIGKILL, for a fault: it is replaced once reaped (one already
    /// retiring just leaves sooner).
    pub(super) fn kill_for_fault(&mut self, reason: String, cause: ExitReason) {
        if let WorkerState::Retiring { .. } = self.state {
            return self.kill_now();
        }
        let _ = kill(self.pid, Signal::SIGKILL);
        self.mark_faulty(reason, cause);
    }

    /// Records a fault without a signal: for a worker already reaped,
    /// whose pid may be another process's now.
    /// A worker killed already keeps what it was (the first reason, when it
    /// had been ready).
    pub(super) fn mark_faulty(&mut self, reason: String, cause: ExitReason) {
        let ready_since = match self.state {
            WorkerState::Retiring { .. } | WorkerState::Killed { .. } => return,
            WorkerState::Ready { since, .. } => Some(since),
            WorkerState::Booting { .. } => None,
        };
        // One killed before it was ready never got ready, whatever the fault.
        let cause = match ready_since {
            None => ExitReason::BootFailed,
            Some(_) => cause,
        };
        self.state = WorkerState::Killed {
            reason,
            cause,
            replaces: self.replaces(),
            ready_since,
        };
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A worker record with no process behind it (pid 0 is never
    /// signalled by these tests: only pure transitions are used).
    pub(in crate::supervisor) fn record(id: u64, generation: u64, state: WorkerState) -> Worker {
        Worker {
            id,
            pid: Pid::from_raw(0),
            control: None,
            state,
            last_heard: Instant::now(),
            generation,
            index: usize::try_from(id).unwrap_or(0),
            log_budget: LogBudget::new(Instant::now()),
            started: Instant::now(),
            counters: WorkerCounters::default(),
            counters_at: None,
        }
    }

    pub(in crate::supervisor) fn booting(replaces: Option<u64>) -> WorkerState {
        WorkerState::Booting {
            deadline: Some(Instant::now() + Duration::from_secs(30)),
            replaces: replaces.map(|id| Replacing {
                id,
                why: ExitReason::Reload,
            }),
            failure: None,
        }
    }

    pub(in crate::supervisor) fn ready() -> WorkerState {
        WorkerState::Ready {
            since: Instant::now(),
            recycle: None,
        }
    }

    #[test]
    fn booting_to_ready_hands_back_what_it_replaces_once() {
        let mut worker = record(2, 0, booting(Some(1)));
        assert_eq!(worker.became_ready(Instant::now()).map(|r| r.id), Some(1));
        assert!(worker.is_ready());
        assert_eq!(worker.replaces(), None);
        assert_eq!(
            worker.became_ready(Instant::now()),
            None,
            "only from Booting"
        );
    }

    #[test]
    fn a_boot_failure_is_kept_while_booting_and_explains_the_exit() {
        let mut worker = record(1, 0, booting(None));
        worker.failed_to_boot("no database".into());
        assert_eq!(worker.failure("exit code 1"), "no database");
        let mut plain = record(2, 0, booting(None));
        assert_eq!(
            plain.failure("exit code 1"),
            "exited before it was ready (exit code 1)"
        );
        plain.state = ready();
        plain.failed_to_boot("too late".into());
        assert!(plain.is_ready(), "a ready worker has no boot failure");
    }

    #[test]
    fn a_replacement_killed_at_boot_is_still_under_way_until_reaped() {
        let mut worker = record(3, 1, booting(Some(1)));
        worker.state = WorkerState::Killed {
            reason: "boot timeout".into(),
            cause: ExitReason::BootFailed,
            replaces: worker.replaces(),
            ready_since: None,
        };
        assert!(!worker.is_active());
        assert_eq!(worker.replaces(), Some(1));
        assert_eq!(
            worker.exit_kind(),
            ExitKind::ReplacementFailed { replaces: 1 }
        );
        assert_eq!(worker.failure("signal SIGKILL"), "boot timeout");
    }

    #[test]
    fn a_second_fault_keeps_what_the_first_recorded() {
        let mut worker = record(1, 0, ready());
        worker.mark_faulty("missed its heartbeats".into(), ExitReason::Timeout);
        worker.mark_faulty("malformed control message".into(), ExitReason::Crash);
        assert_eq!(worker.exit_reason(), ExitReason::Timeout);
        assert_eq!(worker.failure("signal SIGKILL"), "missed its heartbeats");
        assert!(matches!(
            worker.exit_kind(),
            ExitKind::Died {
                ready_since: Some(_)
            }
        ));
        let mut booting = record(2, 0, booting(None));
        booting.mark_faulty("not ready within 1s".into(), ExitReason::Crash);
        assert_eq!(booting.exit_reason(), ExitReason::BootFailed);
        booting.failed_to_boot("no database".into());
        assert_eq!(booting.failure("signal SIGKILL"), "no database");
    }

    #[test]
    fn the_exit_kind_follows_the_state() {
        let retiring = record(
            1,
            0,
            WorkerState::Retiring {
                kill_at: None,
                why: ExitReason::ScaleDown,
            },
        );
        assert_eq!(retiring.exit_kind(), ExitKind::Retired);
        assert_eq!(retiring.exit_reason(), ExitReason::ScaleDown);
        let serving = record(2, 0, ready());
        assert!(matches!(
            serving.exit_kind(),
            ExitKind::Died {
                ready_since: Some(_)
            }
        ));
        assert_eq!(serving.exit_reason(), ExitReason::Crash);
        let first_boot = record(3, 0, booting(None));
        assert_eq!(first_boot.exit_kind(), ExitKind::Died { ready_since: None });
        assert_eq!(first_boot.exit_reason(), ExitReason::BootFailed);
    }

    #[test]
    fn each_state_sets_its_own_timer() {
        let heartbeat = Some(Duration::from_secs(4));
        let booting = record(1, 0, booting(None));
        assert_eq!(booting.timer(heartbeat).unwrap().1, WorkerTimer::Boot);
        let serving = record(2, 0, ready());
        let (at, timer) = serving.timer(heartbeat).unwrap();
        assert_eq!(timer, WorkerTimer::Silence);
        assert_eq!(at, serving.last_heard + Duration::from_secs(4));
        assert_eq!(serving.timer(None), None, "no worker timeout");
        let at = Instant::now();
        let why = ExitReason::Stop;
        let retiring = record(
            3,
            0,
            WorkerState::Retiring {
                kill_at: Some(at),
                why,
            },
        );
        assert_eq!(retiring.timer(None), Some((at, WorkerTimer::Straggler)));
        let cut = record(4, 0, WorkerState::Retiring { kill_at: None, why });
        assert_eq!(cut.timer(heartbeat), None);
    }

    #[test]
    fn a_retiring_worker_killed_keeps_why_it_goes_and_a_serving_one_counts_as_stopped() {
        let mut retiring = record(
            1,
            0,
            WorkerState::Retiring {
                kill_at: Some(Instant::now()),
                why: ExitReason::Reload,
            },
        );
        retiring.pid = Pid::from_raw(i32::MAX); // no such process
        retiring.kill_now();
        assert_eq!(retiring.exit_reason(), ExitReason::Reload);
        let mut serving = record(2, 0, ready());
        serving.pid = Pid::from_raw(i32::MAX);
        serving.kill_now();
        assert_eq!(serving.exit_reason(), ExitReason::Stop);
    }

    #[test]
    fn counters_told_are_kept_with_their_time_and_time_to_ready_is_measured_from_start() {
        let mut worker = record(1, 0, booting(None));
        assert_eq!(worker.time_to_ready(), None);
        let now = Instant::now();
        let counters = WorkerCounters {
            requests: 5,
            in_flight: 1,
            connections: 2,
            tls_handshake_failures: 0,
        };
        worker.told(counters, now);
        assert_eq!((worker.counters, worker.counters_at), (counters, Some(now)));
        worker.became_ready(worker.started + Duration::from_millis(30));
        assert_eq!(worker.time_to_ready(), Some(Duration::from_millis(30)));
        assert_eq!(worker.state_name(), "ready");
    }

    #[test]
    fn a_recycling_is_asked_once_and_postponed_only_while_serving() {
        let now = Instant::now();
        let mut worker = record(1, 0, ready());
        worker.ask_recycle(100, now);
        worker.ask_recycle(150, now);
        assert_eq!(worker.recycle().unwrap().requests, 100);
        let later = now + Duration::from_secs(1);
        assert!(worker.postpone_recycle(later));
        assert_eq!(worker.recycle().unwrap().not_before, later);
        let mut booting = record(2, 0, booting(None));
        booting.ask_recycle(1, now);
        assert_eq!(booting.recycle(), None);
        assert!(!booting.postpone_recycle(later));
    }
}
