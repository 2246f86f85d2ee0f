//! Who is on the other end of a connection, told to every request in its
//! extensions.
//!
//! TCP: the client's address as [`ConnectInfo`]`<SocketAddr>` (axum's own
//! type, what `into_make_service_with_connect_info` would put there, so
//! axum's extractor works unchanged; any other framework reads the same
//! value from the extensions), and the connection's own address as
//! [`LocalAddr`]. Unix sockets: the client's credentials as
//! `ConnectInfo<`[`UnixPeer`]`>`.
//!
//! Each value in a request's extensions is an allocation (and the first
//! one the map's), on every request: two for TCP, one for Unix sockets.

use std::net::SocketAddr;

use drover_shared::ListenAddr;
use http::Extensions;

use crate::stream::Stream;

/// Who the client is, in the extensions of every request:
/// `ConnectInfo<SocketAddr>` over TCP, `ConnectInfo<UnixPeer>` over a
/// Unix socket. With the `axum` feature (on by default) this is axum's
/// own `axum::extract::ConnectInfo`, so its extractor finds it.
#[cfg(feature = "axum")]
pub use axum::extract::ConnectInfo;

/// Who the client is, in the extensions of every request:
/// `ConnectInfo<SocketAddr>` over TCP, `ConnectInfo<UnixPeer>` over a
/// Unix socket. (With the `axum` feature, axum's own type.)
#[cfg(not(feature = "axum"))]
#[derive(Debug, Clone, Copy)]
pub struct ConnectInfo<T>(pub T);

/// The server's own address of the connection (the address the client
/// connected to: for a listener on `0.0.0.0`, the interface's), in the
/// extensions of every request that came over TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalAddr(pub SocketAddr);

/// The client of a Unix-socket connection, in the extensions of every
/// request that came over one: its credentials as the kernel gave them at
/// connect (`SO_PEERCRED`), `None` if they could not be read.
#[derive(Debug, Clone, Copy)]
pub struct UnixPeer {
    /// The client process's pid, uid and gid.
    pub credentials: Option<tokio::net::unix::UCred>,
}

/// One connection's ends, read once when it is accepted.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Peer {
    Tcp {
        peer: SocketAddr,
        local: SocketAddr,
    },
    Unix(UnixPeer),
    /// A TCP socket whose addresses could not be read (it is already
    /// reset): requests get nothing.
    Unknown,
}

/// The client as the access log names it: its address, or `unix` (with
/// its uid and pid when known), or `-`.
impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp { peer, .. } => write!(f, "{peer}"),
            Self::Unix(UnixPeer {
                credentials: Some(credentials),
            }) => match credentials.pid() {
                Some(pid) => write!(f, "unix:uid={},pid={pid}", credentials.uid()),
                None => write!(f, "unix:uid={}", credentials.uid()),
            },
            Self::Unix(UnixPeer { credentials: None }) => f.write_str("unix"),
            Self::Unknown => f.write_str("-"),
        }
    }
}

impl Peer {
    /// A connection just accepted on `listener`: the client's address as
    /// accept gave it; the local one is the listener's when that names one
    /// interface, and only a wildcard listener's connection (`0.0.0.0`,
    /// `[::]`) asks its socket which interface it came in on.
    pub(crate) fn accepted(
        stream: &Stream,
        peer: Option<SocketAddr>,
        listener: &ListenAddr,
    ) -> Self {
        match (stream, peer, listener) {
            (Stream::Tcp(tcp), Some(peer), ListenAddr::Tcp(local)) => {
                let local = if local.ip().is_unspecified() {
                    tcp.local_addr().unwrap_or(*local)
                } else {
                    *local
                };
                Self::Tcp { peer, local }
            }
            _ => Self::of(stream),
        }
    }

    /// A connection's ends, asked of its socket.
    pub(crate) fn of(stream: &Stream) -> Self {
        match stream {
            Stream::Tcp(tcp) => Self::of_tcp(tcp),
            Stream::Tls(tls) => Self::of_tcp(tls.stream.get_ref().0),
            Stream::Unix(unix) => Self::Unix(UnixPeer {
                credentials: unix.peer_cred().ok(),
            }),
        }
    }

    fn of_tcp(tcp: &tokio::net::TcpStream) -> Self {
        match (tcp.peer_addr(), tcp.local_addr()) {
            (Ok(peer), Ok(local)) => Self::Tcp { peer, local },
            _ => Self::Unknown,
        }
    }

    /// Puts this connection's ends into a request's extensions.
    pub(crate) fn tell(&self, extensions: &mut Extensions) {
        match *self {
            Self::Tcp { peer, local } => {
                extensions.insert(ConnectInfo(peer));
                extensions.insert(LocalAddr(local));
            }
            Self::Unix(unix) => {
                extensions.insert(ConnectInfo(unix));
            }
            Self::Unknown => {}
        }
    }
}
