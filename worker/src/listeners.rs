//! The server's listening sockets: registered with the runtime at start,
//! closed synchronously by `close()`.

use std::io;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};

use drover_shared::{ListenAddr, Listener, SocketFile};
use socket2::{SockRef, Socket};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::peer::Peer;
use crate::stream::Stream;

/// One listening socket of a server. `close()` drops the descriptor under
/// the slot's lock, so it takes effect at once, from any thread, whether or
/// not an accept is pending on it.
pub(crate) struct ListenerSlot {
    addr: ListenAddr,
    name: Option<String>,
    /// Whether its connections speak TLS.
    tls: bool,
    origin: Origin,
    socket: Mutex<SlotSocket>,
    /// Connections taken from the accept queue at close, to be served.
    swept: Mutex<Vec<Socket>>,
}

/// Where a server's listening socket came from, which decides who else may
/// accept on it and whose its queue is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// `bind`: opened by this server, listening and non-blocking already;
    /// no other process accepts on it.
    Opened,
    /// `from_sockets`: the caller's, maybe shared with processes of its
    /// own; checked to be listening.
    Given,
    /// `from_env` (LISTEN_FDS): the supervisor or systemd holds it too, and
    /// its queued connections are theirs to hand on, not ours to take at
    /// close.
    Inherited,
}

/// A connection accepted, with who is at each end.
pub(crate) type Accepted = (Stream, Peer);

/// At most this many queued connections are taken at close.
const SWEEP_LIMIT: usize = 4096;

enum SlotSocket {
    /// Open, not yet registered with a runtime.
    Pending(Listener),
    /// Registered; the socket file (if this server created one) goes with
    /// it at close.
    Accepting(AcceptListener, Option<SocketFile>),
    Closed,
}

enum AcceptListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl AcceptListener {
    /// Takes what waits in the accept queue now, without blocking (the
    /// socket is non-blocking once registered).
    fn sweep(&self) -> Vec<Socket> {
        let listener = match self {
            Self::Tcp(l) => SockRef::from(l),
            Self::Unix(l) => SockRef::from(l),
        };
        let mut swept = Vec::new();
        while swept.len() < SWEEP_LIMIT {
            match listener.accept() {
                Ok((socket, _)) if socket.set_nonblocking(true).is_ok() => swept.push(socket),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(_) => break, // WouldBlock: the queue is empty
            }
        }
        swept
    }
}

impl ListenerSlot {
    /// Wraps a listening socket, non-blocking; one that is not listening is
    /// an error (one this server opened is both already). `tls`: whether
    /// the server's TLS applies to it (never to a Unix socket).
    pub(crate) fn new(
        listener: Listener,
        name: Option<String>,
        origin: Origin,
        tls: bool,
    ) -> io::Result<Self> {
        if origin != Origin::Opened {
            listener.check_listening()?;
            listener.set_nonblocking(true)?;
        }
        let addr = listener.local_addr()?;
        Ok(Self {
            tls: tls && matches!(addr, ListenAddr::Tcp(_)),
            addr,
            name,
            origin,
            socket: Mutex::new(SlotSocket::Pending(listener)),
            swept: Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn addr(&self) -> &ListenAddr {
        &self.addr
    }

    pub(crate) fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Whether its connections speak TLS.
    pub(crate) fn tls(&self) -> bool {
        self.tls
    }

    /// Whether other processes may accept on this socket too: sibling
    /// workers on inherited ones, or a pre-fork setup of the caller's own
    /// on adopted ones. Only a socket this server opened is its alone.
    pub(crate) fn others_may_accept(&self) -> bool {
        self.origin != Origin::Opened
    }

    /// Registers the (non-blocking) socket with the current tokio runtime.
    /// A closed slot stays closed (and is not an error); a socket that
    /// cannot be registered is closed, its file removed.
    pub(crate) fn register(&self) -> io::Result<()> {
        let mut socket = self.lock();
        let SlotSocket::Pending(listener) = std::mem::replace(&mut *socket, SlotSocket::Closed)
        else {
            return Ok(());
        };
        let file = listener.socket_file().cloned();
        let registered = match listener {
            Listener::Tcp(l) => TcpListener::from_std(l).map(AcceptListener::Tcp),
            Listener::Unix(l, _) => UnixListener::from_std(l).map(AcceptListener::Unix),
        };
        match registered {
            Ok(accepting) => {
                *socket = SlotSocket::Accepting(accepting, file);
                Ok(())
            }
            Err(error) => {
                remove_file(file.as_ref());
                Err(error)
            }
        }
    }

    /// Closes this process's descriptor and removes the socket file the
    /// server created. Idempotent.
    ///
    /// With `sweep` (a draining close): connections that already sit in the
    /// accept queue have completed their handshake, and the client believes
    /// it is connected and may have sent a request. Closing the listener
    /// would reset them (unless another process accepts on the same
    /// socket), so a serving listener first takes them, without blocking,
    /// for [`take_swept`](Self::take_swept) to hand to the server, which
    /// answers what they sent and closes them.
    pub(crate) fn close(&self, sweep: bool) {
        let previous = std::mem::replace(&mut *self.lock(), SlotSocket::Closed);
        match previous {
            SlotSocket::Pending(listener) => {
                let file = listener.socket_file().cloned();
                drop(listener);
                remove_file(file.as_ref());
            }
            SlotSocket::Accepting(listener, file) => {
                let swept = if sweep && self.origin != Origin::Inherited {
                    listener.sweep()
                } else {
                    Vec::new()
                };
                drop(listener);
                remove_file(file.as_ref());
                if !swept.is_empty() {
                    tracing::debug!(listener = %self.addr, count = swept.len(), "queued connections taken at close");
                    *self.swept.lock().unwrap_or_else(|e| e.into_inner()) = swept;
                }
            }
            SlotSocket::Closed => {}
        }
    }

    /// The connections taken from the queue at close, registered with the
    /// current runtime, with their ends (asked of each socket: a rare path);
    /// each is taken once.
    pub(crate) fn take_swept(&self) -> Vec<Accepted> {
        let swept = std::mem::take(&mut *self.swept.lock().unwrap_or_else(|e| e.into_inner()));
        swept
            .into_iter()
            .filter_map(|socket| {
                let registered = match self.addr {
                    ListenAddr::Tcp(_) => TcpStream::from_std(socket.into()).map(Stream::Tcp),
                    ListenAddr::Unix(_) => UnixStream::from_std(socket.into()).map(Stream::Unix),
                };
                registered
                    .map(|stream| {
                        let peer = Peer::of(&stream);
                        (stream, peer)
                    })
                    .map_err(|error| tracing::debug!(%error, "cannot register a swept connection"))
                    .ok()
            })
            .collect()
    }

    /// `Ready(Ok(None))` once the slot is closed.
    pub(crate) fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Accepted>>> {
        let socket = self.lock();
        let accepted = match &*socket {
            SlotSocket::Accepting(AcceptListener::Tcp(l), _) => {
                l.poll_accept(cx).map_ok(|(stream, peer)| {
                    // Small writes must not wait for Nagle and delayed ACKs.
                    let _ = stream.set_nodelay(true);
                    (Stream::Tcp(stream), Some(peer))
                })
            }
            SlotSocket::Accepting(AcceptListener::Unix(l), _) => l
                .poll_accept(cx)
                .map_ok(|(stream, _)| (Stream::Unix(stream), None)),
            SlotSocket::Pending(_) | SlotSocket::Closed => return Poll::Ready(Ok(None)),
        };
        accepted.map_ok(|(stream, peer)| {
            let peer = Peer::accepted(&stream, peer, &self.addr);
            Some((stream, peer))
        })
    }

    fn lock(&self) -> MutexGuard<'_, SlotSocket> {
        self.socket.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn remove_file(file: Option<&SocketFile>) {
    if let Some(file) = file {
        if let Err(error) = file.remove() {
            tracing::warn!(path = %file.path().display(), %error, "cannot remove socket file");
        }
    }
}
