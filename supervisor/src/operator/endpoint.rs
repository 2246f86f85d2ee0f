//! Where operators reach the supervisor: the control socket (a Unix
//! socket file, mode 0600, each client checked with `SO_PEERCRED`) and the
//! metrics endpoint (TCP or a Unix socket).
//!
//! Both are the supervisor's own, never handed to a worker, and survive
//! a binary upgrade without a gap: the new supervisor, once it takes over,
//! binds its own and renames it over the old one's path (the old one keeps
//! its socket for the replies it still owes); a TCP metrics port is
//! bound with `SO_REUSEPORT` by both, and the old one closes its own as
//! it hands over.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use drover_shared::{Listener, ListenerSpec};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use super::client::Stream;

/// The backlog of the operator's sockets: a handful of clients at a time.
const BACKLOG: u32 = 64;

/// Who may use the control socket, and for what
/// (`--control-socket-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ControlMode {
    /// Every command.
    ReadWrite,
    /// `status` and `metrics` only.
    ReadOnly,
}

/// A listening socket of the operator's, non-blocking.
#[derive(Debug)]
pub(crate) struct Endpoint {
    listener: Listener,
}

impl AsFd for Endpoint {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

impl Endpoint {
    /// Binds a Unix socket at `path`, mode 0600. At a plain start a file
    /// nobody answers on is replaced, and one a live process answers on is
    /// an error; `taking_over` (a new supervisor of a binary upgrade, once
    /// ready) binds beside it and renames over it.
    pub(crate) fn unix(path: &Path, taking_over: bool) -> Result<Self, String> {
        let bind = |at: &Path| crate::unix_mode::open_unix_with_mode(at, 0o600, BACKLOG);
        let listener = if taking_over {
            let beside = sibling(path);
            let listener = bind(&beside)?;
            listener.move_socket_file(path).map_err(|e| {
                let _ = std::fs::remove_file(&beside);
                format!(
                    "cannot move {} to {}: {e}",
                    beside.display(),
                    path.display()
                )
            })?
        } else {
            bind(path)?
        };
        Ok(Self { listener })
    }

    /// Binds `spec` for the metrics endpoint: a Unix path as [`unix`]
    /// does, a TCP address with `SO_REUSEPORT` (a new supervisor of a
    /// binary upgrade binds it while the old one still holds it).
    ///
    /// [`unix`]: Self::unix
    pub(crate) fn metrics(spec: &ListenerSpec, taking_over: bool) -> Result<Self, String> {
        match spec {
            ListenerSpec::Unix(path) => Self::unix(path, taking_over),
            ListenerSpec::Tcp(text) => {
                let addr: std::net::SocketAddr = text
                    .parse()
                    .map_err(|_| format!("--metrics {text}: not a numeric HOST:PORT"))?;
                let open = || -> io::Result<Listener> {
                    use socket2::{Domain, Socket, Type};
                    let socket =
                        Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), None)?;
                    socket.set_reuse_address(true)?;
                    socket.set_reuse_port(true)?;
                    socket.bind(&addr.into())?;
                    socket.listen(BACKLOG as i32)?;
                    Ok(Listener::Tcp(socket.into()))
                };
                let listener = open().map_err(|e| format!("--metrics {text}: {e}"))?;
                Ok(Self { listener })
            }
            ListenerSpec::Fd(_) => Err("--metrics takes HOST:PORT or unix:PATH".into()),
        }
    }

    /// Where it listens, as `--bind` spells it.
    pub(crate) fn addr(&self) -> String {
        self.listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    }

    /// The next waiting client, if any (non-blocking).
    pub(crate) fn accept(&self) -> io::Result<Option<Stream>> {
        let accepted = match &self.listener {
            Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            Listener::Unix(l, _) => l.accept().map(|(s, _)| Stream::Unix(s)),
        };
        match accepted {
            Ok(stream) => Ok(Some(stream)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes its socket file, if it is still this one's.
    pub(crate) fn remove_file(&self) {
        if let Err(error) = self.listener.remove_socket_file() {
            tracing::warn!(%error, "cannot remove the operator's socket file");
        }
    }

    /// Leaves its socket file to whoever put one at its path (after a
    /// binary upgrade: the new supervisor's is there already, and this
    /// one's is no longer on disk).
    pub(crate) fn forget_file(self) -> Self {
        Self {
            listener: self.listener.without_socket_file(),
        }
    }
}

/// A path beside `path` for binding before the rename: same directory
/// (so the rename stays on one file system), this process's pid in it.
fn sibling(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".{}.new", std::process::id()));
    path.with_file_name(name)
}

/// Whether a control client may talk to this supervisor: root, or the
/// supervisor's own user. The error is its reply.
pub(crate) fn check_peer(stream: &Stream) -> Result<(), String> {
    let Stream::Unix(unix) = stream else {
        return Err("the control socket is a Unix socket".into());
    };
    let own = nix::unistd::geteuid().as_raw();
    let uid = peer_uid(unix).map_err(|e| format!("cannot tell who is asking: {e}"))?;
    if uid == 0 || uid == own {
        Ok(())
    } else {
        Err(format!(
            "permission denied: uid {uid} may not use this control socket (root and uid {own} may)"
        ))
    }
}

fn peer_uid(stream: &UnixStream) -> nix::Result<u32> {
    Ok(getsockopt(stream, PeerCredentials)?.uid())
}

/// The metrics endpoint's TCP port, for tests that bound port 0.
#[cfg(test)]
pub(crate) fn tcp_port(endpoint: &Endpoint) -> u16 {
    match &endpoint.listener {
        Listener::Tcp(l) => l.local_addr().map(|a| a.port()).unwrap_or(0),
        Listener::Unix(..) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_control_socket_is_0600_and_a_live_one_is_not_taken_at_a_plain_start() {
        let dir = std::env::temp_dir().join(format!("drover-endpoint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ctl.sock");
        let first = Endpoint::unix(&path, false).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            Endpoint::unix(&path, false).is_err(),
            "a live socket is refused"
        );
        assert!(first.accept().unwrap().is_some(), "the liveness probe");
        // Taking over renames a new socket over it; the first leaves it.
        let second = Endpoint::unix(&path, true).unwrap();
        let first = first.forget_file();
        first.remove_file();
        assert!(path.exists());
        let client = UnixStream::connect(&path).unwrap();
        assert!(
            second.accept().unwrap().is_some(),
            "the path reaches the new one"
        );
        assert!(first.accept().unwrap().is_none());
        drop(client);
        assert!(
            check_peer(&second_client(&second, &path)).is_ok(),
            "our own uid"
        );
        second.remove_file();
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn second_client(endpoint: &Endpoint, path: &Path) -> Stream {
        let _client = UnixStream::connect(path).unwrap();
        endpoint.accept().unwrap().unwrap()
    }

    #[test]
    fn a_tcp_metrics_port_can_be_bound_twice_for_a_handover() {
        let first = Endpoint::metrics(&ListenerSpec::Tcp("127.0.0.1:0".into()), false).unwrap();
        let port = tcp_port(&first);
        let spec = ListenerSpec::Tcp(format!("127.0.0.1:{port}"));
        let second = Endpoint::metrics(&spec, true).unwrap();
        assert_eq!(tcp_port(&second), port);
        assert!(Endpoint::metrics(&ListenerSpec::Tcp("localhost:1".into()), false).is_err());
    }
}
