//! Where the supervisor is in its life.
//!
//! ```text
//!             every first worker ready
//!   Booting ───────────────────────────▶ Running
//!     │  a first worker fails, a stop       │ a stop (TERM, INT, QUIT)
//!     ▼                                     ▼
//!   Stopping ◀──────────────────────────────┘
//!                                           │ the new supervisor of a
//!                                           ▼ binary upgrade is ready
//!                                        HandedOver
//! ```
//!
//! `Stopping` and `HandedOver` end when the last worker is reaped; a
//! QUIT (or a second TERM) in `Stopping` kills the workers and stays
//! there, and one in `HandedOver` kills this supervisor's own workers and
//! stays there too (it no longer speaks for the service). Every change
//! goes through [`Supervisor::enter`](super::Supervisor::enter), which
//! logs it.

use drover_shared::events;

use super::Supervisor;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// The first workers are starting; any failure ends drover.
    Booting,
    Running,
    /// Stopping: the workers are closing; drover exits once they are gone.
    Stopping,
    /// After a binary upgrade: the new supervisor serves; this one's
    /// workers drain, then it exits. It no longer speaks for the service:
    /// it tells systemd nothing, and a stop signal changes nothing (a
    /// QUIT still cuts its own workers).
    HandedOver,
}

impl Phase {
    /// On its way out: it exits once no worker is left.
    pub(super) fn is_leaving(self) -> bool {
        matches!(self, Self::Stopping | Self::HandedOver)
    }

    /// Whether the diagram above has the edge `self → to` (staying in a
    /// phase is always allowed).
    pub(super) fn may_become(self, to: Phase) -> bool {
        use Phase::*;
        self == to
            || matches!(
                (self, to),
                (Booting, Running) | (Booting | Running, Stopping) | (Running, HandedOver)
            )
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Booting => "booting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::HandedOver => "handed_over",
        }
    }
}

impl Supervisor<'_> {
    /// The one way to change phase: logged, and checked against the
    /// diagram (an edge it lacks is a bug, reported and still taken, so
    /// that a stop always stops).
    pub(super) fn enter(&mut self, to: Phase) {
        let from = self.phase;
        if from == to {
            return;
        }
        if !from.may_become(to) {
            tracing::error!(
                from = from.name(),
                to = to.name(),
                "unexpected phase change"
            );
        }
        tracing::debug!(
            event = events::PHASE,
            from = from.name(),
            to = to.name(),
            "phase"
        );
        self.phase = to;
    }
}

#[cfg(test)]
mod tests {
    use super::Phase::{self, *};

    const ALL: [Phase; 4] = [Booting, Running, Stopping, HandedOver];

    #[test]
    fn the_diagrams_edges_and_no_others() {
        let edges = [
            (Booting, Running),
            (Booting, Stopping),
            (Running, Stopping),
            (Running, HandedOver),
        ];
        for from in ALL {
            for to in ALL {
                let expected = from == to || edges.contains(&(from, to));
                assert_eq!(from.may_become(to), expected, "{from:?} → {to:?}");
            }
        }
    }

    #[test]
    fn only_the_last_two_phases_are_on_the_way_out() {
        assert!(!Booting.is_leaving());
        assert!(!Running.is_leaving());
        assert!(Stopping.is_leaving());
        assert!(HandedOver.is_leaving());
    }
}
