//! Listener specs: the `--bind` syntax, parsed and opened.
//!
//! One syntax serves the `drover` command line, `Server::bind` and the
//! supervisor's hand-over to workers:
//!
//! | spec | meaning |
//! |---|---|
//! | `HOST:PORT` | TCP; `HOST` is an IPv4 address or a name (`localhost:8000`) |
//! | `[V6]:PORT` | TCP over IPv6 (`[::1]:0`); bound IPv6-only |
//! | `unix:PATH` | a Unix stream socket at `PATH` |
//! | `fd://N` | an already-open listening socket at descriptor `N` |
//!
//! Port 0 asks the kernel for a free port; [`Listener::local_addr`] tells
//! which one it gave.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::RawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use socket2::{Domain, Socket, Type};

use crate::listener::Listener;

/// The listen backlog drover uses unless told otherwise (the kernel caps it
/// at `net.core.somaxconn`).
pub const DEFAULT_BACKLOG: u32 = 2048;

/// Where to listen: one `--bind` value, parsed but not yet opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerSpec {
    /// `HOST:PORT` or `[V6]:PORT`, kept as written: names resolve at open.
    Tcp(String),
    /// `unix:PATH`.
    Unix(PathBuf),
    /// `fd://N`: a listening socket this process already holds.
    Fd(RawFd),
}

/// Why a listener spec could not be parsed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The text is not one of the forms in the module docs.
    #[error("invalid listen address `{spec}`: {reason}")]
    Invalid {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The name did not resolve to any address.
    #[error("cannot resolve `{spec}`: {source}")]
    Resolve {
        /// The spec as given.
        spec: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
    /// The operating system refused to open the socket (port in use,
    /// permission denied, a descriptor that is not a listening socket...).
    #[error("cannot listen on {spec}: {source}")]
    Open {
        /// The spec as given, `fd://N` included.
        spec: String,
        /// The system's error.
        #[source]
        source: io::Error,
    },
}

impl FromStr for ListenerSpec {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, SpecError> {
        let invalid = |reason| SpecError::Invalid {
            spec: text.to_owned(),
            reason,
        };
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(invalid("`unix:` needs a path"));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if let Some(number) = text.strip_prefix("fd://") {
            return match number.parse::<RawFd>() {
                Ok(fd) if fd >= 0 => Ok(Self::Fd(fd)),
                _ => Err(invalid("`fd://` needs a descriptor number")),
            };
        }
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| invalid("expected HOST:PORT, [V6]:PORT, unix:PATH or fd://N"))?;
        if port.parse::<u16>().is_err() {
            return Err(invalid("the port must be a number from 0 to 65535"));
        }
        if host.is_empty() {
            return Err(invalid(
                "the host is missing (use 0.0.0.0 for every interface)",
            ));
        }
        if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
            return Err(invalid("an IPv6 address goes in brackets: [::1]:8000"));
        }
        Ok(Self::Tcp(text.to_owned()))
    }
}

impl fmt::Display for ListenerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(text) => f.write_str(text),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Fd(fd) => write!(f, "fd://{fd}"),
        }
    }
}

impl ListenerSpec {
    /// Opens the listener: bound, listening with `backlog`, close-on-exec
    /// and non-blocking (it is meant for an event loop: a worker's server
    /// or a tokio listener; a blocking `accept` on it returns `WouldBlock`
    /// unless the caller turns the mode back).
    ///
    /// TCP sockets get `SO_REUSEADDR` (a restart does not wait out
    /// TIME_WAIT); IPv6 ones are IPv6-only, so `[::]:P` and `0.0.0.0:P` can
    /// both be bound; a host name binds its first address. A Unix path left
    /// behind by a dead server (nothing answers on it) is replaced; one a
    /// live server answers on is an "address in use" error; the file is the
    /// returned listener's to remove. `fd://N` is not opened here: taking
    /// over a descriptor is [`adopt_fd`](crate::adopt_fd)'s job, which is
    /// `unsafe` because only the caller knows nothing else owns it.
    pub fn open(&self, backlog: u32) -> Result<Listener, SpecError> {
        let open_error = |source| SpecError::Open {
            spec: self.to_string(),
            source,
        };
        match self {
            Self::Tcp(text) => {
                let addr = resolve(text)?;
                open_tcp(addr, backlog)
                    .map(Listener::Tcp)
                    .map_err(open_error)
            }
            Self::Unix(path) => open_unix(path, backlog).map_err(open_error),
            Self::Fd(_) => Err(SpecError::Invalid {
                spec: self.to_string(),
                reason: "a descriptor is adopted, not opened (systemd: LISTEN_FDS; in code: from_sockets)",
            }),
        }
    }
}

fn resolve(text: &str) -> Result<SocketAddr, SpecError> {
    // The parser only accepts `[v6]:port`; SocketAddr wants the same form.
    // A numeric address needs no resolver (nor its allocation).
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|source| SpecError::Resolve {
            spec: text.to_owned(),
            source,
        })?;
    addrs.next().ok_or_else(|| SpecError::Resolve {
        spec: text.to_owned(),
        source: io::Error::new(io::ErrorKind::NotFound, "no address found"),
    })
}

fn open_tcp(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    // Non-blocking from the start: one system call fewer than setting it
    // later, which shows in a test fixture's bind-serve-close cycle.
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(backlog_arg(backlog))?;
    Ok(socket.into())
}

fn open_unix(path: &Path, backlog: u32) -> io::Result<Listener> {
    remove_stale_socket(path)?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM.nonblocking(), None)?;
    socket.bind(&socket2::SockAddr::unix(path)?)?;
    socket.listen(backlog_arg(backlog))?;
    let listener: UnixListener = socket.into();
    Listener::unix_created(listener, path)
}

/// Removes a socket file that nobody answers on; leaves anything else, so
/// that bind reports it.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Ok(());
    }
    match UnixStream::connect(path) {
        Ok(_) => Ok(()), // alive: bind will fail with EADDRINUSE
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path),
        Err(_) => Ok(()),
    }
}

fn backlog_arg(backlog: u32) -> i32 {
    i32::try_from(backlog).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            "127.0.0.1:80".parse::<ListenerSpec>().unwrap(),
            ListenerSpec::Tcp("127.0.0.1:80".into())
        );
        assert_eq!(
            "[::1]:0".parse::<ListenerSpec>().unwrap(),
            ListenerSpec::Tcp("[::1]:0".into())
        );
        assert_eq!(
            "unix:/tmp/x.sock".parse::<ListenerSpec>().unwrap(),
            ListenerSpec::Unix("/tmp/x.sock".into())
        );
        assert_eq!(
            "fd://3".parse::<ListenerSpec>().unwrap(),
            ListenerSpec::Fd(3)
        );
    }

    #[test]
    fn rejects_bad_forms_with_a_reason() {
        for bad in [
            "8000",
            ":8000",
            "localhost:http",
            "localhost:70000",
            "::1:80",
            "unix:",
            "fd://x",
            "fd://-1",
        ] {
            let err = bad.parse::<ListenerSpec>().unwrap_err().to_string();
            assert!(err.contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in ["127.0.0.1:80", "[::1]:0", "unix:/tmp/a b.sock", "fd://7"] {
            let spec: ListenerSpec = text.parse().unwrap();
            assert_eq!(spec.to_string(), text);
        }
    }

    #[test]
    fn busy_port_is_an_open_error_naming_the_address() {
        let first = "127.0.0.1:0"
            .parse::<ListenerSpec>()
            .unwrap()
            .open(16)
            .unwrap();
        let taken = first.local_addr().unwrap().to_string();
        let err = taken.parse::<ListenerSpec>().unwrap().open(16).unwrap_err();
        assert!(matches!(err, SpecError::Open { .. }), "{err}");
        assert!(err.to_string().contains(&taken), "{err}");
    }

    #[test]
    fn stale_unix_socket_is_replaced_but_live_one_is_not() {
        let dir = std::env::temp_dir().join(format!("drover-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let spec = ListenerSpec::Unix(path.clone());
        let live = spec.open(16).unwrap();
        assert!(spec.open(16).is_err(), "a live socket must not be stolen");
        drop(live); // closes the socket, leaves the file: now stale
        assert!(path.exists());
        let reopened = spec.open(16).unwrap();
        reopened.remove_socket_file().unwrap();
        assert!(!path.exists(), "the file we created is removed on request");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
