//! Replacing workers while drover serves: HUP (rolling restart, deploys),
//! TTIN/TTOU, `--max-requests`, and what a keep-alive client of a worker
//! being replaced sees.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use drover_shared::env;
use drover_tests::events;
use drover_tests::{
    deploy, deploy_broken, deployable, distinct_pids, drover_bin, example_bin, free_addr, get,
    keep_alive_request, parse, test_dir, Drover, WAIT,
};
use nix::sys::signal::Signal;

/// A drover run from a copy of its binary in `dir`, so that the test can
/// deploy other builds over it.
fn start_deployable(dir: &std::path::Path, args: &[&str]) -> (Drover, std::path::PathBuf) {
    let (mut command, binary) = deployable(dir);
    command.args(args);
    let mut drover = Drover::spawn(command);
    drover.wait_for_event(events::READY);
    (drover, binary)
}

#[test]
fn hup_replaces_every_worker_with_the_binary_now_on_disk() {
    let dir = test_dir("hup-deploy");
    let addr = free_addr();
    let (mut drover, binary) = start_deployable(&dir, &["-w", "2", "-b", &addr.to_string()]);
    let before = distinct_pids(addr, 2);
    assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));

    // The new build: a user's own app, which answers / differently.
    deploy(example_bin("axum"), &binary);
    let after = drover.restart(&[1, 2]);

    assert_eq!(after.len(), 2, "two workers, no more: {after:?}");
    assert!(
        after.is_disjoint(&before),
        "every worker replaced: {before:?} → {after:?}"
    );
    assert_eq!(distinct_pids(addr, 2), after);
    assert_eq!(
        get(addr, "/").unwrap(),
        (200, "hello from my axum app\n".into()),
        "the new workers run the new build"
    );
    // One at a time: each old worker closed only after its replacement was ready.
    let log = drover.log.join("\n");
    let ready_3 = drover.position_of(events::WORKER_READY, 3).unwrap();
    let closed_1 = drover.position_of(events::WORKER_CLOSING, 1).unwrap();
    let started_4 = drover.position_of(events::WORKER_STARTED, 4).unwrap();
    assert!(ready_3 < closed_1 && closed_1 < started_4, "{log}");

    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hup_follows_a_release_symlink_swapped_to_a_new_build() {
    let dir = test_dir("hup-symlink");
    std::fs::create_dir_all(dir.join("releases")).unwrap();
    let (first, second) = (dir.join("releases/1"), dir.join("releases/2"));
    deploy(drover_bin(), &first);
    deploy(example_bin("axum"), &second);
    let current = dir.join("current");
    std::os::unix::fs::symlink(&first, &current).unwrap();
    let addr = free_addr();
    let mut command = Command::new(&current);
    command.args(["-w", "1", "-b", &addr.to_string()]);
    let mut drover = Drover::spawn(command);
    assert_eq!(drover.wait_for_event(events::READY).number("workers"), 1);
    assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));

    // The deploy: `current` now points at the second release.
    let staged = dir.join("current.staged");
    std::os::unix::fs::symlink(&second, &staged).unwrap();
    std::fs::rename(&staged, &current).unwrap();
    drover.restart(&[1]);
    assert_eq!(
        get(addr, "/").unwrap(),
        (200, "hello from my axum app\n".into())
    );
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_broken_deploy_stops_the_restart_and_the_old_workers_keep_serving() {
    let dir = test_dir("hup-broken");
    let addr = free_addr();
    let (mut drover, binary) = start_deployable(&dir, &["-w", "2", "-b", &addr.to_string()]);
    let before = drover.worker_pids();

    deploy_broken(&binary);
    drover.signal(Signal::SIGHUP);
    let stopped = drover.wait_for_event(events::RESTART_STOPPED);
    assert!(stopped.line.contains("exit code 3"), "{}", stopped.line);
    assert_eq!(
        drover.worker_pids(),
        before,
        "the old workers are untouched"
    );
    assert_eq!(distinct_pids(addr, 2), before, "and serve");

    // Fixed: the next HUP goes through.
    deploy(drover_bin(), &binary);
    let after = drover.restart(&[1, 2]);
    assert_eq!(after.len(), 2);
    assert!(after.is_disjoint(&before));
    assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));

    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_restart_stops_at_a_new_worker_that_reports_a_failure_or_never_gets_ready() {
    let dir = test_dir("hup-fail");
    let addr = free_addr();
    let fail = dir.join("fail");
    let hang = dir.join("hang");
    let mut command = Command::new(drover_bin());
    command
        .args(["-w", "2", "--boot-timeout", "3", "-b", &addr.to_string()])
        .env(env::demo::FAIL_BOOT_IF, &fail)
        .env(env::demo::HANG_BOOT_IF, &hang);
    let mut drover = Drover::spawn(command);
    assert_eq!(drover.wait_for_event(events::READY).number("workers"), 2);
    let before = drover.worker_pids();

    // BootFailed: the worker reports why before it exits.
    std::fs::write(&fail, "").unwrap();
    drover.signal(Signal::SIGHUP);
    let stopped = drover.wait_for_event(events::RESTART_STOPPED);
    assert!(
        stopped.line.contains("panicked while starting"),
        "{}",
        stopped.line
    );
    assert_eq!(drover.worker_pids(), before);
    std::fs::remove_file(&fail).unwrap();

    // Not ready within --boot-timeout: killed, and the restart stops.
    std::fs::write(&hang, "").unwrap();
    drover.signal(Signal::SIGHUP);
    let stopped = drover.wait_for_event(events::RESTART_STOPPED);
    assert!(stopped.line.contains("--boot-timeout"), "{}", stopped.line);
    assert_eq!(drover.worker_pids(), before, "{}", drover.log.join("\n"));
    assert_eq!(distinct_pids(addr, 2), before, "the old workers serve on");

    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hup_in_fork_mode_replaces_every_worker() {
    let addr = free_addr();
    let mut drover = Drover::start(&["-w", "2", "--spawn", "fork", "-b", &addr.to_string()]);
    let before = drover.worker_pids();
    let after = drover.restart(&[1, 2]);
    assert_eq!(after.len(), 2);
    assert!(after.is_disjoint(&before));
    assert_eq!(distinct_pids(addr, 2), after);
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn ttin_adds_a_worker_and_ttou_closes_the_highest_index_never_below_one() {
    let addr = free_addr();
    let mut drover = Drover::start(&["-w", "1", "-b", &addr.to_string()]);
    let first = drover.worker_pids();

    drover.signal(Signal::SIGTTIN);
    drover.wait_for_worker_event(events::WORKER_READY, 2);
    let two = drover.worker_pids();
    assert_eq!(two.len(), 2);
    assert_eq!(distinct_pids(addr, 2), two);

    drover.signal(Signal::SIGTTOU);
    let closing = drover.wait_for_event(events::WORKER_CLOSING);
    assert!(
        closing.is_of_worker(2),
        "the highest index (the newest here) goes: {closing:?}"
    );
    drover.wait_for_worker_event(events::WORKER_LEFT, 2);
    assert_eq!(drover.worker_pids(), first);

    drover.signal(Signal::SIGTTOU);
    drover.wait_for_line("TTOU ignored");
    assert_eq!(drover.worker_pids(), first);
    assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));

    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn max_requests_recycles_a_worker_after_its_replacement_is_ready() {
    let addr = free_addr();
    let mut drover = Drover::start(&[
        "-w",
        "1",
        "--max-requests",
        "5",
        "--max-requests-jitter",
        "3",
        "-b",
        &addr.to_string(),
    ]);
    let first = drover.worker_pids();
    // The quota is 5 to 5 + 3 requests, and no replacement exists before
    // the first worker has served it: 8 requests one after another reach it.
    for _ in 0..8 {
        assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));
    }
    let quota = drover.wait_for_event(events::QUOTA_REACHED);
    let requests = quota.number("requests");
    assert!((5..=8).contains(&requests), "{quota:?}");

    for (event, worker) in [
        (events::WORKER_READY, 2),
        (events::WORKER_CLOSING, 1),
        (events::WORKER_LEFT, 1),
    ] {
        drover.wait_for_event_since(0, event, |e| e.is_of_worker(worker));
    }
    let second = drover.worker_pids();
    assert_eq!(second.len(), 1);
    assert!(second.is_disjoint(&first));
    assert_eq!(distinct_pids(addr, 1), second);

    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn a_recycling_whose_replacement_fails_is_tried_again_until_one_boots() {
    let dir = test_dir("recycle-retry");
    let marker = dir.join("broken");
    let addr = free_addr();
    let mut command = Command::new(drover_bin());
    command
        .args(["-w", "1", "--max-requests", "2", "-b", &addr.to_string()])
        .env(env::demo::FAIL_BOOT_IF, &marker);
    let mut drover = Drover::spawn(command);
    assert_eq!(drover.wait_for_event(events::READY).number("workers"), 1);
    let first = drover.worker_pids();

    // New workers fail from now on; the quota is reached.
    std::fs::write(&marker, "").unwrap();
    for _ in 0..2 {
        assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));
    }
    for _ in 0..2 {
        drover.wait_for_line("recycling: trying another replacement later");
    }
    assert_eq!(
        get(addr, "/").unwrap(),
        (200, "hello\n".into()),
        "it serves on"
    );

    // Fixed: the next try boots, and the worker is replaced.
    std::fs::remove_file(&marker).unwrap();
    drover.wait_for_worker_event(events::WORKER_CLOSING, 1);
    drover.wait_for_worker_event(events::WORKER_LEFT, 1);
    let now = drover.worker_pids();
    assert_eq!(now.len(), 1);
    assert!(now.is_disjoint(&first));
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_keep_alive_client_of_a_replaced_worker_is_answered_not_reset() {
    let addr = free_addr();
    let mut drover = Drover::start(&["-w", "1", "-b", &addr.to_string()]);
    let old = *drover.worker_pids().iter().next().unwrap();

    // An idle keep-alive connection, and one with a request in flight.
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.set_read_timeout(Some(WAIT)).unwrap();
    let first = keep_alive_request(&mut idle, "/pid");
    assert!(
        !first.to_ascii_lowercase().contains("connection: close"),
        "{first}"
    );
    let mut busy = TcpStream::connect(addr).unwrap();
    busy.set_read_timeout(Some(WAIT)).unwrap();
    // Long enough to be in flight when the close comes (the replacement
    // boots in milliseconds), whatever the machine's load.
    write!(busy, "GET /sleep?ms=2000 HTTP/1.1\r\nhost: test\r\n\r\n").unwrap();
    drover_tests::wait_until_server_read(&busy);

    drover.signal(Signal::SIGHUP);
    drover.wait_for_worker_event(events::WORKER_CLOSING, 1);

    // The request in flight gets its answer, marked as the last.
    let mut answer = String::new();
    busy.read_to_string(&mut answer).unwrap();
    assert_eq!(parse(&answer).unwrap(), (200, "slept 2000 ms\n".into()));
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );

    // The idle client's next request, sent after the close, is served by
    // the old worker and marked as the last; then the connection ends.
    let next = keep_alive_request(&mut idle, "/pid");
    assert_eq!(parse(&next).unwrap(), (200, format!("{old}\n")));
    assert!(
        next.to_ascii_lowercase().contains("connection: close"),
        "{next}"
    );
    let mut rest = Vec::new();
    assert_eq!(idle.read_to_end(&mut rest).unwrap(), 0, "then a clean end");

    drover.wait_for_worker_event(events::WORKER_LEFT, 1);
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}
