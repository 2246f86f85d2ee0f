//! [`RequestBody`]: the request body an application reads, hyper's
//! `Incoming` with drover's body-read inactivity timeout.
//!
//! The timeout lives here, at the body, and not on the socket: hyper reads
//! the socket while a response is being computed (to notice a client that
//! leaves, or the next pipelined request), so a read timer on the socket
//! would cut slow handlers of patient clients. Only a read the application
//! is actually waiting on counts.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// A request's body, as every application served by drover-worker gets it
/// (`Request<RequestBody>`): the bytes hyper reads, with one rule added.
///
/// If the application waits for body bytes and none arrive for the
/// server's body-read timeout
/// ([`Builder::body_read_timeout`](crate::Builder::body_read_timeout),
/// default [`defaults::BODY_READ_TIMEOUT`](crate::defaults::BODY_READ_TIMEOUT),
/// nginx's `client_body_timeout`), the next frame is an error for which
/// [`BodyError::is_timeout`] holds. The timer runs only while a read
/// waits (no timer is set while the application is busy elsewhere, nor
/// when the bytes are already there), and every frame that arrives starts
/// it afresh. After the error an HTTP/1 connection is not reused: hyper
/// closes it once the response is written.
///
/// axum `Router`s and other services generic over the body take it as is.
/// A hyper `service_fn` names it: `|request: Request<RequestBody>| …`.
#[must_use = "a body does nothing unless polled"]
pub struct RequestBody {
    inner: Incoming,
    /// `None`: no timeout.
    timeout: Option<Duration>,
    /// Allocated at the first read that waits, reused after.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether `timer` counts down for the current wait.
    armed: bool,
}

impl RequestBody {
    /// `inner`, with a body-read timeout of `timeout` (`None`: none).
    pub(crate) fn new(inner: Incoming, timeout: Option<Duration>) -> Self {
        Self {
            inner,
            timeout,
            timer: None,
            armed: false,
        }
    }

    /// Arms the timer for a read that waits (at the first wait of a run),
    /// and polls it: `true` once it has run out.
    fn waited_too_long(
        timer: &mut Option<Pin<Box<Sleep>>>,
        armed: &mut bool,
        timeout: Duration,
        cx: &mut Context<'_>,
    ) -> bool {
        if !*armed {
            let deadline = Instant::now() + timeout;
            match timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => *timer = Some(Box::pin(tokio::time::sleep_until(deadline))), // sleep-ok: the timeout's deadline, armed only while a read waits
            }
            *armed = true;
        }
        timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready())
    }
}

impl From<Incoming> for RequestBody {
    /// `Incoming` with no timeout of drover's.
    fn from(inner: Incoming) -> Self {
        Self::new(inner, None)
    }
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBody")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.armed = false;
                Poll::Ready(frame.map(|f| f.map_err(|e| BodyError(Kind::Hyper(e)))))
            }
            Poll::Pending => match this.timeout {
                Some(timeout)
                    if Self::waited_too_long(&mut this.timer, &mut this.armed, timeout, cx) =>
                {
                    this.armed = false;
                    Poll::Ready(Some(Err(BodyError(Kind::TimedOut(timeout)))))
                }
                _ => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why a [`RequestBody`] could not be read: hyper's error (the client
/// left, a malformed chunk…) or drover's body-read timeout.
#[derive(Debug)]
pub struct BodyError(Kind);

#[derive(Debug)]
enum Kind {
    Hyper(hyper::Error),
    TimedOut(Duration),
}

impl BodyError {
    /// Whether no body bytes arrived within the body-read timeout while
    /// the application waited for them (answer 408, as nginx does).
    pub fn is_timeout(&self) -> bool {
        matches!(self.0, Kind::TimedOut(_))
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Hyper(error) => write!(f, "reading the request body failed: {error}"),
            Kind::TimedOut(timeout) => write!(
                f,
                "no request body bytes for {:?} (the body-read timeout)",
                timeout
            ),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            Kind::Hyper(error) => Some(error),
            Kind::TimedOut(_) => None,
        }
    }
}
