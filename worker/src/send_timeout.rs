//! The send timeout: a connection whose writes make no progress for the
//! timeout is cut (nginx's `send_timeout`).
//!
//! It lives at the I/O level, under hyper, so it covers everything hyper
//! writes: HTTP/1 responses and every HTTP/2 stream of a connection. A
//! write that returns `Pending` arms a deadline (the timer is allocated at
//! the first write that ever waits, and reused); any write that goes
//! through disarms it. When the deadline passes, the write fails with
//! `TimedOut`, hyper ends the connection, and the socket is closed with
//! `SO_LINGER` 0: a reset, so that the kernel drops the unsent bytes at
//! once instead of keeping them (and the socket) for a client that does not
//! read, as nginx's `reset_timedout_connection` does.

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::stream::Stream;

/// A connection's stream with the send timeout.
pub(crate) struct SendTimeout {
    stream: Stream,
    /// `None`: no timeout.
    timeout: Option<Duration>,
    /// Allocated at the first write that waits, reused after.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether `timer` counts down for the current wait.
    armed: bool,
}

impl SendTimeout {
    pub(crate) fn new(stream: Stream, timeout: Option<Duration>) -> Self {
        Self {
            stream,
            timeout,
            timer: None,
            armed: false,
        }
    }

    /// What a write's result means with the timeout: progress disarms the
    /// timer; a wait arms it, and fails once it has run out.
    fn check<T>(
        &mut self,
        result: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        if result.is_ready() {
            self.armed = false;
            return result;
        }
        let Some(timeout) = self.timeout else {
            return Poll::Pending;
        };
        if !self.armed {
            let deadline = Instant::now() + timeout;
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))), // sleep-ok: the timeout's deadline, armed only while a write waits
            }
            self.armed = true;
        }
        let expired = self
            .timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
        if !expired {
            return Poll::Pending;
        }
        self.armed = false;
        // A reset at close: the unsent bytes are dropped now. Best effort:
        // without it the socket still closes, only later.
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "send timeout: the client read nothing for the whole timeout",
        )))
    }
}

impl AsRawFd for SendTimeout {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

impl AsyncRead for SendTimeout {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendTimeout {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.check(result, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.check(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_flush(cx);
        this.check(result, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.check(result, cx)
    }
}
