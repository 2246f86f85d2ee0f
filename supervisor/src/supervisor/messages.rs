//! What the workers say over their control sockets: reading it in bounded
//! batches, acting on each message, and the end of the first boot.

use std::io;
use std::time::Instant;

use drover_shared::events;

use super::exit_reason::ExitReason;
use super::log_budget::Verdict;
use super::{fleet, Phase, Supervisor};
use crate::control::protocol::{DecodeError, WorkerMessage, MAX_DATAGRAM};
use crate::notify;
use crate::pid_file;

/// At most this many messages are read from one worker per loop turn.
const MESSAGES_PER_TURN: usize = 64;

/// How much of a worker's socket to read at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Batch {
    /// A loop turn's share.
    Turn,
    /// Everything: the worker has exited and been reaped (its pid is not
    /// its own any more: nothing may signal it).
    LastWords,
}

impl Supervisor<'_> {
    /// Reads what worker `id` has sent and acts on it: a batch of at most
    /// `limit` messages.
    pub(super) fn read_control(&mut self, id: u64, batch: Batch) {
        let mut buffer = [0u8; MAX_DATAGRAM];
        let limit = match batch {
            // A worker that floods its socket is read again at the next
            // turn (poll reports it still readable), after the signals and
            // its siblings, instead of holding the loop.
            Batch::Turn => MESSAGES_PER_TURN,
            // It exited: what it said last (a BootFailed reason) counts, and
            // its socket buffer bounds what there is.
            Batch::LastWords => usize::MAX,
        };
        for _ in 0..limit {
            let Some(worker) = self.workers.iter_mut().find(|w| w.id == id) else {
                return;
            };
            let Some(control) = &worker.control else {
                return;
            };
            let message = match control.recv(&mut buffer) {
                Ok(Some(len)) => WorkerMessage::decode(&buffer[..len]),
                Ok(None) => {
                    // The worker closed its end: it is exiting; SIGCHLD follows.
                    worker.control = None;
                    return;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) => {
                    tracing::warn!(worker = id, %error, "control socket failed");
                    worker.control = None;
                    return;
                }
            };
            self.on_message(id, message, batch);
        }
    }

    fn on_message(&mut self, id: u64, message: Result<WorkerMessage, DecodeError>, batch: Batch) {
        let Some(worker) = self.worker_mut(id) else {
            return;
        };
        let now = Instant::now();
        worker.last_heard = now;
        let pid = worker.pid.as_raw();
        match message {
            Ok(WorkerMessage::Ready) => {
                if worker.is_booting() {
                    let replaces = worker.became_ready(now);
                    tracing::info!(
                        event = events::WORKER_READY,
                        worker = id,
                        pid,
                        "worker ready"
                    );
                    if let Some(old) = replaces {
                        self.replacement_ready(old, id, pid);
                    }
                }
                self.check_ready();
            }
            Ok(WorkerMessage::Recycle { requests }) => self.recycle(id, requests),
            Ok(WorkerMessage::Heartbeat(counters)) => {
                tracing::trace!(worker = id, ?counters, "heartbeat");
                worker.told(counters, now);
            }
            Ok(WorkerMessage::Report { query, counters }) => {
                worker.told(counters, now);
                self.reported(id, query);
            }
            Ok(WorkerMessage::BootFailed { reason }) => {
                if may_log(worker.log_budget.spend(now), id) {
                    // Quoted: the text is the worker's, not ours.
                    tracing::error!(
                        event = events::WORKER_CANNOT_START,
                        worker = id,
                        ?reason,
                        "worker cannot start"
                    );
                }
                worker.failed_to_boot(reason);
            }
            Ok(WorkerMessage::Closed {
                drained,
                aborted,
                requests,
                tls_handshake_failures,
            }) => {
                // Its last word on what it served: counted once it is reaped.
                worker.counters.requests = worker.counters.requests.max(requests);
                worker.counters.tls_handshake_failures = worker
                    .counters
                    .tls_handshake_failures
                    .max(tls_handshake_failures);
                if may_log(worker.log_budget.spend(now), id) {
                    tracing::info!(
                        event = events::WORKER_CLOSED,
                        worker = id,
                        drained,
                        aborted,
                        requests,
                        "worker closed"
                    );
                }
            }
            Err(error) => {
                worker.control = None;
                let reason = format!("malformed control message: {error}");
                match batch {
                    Batch::Turn => {
                        tracing::error!(event = events::WORKER_KILLED, worker = id, pid, %error, "worker sent a malformed control message: replacing it");
                        worker.kill_for_fault(reason, ExitReason::Crash);
                    }
                    // Reaped already: its pid may be another process's now.
                    Batch::LastWords => {
                        tracing::error!(worker = id, pid, %error, "worker sent a malformed control message before it exited");
                        worker.mark_faulty(reason, ExitReason::Crash);
                    }
                }
            }
        }
    }

    /// The first boot is over once every initial worker is ready. Then the
    /// pid file is written and systemd hears READY=1; a supervisor started
    /// by a binary upgrade takes over from the old one first.
    fn check_ready(&mut self) {
        if self.phase != Phase::Booting || !fleet::all_ready(&self.workers, self.wanted) {
            return;
        }
        self.enter(Phase::Running);
        let predecessor = self.predecessor.take();
        if predecessor.is_some() {
            self.take_over();
        }
        if let Some(path) = &self.config.pid_file {
            if let Err(error) = pid_file::write(path) {
                tracing::error!(path = %path.display(), %error, "cannot write the pid file");
            }
        }
        notify::ready(&self.status(), predecessor.is_some());
        // Last of all (the old supervisor leaves when it hears this, and
        // systemd must know the new main pid by then).
        if let Some(channel) = predecessor {
            self.tell_predecessor(&channel);
        }
        // Last: whoever sees this line finds the pid file written.
        let addrs: Vec<String> = self
            .sockets
            .addrs()
            .iter()
            .map(ToString::to_string)
            .collect();
        tracing::info!(event = events::READY, workers = self.wanted, addrs = %addrs.join(", "), "ready");
    }

    /// The status line for systemd.
    pub(super) fn status(&self) -> String {
        format!("{} workers serving", self.wanted)
    }
}

/// Whether a line a worker caused may be logged (see `log_budget`); says
/// how many were held back before it.
fn may_log(verdict: Verdict, worker: u64) -> bool {
    match verdict {
        Verdict::Log { held_back: 0 } => true,
        Verdict::Log { held_back } => {
            tracing::warn!(
                worker,
                held_back,
                "a worker floods its control socket: lines held back"
            );
            true
        }
        Verdict::HoldBack => false,
    }
}
