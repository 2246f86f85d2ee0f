//! The startup and shutdown hooks a [`Builder`](crate::Builder) collects,
//! boxed as the server keeps them until it runs them.

use std::future::Future;
use std::pin::Pin;

use crate::service::BoxError;

/// Runs once in `start_serving`, before the server accepts; an error stops
/// the start.
pub(crate) type StartupHook =
    Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>> + Send>;

/// Runs once after close, when every connection has ended.
pub(crate) type ShutdownHook = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Boxes `hook`, its error turned into a [`BoxError`].
pub(crate) fn startup_hook<F, Fut, E>(hook: F) -> StartupHook
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError>,
{
    Box::new(move || Box::pin(async move { hook().await.map_err(Into::into) }))
}

/// Boxes `hook`.
pub(crate) fn shutdown_hook<F, Fut>(hook: F) -> ShutdownHook
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Box::new(move || Box::pin(hook()))
}
