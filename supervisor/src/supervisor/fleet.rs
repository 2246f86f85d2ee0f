//! The fleet's bookkeeping, as pure functions of the workers' records: how
//! many slots are filled, which workers a scale-down retires, what a
//! rolling restart does next, which recyclings are due. Nothing here
//! starts, signals or reaps a process: the supervisor acts on what these
//! decide, and the unit tests below need no processes.
//!
//! A *slot* is one unit of the wanted worker count. A booting replacement
//! and the worker it replaces fill one slot together, so capacity never
//! dips during a replacement and never counts twice.

use std::time::Instant;

use super::worker::Worker;

/// Workers that count towards the wanted count.
pub(super) fn slots(workers: &[Worker]) -> usize {
    workers.iter().filter(|w| fills_a_slot(workers, w)).count()
}

/// Active, and not a replacement whose predecessor is still active (the
/// pair counts once).
fn fills_a_slot(workers: &[Worker], worker: &Worker) -> bool {
    worker.is_active() && !worker.replaces().is_some_and(|old| is_active(workers, old))
}

/// Whether an active replacement for worker `id` is under way.
pub(super) fn has_successor(workers: &[Worker], id: u64) -> bool {
    workers
        .iter()
        .any(|w| w.replaces() == Some(id) && w.is_active())
}

fn is_active(workers: &[Worker], id: u64) -> bool {
    workers.iter().any(|w| w.id == id && w.is_active())
}

/// The index for a new worker that replaces none: the lowest no active
/// worker holds (a crashed worker's, once it is gone; the next one up
/// when scaling up). A worker on its way out gives its index up.
pub(super) fn free_index(workers: &[Worker]) -> usize {
    let held: Vec<usize> = workers
        .iter()
        .filter(|w| w.is_active())
        .map(|w| w.index)
        .collect();
    (0..)
        .find(|i| !held.contains(i))
        .expect("fewer workers than indices")
}

/// The index for a new worker: the one of the worker it replaces, else
/// [`free_index`].
pub(super) fn index_for(workers: &[Worker], replaces: Option<u64>) -> usize {
    replaces
        .and_then(|id| workers.iter().find(|w| w.id == id))
        .map_or_else(|| free_index(workers), |replaced| replaced.index)
}

/// How many workers to start to fill every wanted slot.
pub(super) fn missing(workers: &[Worker], wanted: usize) -> usize {
    wanted.saturating_sub(slots(workers))
}

/// The workers to close while there are more than `wanted`: the highest
/// index first, the newest among equals. A worker whose replacement is under way is left to it (a later
/// turn sees the pair done).
pub(super) fn to_shed(workers: &[Worker], wanted: usize) -> Vec<u64> {
    let excess = slots(workers).saturating_sub(wanted);
    let mut candidates: Vec<&Worker> = workers
        .iter()
        .filter(|w| fills_a_slot(workers, w) && !has_successor(workers, w.id))
        .collect();
    // The highest index first (the indices stay 0..wanted), the newest
    // among equals.
    candidates.sort_unstable_by_key(|w| std::cmp::Reverse((w.index, w.id)));
    candidates.truncate(excess);
    candidates.iter().map(|w| w.id).collect()
}

/// What a rolling restart to generation `to` does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RolloutStep {
    /// Start the replacement of this worker.
    Replace(u64),
    /// A replacement is under way, or an old worker is still booting or
    /// being recycled: a later turn moves the restart on.
    Wait,
    /// No worker of an older generation is left.
    Done,
}

/// One at a time: any replacement under way (of this restart, an earlier
/// one, or a recycling) is waited for, up to its end: one killed at its
/// boot timeout still counts until it is reaped, when its failure stops
/// the restart. Then the oldest serving worker of a generation before
/// `to` is replaced.
pub(super) fn rollout_step(workers: &[Worker], to: u64) -> RolloutStep {
    if workers.iter().any(|w| w.replaces().is_some()) {
        return RolloutStep::Wait;
    }
    let mut old = workers
        .iter()
        .filter(|w| w.is_active() && w.generation < to)
        .peekable();
    if old.peek().is_none() {
        return RolloutStep::Done;
    }
    old.filter(|w| w.is_ready() && !has_successor(workers, w.id))
        .map(|w| w.id)
        .min()
        .map_or(RolloutStep::Wait, RolloutStep::Replace)
}

/// Active workers of a generation before `to` (what a stopped restart
/// leaves serving).
pub(super) fn older_than(workers: &[Worker], to: u64) -> usize {
    workers
        .iter()
        .filter(|w| w.is_active() && w.generation < to)
        .count()
}

/// The serving workers that reached their quota, may be replaced now, and
/// have no replacement under way: (id, requests served when they asked).
pub(super) fn recycles_due(workers: &[Worker], now: Instant) -> Vec<(u64, u64)> {
    workers
        .iter()
        .filter(|w| w.is_ready() && !has_successor(workers, w.id))
        .filter_map(|w| {
            w.recycle()
                .filter(|r| r.not_before <= now)
                .map(|r| (w.id, r.requests))
        })
        .collect()
}

/// When the next recycling waits to be tried again, if one does.
pub(super) fn next_recycle_retry(workers: &[Worker], now: Instant) -> Option<Instant> {
    workers
        .iter()
        .filter_map(|w| w.recycle().map(|r| r.not_before))
        .filter(|at| *at > now)
        .min()
}

/// Whether every one of the `wanted` first workers is ready.
pub(super) fn all_ready(workers: &[Worker], wanted: usize) -> bool {
    workers.len() == wanted && workers.iter().all(Worker::is_ready)
}

/// Whether the fleet is what was asked for: `wanted` slots, every worker
/// that counts serving, no replacement under way (what a `scale` waits
/// for).
pub(super) fn settled(workers: &[Worker], wanted: usize) -> bool {
    let active: Vec<&Worker> = workers.iter().filter(|w| w.is_active()).collect();
    active.len() == wanted && active.iter().all(|w| w.is_ready())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::exit_reason::ExitReason;
    use crate::supervisor::worker::tests::{booting, ready, record};
    use crate::supervisor::worker::WorkerState;
    use std::time::Duration;

    fn retiring() -> WorkerState {
        WorkerState::Retiring {
            kill_at: None,
            why: ExitReason::Stop,
        }
    }

    fn at(index: usize, mut worker: Worker) -> Worker {
        worker.index = index;
        worker
    }

    #[test]
    fn a_new_worker_takes_the_lowest_index_no_active_worker_holds() {
        assert_eq!(free_index(&[]), 0);
        let workers = vec![at(0, record(1, 0, ready())), at(2, record(3, 0, ready()))];
        assert_eq!(
            free_index(&workers),
            1,
            "a crashed worker's index, once it is gone"
        );
        let full = vec![
            at(0, record(1, 0, ready())),
            at(1, record(2, 0, booting(None))),
        ];
        assert_eq!(free_index(&full), 2, "scaling up: the next one");
    }

    #[test]
    fn a_scale_down_retires_the_highest_index_first() {
        // Worker 4 replaced a crashed index 0: newest, but not the one to go.
        let workers = vec![
            at(0, record(4, 0, ready())),
            at(1, record(2, 0, ready())),
            at(2, record(3, 0, ready())),
        ];
        assert_eq!(to_shed(&workers, 2), vec![3]);
        assert_eq!(to_shed(&workers, 1), vec![3, 2]);
    }

    #[test]
    fn a_worker_on_its_way_out_gives_its_index_up() {
        let workers = vec![
            at(0, record(1, 0, retiring())),
            at(1, record(2, 0, killed(None))),
        ];
        assert_eq!(free_index(&workers), 0);
    }

    #[test]
    fn a_replacement_inherits_the_index_of_the_worker_it_replaces() {
        let workers = vec![at(0, record(1, 0, ready())), at(1, record(2, 0, ready()))];
        assert_eq!(index_for(&workers, Some(2)), 1);
        assert_eq!(index_for(&workers, None), 2);
        assert_eq!(
            index_for(&workers, Some(9)),
            2,
            "a replaced worker already gone"
        );
    }

    fn killed(replaces: Option<u64>) -> WorkerState {
        WorkerState::Killed {
            reason: "boot timeout".into(),
            cause: ExitReason::BootFailed,
            replaces,
            ready_since: None,
        }
    }

    #[test]
    fn a_replacement_and_the_worker_it_replaces_fill_one_slot() {
        let workers = vec![
            record(1, 0, ready()),
            record(2, 0, ready()),
            record(3, 1, booting(Some(1))),
        ];
        assert_eq!(slots(&workers), 2);
        assert!(has_successor(&workers, 1));
        assert!(!has_successor(&workers, 2));
        assert_eq!(missing(&workers, 2), 0);
        assert_eq!(missing(&workers, 3), 1);
    }

    #[test]
    fn once_the_replaced_worker_retires_its_replacement_fills_the_slot() {
        let workers = vec![record(1, 0, retiring()), record(3, 1, booting(Some(1)))];
        assert_eq!(slots(&workers), 1);
        assert_eq!(missing(&workers, 1), 0);
    }

    #[test]
    fn retiring_and_killed_workers_fill_no_slot() {
        let workers = vec![
            record(1, 0, ready()),
            record(2, 0, retiring()),
            record(3, 0, killed(None)),
        ];
        assert_eq!(slots(&workers), 1);
        assert_eq!(missing(&workers, 3), 2);
    }

    #[test]
    fn scaling_down_sheds_the_newest_and_spares_a_worker_being_replaced() {
        let workers = vec![
            record(1, 0, ready()),
            record(2, 0, ready()),
            record(3, 0, ready()),
            record(4, 1, booting(Some(3))),
        ];
        assert_eq!(to_shed(&workers, 3), Vec::<u64>::new());
        assert_eq!(to_shed(&workers, 2), vec![2]);
        assert_eq!(to_shed(&workers, 1), vec![2, 1]);
        let plain = vec![record(1, 0, ready()), record(5, 0, booting(None))];
        assert_eq!(to_shed(&plain, 1), vec![5], "a booting worker is newest");
    }

    #[test]
    fn a_rollout_replaces_the_oldest_serving_worker_one_at_a_time() {
        let mut workers = vec![
            record(2, 0, ready()),
            record(1, 0, ready()),
            record(3, 1, ready()),
        ];
        assert_eq!(rollout_step(&workers, 1), RolloutStep::Replace(1));
        workers.push(record(4, 1, booting(Some(1))));
        assert_eq!(rollout_step(&workers, 1), RolloutStep::Wait);
        // The replacement is ready and the old one retires: next in line.
        workers[1].state = retiring();
        workers[3].state = ready();
        assert_eq!(rollout_step(&workers, 1), RolloutStep::Replace(2));
        workers[0].state = retiring();
        assert_eq!(rollout_step(&workers, 1), RolloutStep::Done);
        assert_eq!(older_than(&workers, 1), 0);
    }

    #[test]
    fn a_rollout_waits_for_a_replacement_killed_at_boot_until_it_is_reaped() {
        let workers = vec![record(1, 0, ready()), record(2, 1, killed(Some(1)))];
        assert_eq!(rollout_step(&workers, 1), RolloutStep::Wait);
    }

    #[test]
    fn a_rollout_waits_for_an_old_worker_still_booting() {
        let workers = vec![record(1, 0, booting(None)), record(2, 1, ready())];
        assert_eq!(rollout_step(&workers, 1), RolloutStep::Wait);
        assert_eq!(older_than(&workers, 1), 1);
    }

    #[test]
    fn recyclings_are_due_from_their_time_on_and_never_twice() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let mut workers = vec![record(1, 0, ready()), record(2, 0, ready())];
        workers[0].ask_recycle(100, now);
        workers[1].ask_recycle(200, now);
        workers[1].postpone_recycle(later);
        assert_eq!(recycles_due(&workers, now), vec![(1, 100)]);
        assert_eq!(next_recycle_retry(&workers, now), Some(later));
        workers.push(record(3, 0, booting(Some(1))));
        assert_eq!(recycles_due(&workers, now), vec![], "one under way");
        assert_eq!(recycles_due(&workers, later), vec![(2, 200)]);
    }

    #[test]
    fn the_first_boot_is_over_when_every_wanted_worker_is_ready() {
        let mut workers = vec![record(1, 0, ready()), record(2, 0, booting(None))];
        assert!(!all_ready(&workers, 2));
        workers[1].state = ready();
        assert!(all_ready(&workers, 2));
        assert!(!all_ready(&workers, 3));
    }

    #[test]
    fn the_fleet_is_settled_once_exactly_the_wanted_workers_serve() {
        let two = [record(1, 0, ready()), record(2, 0, ready())];
        assert!(settled(&two, 2));
        assert!(!settled(&two, 3), "one more is wanted");
        assert!(!settled(&two, 1), "one is still to close");
        let leaving = [record(1, 0, ready()), record(2, 0, retiring())];
        assert!(settled(&leaving, 1), "a retiring worker does not count");
        let replacing = [record(1, 0, ready()), record(2, 0, booting(Some(1)))];
        assert!(!settled(&replacing, 1), "a replacement is under way");
    }
}
