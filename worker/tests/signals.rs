//! The opt-in signal helper, with real signals sent to this process. In a
//! test binary of its own: signal handlers are process-wide.

mod common;

use std::sync::Arc;

use common::{connect_refused, serve, within, Client, Probe};
use drover_worker::Server;
use nix::sys::signal::{raise, Signal};

#[tokio::test]
async fn sigterm_closes_and_a_second_signal_aborts_what_is_left() {
    let probe = Arc::new(Probe::default());
    let (server, addr) = serve(Server::builder(), probe.clone()).await;
    let watcher = server.handle().close_on_signals().unwrap();

    let mut client = Client::connect(&addr).await.unwrap();
    let held = tokio::spawn(async move { client.send("/hold").await });
    within("the handler to start", probe.entered.notified()).await;

    raise(Signal::SIGTERM).unwrap();
    within("close on the first signal", server.handle().closing()).await;
    assert!(connect_refused(&addr).await);
    assert!(!held.is_finished(), "a graceful close lets the request run");

    raise(Signal::SIGINT).unwrap();
    let report = within("wait_closed after the second signal", server.wait_closed())
        .await
        .unwrap();
    assert_eq!(report.aborted, 1);
    assert!(within("the held request", held).await.unwrap().is_err());
    within("the signal task", watcher).await.unwrap();
}
