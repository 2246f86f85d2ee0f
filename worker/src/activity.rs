//! Per-connection request tracking: how many requests are in flight and
//! since when the connection has been idle.
//!
//! hyper does not say when an HTTP/1.1 connection sits idle between
//! requests, and the keep-alive timeout and the drain on close both need to
//! know. So the application is wrapped: a request counts as in flight from
//! the call until its response body has been sent (or dropped), and the
//! moment the last one ends is recorded. The connection task reads this
//! lazily, when a timer it set fires, so the request path pays two
//! uncontended lock/unlock pairs and no task wake-up.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Buf;
use http::header::{HeaderValue, CONNECTION};
use http::{Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::body::RequestBody;
use crate::peer::Peer;
use crate::server_core::ServerCore;
use crate::service::HttpService;

/// What one connection is doing, shared by its task and its requests.
pub(crate) struct ConnectionActivity {
    state: Mutex<RequestCounts>,
    /// The server, for its counters and whether it is closing (one Arc per
    /// connection; requests reach it through their guard).
    core: Arc<ServerCore>,
    /// Set once the connection is known to speak HTTP/2 (its preface):
    /// such a connection is closed with GOAWAY, never with a `connection:
    /// close` header.
    http2: AtomicBool,
    /// A response ended early (its body or the application failed).
    response_cut: AtomicBool,
    /// Who the client is, for every request's extensions.
    peer: Peer,
    /// The certificate it presented over TLS, if it was asked for one.
    client_certificate: Option<crate::tls::ClientCertificate>,
}

#[derive(Debug, Clone, Copy)]
struct RequestCounts {
    /// Requests received so far on this connection.
    received: u64,
    in_flight: usize,
    /// When `in_flight` last dropped to 0 (or the connection opened).
    idle_since: Instant,
}

impl ConnectionActivity {
    pub(crate) fn new(
        opened: Instant,
        core: Arc<ServerCore>,
        peer: Peer,
        client_certificate: Option<crate::tls::ClientCertificate>,
    ) -> Self {
        Self {
            state: Mutex::new(RequestCounts {
                received: 0,
                in_flight: 0,
                idle_since: opened,
            }),
            core,
            http2: AtomicBool::new(false),
            response_cut: AtomicBool::new(false),
            peer,
            client_certificate,
        }
    }

    /// `Some(since)` while no request is in flight.
    pub(crate) fn idle_since(&self) -> Option<Instant> {
        let counts = *self.lock();
        (counts.in_flight == 0).then_some(counts.idle_since)
    }

    /// Whether any request has arrived on this connection.
    pub(crate) fn has_had_requests(&self) -> bool {
        self.lock().received > 0
    }

    pub(crate) fn is_http2(&self) -> bool {
        self.http2.load(Ordering::Relaxed)
    }

    fn begin(self: &Arc<Self>) -> RequestGuard {
        let mut counts = self.lock();
        counts.received += 1;
        counts.in_flight += 1;
        drop(counts);
        self.core.counters.request_began();
        RequestGuard(Arc::clone(self))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RequestCounts> {
        // The critical sections cannot panic; a poisoned lock still holds
        // consistent counts.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What makes a TLS `close_notify` at the connection's end truthful.
impl crate::stream::ResponseRecord for ConnectionActivity {
    fn responses_complete(&self) -> bool {
        self.idle_since().is_some() && !self.response_cut.load(Ordering::Relaxed)
    }
}

/// One request in flight; ends it when dropped.
struct RequestGuard(Arc<ConnectionActivity>);

impl RequestGuard {
    /// Ends the request with its response cut short (the application or
    /// the body failed).
    fn cut(self) {
        self.0.response_cut.store(true, Ordering::Relaxed);
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.core.counters.request_ended();
        let mut counts = self.0.lock();
        counts.in_flight -= 1;
        if counts.in_flight == 0 {
            counts.idle_since = Instant::now();
        }
    }
}

/// The application as one connection runs it: counts requests, and once
/// the server is closing marks HTTP/1 responses `connection: close`, so a
/// request that reaches an open connection during the drain is answered
/// and then the connection ends cleanly.
#[derive(Clone)]
pub(crate) struct ConnectionService<S> {
    inner: S,
    activity: Arc<ConnectionActivity>,
}

impl<S> ConnectionService<S> {
    pub(crate) fn new(inner: S, activity: Arc<ConnectionActivity>) -> Self {
        Self { inner, activity }
    }

    /// The connection speaks HTTP/2 (told once, when its version is
    /// known: before any request, so that a close meets it as HTTP/2).
    pub(crate) fn speaks_http2(&self) {
        self.activity.http2.store(true, Ordering::Relaxed);
    }
}

impl<S: HttpService> hyper::service::Service<Request<Incoming>> for ConnectionService<S> {
    type Response = Response<TrackedBody<ReplyBody<S::ResBody>>>;
    type Error = S::Error;
    type Future = TrackedResponse<S::Future>;

    /// Counts the request, answers it at once if its head is over a limit,
    /// and otherwise calls the application with the body wrapped in a
    /// [`RequestBody`].
    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let http1 = request.version() < Version::HTTP_2;
        let core = &self.activity.core;
        core.counters.count_request();
        let access = core.connections.access_log.then(|| {
            Box::new(AccessEntry {
                remote: self.activity.peer,
                method: request.method().clone(),
                target: request.uri().to_string(),
                version: request.version(),
                received: Instant::now(),
                status: None,
                bytes: 0,
            })
        });
        let limits = &core.connections.limits;
        let call = match limits.check(&request) {
            Some(status) => {
                tracing::debug!(status = status.as_u16(), "request head over a limit");
                Call::Rejected { status, http1 }
            }
            None => {
                // Only a request the application sees is told who sent it.
                self.activity.peer.tell(request.extensions_mut());
                if let Some(certificate) = &self.activity.client_certificate {
                    request.extensions_mut().insert(certificate.clone());
                }
                Call::App {
                    future: self
                        .inner
                        .call(request.map(|body| RequestBody::new(body, limits.body_read_timeout))),
                }
            }
        };
        TrackedResponse {
            access,
            guard: Some(self.activity.begin()),
            // Checked when the response is ready, not now: the handler
            // itself may be what closes the server.
            close_if_closing: http1,
            inner: call,
        }
    }
}

pin_project_lite::pin_project! {
    /// The application's call, or the answer to a request it never sees.
    #[project = CallProj]
    pub(crate) enum Call<F> {
        App { #[pin] future: F },
        Rejected { status: http::StatusCode, http1: bool },
    }
}

impl<F, B, E> Future for Call<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ReplyBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CallProj::App { future } => {
                let response = ready!(future.poll(cx))?;
                Poll::Ready(Ok(response.map(|body| ReplyBody::App { body })))
            }
            CallProj::Rejected { status, http1 } => {
                let mut response = Response::new(ReplyBody::Empty);
                *response.status_mut() = *status;
                // HTTP/1 only (HTTP/2 has no such header): the stream ends,
                // the connection does not.
                if *http1 {
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Poll::Ready(Ok(response))
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The application's response body, or none.
    #[project = ReplyProj]
    pub(crate) enum ReplyBody<B> {
        App { #[pin] body: B },
        Empty,
    }
}

impl<B: Body> Body for ReplyBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project() {
            ReplyProj::App { body } => body.poll_frame(cx),
            ReplyProj::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::App { body } => body.is_end_stream(),
            Self::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::App { body } => body.size_hint(),
            Self::Empty => SizeHint::with_exact(0),
        }
    }
}

pin_project_lite::pin_project! {
    /// The application's response future, carrying the request's guard on
    /// to the body.
    pub(crate) struct TrackedResponse<F> {
        #[pin]
        inner: Call<F>,
        guard: Option<RequestGuard>,
        // HTTP/1: mark the response `connection: close` if the server is
        // closing by the time it is ready.
        close_if_closing: bool,
        // With the access log on: the request, logged with its status.
        access: Option<Box<AccessEntry>>,
    }
}

/// A request as the access log records it: one line once its response
/// has been sent, or has ended early (the client left, the body failed),
/// with the response bytes sent so far. The worker (its index and pid)
/// is the span every line of a worker is in.
struct AccessEntry {
    remote: Peer,
    method: http::Method,
    target: String,
    version: Version,
    received: Instant,
    /// Set when the response head is ready: a request without one (the
    /// application failed) is not logged here (hyper ends its connection).
    status: Option<http::StatusCode>,
    /// The response body's bytes, as its frames went to hyper.
    bytes: u64,
}

impl Drop for AccessEntry {
    fn drop(&mut self) {
        let Some(status) = self.status else { return };
        tracing::info!(
            target: "drover::access",
            remote = %self.remote,
            method = %self.method,
            path = %self.target,
            version = ?self.version,
            status = status.as_u16(),
            bytes = self.bytes,
            duration_ms = drover_shared::events::millis(self.received.elapsed()),
            "request"
        );
    }
}

impl<F, B, E> Future for TrackedResponse<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<ReplyBody<B>>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match ready!(this.inner.poll(cx)) {
            Ok(response) => response,
            Err(error) => {
                if let Some(guard) = this.guard.take() {
                    guard.cut();
                }
                return Poll::Ready(Err(error));
            }
        };
        let upgrade = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
        let closing = || {
            this.guard
                .as_ref()
                .is_some_and(|g| g.0.core.lifecycle.is_closing())
        };
        if !upgrade && *this.close_if_closing && closing() {
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        let mut access = this.access.take();
        if let Some(access) = &mut access {
            access.status = Some(response.status());
        }
        let guard = this.guard.take();
        Poll::Ready(Ok(response.map(|inner| TrackedBody {
            inner,
            guard,
            access,
        })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that ends its request when it has been sent in full
    /// or dropped.
    pub(crate) struct TrackedBody<B> {
        #[pin]
        inner: B,
        guard: Option<RequestGuard>,
        // With the access log on: logged when the body ends or is dropped.
        access: Option<Box<AccessEntry>>,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let (Some(access), Some(data)) = (this.access.as_mut(), frame.data_ref()) {
                    access.bytes += data.remaining() as u64;
                }
            }
            // The body failed: the response is cut short.
            Some(Err(_)) => {
                if let Some(guard) = this.guard.take() {
                    guard.cut();
                }
                this.access.take();
            }
            // The end: the request is over, and its line is logged now.
            None => {
                this.guard.take();
                this.access.take();
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
