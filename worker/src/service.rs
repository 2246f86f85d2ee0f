//! What [`Server::start_serving`](crate::Server::start_serving) accepts as
//! an application: an axum `Router`, any tower `Service`, or a hyper
//! `service_fn`, with no adapter on the caller's side.
//!
//! Requests reach the application as `Request<RequestBody>`
//! ([`RequestBody`]: hyper's `Incoming` with the body-read timeout). axum
//! and tower services generic over the body need no change; a hyper
//! `service_fn` names the type:
//!
//! ```
//! use drover_worker::RequestBody;
//! use http_body_util::{BodyExt, Full};
//!
//! let app = hyper::service::service_fn(|request: http::Request<RequestBody>| async move {
//!     let body = request.into_body().collect().await?.to_bytes();
//!     let answer = format!("{} bytes\n", body.len());
//!     Ok::<_, drover_worker::BodyError>(http::Response::new(Full::new(bytes::Bytes::from(answer))))
//! });
//! # fn serve<K>(_: impl drover_worker::IntoHttpService<K>) {}
//! # serve(app);
//! ```

use std::error::Error as StdError;
use std::future::Future;

use http::{Request, Response};
use http_body::Body;
use hyper_util::service::TowerToHyperService;

use crate::body::RequestBody;

/// The error type applications may return: anything that converts into a
/// boxed error.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Markers that tell [`IntoHttpService`] which service trait a value
/// implements. Inferred; callers never name them.
pub mod kind {
    /// The value is a `tower::Service` (axum `Router`, tower stacks).
    #[derive(Debug)]
    pub enum Tower {}
    /// The value is a `hyper::service::Service` (`hyper::service::service_fn`).
    #[derive(Debug)]
    pub enum Hyper {}
}

/// A request handler the server can run on every connection: cloned once
/// per connection, called once per request, its futures spawned on the
/// server's runtime.
///
/// Implemented for every suitable `hyper::service::Service`; callers reach
/// it through [`IntoHttpService`].
pub trait HttpService: Clone + Send + 'static {
    /// The response body.
    type ResBody: Body<Data: Send, Error: Into<BoxError>> + Send + 'static;
    /// The error a call may end with; hyper closes the connection on it.
    type Error: Into<BoxError>;
    /// The future a call returns.
    type Future: Future<Output = Result<Response<Self::ResBody>, Self::Error>> + Send + 'static;
    /// Handles one request.
    fn call(&self, request: Request<RequestBody>) -> Self::Future;
}

impl<S, B> HttpService for S
where
    S: hyper::service::Service<Request<RequestBody>, Response = Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data: Send, Error: Into<BoxError>> + Send + 'static,
{
    type ResBody = B;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, request: Request<RequestBody>) -> Self::Future {
        hyper::service::Service::call(self, request)
    }
}

/// Anything `start_serving` can serve. `Kind` is inferred from which
/// service trait the value implements ([`kind::Tower`] or [`kind::Hyper`]).
pub trait IntoHttpService<Kind> {
    /// The service the server runs.
    type Service: HttpService;
    /// Converts; a no-op for hyper services, a thin wrapper for tower ones.
    fn into_http_service(self) -> Self::Service;
}

impl<S, B> IntoHttpService<kind::Tower> for S
where
    S: tower_service::Service<Request<RequestBody>, Response = Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data: Send, Error: Into<BoxError>> + Send + 'static,
{
    type Service = TowerToHyperService<S>;

    fn into_http_service(self) -> Self::Service {
        TowerToHyperService::new(self)
    }
}

impl<S> IntoHttpService<kind::Hyper> for S
where
    S: HttpService + hyper::service::Service<Request<RequestBody>>,
{
    type Service = S;

    fn into_http_service(self) -> S {
        self
    }
}
