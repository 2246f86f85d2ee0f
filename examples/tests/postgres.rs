//! The PostgreSQL example (`src/bin/postgres.rs`) end to end: the real
//! binary under drover, each test with a private PostgreSQL cluster of its
//! own (`drover_tests::postgres`), stopped and started again under the
//! running service.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use drover_tests::events;
use drover_tests::postgres::Postgres;
use drover_tests::{distinct_pids, free_addr, Drover, WAIT};
use nix::sys::signal::Signal;

/// One answer of the service.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    /// The worker that answered (its `x-worker-pid` header).
    worker: i32,
    body: String,
}

/// One HTTP/1.1 request on a fresh connection.
fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\
         content-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let (status, body) = drover_tests::parse(&response).unwrap();
    let worker = response
        .lines()
        .take_while(|line| !line.is_empty())
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("x-worker-pid")
                .then(|| value.trim().parse().ok())
                .flatten()
        })
        .unwrap_or_else(|| panic!("no x-worker-pid in {response:?}"));
    Answer {
        status,
        worker,
        body,
    }
}

/// Sends `method path` with `body`, 8 at a time on fresh connections (so
/// that every worker waiting in accept wakes), until each of `workers` has
/// answered; every answer must satisfy `check`. Bounded by WAIT.
fn until_each_answers(
    addr: SocketAddr,
    workers: &HashSet<i32>,
    (method, path, body): (&str, &str, &str),
    check: impl Fn(&Answer),
) -> Vec<Answer> {
    let deadline = Instant::now() + WAIT;
    let mut answers: Vec<Answer> = Vec::new();
    loop {
        let answered: HashSet<i32> = answers.iter().map(|a| a.worker).collect();
        if workers.is_subset(&answered) {
            return answers;
        }
        assert!(
            Instant::now() < deadline,
            "{method} {path}: only {answered:?} of {workers:?} answered within {WAIT:?}"
        );
        let batch: Vec<_> = (0..8)
            .map(|_| {
                let (method, path, body) = (method.to_owned(), path.to_owned(), body.to_owned());
                std::thread::spawn(move || request(addr, &method, &path, &body))
            })
            .collect();
        for answer in batch {
            let answer = answer.join().unwrap();
            check(&answer);
            assert!(
                workers.contains(&answer.worker),
                "{method} {path} answered by {}, not one of {workers:?}",
                answer.worker
            );
            answers.push(answer);
        }
    }
}

/// The example's binary with `--database-url` for `db`, listening on a
/// free port, with drover's `args`.
fn app_command(db: &Postgres, addr: SocketAddr, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_postgres"));
    command
        .env_remove("DATABASE_URL")
        .args(["--database-url", &db.connection_string()])
        .args(["-b", &addr.to_string()])
        .args(args);
    command
}

/// Starts the example and waits until every worker is ready.
fn start_app(db: &Postgres, args: &[&str]) -> (Drover, SocketAddr) {
    let addr = free_addr();
    let mut app = Drover::spawn(app_command(db, addr, args));
    app.wait_for_event(events::READY);
    (app, addr)
}

/// The supervisor's worker ids of the workers that are ready so far.
fn ready_worker_ids(app: &Drover) -> Vec<u64> {
    app.events(events::WORKER_READY)
        .iter()
        .map(|event| event.number("worker") as u64)
        .collect()
}

#[test]
fn two_workers_serve_reads_and_writes() {
    let db = Postgres::start();
    let (mut app, addr) = start_app(&db, &["-w", "2"]);
    let workers = distinct_pids(addr, 2);
    assert_eq!(workers, app.worker_pids(), "the supervisor's two workers");

    // Writes, until both workers have written some.
    let posts = until_each_answers(addr, &workers, ("POST", "/notes", "a note"), |answer| {
        assert_eq!(answer.status, 201, "POST /notes: {answer:?}");
    });
    let mut ids: Vec<i32> = posts
        .iter()
        .map(|answer| answer.body.trim().parse().expect("an id"))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), posts.len(), "every insert got an id of its own");
    let last_post = request(addr, "POST", "/notes", "the last one, with spaces");
    assert_eq!(last_post.status, 201, "{last_post:?}");
    let last: i32 = last_post.body.trim().parse().unwrap();
    assert!(
        ids.iter().all(|id| *id < last),
        "ids grow: {ids:?} then {last}"
    );

    // Reads, from both workers: every note, in order.
    let mut expected = "a note\n".repeat(posts.len());
    expected.push_str("the last one, with spaces\n");
    until_each_answers(addr, &workers, ("GET", "/notes", ""), |answer| {
        assert_eq!(answer.status, 200, "GET /notes: {answer:?}");
        assert_eq!(answer.body, expected, "GET /notes from {}", answer.worker);
    });
    assert_eq!(
        db.psql("SELECT count(*) FROM notes"),
        (posts.len() + 1).to_string(),
        "the rows are in the database"
    );
    let health = request(addr, "GET", "/healthz", "");
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));

    app.signal(Signal::SIGTERM);
    assert_eq!(app.wait_exit(), 0, "{}", app.log.join("\n"));
}

#[test]
fn no_database_at_the_first_start_exits_1_saying_why() {
    let mut db = Postgres::start();
    // Its socket directory is there, with no server behind it.
    db.stop();
    let began = Instant::now();
    let mut app = Drover::spawn(app_command(
        &db,
        free_addr(),
        &["-w", "2", "--boot-timeout", "10"],
    ));
    let code = app.wait_exit();
    let took = began.elapsed();
    let log = app.log.join("\n");
    assert_eq!(code, 1, "{log}");
    assert!(
        took < Duration::from_secs(10),
        "exited after {took:?}, past the boot timeout"
    );
    let failure = app
        .log
        .iter()
        .find(|line| line.contains("failed to boot: "))
        .unwrap_or_else(|| panic!("no boot failure on stderr:\n{log}"));
    assert!(
        failure.contains("connecting to the database")
            && failure.contains("error connecting to server"),
        "the boot failure names neither the context nor the cause: {failure}"
    );
    assert!(
        failure.contains("No such file or directory") || failure.contains("Connection refused"),
        "the boot failure does not say why the connection failed: {failure}"
    );
    assert!(app.events(events::WORKER_READY).is_empty(), "{log}");
}

#[test]
fn a_restart_stops_while_the_database_is_down_and_completes_once_it_is_back() {
    let mut db = Postgres::start();
    let (mut app, addr) = start_app(&db, &["-w", "2", "--boot-timeout", "10"]);
    let old_ids = ready_worker_ids(&app);
    let before = distinct_pids(addr, 2);
    assert_eq!(before, app.worker_pids());

    db.stop();
    // Every worker's pool finds its connections broken and cannot open
    // new ones: 503, naming the connection error.
    until_each_answers(addr, &before, ("GET", "/healthz", ""), |answer| {
        assert_eq!(
            answer.status, 503,
            "/healthz with the database down: {answer:?}"
        );
        assert!(
            answer.body.contains("error connecting to server"),
            "/healthz's 503 does not say why: {answer:?}"
        );
    });

    // A new worker cannot boot: the restart stops at it.
    let since = app.log.len();
    app.signal(Signal::SIGHUP);
    let stopped = app.wait_for_event_since(since, events::RESTART_STOPPED, |_| true);
    assert!(
        stopped.line.contains("connecting to the database"),
        "the restart stopped, but not for the database: {}",
        stopped.line
    );
    let failed = app.wait_for_event_since(since, events::BOOT_FAILED, |_| true);
    let reason = failed.text("reason").unwrap_or_default();
    assert!(
        reason.contains("connecting to the database")
            && reason.contains("error connecting to server"),
        "the new worker's boot failure does not name the database error: {}",
        failed.line
    );
    assert_eq!(app.worker_pids(), before, "the old workers are untouched");
    assert_eq!(distinct_pids(addr, 2), before, "and answer");
    let answer = request(addr, "GET", "/healthz", "");
    assert_eq!(answer.status, 503, "the database is still down: {answer:?}");

    // Back: the old workers' pools reconnect, no restart needed.
    db.start_again();
    until_each_answers(addr, &before, ("GET", "/healthz", ""), |answer| {
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (200, "ok"),
            "/healthz once the database is back: {answer:?}"
        );
    });
    until_each_answers(addr, &before, ("GET", "/notes", ""), |answer| {
        assert_eq!(
            answer.status, 200,
            "GET /notes once the database is back: {answer:?}"
        );
    });

    // And the next restart goes through.
    let after = app.restart(&old_ids);
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(
        after.is_disjoint(&before),
        "new workers: {before:?} then {after:?}"
    );
    assert_eq!(distinct_pids(addr, 2), after);
    until_each_answers(addr, &after, ("GET", "/healthz", ""), |answer| {
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (200, "ok"),
            "{answer:?}"
        );
    });

    app.signal(Signal::SIGTERM);
    assert_eq!(app.wait_exit(), 0, "{}", app.log.join("\n"));
}

#[test]
fn each_worker_has_its_own_pool_and_the_supervisor_none() {
    let db = Postgres::start();
    let (mut app, addr) = start_app(&db, &["-w", "2", "--pool-size", "3"]);
    let workers = distinct_pids(addr, 2);
    assert_eq!(workers, app.worker_pids());
    // Warm both pools: concurrent requests, to each worker.
    until_each_answers(addr, &workers, ("POST", "/notes", "warm"), |answer| {
        assert_eq!(answer.status, 201, "{answer:?}");
    });
    until_each_answers(addr, &workers, ("GET", "/notes", ""), |answer| {
        assert_eq!(answer.status, 200, "{answer:?}");
    });

    let rows = db.psql(
        "SELECT application_name, count(*) FROM pg_stat_activity \
         WHERE application_name LIKE 'drover-example-%' GROUP BY 1 ORDER BY 1",
    );
    let connections: BTreeMap<String, usize> = rows
        .lines()
        .map(|row| {
            let (name, count) = row.split_once('|').expect("name|count");
            (name.to_owned(), count.parse().expect("a count"))
        })
        .collect();
    let names: HashSet<String> = connections.keys().cloned().collect();
    let expected: HashSet<String> = workers
        .iter()
        .map(|pid| format!("drover-example-{pid}"))
        .collect();
    assert_eq!(
        names,
        expected,
        "one application_name per worker pid ({workers:?}, supervisor {}): {connections:?}",
        app.pid()
    );
    assert!(
        !connections.contains_key(&format!("drover-example-{}", app.pid())),
        "the supervisor connected: {connections:?}"
    );
    for (name, count) in &connections {
        assert!(
            (1..=3).contains(count),
            "{name} holds {count} connections, with --pool-size 3"
        );
    }

    app.signal(Signal::SIGTERM);
    assert_eq!(app.wait_exit(), 0, "{}", app.log.join("\n"));
}
