//! One worker as the supervisor sees it: its process, its control socket,
//! and where it is in its life.

use std::time::{Duration, Instant};

use crate::control::protocol::SupervisorMessage;
use crate::control::ControlSocket;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub(super) struct Worker {
    pub(super) id: u64,
    pub(super) pid: Pid,
    /// `None` once the worker closed its end (it is exiting).
    pub(super) control: Option<ControlSocket>,
    pub(super) state: WorkerState,
    pub(super) last_heard: Instant,
    pub(super) boot_failure: Option<String>,
    /// The restart generation it was started in (see [`Rollout`]).
    pub(super) generation: u64,
    /// While it boots: the worker it replaces once it is ready.
    pub(super) replaces: Option<u64>,
    /// It has served its request quota: it is to be replaced, from
    /// `not_before` on, until a replacement is ready.
    pub(super) recycle: Option<Recycle>,
    /// When it reported `Ready`.
    pub(super) ready_at: Option<Instant>,
}

/// A worker's pending replacement for `--max-requests`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Recycle {
    /// Requests served when it asked.
    pub(super) requests: u64,
    /// No replacement starts before this (later after one failed).
    pub(super) not_before: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum WorkerState {
    /// Started; must report `Ready` by the deadline.
    Booting {
        deadline: Instant,
    },
    Ready,
    /// Told to close (replaced, scaled down, stopping); killed if still
    /// running at `kill_at` (`None` once it was, or at a stop that kills).
    Retiring {
        kill_at: Option<Instant>,
    },
    /// Killed for a fault (boot timeout, silence, garbage); to be reaped.
    Killed,
}

impl Worker {
    /// Counts towards the service: booting or serving, not on its way out.
    pub(super) fn is_active(&self) -> bool {
        matches!(self.state, WorkerState::Booting { .. } | WorkerState::Ready)
    }

    /// Tells it to close: idle connections get `drain` for one more
    /// request, connections still open after `graceful` are aborted, and a
    /// second after that the process is killed if it is still there.
    pub(super) fn close(&mut self, drain: Duration, graceful: Duration) {
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
        };
    }

    /// SIGKILL, for a stop that cannot wait, or a straggler past its
    /// deadline: it is reaped on SIGCHLD, with nothing left to time.
    pub(super) fn cut(&mut self) {
        let _ = kill(self.pid, Signal::SIGKILL);
        self.state = WorkerState::Retiring { kill_at: None };
    }

    /// SIGKILL, for a fault.
    pub(super) fn kill(&mut self) {
        let _ = kill(self.pid, Signal::SIGKILL);
        self.state = WorkerState::Killed;
    }
}
