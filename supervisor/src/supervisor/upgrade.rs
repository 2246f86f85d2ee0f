//! The binary upgrade (USR2), the old supervisor's side (the new one's is
//! `takeover`), as nginx and unicorn do it: the supervisor
//! forks and execs the binary on disk now as a new supervisor, which
//! inherits the listening sockets (LISTEN_FDS, as systemd passes them) and
//! the same flags, and a channel back (`DROVER_UPGRADE_FD`).
//!
//! The new supervisor starts its own workers. Once all are ready it takes
//! over: it tells systemd its pid (`MAINPID`, then `READY=1`), writes the
//! pid file and then says `Ready` on the channel. Only then does the old
//! one close its workers (draining) and exit, leaving the socket files and
//! the pid file to the new one. The sockets never close in between, so no
//! connection is refused or lost.
//!
//! If the new supervisor fails (it exits, a worker of its fails to boot, it
//! is not ready in time), the old one kills it if need be, logs why, and
//! serves on; a later USR2 tries again. A new supervisor that gives up
//! closes the workers it had ready by draining them, as a restart does:
//! they were serving already. Until it has taken over, the new supervisor
//! dies with the old one (PR_SET_PDEATHSIG), so an interrupted upgrade
//! leaves no second supervisor behind.
//!
//! The new supervisor starts as many workers as the old one runs (TTIN and
//! TTOU carry over), with the same command line and environment.

use std::io;
use std::time::{Duration, Instant};

use crate::control::protocol::{WorkerMessage, MAX_DATAGRAM};
use crate::control::ControlSocket;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use drover_shared::events;

use super::leave::Leave;
use super::operator::Awaiting;
use super::{Phase, Supervisor};
use crate::exec_image::ExecImage;
use crate::notify;
use crate::pid_file;
use crate::spawn::{spawn_child, Launch};
use serde_json::json;

/// The new supervisor gets its workers' boot timeout plus this for its own
/// start before the old one gives up on it.
const START_MARGIN: Duration = Duration::from_secs(5);

/// Where a binary upgrade is, on the old supervisor's side.
pub(super) enum Upgrade {
    Idle,
    /// The new supervisor is starting; it says `Ready` on `channel`
    /// (`None` once it closed its end: it is exiting).
    Starting {
        pid: Pid,
        channel: Option<ControlSocket>,
        /// `None` with `--boot-timeout 0`.
        deadline: Option<Instant>,
    },
}

impl Upgrade {
    pub(super) fn channel(&self) -> Option<&ControlSocket> {
        match self {
            Self::Starting { channel, .. } => channel.as_ref(),
            Self::Idle => None,
        }
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        match self {
            Self::Starting { deadline, .. } => *deadline,
            Self::Idle => None,
        }
    }

    /// The new supervisor being started, if one is.
    pub(super) fn successor(&self) -> Option<Pid> {
        match self {
            Self::Starting { pid, .. } => Some(*pid),
            Self::Idle => None,
        }
    }

    pub(super) fn is_successor(&self, child: Pid) -> bool {
        self.successor() == Some(child)
    }
}

impl Supervisor<'_> {
    /// USR2: start the new supervisor.
    pub(super) fn upgrade(&mut self) {
        if let Upgrade::Starting { pid, .. } = self.upgrade {
            // An operator asking meanwhile hears how that one ends.
            tracing::warn!(
                new_supervisor = pid.as_raw(),
                "USR2 ignored: an upgrade is under way"
            );
            return;
        }
        match self.start_successor() {
            Ok(pid) => {
                tracing::info!(
                    event = events::UPGRADE_BEGUN,
                    new_supervisor = pid.as_raw(),
                    "binary upgrade: started a new supervisor"
                );
            }
            Err(error) => {
                tracing::error!(event = events::UPGRADE_FAILED, %error, "binary upgrade failed: cannot start a new supervisor; this one keeps serving");
                self.settle(
                    |a| a == Awaiting::Upgrade,
                    Err(format!(
                        "upgrade failed: cannot start a new supervisor: {error}"
                    )),
                );
            }
        }
    }

    fn start_successor(&mut self) -> io::Result<Pid> {
        let image = ExecImage::successor(
            &self.binary,
            &self.sockets.owned_files(),
            self.wanted,
            self.generation + 1,
        )?;
        let (ours, theirs) = ControlSocket::pair()?;
        // The fleet's ticket keys, waiting on the channel before the new
        // supervisor starts: its workers resume this fleet's sessions.
        if let Some(tls) = &self.tls {
            if let Err(error) = super::tls::hand_to(&ours, tls) {
                tracing::warn!(%error, "cannot hand the ticket keys to the new supervisor: it draws its own");
            }
        }
        let pid = spawn_child(
            &self.sockets.fds(),
            self.sockets.names(),
            &theirs,
            &self.owned_fds(&ours),
            Launch::Exec(&image),
            None, // a supervisor, not a worker: no index
            None, // the new supervisor stays root, as this one
        )?;
        self.upgrade = Upgrade::Starting {
            pid,
            channel: Some(ours),
            deadline: (self.config.boot_timeout).map(|boot| Instant::now() + boot + START_MARGIN),
        };
        Ok(pid)
    }

    /// Reads what the new supervisor says: `Ready` completes the upgrade.
    pub(super) fn read_successor(&mut self) {
        let Upgrade::Starting {
            channel: Some(channel),
            ..
        } = &mut self.upgrade
        else {
            return;
        };
        let mut buffer = [0u8; MAX_DATAGRAM];
        match channel.recv(&mut buffer) {
            Ok(Some(len)) => match WorkerMessage::decode(&buffer[..len]) {
                Ok(WorkerMessage::Ready) => self.hand_over(),
                other => self.upgrade_failed(&format!("unexpected message {other:?}"), true),
            },
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            // It closed its end: it is exiting, SIGCHLD says how.
            Ok(None) | Err(_) => {
                if let Upgrade::Starting { channel, .. } = &mut self.upgrade {
                    *channel = None;
                }
            }
        }
    }

    /// Reaped: the pid is gone, nothing to kill.
    pub(super) fn successor_exited(&mut self, how: &str) {
        self.upgrade_failed(&format!("the new supervisor exited ({how})"), false);
    }

    pub(super) fn upgrade_timed_out(&mut self) {
        let within = self.config.boot_timeout.unwrap_or_default() + START_MARGIN;
        let why = format!("the new supervisor was not ready within {within:?}");
        self.upgrade_failed(&why, true);
    }

    fn upgrade_failed(&mut self, why: &str, still_running: bool) {
        let Upgrade::Starting { pid, .. } = std::mem::replace(&mut self.upgrade, Upgrade::Idle)
        else {
            return;
        };
        // Not reaped yet (timeout, garbage): its booting workers die with it.
        if still_running {
            self.kill_successor(pid);
        }
        // The new one may have told systemd `MAINPID=` already (it does
        // just before it says Ready here): systemd must follow this one
        // again, or it takes the dead one's exit for the service's.
        if self.speaks_for_service() {
            notify::ready(&self.status(), true);
        }
        // It may have written its pid to the pid file too.
        if let Some(path) = &self.config.pid_file {
            if let Err(error) = pid_file::write(path) {
                tracing::error!(path = %path.display(), %error, "cannot write the pid file");
            }
        }
        // Last: whoever sees this line finds systemd and the pid file told.
        tracing::error!(
            event = events::UPGRADE_FAILED,
            new_supervisor = pid.as_raw(),
            why,
            "binary upgrade failed: this supervisor keeps serving; USR2 again to retry"
        );
        self.settle(
            |a| a == Awaiting::Upgrade,
            Err(format!(
                "upgrade failed: {why}; this supervisor keeps serving"
            )),
        );
    }

    /// At a stop: if the new supervisor has said it is ready (in this same
    /// loop turn), the upgrade completes first. Returns whether this
    /// supervisor has handed over.
    pub(super) fn finish_pending_upgrade(&mut self) -> bool {
        self.read_successor();
        self.phase == Phase::HandedOver
    }

    /// At a stop: a new supervisor still starting is killed.
    pub(super) fn cancel_upgrade(&mut self) {
        if let Upgrade::Starting { pid, .. } = std::mem::replace(&mut self.upgrade, Upgrade::Idle) {
            tracing::warn!(
                new_supervisor = pid.as_raw(),
                "abandoning the binary upgrade"
            );
            self.kill_successor(pid);
        }
    }

    /// Kills a new supervisor given up on; `reap` or the way out waits for it.
    fn kill_successor(&mut self, pid: Pid) {
        if kill(pid, Signal::SIGKILL).is_ok() {
            self.killed.push(pid);
        }
    }

    /// The new supervisor serves: this one closes its workers, draining,
    /// and exits once they are gone, leaving the sockets' files and the pid
    /// file to the new one.
    fn hand_over(&mut self) {
        let Upgrade::Starting { pid, .. } = std::mem::replace(&mut self.upgrade, Upgrade::Idle)
        else {
            return;
        };
        let successor = pid.as_raw();
        self.settle(
            |a| a == Awaiting::Upgrade,
            Ok(json!({
                "message": format!("upgraded: the new supervisor (pid {successor}) serves"),
                "new_supervisor": successor,
            })),
        );
        self.leave(Leave::HandOver { successor });
    }
}
