//! The certificate and key, the supervisor's side: read and checked at
//! start (a bad pair is a failed start), handed to each worker as it
//! starts, and re-read at USR1 (`drover ctl tls reload`) and HUP: a pair
//! that checks goes to every worker, which swaps it in for new handshakes;
//! one that does not is refused with one line, and the old one serves on.

use serde_json::{json, Value};

use drover_shared::events;

use super::Supervisor;
use crate::control::protocol::SupervisorMessage;
use crate::control::ControlSocket;
use crate::tls_material::{Material, EXPIRY_WARNING};

/// Reads the pair at start, if TLS is on; the error is the start's.
pub(super) fn load_at_start(config: &crate::config::Config) -> Result<Option<Material>, String> {
    let Some(files) = &config.tls else {
        return Ok(None);
    };
    let material = files.load()?;
    log_loaded(&material, &files.cert, None);
    Ok(Some(material))
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
    match facts.valid_for {
        Some(left) if left >= EXPIRY_WARNING => {}
        Some(left) => tracing::warn!(
            subject = %facts.subject,
            not_after = %facts.not_after,
            days_left = left.as_secs() / 86_400,
            "the certificate expires within 14 days: renew it, then USR1"
        ),
        None => tracing::warn!(
            subject = %facts.subject,
            not_after = %facts.not_after,
            "the certificate has expired: renew it, then USR1"
        ),
    }
}

/// Hands `material` to one worker over its channel.
pub(super) fn hand_to(control: &ControlSocket, material: &Material) -> std::io::Result<()> {
    control.send_with_fd(&SupervisorMessage::Tls.encode(), material.fd())
}

impl Supervisor<'_> {
    /// Re-reads the pair; if it checks, every worker gets it (new
    /// handshakes, open connections untouched) and so do the workers
    /// started later. Answered once every worker was sent it.
    pub(super) fn reload_tls(&mut self) -> Result<Value, String> {
        let Some(files) = &self.config.tls else {
            return Err("TLS is off (no --certfile)".into());
        };
        let material = match files.load() {
            Ok(material) => material,
            Err(error) => {
                tracing::error!(
                    event = events::TLS_RELOAD_FAILED,
                    %error,
                    "certificate reload refused: the old certificate serves on"
                );
                return Err(error);
            }
        };
        let mut sent = 0;
        for worker in self.workers.iter().filter(|w| w.is_active()) {
            let Some(control) = &worker.control else {
                continue;
            };
            match hand_to(control, &material) {
                Ok(()) => sent += 1,
                Err(error) => {
                    tracing::warn!(worker = worker.id, %error, "cannot send the certificate")
                }
            }
        }
        log_loaded(&material, &files.cert, Some(sent));
        self.tls = Some(material);
        Ok(json!({
            "message": format!("certificate reloaded: sent to {sent} workers"),
            "workers": sent,
        }))
    }
}
