//! One test per edge of the state diagram in the module docs.

use std::sync::Arc;
use std::time::Duration;

use drover_shared::ListenAddr;

use super::{Lifecycle, State};
use crate::error::Error;
use crate::report::CloseReport;

/// How long a test waits for an event that is due at once.
const BOUNDED: Duration = Duration::from_secs(10);

fn state_of<P>(lifecycle: &Lifecycle<P>) -> &'static str {
    match &*lifecycle.lock_state() {
        State::Bound(_) => "Bound",
        State::Starting => "Starting",
        State::Serving => "Serving",
        State::Closing { fatal: None, .. } => "Closing",
        State::Closing { fatal: Some(_), .. } => "Closing(fatal)",
        State::Closed(Ok(_)) => "Closed(Ok)",
        State::Closed(Err(_)) => "Closed(Err)",
    }
}

fn starting() -> Lifecycle<()> {
    let lifecycle = Lifecycle::new(());
    lifecycle.begin_start().unwrap();
    lifecycle
}

fn serving() -> Lifecycle<()> {
    let lifecycle = starting();
    lifecycle.started().unwrap();
    lifecycle
}

fn report(requests: u64) -> CloseReport {
    CloseReport {
        drained: 1,
        aborted: 2,
        requests_served: requests,
    }
}

fn accept_error() -> Error {
    Error::Accept {
        addr: ListenAddr::Tcp("127.0.0.1:1".parse().unwrap()),
        source: Arc::new(std::io::Error::other("listener broken")),
    }
}

/// The result `wait_closed` has now, without waiting (`None`: not closed).
async fn closed_now<P>(lifecycle: &Lifecycle<P>) -> Option<Result<CloseReport, Error>> {
    // A zero timeout still polls the future once.
    tokio::time::timeout(Duration::ZERO, lifecycle.wait_closed())
        .await
        .ok()
}

async fn within_bound<F: std::future::Future>(what: &str, event: F) -> F::Output {
    tokio::time::timeout(BOUNDED, event)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen"))
}

#[test]
fn begin_start_moves_bound_to_starting_and_hands_over_the_start() {
    let lifecycle = Lifecycle::new("start options");
    assert_eq!(state_of(&lifecycle), "Bound");
    assert_eq!(lifecycle.begin_start().unwrap(), "start options");
    assert_eq!(state_of(&lifecycle), "Starting");
    assert!(!lifecycle.is_serving());
    assert!(!lifecycle.is_closing());
}

#[tokio::test]
async fn close_moves_bound_to_closed_with_an_empty_report() {
    let lifecycle = Lifecycle::new(());
    lifecycle.close(Duration::from_secs(5));
    assert_eq!(state_of(&lifecycle), "Closed(Ok)");
    assert!(lifecycle.is_closing());
    let result = within_bound("wait_closed", lifecycle.wait_closed()).await;
    assert_eq!(result.unwrap(), CloseReport::default());
}

#[tokio::test]
async fn fail_moves_bound_to_closed_with_the_error() {
    let lifecycle = Lifecycle::new(());
    lifecycle.fail(accept_error());
    assert_eq!(state_of(&lifecycle), "Closed(Err)");
    let result = within_bound("wait_closed", lifecycle.wait_closed()).await;
    assert!(matches!(result, Err(Error::Accept { .. })), "{result:?}");
}

#[test]
fn started_moves_starting_to_serving() {
    let lifecycle = starting();
    lifecycle.started().unwrap();
    assert_eq!(state_of(&lifecycle), "Serving");
    assert!(lifecycle.is_serving());
    assert!(!lifecycle.is_closing());
}

#[tokio::test]
async fn close_moves_starting_to_closing_and_the_start_then_fails() {
    let lifecycle = starting();
    lifecycle.close(Duration::ZERO);
    assert_eq!(state_of(&lifecycle), "Closing");
    assert!(lifecycle.is_closing());
    assert!(matches!(lifecycle.started(), Err(Error::Closed)));
    assert_eq!(state_of(&lifecycle), "Closing");
    assert!(!lifecycle.is_serving());
    assert!(closed_now(&lifecycle).await.is_none());
    lifecycle.finish(report(3));
    assert_eq!(closed_now(&lifecycle).await.unwrap().unwrap(), report(3));
}

#[tokio::test]
async fn a_failed_start_moves_starting_to_closing_fatal_then_closed_err() {
    for error in [
        Error::Startup(Arc::from(crate::service::BoxError::from("hook failed"))),
        Error::StartCancelled,
    ] {
        let lifecycle = starting();
        lifecycle.fail(error);
        assert_eq!(state_of(&lifecycle), "Closing(fatal)");
        assert_eq!(lifecycle.drain_window(), Duration::ZERO);
        assert!(lifecycle.is_closing());
        assert!(closed_now(&lifecycle).await.is_none());
        lifecycle.finish(report(0));
        assert_eq!(state_of(&lifecycle), "Closed(Err)");
        let result = closed_now(&lifecycle).await.unwrap();
        assert!(
            matches!(result, Err(Error::Startup(_) | Error::StartCancelled)),
            "{result:?}"
        );
    }
}

#[tokio::test]
async fn close_moves_serving_to_closing_with_its_drain_window() {
    let lifecycle = serving();
    lifecycle.close(Duration::from_secs(5));
    assert_eq!(state_of(&lifecycle), "Closing");
    assert_eq!(lifecycle.drain_window(), Duration::from_secs(5));
    assert!(!lifecycle.is_serving());
    within_bound("the close signal", lifecycle.closing()).await;
    assert!(!lifecycle.hurry_signal.is_fired());
    assert!(!lifecycle.abort_signal.is_fired());
    assert!(closed_now(&lifecycle).await.is_none());
}

#[tokio::test]
async fn a_fatal_error_moves_serving_to_closing_with_no_drain() {
    let lifecycle = serving();
    lifecycle.fail(accept_error());
    assert_eq!(state_of(&lifecycle), "Closing(fatal)");
    assert_eq!(lifecycle.drain_window(), Duration::ZERO);
    within_bound("the close signal", lifecycle.closing()).await;
    lifecycle.finish(report(2));
    let result = closed_now(&lifecycle).await.unwrap();
    assert!(matches!(result, Err(Error::Accept { .. })), "{result:?}");
}

#[tokio::test]
async fn finish_moves_closing_to_closed_with_the_report() {
    let lifecycle = serving();
    lifecycle.close(Duration::ZERO);
    lifecycle.finish(report(4));
    assert_eq!(state_of(&lifecycle), "Closed(Ok)");
    assert_eq!(lifecycle.drain_window(), Duration::ZERO);
    assert_eq!(closed_now(&lifecycle).await.unwrap().unwrap(), report(4));
}

#[tokio::test]
async fn a_shorter_drain_shortens_the_window_and_a_fast_close_hurries() {
    let lifecycle = serving();
    lifecycle.close(Duration::from_secs(10));
    lifecycle.close(Duration::from_secs(20));
    assert_eq!(lifecycle.drain_window(), Duration::from_secs(10));
    lifecycle.close(Duration::from_secs(1));
    assert_eq!(lifecycle.drain_window(), Duration::from_secs(1));
    assert!(!lifecycle.hurry_signal.is_fired());
    lifecycle.close(Duration::ZERO);
    assert_eq!(lifecycle.drain_window(), Duration::ZERO);
    assert!(lifecycle.is_hurrying(), "the hurry signal");
    assert_eq!(state_of(&lifecycle), "Closing");
}

#[tokio::test]
async fn close_is_idempotent() {
    let lifecycle = serving();
    lifecycle.close(Duration::ZERO);
    lifecycle.close(Duration::ZERO);
    assert_eq!(state_of(&lifecycle), "Closing");
    // A fast close had no drain window to cut short.
    assert!(!lifecycle.hurry_signal.is_fired());
    lifecycle.finish(report(1));
    lifecycle.close(Duration::from_secs(5));
    lifecycle.fail(accept_error());
    assert_eq!(state_of(&lifecycle), "Closed(Ok)");
    assert_eq!(closed_now(&lifecycle).await.unwrap().unwrap(), report(1));

    let never_started = Lifecycle::new(());
    never_started.close(Duration::ZERO);
    never_started.close(Duration::from_secs(5));
    assert_eq!(state_of(&never_started), "Closed(Ok)");
}

#[tokio::test]
async fn fail_while_closing_records_the_first_error_and_hurries() {
    let lifecycle = serving();
    lifecycle.close(Duration::from_secs(5));
    lifecycle.fail(Error::ShutdownInterrupted);
    lifecycle.fail(accept_error());
    assert_eq!(state_of(&lifecycle), "Closing(fatal)");
    assert_eq!(lifecycle.drain_window(), Duration::ZERO);
    assert!(lifecycle.is_hurrying(), "the hurry signal");
    lifecycle.finish(report(1));
    let result = closed_now(&lifecycle).await.unwrap();
    assert!(
        matches!(result, Err(Error::ShutdownInterrupted)),
        "{result:?}"
    );
}

#[test]
fn begin_start_is_refused_after_bound_and_changes_nothing() {
    let refused = |lifecycle: &Lifecycle<()>, expected: &str| {
        let before = state_of(lifecycle);
        let error = lifecycle.begin_start().unwrap_err();
        assert_eq!(format!("{error:?}"), expected);
        assert_eq!(state_of(lifecycle), before);
    };
    refused(&starting(), "AlreadyStarted");
    refused(&serving(), "AlreadyStarted");
    let closing = serving();
    closing.close(Duration::ZERO);
    refused(&closing, "Closed");
    closing.finish(report(0));
    refused(&closing, "Closed");
    let closed_unstarted = Lifecycle::new(());
    closed_unstarted.close(Duration::ZERO);
    refused(&closed_unstarted, "Closed");
}

#[tokio::test]
async fn abort_closes_at_once_and_fires_the_abort_signal() {
    let lifecycle = serving();
    lifecycle.close(Duration::from_secs(5));
    assert!(!lifecycle.abort_signal.is_fired());
    lifecycle.abort();
    assert_eq!(state_of(&lifecycle), "Closing");
    assert_eq!(lifecycle.drain_window(), Duration::ZERO);
    within_bound("the abort signal", lifecycle.aborting()).await;
    assert!(lifecycle.is_hurrying(), "the hurry signal");

    let never_started = Lifecycle::new(());
    never_started.abort();
    assert_eq!(state_of(&never_started), "Closed(Ok)");
    within_bound("the abort signal", never_started.aborting()).await;
}

#[tokio::test]
async fn wait_closed_resolves_for_every_waiter_before_and_after_finish() {
    let lifecycle = Arc::new(serving());
    let early: Vec<_> = (0..3)
        .map(|_| {
            let lifecycle = Arc::clone(&lifecycle);
            tokio::spawn(async move { lifecycle.wait_closed().await })
        })
        .collect();
    // On this current-thread runtime the yield runs every waiter once:
    // each has registered and found the server not closed.
    tokio::task::yield_now().await;
    lifecycle.close(Duration::ZERO);
    tokio::task::yield_now().await;
    assert!(early.iter().all(|waiter| !waiter.is_finished()));
    lifecycle.finish(report(7));
    for waiter in early {
        let result = within_bound("an early waiter's wake-up", waiter).await;
        assert_eq!(result.unwrap().unwrap(), report(7));
    }
    let late = within_bound("a late wait_closed", lifecycle.wait_closed()).await;
    assert_eq!(late.unwrap(), report(7));
}

#[tokio::test]
async fn one_wait_sees_each_of_the_three_signals() {
    // Registered, then fired: each closing transition wakes it.
    for fire in [
        (|l: &Lifecycle<&str>| l.close(Duration::from_secs(5))) as fn(&Lifecycle<&str>),
        |l| l.fail(Error::StartCancelled),
        |l| l.abort(),
    ] {
        let lifecycle = Lifecycle::new("start options");
        lifecycle.begin_start().unwrap();
        lifecycle.started().unwrap();
        let signalled = lifecycle.signalled();
        tokio::pin!(signalled);
        signalled.as_mut().enable();
        fire(&lifecycle);
        within_bound("the signal wait", signalled).await;
    }
    // A hurry (a fast close after a draining one) wakes it too.
    let lifecycle = Lifecycle::new("start options");
    lifecycle.begin_start().unwrap();
    lifecycle.started().unwrap();
    lifecycle.close(Duration::from_secs(5));
    let signalled = lifecycle.signalled();
    tokio::pin!(signalled);
    signalled.as_mut().enable();
    lifecycle.close(Duration::ZERO);
    within_bound("the signal wait at a hurry", signalled).await;
    assert!(lifecycle.is_hurrying());
}
