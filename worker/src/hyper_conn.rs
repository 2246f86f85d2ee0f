//! The HTTP connection a connection task drives: the version is told from
//! the first bytes (an HTTP/2 client with prior knowledge starts with the
//! preface; anything else is HTTP/1), then hyper's own connection for that
//! version serves it.
//!
//! hyper-util's `auto` connection does the same, but it reads the first
//! bytes out of the socket into a buffer of its own, hands them back to
//! hyper through a rewinding wrapper, and keeps the state of both versions
//! inline in one future: about 5 KiB more per idle connection than hyper's
//! HTTP/1 connection alone (`scripts/bench-conn-memory.py`). Here the
//! first bytes are only peeked (`recv(MSG_PEEK)`: hyper then reads the
//! request as the client sent it), and the HTTP/2 connection is boxed, so
//! an HTTP/1 connection carries HTTP/1's state and nothing more.
//!
//! A client that sends the preface in pieces is waited for: each time more
//! bytes arrive, they are peeked again, until the preface is complete (HTTP/2)
//! or a byte differs, the client stops sending (EOF) or the socket fails
//! (HTTP/1: hyper then reads what there is). The wait is the connection
//! task's, bounded by its idle watchdog like any wait for a first request.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::activity::ConnectionService;
use crate::protocol::{ConnectionConfig, StreamExecutor};
use crate::send_timeout::SendTimeout;
use crate::service::HttpService;
use crate::stream::{peek, Stream};

/// What an HTTP/2 connection with prior knowledge starts with (RFC 9113,
/// section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

type Io = TokioIo<SendTimeout>;
type Http1<S> = http1::UpgradeableConnection<Io, ConnectionService<S>>;
type Http2<S> = http2::Connection<Io, ConnectionService<S>, StreamExecutor>;

/// Which HTTP a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    Http1,
    Http2,
}

pin_project_lite::pin_project! {
    /// One connection's HTTP, from its first byte to its end. Resolves like
    /// hyper's connections: `Ok` once the connection is over (or upgraded:
    /// the upgraded I/O is the application's), `Err` if it failed.
    #[project = StateProj]
    pub(crate) enum HttpConnection<'a, S>
    where
        S: HttpService,
    {
        /// No version yet: waiting for the first bytes. `Option`s only to
        /// move them into the connection once the version is known.
        Detecting {
            stream: Option<Stream>,
            service: Option<ConnectionService<S>>,
            config: &'a ConnectionConfig,
        },
        Http1 { #[pin] conn: Http1<S> },
        /// Boxed: an HTTP/2 connection's state is several times an HTTP/1
        /// one's, and rare; inline, every connection would pay for it.
        Http2 { conn: Pin<Box<Http2<S>>> },
        /// Shut down before a version was known, or over.
        Done,
    }
}

impl<'a, S: HttpService> HttpConnection<'a, S> {
    pub(crate) fn new(
        stream: Stream,
        service: ConnectionService<S>,
        config: &'a ConnectionConfig,
    ) -> Self {
        Self::Detecting {
            stream: Some(stream),
            service: Some(service),
            config,
        }
    }

    /// hyper's graceful shutdown: HTTP/1 ends once the request in flight
    /// (if any) is answered, with `connection: close`; HTTP/2 sends GOAWAY
    /// and ends once its streams are done. A connection that has not sent
    /// enough to tell its version ends at once (as hyper-util's `auto`
    /// connection does).
    pub(crate) fn graceful_shutdown(mut self: Pin<&mut Self>) {
        match self.as_mut().project() {
            StateProj::Detecting { .. } => self.set(Self::Done),
            StateProj::Http1 { conn } => conn.graceful_shutdown(),
            StateProj::Http2 { conn } => conn.as_mut().graceful_shutdown(),
            StateProj::Done => {}
        }
    }
}

impl<S: HttpService> Future for HttpConnection<'_, S> {
    type Output = Result<(), hyper::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project() {
                StateProj::Detecting {
                    stream,
                    service,
                    config,
                } => {
                    let version = {
                        let socket = stream
                            .as_ref()
                            .expect("a detecting connection holds its stream");
                        // An error here is the socket's; hyper meets it at
                        // its first read.
                        match socket.alpn_h2() {
                            // Over TLS, ALPN said.
                            Some(true) => Version::Http2,
                            Some(false) => Version::Http1,
                            None => ready!(socket.poll_look(cx, || look(socket)))
                                .unwrap_or(Version::Http1),
                        }
                    };
                    let (Some(stream), Some(service)) = (stream.take(), service.take()) else {
                        unreachable!("taken only here, once")
                    };
                    let io = TokioIo::new(SendTimeout::new(stream, config.limits.send_timeout));
                    match version {
                        Version::Http1 => Self::Http1 {
                            conn: config.http1().serve_connection(io, service).with_upgrades(),
                        },
                        Version::Http2 => {
                            service.speaks_http2();
                            Self::Http2 {
                                conn: Box::pin(config.http2().serve_connection(io, service)),
                            }
                        }
                    }
                }
                StateProj::Http1 { conn } => return conn.poll(cx),
                StateProj::Http2 { conn } => return conn.as_mut().poll(cx),
                StateProj::Done => return Poll::Ready(Ok(())),
            };
            self.set(next);
        }
    }
}

/// Peeks at what the client has sent so far: the version once it is
/// known, `WouldBlock` while what came is a beginning of the preface and
/// more may come.
fn look(socket: &Stream) -> io::Result<Version> {
    let mut start = [0u8; PREFACE.len()];
    let seen = peek(socket.as_raw_fd(), &mut start)?;
    Ok(match seen {
        // EOF: hyper reads it and ends the connection.
        0 => Version::Http1,
        seen if start[..seen] != PREFACE[..seen] => Version::Http1,
        seen if seen == PREFACE.len() => Version::Http2,
        // A beginning of the preface; more may come, unless the client has
        // shut down its side (peeking shows the bytes before an EOF, never
        // the EOF, and tokio keeps a closed socket readable).
        _ if peer_shut_down(socket) => Version::Http1,
        _ => return Err(io::ErrorKind::WouldBlock.into()),
    })
}

/// Whether the client has shut down its sending side (or the socket
/// failed): `poll(2)` with `POLLRDHUP`, without waiting.
fn peer_shut_down(socket: &Stream) -> bool {
    let rdhup = PollFlags::from_bits_retain(nix::libc::POLLRDHUP);
    let mut fds = [PollFd::new(socket.as_fd(), rdhup)];
    // Any event at all is RDHUP, HUP or ERR: POLLIN was not asked for.
    !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(0) | Err(_))
}
