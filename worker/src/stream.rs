//! An accepted connection, TCP, TLS over TCP, or Unix, as one I/O type.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::server::TlsStream;

/// Copies into `buf` what the client has sent and nobody has read yet,
/// without consuming it or waiting (`recv(MSG_PEEK | MSG_DONTWAIT)`):
/// `WouldBlock` when there is nothing; 0 at the client's EOF.
pub(crate) fn peek(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    use nix::errno::Errno;
    use nix::sys::socket::{recv, MsgFlags};
    let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
    loop {
        match recv(fd, buf, flags) {
            Err(Errno::EINTR) => continue,
            result => return result.map_err(io::Error::from),
        }
    }
}

/// An accepted connection.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// After the handshake (boxed: rustls's state is large, and most
    /// connections are plain).
    Tls(Box<TlsConnection>),
}

/// A TLS connection that tells its client when it goes between requests
/// (hyper's keep-alive timeout, a drain, a cut of an idle connection): a
/// `close_notify` alert, as RFC 8446 §6.1 asks, so that a client does not
/// read an idle connection's end as a truncation (OpenSSL 3: "unexpected
/// eof while reading"). Never after a response was cut (unfinished, or its
/// body failed): for a body that ends with the connection, the alert would
/// make a cut one look whole. Written without blocking: what the socket cannot take at once
/// is dropped with the connection. Once hyper has shut the stream down (or
/// rustls has sent an alert) there is nothing more to send.
pub(crate) struct TlsConnection {
    pub(crate) stream: TlsStream<TcpStream>,
    /// Whether its responses were sent whole, once serving began.
    responses: Option<Arc<dyn ResponseRecord>>,
}

/// What a connection's serving knows of its responses (the connection's
/// `ConnectionActivity`; a trait, so this module needs nothing above it).
pub(crate) trait ResponseRecord: Send + Sync {
    /// Whether every response so far was sent whole and none is under way.
    fn responses_complete(&self) -> bool;
}

impl TlsConnection {
    pub(crate) fn new(stream: TlsStream<TcpStream>) -> Self {
        Self {
            stream,
            responses: None,
        }
    }

    /// From now on, the goodbye is said only if `responses` has no
    /// request in flight and no response of its was cut short.
    pub(crate) fn says_goodbye_when_idle(&mut self, responses: Arc<dyn ResponseRecord>) {
        self.responses = Some(responses);
    }
}

impl Drop for TlsConnection {
    fn drop(&mut self) {
        if self
            .responses
            .as_ref()
            .is_some_and(|r| !r.responses_complete())
        {
            return;
        }
        let (tcp, session) = self.stream.get_mut();
        session.send_close_notify();
        let mut socket = NonBlockingSocket(tcp.as_raw_fd());
        while session.wants_write() {
            match session.write_tls(&mut socket) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

/// Writes to a socket without blocking, and without SIGPIPE when the
/// client is gone.
struct NonBlockingSocket(RawFd);

impl io::Write for NonBlockingSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use nix::sys::socket::{send, MsgFlags};
        send(self.0, buf, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL).map_err(io::Error::from)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream {
    /// Waits until the socket is readable, then runs `look` (a read that
    /// consumes nothing: `recv(MSG_PEEK)`). A `WouldBlock` from `look` means
    /// "nothing new to see": the readiness is cleared (unless the socket
    /// became readable again meanwhile) and the wait goes on until more
    /// arrives, without spinning on bytes already seen.
    pub(crate) fn poll_look<T>(
        &self,
        cx: &mut Context<'_>,
        mut look: impl FnMut() -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        loop {
            let result = match self {
                Self::Tcp(s) => {
                    std::task::ready!(s.poll_read_ready(cx))?;
                    s.try_io(Interest::READABLE, &mut look)
                }
                Self::Tls(s) => {
                    let s = s.stream.get_ref().0;
                    std::task::ready!(s.poll_read_ready(cx))?;
                    s.try_io(Interest::READABLE, &mut look)
                }
                Self::Unix(s) => {
                    std::task::ready!(s.poll_read_ready(cx))?;
                    s.try_io(Interest::READABLE, &mut look)
                }
            };
            match result {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
        }
    }
}

impl Stream {
    /// Over TLS, the certificate the client presented (verified by the
    /// handshake), if it was asked for one.
    pub(crate) fn client_certificate(&self) -> Option<crate::tls::ClientCertificate> {
        let Self::Tls(s) = self else { return None };
        let first = s.stream.get_ref().1.peer_certificates()?.first()?;
        Some(crate::tls::ClientCertificate::new(
            first.clone().into_owned(),
        ))
    }

    /// Over TLS, whether ALPN chose HTTP/2; `None` on a plain connection,
    /// whose version its first bytes tell.
    pub(crate) fn alpn_h2(&self) -> Option<bool> {
        match self {
            Self::Tls(s) => Some(s.stream.get_ref().1.alpn_protocol() == Some(b"h2")),
            _ => None,
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Self::Tcp(s) => s.as_raw_fd(),
            Self::Unix(s) => s.as_raw_fd(),
            Self::Tls(s) => s.stream.get_ref().0.as_raw_fd(),
        }
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Tcp(s) => s.as_fd(),
            Self::Unix(s) => s.as_fd(),
            Self::Tls(s) => s.stream.get_ref().0.as_fd(),
        }
    }
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
            Self::Tls(s) => Pin::new(&mut s.stream).poll_read(cx, buf),
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
            Self::Tls(s) => Pin::new(&mut s.stream).poll_write(cx, buf),
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
            Self::Tls(s) => Pin::new(&mut s.stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(s) => s.is_write_vectored(),
            Self::Unix(s) => s.is_write_vectored(),
            Self::Tls(s) => s.stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(&mut s.stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(&mut s.stream).poll_shutdown(cx),
        }
    }
}
