//! The certificate and key, the supervisor's side: read and checked at
//! start (a bad pair is a failed start), handed to each worker as it
//! starts, and re-read at USR1 (`drover ctl tls reload`) and HUP: a pair
//! that checks goes to every worker, which swaps it in for new handshakes;
//! one that does not is refused with one line, and the old one serves on.
//!
//! The fleet's session-ticket keys travel with the pair: drawn here at
//! start and rotated every [`TICKET_ROTATION`] (the previous key still
//! opens tickets), so a session resumes on whichever worker the client
//! reaches.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use drover_shared::events;

use super::Supervisor;
use crate::control::protocol::SupervisorMessage;
use crate::control::ControlSocket;
use crate::tls_material::{Material, TicketKeys, EXPIRY_WARNING};

/// How often the session-ticket key changes; a ticket opens for up to
/// twice this (until the key that sealed it is two rotations old).
pub(super) const TICKET_ROTATION: Duration = Duration::from_secs(12 * 3600);

/// What TLS the fleet serves with, if it is on.
pub(super) struct TlsState {
    material: Material,
    tickets: TicketKeys,
    /// The pair and the keys, sealed, as each worker gets them.
    sealed: OwnedFd,
    /// When the ticket key rotates next.
    pub(super) rotate_at: Instant,
}

impl TlsState {
    /// `material` and `tickets`, sealed for the workers; the key rotates
    /// next at `rotate_at`.
    fn new(material: Material, tickets: TicketKeys, rotate_at: Instant) -> Result<Self, String> {
        let sealed = seal(&material, &tickets)?;
        Ok(Self {
            material,
            tickets,
            sealed,
            rotate_at,
        })
    }

    /// The same pair with `tickets`, sealed anew.
    fn with_tickets(&mut self, tickets: TicketKeys) -> Result<(), String> {
        self.sealed = seal(&self.material, &tickets)?;
        self.tickets = tickets;
        Ok(())
    }

    /// The sealed memfd (the supervisor's own descriptor: no child keeps it).
    pub(super) fn sealed(&self) -> std::os::fd::BorrowedFd<'_> {
        self.sealed.as_fd()
    }
}

fn seal(material: &Material, tickets: &TicketKeys) -> Result<OwnedFd, String> {
    material
        .seal(tickets)
        .map_err(|e| format!("cannot hand the key over: {e}"))
}

/// Reads the pair at start, if TLS is on; the error is the start's. A
/// supervisor started by a binary upgrade is given the ticket keys of the
/// one it replaces (`inherited`, see [`inherited_tickets`]) and rotates
/// them once: the old fleet's sessions resume, and the rotation clock,
/// which starts again here, never lets a key live past two rotations.
pub(super) fn load_at_start(
    config: &crate::config::Config,
    inherited: Option<TicketKeys>,
) -> Result<Option<TlsState>, String> {
    let Some(files) = &config.tls else {
        return Ok(None);
    };
    let material = files.load()?;
    let tickets = match inherited {
        Some(mut tickets) => {
            tickets.rotate()?;
            tracing::info!("session-ticket keys taken over from the previous supervisor");
            tickets
        }
        None => TicketKeys::new()?,
    };
    let state = TlsState::new(material, tickets, Instant::now() + TICKET_ROTATION)?;
    log_loaded(&state.material, &files.cert, None);
    Ok(Some(state))
}

/// The ticket keys the replaced supervisor sent before it started this
/// one: there at once, or never (it served without TLS, or the message
/// does not unpack; new keys then). Read whether or not this supervisor
/// serves TLS, so the key's memfd never waits on the channel.
pub(super) fn inherited_tickets(channel: &ControlSocket) -> Option<TicketKeys> {
    match crate::tls_material::take_waiting(channel) {
        Ok(handed) => handed.map(|handed| handed.tickets),
        Err(error) => {
            tracing::warn!(%error, "the previous supervisor's ticket keys: new ones instead");
            None
        }
    }
}

/// Hands the fleet's TLS to one worker over its channel (or, at a binary
/// upgrade, the ticket keys to the new supervisor over its own).
pub(super) fn hand_to(control: &ControlSocket, tls: &TlsState) -> std::io::Result<()> {
    control.send_with_fd(&SupervisorMessage::Tls.encode(), tls.sealed())
}

/// The `tls_loaded` line: the served certificate's subject and notAfter,
/// and a warning when it expires within 14 days.
fn log_loaded(material: &Material, certfile: &std::path::Path, workers: Option<usize>) {
    let facts = material.facts();
    tracing::info!(
        event = events::TLS_LOADED,
        certfile = %certfile.display(),
        subject = %facts.subject,
        not_after = %facts.not_after,
        workers,
        "certificate and key checked (the key is the certificate's): new handshakes get it"
    );
    warn_if_expiring(material);
}

/// A `tls_expiring` warning when the served certificate expires within 14
/// days or has expired: at every load, and at every ticket rotation (so a
/// server that runs for weeks hears it too).
fn warn_if_expiring(material: &Material) {
    let facts = material.facts();
    match facts.valid_for {
        Some(left) if left >= EXPIRY_WARNING => {}
        Some(left) => tracing::warn!(
            event = events::TLS_EXPIRING,
            subject = %facts.subject,
            not_after = %facts.not_after,
            days_left = left.as_secs() / 86_400,
            "the certificate expires within 14 days: renew it, then USR1"
        ),
        None => tracing::warn!(
            event = events::TLS_EXPIRING,
            subject = %facts.subject,
            not_after = %facts.not_after,
            "the certificate has expired: renew it, then USR1"
        ),
    }
}

impl Supervisor<'_> {
    /// Re-reads the pair; if it checks, every worker gets it (new
    /// handshakes, open connections untouched) and so do the workers
    /// started later. Answered once every worker was sent it.
    pub(super) fn reload_tls(&mut self) -> Result<Value, String> {
        let (Some(files), Some(tls)) = (&self.config.tls, &mut self.tls) else {
            return Err("TLS is off (no --certfile)".into());
        };
        let loaded = files.load().and_then(|material| {
            // New client CAs: a resumed session skips the client's
            // verification, so sessions made under the old CAs must not
            // resume: every ticket key goes (the workers drop their session
            // caches as they take the new CAs).
            let tickets = match material.same_client_cas(&tls.material) {
                true => tls.tickets.clone(),
                false => TicketKeys::new()?,
            };
            TlsState::new(material, tickets, tls.rotate_at)
        });
        match loaded {
            Ok(state) => *tls = state,
            Err(error) => {
                tracing::error!(
                    event = events::TLS_RELOAD_FAILED,
                    %error,
                    "certificate reload refused: the old certificate serves on"
                );
                return Err(error);
            }
        }
        let sent = self.send_tls();
        if let Some(tls) = &self.tls {
            log_loaded(&tls.material, &files.cert, Some(sent));
        }
        Ok(json!({
            "message": format!("certificate reloaded: sent to {sent} workers"),
            "workers": sent,
        }))
    }

    /// At its time: a new session-ticket key for every worker (the current
    /// one becomes the previous, which still opens tickets).
    pub(super) fn rotate_ticket_key(&mut self) {
        let Some(tls) = &mut self.tls else { return };
        tls.rotate_at = Instant::now() + TICKET_ROTATION;
        let mut tickets = tls.tickets.clone();
        if let Err(error) = tickets.rotate().and_then(|()| tls.with_tickets(tickets)) {
            tracing::error!(%error, "cannot rotate the session-ticket key: the current one stays");
            return;
        }
        let sent = self.send_tls();
        tracing::info!(workers = sent, "session-ticket key rotated");
        if let Some(tls) = &self.tls {
            warn_if_expiring(&tls.material);
        }
    }

    /// Sends the fleet's TLS to every active worker; how many were sent it.
    fn send_tls(&self) -> usize {
        let Some(tls) = &self.tls else { return 0 };
        let mut sent = 0;
        for worker in self.workers.iter().filter(|w| w.is_active()) {
            let Some(control) = &worker.control else {
                continue;
            };
            match hand_to(control, tls) {
                Ok(()) => sent += 1,
                Err(error) => {
                    tracing::warn!(worker = worker.id, %error, "cannot send the certificate")
                }
            }
        }
        sent
    }
}
