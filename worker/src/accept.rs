//! Listening sockets as the server holds them, and the loop that accepts on
//! each one.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use drover_shared::{ListenAddr, Listener, SocketFile};
use nix::errno::Errno;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::connection::serve_connection;
use crate::lifecycle::Lifecycle;
use crate::service::HttpService;
use crate::Error;

/// One listening socket of a server. `close()` drops the descriptor under
/// the slot's lock, so it takes effect at once, from any thread, whether or
/// not an accept is pending on it.
pub(crate) struct ListenerSlot {
    addr: ListenAddr,
    name: Option<String>,
    /// The socket file this server created, removed at close.
    file: Option<SocketFile>,
    socket: Mutex<SlotSocket>,
}

enum SlotSocket {
    /// Open, not yet registered with a runtime.
    Pending(Listener),
    Accepting(AcceptListener),
    Closed,
}

enum AcceptListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl ListenerSlot {
    pub(crate) fn new(listener: Listener, name: Option<String>) -> io::Result<Self> {
        Ok(Self {
            addr: listener.local_addr()?,
            name,
            file: listener.socket_file().cloned(),
            socket: Mutex::new(SlotSocket::Pending(listener)),
        })
    }

    pub(crate) fn addr(&self) -> &ListenAddr {
        &self.addr
    }

    pub(crate) fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Registers the socket with the current tokio runtime, non-blocking.
    /// A closed slot stays closed (and is not an error).
    pub(crate) fn register(&self) -> io::Result<()> {
        let mut socket = self.lock();
        if let SlotSocket::Pending(_) = &*socket {
            let SlotSocket::Pending(listener) = std::mem::replace(&mut *socket, SlotSocket::Closed)
            else {
                unreachable!()
            };
            listener.set_nonblocking(true)?;
            *socket = SlotSocket::Accepting(match listener {
                Listener::Tcp(l) => AcceptListener::Tcp(TcpListener::from_std(l)?),
                Listener::Unix(l, _) => AcceptListener::Unix(UnixListener::from_std(l)?),
            });
        }
        Ok(())
    }

    /// Closes this process's descriptor and removes the socket file the
    /// server created. Idempotent.
    pub(crate) fn close(&self) {
        let previous = std::mem::replace(&mut *self.lock(), SlotSocket::Closed);
        if matches!(previous, SlotSocket::Closed) {
            return;
        }
        drop(previous);
        if let Some(file) = &self.file {
            if let Err(error) = file.remove() {
                tracing::warn!(path = %file.path().display(), %error, "cannot remove socket file");
            }
        }
    }

    /// `Ready(None)` once the slot is closed.
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Stream>>> {
        let socket = self.lock();
        let accepted = match &*socket {
            SlotSocket::Accepting(AcceptListener::Tcp(l)) => {
                l.poll_accept(cx).map_ok(|(stream, _)| {
                    // Small responses should not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    Stream::Tcp(stream)
                })
            }
            SlotSocket::Accepting(AcceptListener::Unix(l)) => {
                l.poll_accept(cx).map_ok(|(stream, _)| Stream::Unix(stream))
            }
            SlotSocket::Pending(_) | SlotSocket::Closed => return Poll::Ready(Ok(None)),
        };
        accepted.map_ok(Some)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotSocket> {
        self.socket.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An accepted connection.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(s) => s.is_write_vectored(),
            Self::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// How an accept error is handled.
enum AcceptFailure {
    /// Concerns one connection (aborted before we took it): take the next.
    Connection,
    /// Out of descriptors or memory: the pending connection stays queued
    /// and accept would fail again at once, so wait a little first.
    Resources,
    /// The listener itself is broken.
    Fatal,
}

fn classify(error: &io::Error) -> AcceptFailure {
    match error.raw_os_error().map(Errno::from_raw) {
        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM) => {
            AcceptFailure::Resources
        }
        Some(
            Errno::ECONNABORTED
            | Errno::ECONNRESET
            | Errno::EINTR
            | Errno::EPROTO
            | Errno::EPERM
            | Errno::ETIMEDOUT
            | Errno::EHOSTUNREACH
            | Errno::ENETUNREACH,
        ) => AcceptFailure::Connection,
        _ => AcceptFailure::Fatal,
    }
}

/// First and longest pause after running out of descriptors. Short, so
/// that serving resumes soon after descriptors free up; long enough that
/// a process at its limit does not spin.
const RESOURCE_BACKOFF_MIN: Duration = Duration::from_millis(5);
const RESOURCE_BACKOFF_MAX: Duration = Duration::from_millis(250);

/// Accepts on listener `index` until the server closes, serving each
/// connection on its own task. With `max_connections`, a permit is taken
/// before each accept, so beyond the limit connections wait in the kernel's
/// backlog instead of being accepted and starved.
pub(crate) async fn accept_loop<S: HttpService>(
    lifecycle: Arc<Lifecycle>,
    index: usize,
    service: S,
    limit: Option<Arc<Semaphore>>,
) {
    let slot = &lifecycle.listeners[index];
    let mut backoff = RESOURCE_BACKOFF_MIN;
    loop {
        let permit = match &limit {
            Some(limit) => tokio::select! {
                biased;
                () = lifecycle.closing() => return,
                permit = Arc::clone(limit).acquire_owned() => match permit {
                    Ok(permit) => Some(permit),
                    Err(_) => return, // never closed
                },
            },
            None => None,
        };
        let accepted = tokio::select! {
            biased;
            () = lifecycle.closing() => return,
            accepted = std::future::poll_fn(|cx| slot.poll_accept(cx)) => accepted,
        };
        match accepted {
            Ok(Some(stream)) => {
                backoff = RESOURCE_BACKOFF_MIN;
                let connection =
                    serve_connection(stream, service.clone(), Arc::clone(&lifecycle), permit);
                lifecycle.tasks.spawn(connection);
            }
            Ok(None) => return,
            Err(error) => match classify(&error) {
                AcceptFailure::Connection => {
                    tracing::debug!(listener = %slot.addr(), %error, "accept: connection lost");
                }
                AcceptFailure::Resources => {
                    tracing::warn!(listener = %slot.addr(), %error, retry_in = ?backoff, "accept failed; backing off");
                    // Boxed: the pause is rare, and the loop's state stays small.
                    let pause = Box::pin(tokio::time::sleep(backoff)); // sleep-ok: a backoff, not a wait for an event
                    tokio::select! {
                        biased;
                        () = lifecycle.closing() => return,
                        () = pause => {}
                    }
                    backoff = (backoff * 2).min(RESOURCE_BACKOFF_MAX);
                }
                AcceptFailure::Fatal => {
                    lifecycle.fail(Error::Accept {
                        addr: slot.addr().clone(),
                        source: Arc::new(error),
                    });
                    return;
                }
            },
        }
    }
}
