//! start_serving / close / wait_closed: the lifecycle contract.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{app, connect_refused, get_once, serve, within, Client, Probe};
use drover_worker::{Error, Server};

#[tokio::test]
async fn start_serving_returns_once_accepting_and_close_refuses_new_connects() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addrs()[0].clone();
    assert_ne!(addr.tcp().unwrap().port(), 0, "port 0 is resolved");
    assert!(!server.is_serving(), "bound is not serving");

    server.start_serving(app(Default::default())).await.unwrap();
    assert!(server.is_serving());
    assert_eq!(get_once(&addr, "/").await, (200, "hello".into()));

    server.close();
    assert!(!server.is_serving());
    assert!(
        connect_refused(&addr).await,
        "listener closed when close() returns"
    );
    let report = within("wait_closed", server.wait_closed()).await.unwrap();
    assert_eq!(report.requests_served, 1);
}

#[tokio::test]
async fn second_start_serving_is_an_error_and_leaves_the_server_running() {
    let (server, addr) = serve(Server::builder(), Default::default()).await;
    let again = server.start_serving(app(Default::default())).await;
    assert!(matches!(again, Err(Error::AlreadyStarted)), "{again:?}");
    assert_eq!(get_once(&addr, "/").await.0, 200);
    server.close();
    within("wait_closed", server.wait_closed()).await.unwrap();
    let after = server.start_serving(app(Default::default())).await;
    assert!(matches!(after, Err(Error::Closed)), "{after:?}");
}

#[tokio::test]
async fn close_before_start_closes_the_listener_and_wait_closed_returns() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addrs()[0].clone();
    server.close();
    server.close(); // idempotent
    assert!(connect_refused(&addr).await);
    let report = within("wait_closed", server.wait_closed()).await.unwrap();
    assert_eq!(report.drained + report.aborted, 0);
    let start = server.start_serving(app(Default::default())).await;
    assert!(matches!(start, Err(Error::Closed)), "{start:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_from_another_std_thread() {
    let (server, addr) = serve(Server::builder(), Default::default()).await;
    let handle = server.handle();
    let closer = std::thread::spawn(move || {
        handle.close();
        handle.close();
    });
    within("wait_closed", server.wait_closed()).await.unwrap();
    closer.join().unwrap();
    assert!(connect_refused(&addr).await);
}

#[tokio::test]
async fn close_from_inside_a_handler_still_answers_that_request() {
    let probe = Arc::new(Probe::default());
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    probe.handle.set(server.handle()).unwrap();
    let addr = server.local_addrs()[0].clone();
    server.start_serving(app(probe)).await.unwrap();

    let mut client = Client::connect(&addr).await.unwrap();
    let (head, body) = within("response to /close", client.get("/close")).await;
    assert_eq!(body, "closing");
    assert_eq!(head.headers()["connection"], "close");
    within("wait_closed", server.wait_closed()).await.unwrap();
    within("connection end", client.closed)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn many_tasks_wait_closed_before_and_after_close() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    server.start_serving(app(Default::default())).await.unwrap();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let handle = server.handle();
            tokio::spawn(async move { handle.wait_closed().await })
        })
        .collect();
    // On this single-threaded runtime, yielding runs the spawned waiters
    // first: they are waiting before close().
    tokio::task::yield_now().await;
    assert!(waiters.iter().all(|w| !w.is_finished()));
    server.close();
    for waiter in waiters {
        within("a waiter", waiter).await.unwrap().unwrap();
    }
    // A waiter arriving after the fact gets the same answer at once.
    within("late waiter", server.wait_closed()).await.unwrap();
}

#[tokio::test]
async fn failing_startup_hook_is_an_error_with_nothing_accepting() {
    let server = Server::builder()
        .on_startup(|| async { Err::<(), _>("database unreachable") })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addrs()[0].clone();
    let err = within(
        "start_serving",
        server.start_serving(app(Default::default())),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Startup(_)), "{err:?}");
    assert!(err.to_string().contains("database unreachable"), "{err}");
    assert!(!server.is_serving());
    assert!(
        connect_refused(&addr).await,
        "nothing may accept after a failed start"
    );
    let closed = within("wait_closed", server.wait_closed()).await;
    assert!(matches!(closed, Err(Error::Startup(_))), "{closed:?}");
}

#[tokio::test]
async fn hooks_run_in_order_around_serving() {
    let started = Arc::new(AtomicBool::new(false));
    let stopped = Arc::new(AtomicBool::new(false));
    let (s, t) = (started.clone(), stopped.clone());
    let server = Server::builder()
        .on_startup(move || async move {
            s.store(true, Ordering::SeqCst);
            Ok::<_, std::io::Error>(())
        })
        .on_shutdown(move || async move { t.store(true, Ordering::SeqCst) })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    server.start_serving(app(Default::default())).await.unwrap();
    assert!(
        started.load(Ordering::SeqCst),
        "startup hook ran before serving"
    );
    assert!(!stopped.load(Ordering::SeqCst));
    server.close();
    within("wait_closed", server.wait_closed()).await.unwrap();
    assert!(
        stopped.load(Ordering::SeqCst),
        "shutdown hook ran before wait_closed"
    );
}

#[tokio::test]
async fn close_during_startup_hook_ends_the_start_with_closed() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let entered = Arc::new(tokio::sync::Notify::new());
    let (g, e) = (gate.clone(), entered.clone());
    let server = Server::builder()
        .on_startup(move || async move {
            e.notify_one();
            g.notified().await;
            Ok::<_, std::io::Error>(())
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addrs()[0].clone();
    let handle = server.handle();
    let closer = async {
        entered.notified().await;
        handle.close();
        gate.notify_one();
    };
    let (start, ()) = tokio::join!(server.start_serving(app(Default::default())), closer);
    assert!(matches!(start, Err(Error::Closed)), "{start:?}");
    assert!(connect_refused(&addr).await);
    within("wait_closed", server.wait_closed()).await.unwrap();
}

#[tokio::test]
async fn serve_forever_returns_when_closed_by_a_handle() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let handle = server.handle();
    let addr = server.local_addrs()[0].clone();
    let client = async {
        // Connects queue in the backlog until serve_forever starts
        // accepting, so this request is answered once it does.
        assert_eq!(get_once(&addr, "/").await.0, 200);
        handle.close();
    };
    let (report, ()) = within("serve_forever", async {
        tokio::join!(server.serve_forever(app(Default::default())), client)
    })
    .await;
    assert_eq!(report.unwrap().requests_served, 1);
}

#[tokio::test]
async fn serve_while_serves_during_the_scope_then_closes() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addrs()[0].clone();
    let scoped_addr = addr.clone();
    let answer = within(
        "serve_while",
        server.serve_while(app(Default::default()), async move {
            get_once(&scoped_addr, "/").await
        }),
    )
    .await
    .unwrap();
    assert_eq!(answer, (200, "hello".into()));
    assert!(!server.is_serving());
    assert!(connect_refused(&addr).await);
}

#[tokio::test]
async fn serve_while_closes_even_if_the_scope_panics() {
    let server = Arc::new(Server::bind("127.0.0.1:0").await.unwrap());
    let addr = server.local_addrs()[0].clone();
    let inner = Arc::clone(&server);
    let task = tokio::spawn(async move {
        inner
            .serve_while(app(Default::default()), async { panic!("scope failed") })
            .await
    });
    assert!(within("scope task", task).await.unwrap_err().is_panic());
    within("wait_closed", server.wait_closed()).await.unwrap();
    assert!(connect_refused(&addr).await);
}

#[tokio::test]
async fn a_cancelled_start_closes_the_server_instead_of_leaving_it_half_started() {
    let server = Server::builder()
        .on_startup(std::future::pending::<Result<(), std::io::Error>>)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addrs()[0].clone();
    let start = server.start_serving(app(Default::default()));
    // Give up on a start that cannot finish: its future is dropped while
    // the hook waits (the hook runs on the first poll, then yield_now wins).
    tokio::select! {
        biased;
        _ = start => panic!("the hook never returns"),
        () = tokio::task::yield_now() => {}
    }
    let closed = within("wait_closed", server.wait_closed()).await;
    assert!(matches!(closed, Err(Error::StartCancelled)), "{closed:?}");
    assert!(connect_refused(&addr).await);
}

#[tokio::test]
async fn a_panicking_startup_hook_closes_the_server() {
    let server = Arc::new(
        Server::builder()
            .on_startup(|| async { panic!("hook exploded") as Result<(), std::io::Error> })
            .bind("127.0.0.1:0")
            .await
            .unwrap(),
    );
    let addr = server.local_addrs()[0].clone();
    let starter = Arc::clone(&server);
    let start = tokio::spawn(async move {
        let _ = starter.start_serving(app(Default::default())).await;
    });
    assert!(within("the start task", start)
        .await
        .unwrap_err()
        .is_panic());
    let closed = within("wait_closed", server.wait_closed()).await;
    assert!(matches!(closed, Err(Error::StartCancelled)), "{closed:?}");
    assert!(connect_refused(&addr).await);
}
