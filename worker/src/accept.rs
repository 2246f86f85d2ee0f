//! The accept loop: one task takes connections from every listener of a
//! server and serves each on a task of its own.

use drover_shared::events;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use nix::errno::Errno;
use tokio::sync::Semaphore;

use crate::connection::serve_connection;
use crate::error::Error;
use crate::listeners::{Accepted, ListenerSlot};
use crate::server_core::ServerCore;
use crate::service::HttpService;

/// How an accept error is handled.
enum AcceptFailure {
    /// Concerns one connection (aborted before we took it): take the next
    /// one at once, unless these keep coming (then it is not about one
    /// connection, and the loop backs off instead of spinning).
    Connection,
    /// Out of descriptors or memory: the pending connection stays queued
    /// and accept would fail again at once, so pause first.
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
            | Errno::ENETUNREACH
            // accept(2): "treat them like EAGAIN by retrying".
            | Errno::ENETDOWN
            | Errno::ENOPROTOOPT
            | Errno::EHOSTDOWN
            | Errno::ENONET
            | Errno::EOPNOTSUPP,
        ) => AcceptFailure::Connection,
        _ => AcceptFailure::Fatal,
    }
}

/// The first pause after an accept error; it doubles while errors go on.
const BACKOFF_MIN: Duration = Duration::from_millis(5);
/// The longest pause: short, so that serving resumes soon after
/// descriptors free up; long enough that a process at its limit idles.
const BACKOFF_MAX: Duration = Duration::from_millis(250);
/// Connection-level errors in a row retried without a pause.
const IMMEDIATE_RETRIES: u32 = 16;

/// Accepts on every listener until the server closes, serving each
/// connection on its own task; then serves the connections that close took
/// from the accept queues. With `max_connections`, a permit is taken before
/// accepting (from whichever listener is ready first), so beyond the limit
/// connections wait in the kernel's backlog instead of being accepted and
/// starved.
pub(crate) async fn accept_loop<S: HttpService>(
    core: Arc<ServerCore>,
    mut service: S,
    limit: Option<Arc<Semaphore>>,
) {
    // `&mut`: Send whenever S is, which `&S` is only for a Sync service.
    accept_until_closed(&core, &mut service, limit).await;
    for listener in &core.listeners {
        for (stream, peer) in listener.take_swept() {
            let tls = listener.tls();
            let connection =
                serve_connection(stream, peer, tls, service.clone(), Arc::clone(&core), None);
            core.tasks.spawn(connection);
        }
    }
}

async fn accept_until_closed<S: HttpService>(
    core: &Arc<ServerCore>,
    service: &mut S,
    limit: Option<Arc<Semaphore>>,
) {
    let listeners = &core.listeners;
    let mut next = 0;
    let mut errors_in_a_row = 0;
    let mut backoff = BACKOFF_MIN;
    loop {
        let permit = match &limit {
            Some(limit) => tokio::select! {
                biased;
                () = core.lifecycle.closing() => return,
                permit = Arc::clone(limit).acquire_owned() => match permit {
                    Ok(permit) => Some(permit),
                    Err(_) => return, // never closed
                },
            },
            None => None,
        };
        let (index, accepted) = tokio::select! {
            biased;
            () = core.lifecycle.closing() => return,
            accepted = std::future::poll_fn(|cx| poll_any(listeners, &mut next, cx)) => accepted,
        };
        let error = match accepted {
            Ok(Some((stream, peer))) => {
                errors_in_a_row = 0;
                backoff = BACKOFF_MIN;
                let tls = listeners[index].tls();
                let connection =
                    serve_connection(stream, peer, tls, service.clone(), Arc::clone(core), permit);
                core.tasks.spawn(connection);
                // One connection per turn when processes may share the
                // socket: a burst of connects is spread over the workers
                // instead of going to whichever woke first.
                if listeners[index].others_may_accept() {
                    tokio::task::yield_now().await;
                }
                continue;
            }
            // A slot closes a moment before close() stores what it took
            // from the queue and fires the signal: wait for the signal.
            Ok(None) => return core.lifecycle.closing().await,
            Err(error) => error,
        };
        let listener = listeners[index].addr();
        errors_in_a_row += 1;
        match classify(&error) {
            AcceptFailure::Connection if errors_in_a_row <= IMMEDIATE_RETRIES => {
                tracing::debug!(%listener, %error, "accept: connection lost");
                continue;
            }
            AcceptFailure::Connection | AcceptFailure::Resources => {
                tracing::warn!(event = events::ACCEPT_BACKOFF, %listener, %error, retry_in_ms = events::millis(backoff), "accept failed; backing off");
            }
            AcceptFailure::Fatal => {
                core.fail(Error::Accept {
                    addr: listener.clone(),
                    source: Arc::new(error),
                });
                return;
            }
        }
        // Boxed: the pause is rare, and the loop's state stays small.
        let pause = Box::pin(tokio::time::sleep(backoff)); // sleep-ok: a backoff, not a wait for an event
        tokio::select! {
            biased;
            () = core.lifecycle.closing() => return,
            () = pause => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Polls every listener, starting after the one that last gave a
/// connection, so that a busy listener cannot starve the others.
fn poll_any(
    listeners: &[ListenerSlot],
    next: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<(usize, io::Result<Option<Accepted>>)> {
    let count = listeners.len();
    for offset in 0..count {
        let index = (*next + offset) % count;
        if let Poll::Ready(accepted) = listeners[index].poll_accept(cx) {
            *next = (index + 1) % count;
            return Poll::Ready((index, accepted));
        }
    }
    Poll::Pending
}
