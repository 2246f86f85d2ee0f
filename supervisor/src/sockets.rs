//! The supervisor's listening sockets: inherited (LISTEN_FDS) from systemd
//! or, at a binary upgrade, from the supervisor this one replaces; else
//! opened from `--bind`.
//!
//! Socket files are removed at the end by whoever owns them: the drover
//! that created them, or after a binary upgrade the one it handed them to.
//! Never a file systemd created, and never while another supervisor still
//! serves on it.

use std::os::fd::{AsFd, BorrowedFd};

use drover_shared::env::OWNED_SOCKETS;
use drover_shared::listen_fds::{inherited_listeners, ListenFdsError};
use drover_shared::{adopt_fd, ListenAddr, Listener, ListenerSpec};

use crate::config::Config;
use crate::credentials::Credentials;

/// The `LISTEN_FDNAMES` name of a listener served plain HTTP even with
/// TLS: drover gives it to its `--insecure-bind` sockets, and a systemd
/// socket unit gives it with `FileDescriptorName=insecure`.
pub(crate) const INSECURE_NAME: &str = "insecure";

/// systemd's name for a socket its unit did not name.
const UNNAMED: &str = "unknown";

/// LISTEN_FDNAMES for the sockets drover opens (`--bind`, then
/// `--insecure-bind`): only when some listener is to stay plain, so that an
/// application reading LISTEN_FDNAMES sees what it saw before.
fn own_names(config: &Config) -> Option<String> {
    (!config.insecure_bind.is_empty()).then(|| {
        let tls = std::iter::repeat_n(UNNAMED, config.bind.len());
        let plain = std::iter::repeat_n(INSECURE_NAME, config.insecure_bind.len());
        tls.chain(plain).collect::<Vec<_>>().join(":")
    })
}

/// The sockets every worker gets.
pub(crate) struct Sockets {
    listeners: Vec<Listener>,
    /// LISTEN_FDNAMES to pass on (systemd's names), if any.
    names: Option<String>,
    /// Sockets inherited from a supervisor this one replaces whose files
    /// it created: this one owns them once it has taken over.
    to_claim: Vec<usize>,
}

impl Sockets {
    /// Takes the sockets systemd (or, with `from_predecessor`, the
    /// supervisor this one replaces) passed, or opens `--bind`, giving the
    /// Unix socket files it creates to `owner`. The error is one line for
    /// the operator.
    pub(crate) fn open(
        config: &Config,
        from_predecessor: bool,
        owner: Option<&Credentials>,
    ) -> Result<Self, String> {
        match inherited_listeners() {
            Ok(inherited) => {
                let names = inherited.iter().all(|l| l.name.is_some()).then(|| {
                    inherited
                        .iter()
                        .map(|l| l.name.clone().unwrap_or_default())
                        .collect::<Vec<_>>()
                        .join(":")
                });
                let listeners: Vec<Listener> = inherited.into_iter().map(|l| l.listener).collect();
                let mut to_claim = Vec::new();
                if from_predecessor {
                    tracing::info!(
                        count = listeners.len(),
                        "using the sockets of the supervisor this one replaces"
                    );
                    to_claim = std::env::var(OWNED_SOCKETS)
                        .unwrap_or_default()
                        .split(',')
                        .filter_map(|index| index.parse().ok())
                        .collect();
                } else {
                    tracing::info!(
                        count = listeners.len(),
                        "using sockets passed by systemd (LISTEN_FDS)"
                    );
                }
                return Ok(Self {
                    listeners,
                    names,
                    to_claim,
                });
            }
            // Not socket-activated.
            Err(ListenFdsError::Missing) => {}
            // Meant for another process: a wrapper between systemd and
            // drover that forks (`runuser`, a shell without `exec`). The
            // activated sockets cannot be used, and serving the default
            // address instead would leave the activated port unserved.
            Err(error @ ListenFdsError::OtherProcess { .. }) if !config.bind_given => {
                return Err(format!(
                    "socket activation: {error}: is a wrapper forking between systemd and \
                     drover? Start drover with exec, or give --bind to listen elsewhere"
                ));
            }
            Err(ListenFdsError::OtherProcess { .. }) => {}
            Err(error) => return Err(format!("socket activation: {error}")),
        }
        let mut opened = Self {
            listeners: Vec::with_capacity(config.bind.len() + config.insecure_bind.len()),
            names: own_names(config),
            to_claim: Vec::new(),
        };
        let mut adopted = Vec::new();
        for spec in config.bind.iter().chain(&config.insecure_bind) {
            if let ListenerSpec::Fd(fd) = spec {
                if adopted.contains(fd) {
                    opened.remove_files();
                    return Err(format!("{spec} is given twice"));
                }
                adopted.push(*fd);
            }
            match Self::open_one(config, spec, owner) {
                Ok(listener) => opened.listeners.push(listener),
                Err(error) => {
                    // Leave nothing bound behind: files created so far go.
                    opened.remove_files();
                    return Err(error);
                }
            }
        }
        Ok(opened)
    }

    fn open_one(
        config: &Config,
        spec: &ListenerSpec,
        owner: Option<&Credentials>,
    ) -> Result<Listener, String> {
        let listener = match spec {
            ListenerSpec::Fd(fd) => {
                // SAFETY: `fd://N` on the command line is the operator
                // handing descriptor N to drover to own; nothing else in
                // this process knows of it.
                unsafe { adopt_fd(*fd) }.map_err(|e| format!("cannot listen on {spec}: {e}"))?
            }
            ListenerSpec::Unix(path) if config.uds_mode.is_some() => {
                let mode = config.uds_mode.unwrap_or_default();
                crate::unix_mode::open_unix_with_mode(path, mode, config.backlog)?
            }
            _ => spec.open(config.backlog).map_err(|e| e.to_string())?,
        };
        let (Some(owner), Some(file)) = (owner, listener.socket_file()) else {
            return Ok(listener);
        };
        // The file is the workers' user's, as what they serve on; lchown,
        // which never follows a symlink.
        let path = file.path();
        if let Err(error) = std::os::unix::fs::lchown(path, Some(owner.uid), Some(owner.gid)) {
            let _ = listener.remove_socket_file();
            return Err(format!("cannot chown {}: {error}", path.display()));
        }
        Ok(listener)
    }

    /// The descriptors to hand to a worker.
    pub(crate) fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.listeners.iter().map(AsFd::as_fd).collect()
    }

    /// LISTEN_FDNAMES for the workers.
    pub(crate) fn names(&self) -> Option<&str> {
        self.names.as_deref()
    }

    /// Whether the workers serve listener `index` over TLS: a TCP listener,
    /// TLS on, and not named [`INSECURE_NAME`] (as the workers decide).
    pub(crate) fn speaks_tls(&self, config: &Config, index: usize) -> bool {
        let plain = self
            .names
            .as_deref()
            .and_then(|names| names.split(':').nth(index))
            .is_some_and(|name| name == INSECURE_NAME);
        let tcp = self.listeners[index]
            .local_addr()
            .is_ok_and(|addr| matches!(addr, ListenAddr::Tcp(_)));
        config.tls.is_some() && tcp && !plain
    }

    /// Where they listen, for the log.
    pub(crate) fn addrs(&self) -> Vec<ListenAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The listeners, for the figures an operator asks for.
    pub(crate) fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// Which sockets have files this supervisor created (or took over).
    pub(crate) fn owned_files(&self) -> Vec<usize> {
        (0..self.listeners.len())
            .filter(|&i| self.listeners[i].socket_file().is_some())
            .collect()
    }

    /// A binary upgrade is over and this supervisor is leaving: the socket
    /// files are the new one's now, and are never removed from here.
    pub(crate) fn hand_over(&mut self) {
        self.listeners = std::mem::take(&mut self.listeners)
            .into_iter()
            .map(Listener::without_socket_file)
            .collect();
    }

    /// This supervisor has taken over from the one it replaces: the socket
    /// files that one created are this one's to remove at the end.
    pub(crate) fn take_over(&mut self) {
        let to_claim = std::mem::take(&mut self.to_claim);
        self.listeners = std::mem::take(&mut self.listeners)
            .into_iter()
            .enumerate()
            .map(|(index, listener)| match to_claim.contains(&index) {
                true => listener.claim_socket_file(),
                false => listener,
            })
            .collect();
    }

    /// At a stop: removes the socket files drover created and closes its
    /// descriptors, so that once the workers have closed theirs, a new
    /// client is refused at once instead of waiting in a backlog nobody
    /// will accept from (systemd, when it passed the sockets, keeps its
    /// own, and queues clients for the next start as it should).
    pub(crate) fn close(&mut self) {
        self.remove_files();
        self.listeners.clear();
    }

    /// Removes the socket files drover created (never inherited ones).
    pub(crate) fn remove_files(&self) {
        for listener in &self.listeners {
            if let Err(error) = listener.remove_socket_file() {
                tracing::warn!(%error, "cannot remove a socket file");
            }
        }
    }
}
