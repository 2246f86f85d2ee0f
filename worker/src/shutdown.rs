//! The close driver: after close, wait for the connections up to the
//! graceful deadline, abort what is left, run the shutdown hooks, report.

use drover_shared::events;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::hooks::ShutdownHook;
use crate::server_core::{FailUnlessDisarmed, ServerCore};

/// Runs once the server is closing (it waits for that itself), and moves it
/// to closed. Only ever one per server.
pub(crate) async fn drive_close(
    core: Arc<ServerCore>,
    graceful_timeout: Option<Duration>,
    shutdown_hooks: Vec<ShutdownHook>,
) {
    core.lifecycle.closing().await;
    let begun = Instant::now();
    // If a shutdown hook panics or the runtime stops under us, the server
    // must still reach Closed, or wait_closed would wait for ever.
    let guard = FailUnlessDisarmed::new(&core, Error::ShutdownInterrupted);
    core.tasks.close();
    let drained = async {
        match graceful_timeout {
            Some(deadline) => tokio::time::timeout(deadline, core.tasks.wait())
                .await
                .is_ok(),
            None => {
                core.tasks.wait().await;
                true
            }
        }
    };
    let finished_in_time = tokio::select! {
        finished = drained => finished,
        () = core.lifecycle.aborting() => false,
    };
    if !finished_in_time {
        core.abort();
        core.tasks.wait().await;
    }
    for hook in shutdown_hooks {
        hook().await;
    }
    guard.disarm();
    core.finish();
    let stats = core.counters.stats();
    tracing::info!(
        event = events::CLOSED,
        took_ms = events::millis(begun.elapsed()),
        requests_served = stats.requests_served,
        open_connections = stats.open_connections,
        "closed"
    );
}
