//! A TLS worker's side of the certificate: the supervisor's first message
//! to it (the pair, the client CAs and the ticket keys, in a sealed memfd:
//! see `tls_material`), from which it builds its server's TLS, and the
//! reloads that follow (the pair, the client CAs, the ticket keys). The
//! worker never opens the key file.

use std::os::fd::AsFd;
use std::time::Duration;

use drover_shared::events;
use drover_worker::Tls;

use crate::args::CertReqs;
use crate::config::Config;

use crate::control::ControlSocket;

/// A worker's TLS: what its server serves with, and what it needs to
/// apply the supervisor's reloads.
pub(crate) struct WorkerTls {
    tls: Tls,
    cert_reqs: CertReqs,
    /// The client CAs served (PEM), to tell a reload that changes them.
    ca: Vec<u8>,
}

impl WorkerTls {
    /// What the server is built with.
    pub(crate) fn tls(&self) -> &Tls {
        &self.tls
    }
}

/// Waits (bounded by the boot timeout) for the supervisor's first message,
/// the certificate and key, and builds this worker's TLS from it.
pub(crate) fn receive(control: &ControlSocket, config: &Config) -> Result<WorkerTls, String> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let within = config.boot_timeout.unwrap_or(Duration::from_secs(3600));
    let timeout = PollTimeout::try_from(within).unwrap_or(PollTimeout::MAX);
    let mut fds = [PollFd::new(control.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, timeout) {
        Ok(0) => return Err("no certificate from the supervisor".into()),
        Ok(_) => {}
        Err(error) => return Err(format!("waiting for the certificate: {error}")),
    }
    let handed = crate::tls_material::take_waiting(control)?
        .ok_or("the supervisor sent no certificate first")?;
    let cert_reqs = config.tls.as_ref().map_or(CertReqs::None, |t| t.cert_reqs);
    let auth = handed.client_auth(cert_reqs)?;
    let tls = Tls::with_client_auth(handed.pair, config.tls_min_version, auth)
        .map_err(|e| e.to_string())?;
    handed.tickets.install(&tls);
    Ok(WorkerTls {
        tls,
        cert_reqs,
        ca: handed.ca,
    })
}

/// A reload (or a ticket-key rotation): new handshakes get the pair, the
/// client CAs and the ticket keys in `fd`; open connections keep theirs.
/// What does not parse here (the supervisor checked it) leaves the old
/// one serving.
pub(crate) fn replace(tls: Option<&mut WorkerTls>, fd: Option<std::os::fd::OwnedFd>) {
    let (Some(WorkerTls { tls, cert_reqs, ca }), Some(fd)) = (tls, fd) else {
        tracing::warn!("a certificate without TLS, or without its descriptor: ignored");
        return;
    };
    let installed = crate::tls_material::unpack(fd).and_then(|handed| {
        // The CAs first: a pair is never served with CAs that failed.
        if handed.ca != *ca {
            let auth = handed.client_auth(*cert_reqs)?;
            tls.set_client_auth(auth).map_err(|e| e.to_string())?;
            *ca = handed.ca;
        }
        tls.replace(handed.pair);
        handed.tickets.install(tls);
        Ok(())
    });
    match installed {
        Ok(()) => tracing::info!(event = events::TLS_LOADED, "serving the new certificate"),
        Err(error) => {
            tracing::error!(%error, "a new certificate that cannot be served: the old one serves on")
        }
    }
}
