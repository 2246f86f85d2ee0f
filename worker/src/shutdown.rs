//! The close driver: after close, wait for the connections up to the
//! graceful deadline, abort what is left, run the shutdown hooks, report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::builder::ShutdownHook;
use crate::lifecycle::{FailUnlessDisarmed, Lifecycle};
use crate::Error;

/// Runs once the server is closing (it waits for that itself), and moves it
/// to closed. Only ever one per server.
pub(crate) async fn drive_close(
    lifecycle: Arc<Lifecycle>,
    graceful_timeout: Option<Duration>,
    shutdown_hooks: Vec<ShutdownHook>,
) {
    lifecycle.closing().await;
    let begun = Instant::now();
    // If a shutdown hook panics or the runtime stops under us, the server
    // must still reach Closed, or wait_closed would wait for ever.
    let guard = FailUnlessDisarmed::new(&lifecycle, Error::ShutdownInterrupted);
    lifecycle.tasks.close();
    let drained = async {
        match graceful_timeout {
            Some(deadline) => tokio::time::timeout(deadline, lifecycle.tasks.wait())
                .await
                .is_ok(),
            None => {
                lifecycle.tasks.wait().await;
                true
            }
        }
    };
    let finished_in_time = tokio::select! {
        finished = drained => finished,
        () = lifecycle.aborting() => false,
    };
    if !finished_in_time {
        lifecycle.abort();
        lifecycle.tasks.wait().await;
    }
    for hook in shutdown_hooks {
        hook().await;
    }
    guard.disarm();
    lifecycle.finish();
    tracing::info!(took = ?begun.elapsed(), stats = ?lifecycle.stats(), "closed");
}
