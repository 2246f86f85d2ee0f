//! The binary upgrade, the new supervisor's side (the old one's is
//! `upgrade`): started by the old supervisor with its sockets and a
//! channel back, it runs as many workers as the old one did, and once all
//! are ready it takes over, then tells the old one. If a worker of its
//! fails to boot first, it gives up (`Leave::GiveUpTakeover`) and the old
//! one serves on.
//!
//! Until it has taken over, it does not speak for the service: its
//! failure must not read to systemd as the service stopping.

use drover_shared::env::{UPGRADE_GENERATION, UPGRADE_WORKERS};
use drover_shared::events;

use super::{Phase, Supervisor};
use crate::control::protocol::WorkerMessage;
use crate::control::ControlSocket;

/// How many workers the supervisor this one replaces runs, as it said.
pub(super) fn inherited_worker_count() -> Option<usize> {
    std::env::var(UPGRADE_WORKERS)
        .ok()?
        .parse()
        .ok()
        .filter(|n| *n > 0)
}

/// The generation this supervisor's workers start in: one past the
/// replaced supervisor's, as it said; 0 at a plain start.
pub(super) fn inherited_generation() -> u64 {
    std::env::var(UPGRADE_GENERATION)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(0)
}

impl Supervisor<'_> {
    /// Once its workers are ready: it no longer dies with the old one, and
    /// owns the socket files the old one made.
    pub(super) fn take_over(&mut self) {
        if let Err(error) = nix::sys::prctl::set_pdeathsig(None) {
            tracing::warn!(%error, "cannot outlive the previous supervisor");
        }
        self.sockets.take_over();
        self.open_endpoints_after_takeover();
        tracing::info!(
            event = events::TOOK_OVER,
            "took over from the previous supervisor"
        );
    }

    /// Says `Ready` to the supervisor this one replaces: last of the
    /// takeover, since the old one leaves when it hears it.
    pub(super) fn tell_predecessor(&self, channel: &ControlSocket) {
        if let Err(error) = channel.send(&WorkerMessage::Ready.encode()) {
            tracing::warn!(%error, "cannot tell the previous supervisor");
        }
    }

    /// Whether this process speaks for the service to systemd: not a new
    /// supervisor that has not taken over yet (its failure must not read
    /// as the service stopping), nor an old one that has handed over.
    pub(super) fn speaks_for_service(&self) -> bool {
        self.predecessor.is_none() && self.phase != Phase::HandedOver
    }
}
