//! [`Latch`]: a one-way, many-waiter signal (close, hurry, abort).

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// Fired at most once; from then on every wait on it, earlier or later,
/// completes at once. `fire` is synchronous and callable from any thread.
///
/// What `CancellationToken` does for a tree of tokens, without the tree:
/// no allocation of its own and no lock, which shows in the cost of a
/// server that opens and closes with no connection (a test fixture).
#[derive(Debug, Default)]
pub(crate) struct Latch {
    fired: AtomicBool,
    waiters: Notify,
}

impl Latch {
    /// Fires the latch, waking every waiter. Idempotent.
    pub(crate) fn fire(&self) {
        if !self.fired.swap(true, Ordering::AcqRel) {
            self.waiters.notify_waiters();
        }
    }

    pub(crate) fn is_fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    /// Completes once the latch has fired (at once if it already has).
    pub(crate) async fn fired(&self) {
        if self.is_fired() {
            return; // without touching the waiter list and its lock
        }
        let notified = self.waiters.notified();
        tokio::pin!(notified);
        // Registered before looking: a fire in between still wakes us
        // (notify_waiters only reaches waiters that are registered).
        notified.as_mut().enable();
        if !self.is_fired() {
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Latch;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_fire_reaches_waiters_before_and_after_it() {
        let latch = Arc::new(Latch::default());
        let early: Vec<_> = (0..3)
            .map(|_| {
                let latch = Arc::clone(&latch);
                tokio::spawn(async move { latch.fired().await })
            })
            .collect();
        // On this current-thread runtime the yield runs every task queued
        // before it: each waiter has been polled once, found the latch
        // open and registered; none may have finished.
        tokio::task::yield_now().await;
        assert!(early.iter().all(|waiter| !waiter.is_finished()));
        assert!(!latch.is_fired());
        let from_a_thread = Arc::clone(&latch);
        std::thread::spawn(move || from_a_thread.fire())
            .join()
            .unwrap();
        latch.fire(); // idempotent
        let all_woken = async {
            for waiter in early {
                waiter.await.unwrap();
            }
            latch.fired().await; // a late waiter completes at once
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), all_woken)
            .await
            .expect("a waiter was not woken by fire()");
        assert!(latch.is_fired());
    }
}
