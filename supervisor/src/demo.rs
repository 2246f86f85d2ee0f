//! The built-in demo app: what `drover` serves with no application of the
//! user's own, and what its tests and benchmarks rely on.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use axum::http::Uri;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use drover_shared::env::demo as demo_env;
use http_body::Frame;

/// `GET /` → `hello`; `GET /pid` → the worker's pid; `GET /sleep?ms=N` →
/// 200 after N ms; `GET /block?ms=N` → 200 after blocking the worker's
/// runtime for N ms (a handler that wrongly blocks: heartbeats stop, and
/// past `--worker-timeout` the supervisor kills the worker); `GET
/// /bytes?n=N` → N bytes of `x`, as fast as the client reads; `GET
/// /background?ms=N` → starts a blocking task of N ms; `GET /stream`
/// → a line every 100 ms, never ending; `GET /healthz` → `ok`; `POST
/// /upload` → the length of the request body, once read in full (408 if
/// the client stops sending it: the body-read timeout); `GET
/// /client-cert` → the size of the certificate the client presented over
/// TLS (`--cert-reqs`), or `none`.
///
/// For tests of boot failures: with `DROVER_DEMO_FAIL_BOOT` set in its
/// environment a worker fails before it is ready; with
/// `DROVER_DEMO_FAIL_BOOT_IF=PATH`, it does when that file exists (a broken
/// deploy, or a crash loop, after a good first boot); with
/// `DROVER_DEMO_HANG_BOOT` it never gets ready, nor with
/// `DROVER_DEMO_HANG_BOOT_IF=PATH` once that file exists.
pub fn app() -> Router {
    if let Ok(why) = std::env::var(demo_env::FAIL_BOOT) {
        panic!("demo app asked to fail at boot: {why}");
    }
    if let Some(marker) = std::env::var_os(demo_env::FAIL_BOOT_IF) {
        if std::path::Path::new(&marker).exists() {
            panic!(
                "demo app asked to fail at boot: {} exists",
                marker.to_string_lossy()
            );
        }
    }
    let hang_if = std::env::var_os(demo_env::HANG_BOOT_IF);
    if std::env::var_os(demo_env::HANG_BOOT).is_some()
        || hang_if.is_some_and(|marker| std::path::Path::new(&marker).exists())
    {
        loop {
            std::thread::park(); // never unparked: a worker stuck at boot
        }
    }
    Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route(
            "/pid",
            get(|| async { format!("{}\n", std::process::id()) }),
        )
        .route("/sleep", get(delayed))
        .route(
            "/client-cert",
            get(
                |cert: Option<axum::Extension<drover_worker::ClientCertificate>>| async move {
                    match cert {
                        Some(axum::Extension(cert)) => format!("{} bytes\n", cert.der().len()),
                        None => "none\n".to_owned(),
                    }
                },
            ),
        )
        .route("/block", get(blocking))
        .route("/background", get(background))
        .route(
            "/bytes",
            get(|uri: Uri| async move { Body::new(Filler(query_number(&uri, "n="))) }),
        )
        .route(
            "/stream",
            get(|| async { Body::new(Lines(tokio::time::interval(Duration::from_millis(100)))) }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/upload", post(upload))
}

/// `POST /upload`: reads the whole body, answers its length.
async fn upload(body: Body) -> (StatusCode, String) {
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => (StatusCode::OK, format!("{}\n", body.len())),
        Err(error) => {
            // The body-read timeout, somewhere in axum's chain of causes.
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
            let mut timed_out = false;
            while let Some(e) = cause {
                timed_out |= e
                    .downcast_ref::<drover_worker::BodyError>()
                    .is_some_and(drover_worker::BodyError::is_timeout);
                cause = e.source();
            }
            let status = if timed_out {
                StatusCode::REQUEST_TIMEOUT
            } else {
                StatusCode::BAD_REQUEST
            };
            (status, format!("{error}\n"))
        }
    }
}

/// `GET /background?ms=N`: starts a blocking task that runs for N ms and
/// answers at once (a worker's exit must not wait for such a task for
/// ever).
async fn background(uri: Uri) -> String {
    let ms = millis(&uri);
    tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(ms)); // sleep-ok: the route's purpose
    });
    format!("started {ms} ms in the background\n")
}

/// `GET /sleep?ms=N`.
async fn delayed(uri: Uri) -> String {
    let ms = millis(&uri);
    tokio::time::sleep(Duration::from_millis(ms)).await; // sleep-ok: the route's purpose
    format!("slept {ms} ms\n")
}

/// `GET /block?ms=N`: the mistake this route exists to show, a blocking
/// call on the runtime's thread.
async fn blocking(uri: Uri) -> String {
    let ms = millis(&uri);
    std::thread::sleep(Duration::from_millis(ms)); // sleep-ok: the route's purpose
    format!("blocked {ms} ms\n")
}

/// The `ms=N` of a query (0 when absent).
fn millis(uri: &Uri) -> u64 {
    query_number(uri, "ms=")
}

/// The number after `key` (`ms=`, `n=`) in a query; 0 when absent.
fn query_number(uri: &Uri, key: &str) -> u64 {
    uri.query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix(key)))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A body of this many bytes of `x`, in 64 KiB frames.
struct Filler(u64);

impl http_body::Body for Filler {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        static CHUNK: [u8; 65536] = [b'x'; 65536];
        if self.0 == 0 {
            return Poll::Ready(None);
        }
        let len = self.0.min(CHUNK.len() as u64);
        self.0 -= len;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
            &CHUNK[..len as usize],
        )))))
    }
}

/// A body that sends a line every tick and never ends.
struct Lines(tokio::time::Interval);

impl http_body::Body for Lines {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_tick(cx)
            .map(|_| Some(Ok(Frame::data(Bytes::from_static(b"tick\n")))))
    }
}
