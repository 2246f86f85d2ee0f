//! The fleet's figures from the supervisor's records: what `status`
//! answers and `/metrics` encodes (see `operator::figures`), and the
//! counters the supervisor keeps for them across workers' lives.

use std::time::Instant;

use super::exit_reason::{ExitCounts, ExitReason};
use super::rollout::Rollout;
use super::worker::Worker;
use super::Supervisor;
use crate::operator::figures::{Figures, ListenerFigures, SupervisorFigures, WorkerFigures};
use crate::operator::kernel;

/// What the supervisor counts over its life, for its operator.
#[derive(Debug, Default)]
pub(super) struct Tally {
    /// Workers that left, by reason.
    pub(super) exits: ExitCounts,
    /// Requests served by workers that left, by their slot: what keeps
    /// the fleet's request counters from going down when one leaves.
    pub(super) served_by_index: Vec<u64>,
    /// TLS handshakes that failed in workers that left.
    pub(super) tls_failures_of_workers_gone: u64,
    pub(super) reloads_completed: u64,
    pub(super) reloads_stopped: u64,
}

impl Tally {
    /// A worker left: its exit and what it served are counted.
    pub(super) fn worker_left(&mut self, worker: &Worker) {
        self.exits.count(worker.exit_reason());
        if self.served_by_index.len() <= worker.index {
            self.served_by_index.resize(worker.index + 1, 0);
        }
        self.served_by_index[worker.index] += worker.counters.requests;
        self.tls_failures_of_workers_gone += worker.counters.tls_handshake_failures;
    }

    fn served_by_workers_gone(&self) -> u64 {
        self.served_by_index.iter().sum()
    }
}

impl Supervisor<'_> {
    /// The figures now; `late`: workers asked for their counters that did
    /// not answer in time.
    pub(super) fn figures(&self, late: &[u64]) -> Figures {
        let now = Instant::now();
        let workers: Vec<WorkerFigures> = self
            .workers
            .iter()
            .map(|w| worker_figures(w, now, late.contains(&w.id)))
            .collect();
        let live_requests: u64 = workers.iter().map(|w| w.requests).sum();
        let live_tls_failures: u64 = workers.iter().map(|w| w.tls_handshake_failures).sum();
        Figures {
            supervisor: SupervisorFigures {
                pid: std::process::id(),
                phase: self.phase.name().to_owned(),
                uptime_s: now.duration_since(self.started).as_secs_f64(),
                generation: self.generation,
                spawn: self.config.spawn.name().to_owned(),
                workers_wanted: self.wanted,
                reloading: matches!(self.rollout, Rollout::Rolling { .. }),
                upgrading_to: self.upgrade.successor().map(|pid| pid.as_raw()),
            },
            listeners: self
                .sockets
                .listeners()
                .iter()
                .enumerate()
                .map(|(index, listener)| {
                    listener_figures(listener, self.sockets.speaks_tls(self.config, index))
                })
                .collect(),
            requests_in_flight: workers.iter().map(|w| w.in_flight).sum(),
            connections_open: workers.iter().map(|w| w.connections).sum(),
            requests_total: self.tally.served_by_workers_gone() + live_requests,
            tls_handshake_failures_total: self.tally.tls_failures_of_workers_gone
                + live_tls_failures,
            workers,
            exits: self
                .tally
                .exits
                .iter()
                .map(|(reason, n): (ExitReason, u64)| (reason.label().to_owned(), n))
                .collect(),
            reloads: [
                ("completed".to_owned(), self.tally.reloads_completed),
                ("stopped".to_owned(), self.tally.reloads_stopped),
            ]
            .into(),
        }
    }
}

/// A listener with its accept queue, as the kernel tells it now.
fn listener_figures(listener: &drover_shared::Listener, tls: bool) -> ListenerFigures {
    use std::os::fd::AsFd;
    let queue = kernel::accept_queue(listener.as_fd());
    ListenerFigures {
        addr: listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        queue_depth: queue.map(|(depth, _)| depth),
        queue_limit: queue.map(|(_, limit)| limit),
        tls,
    }
}

fn worker_figures(worker: &Worker, now: Instant, late: bool) -> WorkerFigures {
    let usage = kernel::process_usage(worker.pid.as_raw());
    let millis = |since: Instant| now.saturating_duration_since(since).as_millis() as u64;
    WorkerFigures {
        id: worker.id,
        index: worker.index,
        pid: worker.pid.as_raw(),
        generation: worker.generation,
        state: worker.state_name().to_owned(),
        age_s: now.duration_since(worker.started).as_secs_f64(),
        ready_in_ms: worker.time_to_ready().map(|d| d.as_millis() as u64),
        requests: worker.counters.requests,
        in_flight: worker.counters.in_flight,
        connections: worker.counters.connections,
        tls_handshake_failures: worker.counters.tls_handshake_failures,
        rss_bytes: usage.map(|u| u.rss_bytes),
        cpu_s: usage.map(|u| u.cpu_s),
        last_heard_ms: millis(worker.last_heard),
        counters_age_ms: worker.counters_at.map(millis),
        late,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::WorkerCounters;
    use crate::supervisor::worker::tests::{ready, record};

    #[test]
    fn what_a_worker_served_stays_counted_in_its_slot_after_it_left() {
        let mut tally = Tally::default();
        let mut gone = record(1, 0, ready());
        gone.index = 2;
        gone.told(
            WorkerCounters {
                requests: 40,
                tls_handshake_failures: 3,
                ..WorkerCounters::default()
            },
            Instant::now(),
        );
        tally.worker_left(&gone);
        tally.worker_left(&gone);
        assert_eq!(tally.served_by_index, vec![0, 0, 80]);
        assert_eq!(tally.served_by_workers_gone(), 80);
        assert_eq!(tally.tls_failures_of_workers_gone, 6);
        let crashes = tally.exits.iter().find(|(r, _)| *r == ExitReason::Crash);
        assert_eq!(crashes, Some((ExitReason::Crash, 2)));
    }
}
