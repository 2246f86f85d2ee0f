//! An open listening socket, TCP or Unix, and the address it listens on.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use socket2::{Domain, SockRef, Type};

/// A listening stream socket, blocking or not, as the std library has it.
///
/// Dropping it closes this process's descriptor only: the socket keeps
/// listening while another process (a sibling worker, the supervisor) holds
/// it. A Unix socket file is removed only by an explicit
/// [`Listener::remove_socket_file`], never on drop, so that a forked child
/// can never unlink its parent's socket by accident.
#[derive(Debug)]
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix stream listener and, when this process created its socket
    /// file, that file.
    Unix(UnixListener, Option<SocketFile>),
}

/// The address a listener is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    /// A TCP address, with the real port when port 0 was asked for.
    Tcp(SocketAddr),
    /// A Unix socket path (empty for an unnamed socket).
    Unix(PathBuf),
}

impl ListenAddr {
    /// The TCP address, if this is one.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(addr) => Some(*addr),
            Self::Unix(_) => None,
        }
    }

    /// The socket path, if this is a Unix address.
    pub fn unix(&self) -> Option<&Path> {
        match self {
            Self::Tcp(_) => None,
            Self::Unix(path) => Some(path),
        }
    }
}

impl fmt::Display for ListenAddr {
    /// Formats in the `--bind` syntax: `127.0.0.1:8000`, `[::1]:8000`,
    /// `unix:/run/app.sock`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A Unix socket file this process created, identified by inode so that a
/// file someone else has since put at the same path is left alone.
#[derive(Debug, Clone)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// The file at `path` as it is on disk now (not followed if a link).
    fn on_disk(path: &Path) -> io::Result<Self> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(Self {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the file to `to`, over whatever is there: atomically, so a
    /// client connecting by that path finds the socket that was there or
    /// this one, never none. Returns the file at its new place.
    pub fn move_to(self, to: &Path) -> io::Result<Self> {
        std::fs::rename(&self.path, to)?;
        Ok(Self {
            path: to.to_owned(),
            ..self
        })
    }

    /// Removes the file if it is still the one this process created.
    pub fn remove(&self) -> io::Result<()> {
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => {
                std::fs::remove_file(&self.path)
            }
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Listener {
    /// Wraps a Unix listener whose socket file this process just created.
    pub(crate) fn unix_created(listener: UnixListener, path: &Path) -> io::Result<Self> {
        Ok(Self::Unix(listener, Some(SocketFile::on_disk(path)?)))
    }

    /// The address the socket is bound to (port 0 resolved).
    pub fn local_addr(&self) -> io::Result<ListenAddr> {
        match self {
            Self::Tcp(l) => l.local_addr().map(ListenAddr::Tcp),
            Self::Unix(l, _) => {
                let addr = l.local_addr()?;
                Ok(ListenAddr::Unix(
                    addr.as_pathname().map(Path::to_owned).unwrap_or_default(),
                ))
            }
        }
    }

    /// Sets or clears `O_NONBLOCK` on the socket.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        match self {
            Self::Tcp(l) => l.set_nonblocking(nonblocking),
            Self::Unix(l, _) => l.set_nonblocking(nonblocking),
        }
    }

    /// The same socket, its file renamed to `to` over whatever is there
    /// (see [`SocketFile::move_to`]); a socket without a file of its own
    /// is an error.
    pub fn move_socket_file(self, to: &Path) -> io::Result<Self> {
        match self {
            Self::Unix(listener, Some(file)) => Ok(Self::Unix(listener, Some(file.move_to(to)?))),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a socket file this process created",
            )),
        }
    }

    /// The socket file this process created, if any.
    pub fn socket_file(&self) -> Option<&SocketFile> {
        match self {
            Self::Unix(_, file) => file.as_ref(),
            Self::Tcp(_) => None,
        }
    }

    /// Removes the socket file this process created, if there is one and it
    /// is still ours. Inherited and TCP sockets: nothing to do.
    pub fn remove_socket_file(&self) -> io::Result<()> {
        self.socket_file().map_or(Ok(()), SocketFile::remove)
    }

    /// The same socket, no longer owning its socket file: whoever takes it
    /// now never removes the file (it belongs to whoever created it).
    pub fn without_socket_file(self) -> Self {
        match self {
            Self::Unix(listener, _) => Self::Unix(listener, None),
            tcp => tcp,
        }
    }

    /// The same socket, now owning its socket file as it is on disk (a
    /// Unix socket inherited from a drover that created it, at a binary
    /// upgrade): whoever takes it removes the file at the end. TCP and
    /// unnamed sockets, and a file that is gone, are left as they are.
    pub fn claim_socket_file(self) -> Self {
        let Self::Unix(listener, None) = self else {
            return self;
        };
        let file = listener
            .local_addr()
            .ok()
            .and_then(|addr| SocketFile::on_disk(addr.as_pathname()?).ok());
        Self::Unix(listener, file)
    }

    /// Checks that this is a listening stream socket (`listen()` was
    /// called), so that a socket that is only bound is refused up front
    /// rather than failing at the first accept.
    pub fn check_listening(&self) -> io::Result<()> {
        // SO_ACCEPTCONN alone: only a stream socket can be listening, and
        // the enum's variants are stream sockets by type.
        if SockRef::from(self).is_listener()? {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "descriptor {} is not a listening stream socket (was listen() called?)",
                    self.as_raw_fd()
                ),
            ))
        }
    }
}

impl From<TcpListener> for Listener {
    fn from(listener: TcpListener) -> Self {
        Self::Tcp(listener)
    }
}

impl From<UnixListener> for Listener {
    /// An adopted Unix listener: its socket file belongs to whoever made it.
    fn from(listener: UnixListener) -> Self {
        Self::Unix(listener, None)
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Tcp(l) => l.as_fd(),
            Self::Unix(l, _) => l.as_fd(),
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// Takes ownership of descriptor `fd`, once it is known to be a listening
/// stream socket (TCP or Unix), and marks it close-on-exec.
///
/// A descriptor that fails a check stays open and is not taken.
///
/// # Safety
///
/// `fd` must be a descriptor that nothing else in this process owns or
/// will close: one inherited for this purpose (`fd://N` on a command line,
/// LISTEN_FDS), not one a live `TcpListener` or `File` holds.
pub unsafe fn adopt_fd(fd: RawFd) -> io::Result<Listener> {
    if !is_open(fd) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("descriptor {fd} is not open"),
        ));
    }
    // SAFETY: `fd` is open (checked just above) and, by the caller's
    // contract, nothing else in this process closes it meanwhile.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let domain = listening_domain(SockRef::from(&borrowed)).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is not a listening stream socket"),
        )
    })?;
    // SAFETY: open and a listening socket (checked above); the caller
    // guarantees nothing else owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    SockRef::from(&owned).set_cloexec(true)?;
    Ok(if domain == Domain::UNIX {
        Listener::Unix(UnixListener::from(owned), None)
    } else {
        Listener::Tcp(TcpListener::from(owned))
    })
}

/// The domain of a listening TCP or Unix stream socket; `None` for
/// anything else.
fn listening_domain(socket: SockRef<'_>) -> Option<Domain> {
    let listening =
        socket.r#type().ok() == Some(Type::STREAM) && socket.is_listener().unwrap_or(false);
    socket
        .domain()
        .ok()
        .filter(|d| listening && matches!(*d, Domain::IPV4 | Domain::IPV6 | Domain::UNIX))
}

/// Whether `fd` is an open descriptor (of any kind).
pub fn is_open(fd: RawFd) -> bool {
    // SAFETY: fcntl(F_GETFD) reads the flags of a descriptor number; it
    // touches no memory and fails with EBADF for a number that is not open.
    fd >= 0 && unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) } != -1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    #[test]
    fn adopting_a_descriptor_that_is_not_a_listener_leaves_it_open() {
        let file = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: the file stays owned by `file`; adopt_fd refuses it
        // (not a socket) without taking it.
        let err = unsafe { adopt_fd(file.as_raw_fd()) }.unwrap_err();
        assert!(err.to_string().contains("not a listening"), "{err}");
        assert!(file.metadata().is_ok(), "still open and ours");
    }

    #[test]
    fn a_listening_socket_is_adopted() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let fd = listener.into_raw_fd();
        // SAFETY: ownership of `fd` was released just above.
        let adopted = unsafe { adopt_fd(fd) }.unwrap();
        assert_eq!(adopted.local_addr().unwrap(), ListenAddr::Tcp(addr));
    }

    #[test]
    fn a_bound_but_not_listening_socket_fails_the_listening_check() {
        let socket = socket2::Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket
            .bind(
                &"127.0.0.1:0"
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
                    .into(),
            )
            .unwrap();
        let listener = Listener::Tcp(socket.into());
        assert!(listener.check_listening().is_err());
    }

    #[test]
    fn a_moved_socket_file_replaces_what_was_there_and_is_removed_at_its_new_place() {
        let dir = std::env::temp_dir().join(format!("drover-move-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (old, new) = (dir.join("old.sock"), dir.join("new.sock"));
        let first = crate::ListenerSpec::Unix(old.clone()).open(8).unwrap();
        let second = crate::ListenerSpec::Unix(new.clone()).open(8).unwrap();
        let moved = second.move_socket_file(&old).unwrap();
        assert!(!new.exists());
        assert_eq!(moved.socket_file().unwrap().path(), old);
        // The first one's file is gone from the path: it leaves it alone.
        first.remove_socket_file().unwrap();
        assert!(old.exists(), "the file at the path is the moved one");
        assert!(std::os::unix::net::UnixStream::connect(&old).is_ok());
        moved.remove_socket_file().unwrap();
        assert!(!old.exists());
        let tcp = crate::ListenerSpec::Tcp("127.0.0.1:0".into())
            .open(8)
            .unwrap();
        assert!(tcp.move_socket_file(&old).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
