//! Signals as operators and tools send them: to the whole process group
//! (`pkill`, `systemctl kill`, a Ctrl-C), several at once (`timeout`
//! signals the process and its group), or quickly repeated.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::Command;

use drover_tests::events;
use drover_tests::{distinct_pids, drover_bin, free_addr, Drover, WAIT};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// drover with `args`, alone in a new process group (its pid is the
/// group's id), ready.
fn in_own_group(args: &[&str]) -> Drover {
    let mut command = Command::new(drover_bin());
    command.args(args).process_group(0);
    let mut drover = Drover::spawn(command);
    drover.wait_for_event(events::READY);
    drover
}

/// `signal` to every process of drover's group: the supervisor and its
/// workers.
fn to_group(drover: &Drover, signal: Signal) {
    kill(Pid::from_raw(-drover.pid()), signal).unwrap();
}

/// A request for `/sleep?ms=..` that a worker has read off the socket.
fn in_flight(addr: SocketAddr, ms: u64) -> TcpStream {
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(WAIT)).unwrap();
    write!(slow, "GET /sleep?ms={ms} HTTP/1.1\r\nhost: t\r\n\r\n").unwrap();
    drover_tests::wait_until_server_read(&slow);
    slow
}

/// The worker exits so far that were not clean ones.
fn unclean_exits(drover: &Drover) -> Vec<String> {
    [
        events::WORKER_LEFT,
        events::WORKER_STOPPED,
        events::WORKER_DIED,
    ]
    .iter()
    .flat_map(|name| drover.events(name))
    .filter(|e| e.text("exited").as_deref() != Some("exit code 0"))
    .map(|e| e.line)
    .collect()
}

/// A mask of process `pid`'s from /proc (`SigIgn`, `SigCgt`, `ShdPnd`).
fn signal_mask(pid: i32, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
}

fn bit(signal: Signal) -> u64 {
    1u64 << (signal as i32 - 1)
}

#[test]
fn signals_to_the_whole_group_are_the_supervisors_alone() {
    let addr = free_addr();
    let mut drover = in_own_group(&["-w", "2", "-b", &addr.to_string()]);
    // Caught by a handler that does nothing, not ignored: the worker's own
    // subprocesses start with the default dispositions.
    for worker in drover.worker_pids() {
        for signal in [
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGQUIT,
            Signal::SIGHUP,
            Signal::SIGUSR2,
            Signal::SIGTTIN,
            Signal::SIGTTOU,
        ] {
            assert_eq!(
                signal_mask(worker, "SigIgn") & bit(signal),
                0,
                "{signal} ignored in {worker}"
            );
            assert_ne!(
                signal_mask(worker, "SigCgt") & bit(signal),
                0,
                "{signal} not caught in {worker}"
            );
        }
    }

    let since = drover.log.len();
    to_group(&drover, Signal::SIGHUP);
    drover.wait_for_event_since(since, events::RESTART_COMPLETE, |_| true);
    for old in [1, 2] {
        drover.wait_for_event_since(since, events::WORKER_LEFT, |e| e.is_of_worker(old));
    }
    assert_eq!(
        drover.events(events::RESTART_BEGUN).len(),
        1,
        "one HUP, one restart"
    );

    to_group(&drover, Signal::SIGTTIN);
    drover.wait_for_event_where(events::SCALED, |e| e.number("workers") == 3);
    drover.wait_for_worker_event(events::WORKER_READY, 5);
    // A worker stopped by TTIN (its default) would not answer.
    assert_eq!(distinct_pids(addr, 3), drover.worker_pids());
    to_group(&drover, Signal::SIGTTOU);
    drover.wait_for_event_where(events::SCALED, |e| e.number("workers") == 2);
    drover.wait_for_worker_event(events::WORKER_LEFT, 5);
    assert_eq!(distinct_pids(addr, 2), drover.worker_pids());
    assert_eq!(drover.events(events::SCALED).len(), 2);
    assert!(
        unclean_exits(&drover).is_empty(),
        "{:#?}",
        unclean_exits(&drover)
    );

    // QUIT: the supervisor kills its workers (they do not dump core).
    to_group(&drover, Signal::SIGQUIT);
    assert_eq!(drover.wait_exit(), 1, "a stop that cut running workers");
    let stopped = drover.events(events::WORKER_STOPPED);
    assert_eq!(stopped.len(), 2);
    for event in stopped {
        assert_eq!(
            event.text("exited").as_deref(),
            Some("signal SIGKILL"),
            "{}",
            event.line
        );
    }
    assert_eq!(drover.events(events::STOPPING_NOW).len(), 1);
}

#[test]
fn usr2_to_the_whole_group_upgrades_once_and_the_old_workers_drain() {
    let addr = free_addr();
    let mut old = in_own_group(&["-w", "2", "-b", &addr.to_string()]);
    to_group(&old, Signal::SIGUSR2);
    let new_pid = old.wait_for_successor();
    let _guard = drover_tests::KillOnDrop(new_pid);
    old.wait_for_event(events::UPGRADE_COMPLETE);
    assert_eq!(old.wait_exit_keeping_log(), 0);
    assert_eq!(old.events(events::UPGRADE_BEGUN).len(), 1);
    let stopped = old.events(events::WORKER_STOPPED);
    assert_eq!(stopped.len(), 2, "{:#?}", old.log);
    assert!(unclean_exits(&old).is_empty(), "{:#?}", unclean_exits(&old));
    assert_eq!(distinct_pids(addr, 2), drover_tests::children(new_pid));
}

/// Waits until `signal` is no longer pending for process `pid` (its
/// handler has run), by the kernel's own account: /proc's ShdPnd mask.
fn wait_until_delivered(pid: i32, signal: Signal) {
    let deadline = std::time::Instant::now() + WAIT;
    while signal_mask(pid, "ShdPnd") & bit(signal) != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{signal} never delivered"
        );
        std::thread::yield_now();
    }
}

#[test]
fn three_ttins_sent_quickly_add_three_workers() {
    let addr = free_addr();
    let mut drover = Drover::start(&["-w", "1", "-b", &addr.to_string()]);
    // The kernel keeps one of a kind pending: each is sent once the last
    // has reached the supervisor's handler (not once it was acted on).
    for _ in 0..3 {
        drover.signal(Signal::SIGTTIN);
        wait_until_delivered(drover.pid(), Signal::SIGTTIN);
    }
    let since = drover.log.len();
    drover.wait_for_event_where(events::SCALED, |e| e.number("workers") == 4);
    // They get ready in any order.
    for id in [2, 3, 4] {
        drover.wait_for_event_since(since, events::WORKER_READY, |e| e.is_of_worker(id));
    }
    assert_eq!(drover.worker_pids().len(), 4);
    assert_eq!(distinct_pids(addr, 4), drover.worker_pids());
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn term_to_the_process_and_its_group_at_once_is_one_graceful_stop() {
    let addr = free_addr();
    let mut drover = in_own_group(&["-w", "2", "-b", &addr.to_string()]);
    let mut slow = in_flight(addr, 1500);
    // What GNU `timeout` does. (The kernel merges a second TERM sent while
    // the first is pending: the second goes once the first was delivered.)
    drover.signal(Signal::SIGTERM);
    wait_until_delivered(drover.pid(), Signal::SIGTERM);
    to_group(&drover, Signal::SIGTERM);
    let mut answer = String::new();
    slow.read_to_string(&mut answer).unwrap();
    assert_eq!(
        drover_tests::parse(&answer).unwrap(),
        (200, "slept 1500 ms\n".into()),
        "the request in flight completes"
    );
    assert_eq!(drover.wait_exit(), 0);
    assert!(
        drover.events(events::STOPPING_NOW).is_empty(),
        "{:#?}",
        drover.log
    );
    assert_eq!(
        drover.events(events::STOP_REPEATED).len(),
        1,
        "{:#?}",
        drover.log
    );
}

#[test]
fn a_second_term_a_second_later_stops_at_once_and_exits_1() {
    let addr = free_addr();
    let mut drover = Drover::start(&["-w", "1", "-b", &addr.to_string()]);
    let mut slow = in_flight(addr, 20_000);
    drover.signal(Signal::SIGTERM);
    drover.wait_for_event(events::STOPPING);
    // The rule under test is about time: a second stop signal counts as
    // "stop now" only 1 s (SAME_STOP) after the first.
    std::thread::sleep(std::time::Duration::from_millis(1100)); // sleep-ok: the 1 s rule itself
    drover.signal(Signal::SIGTERM);
    drover.wait_for_event(events::STOPPING_NOW);
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.is_empty(), "the slow request was cut: {answer:?}");
    assert_eq!(drover.wait_exit(), 1);
}

#[test]
fn a_boot_timeout_of_zero_means_no_boot_deadline() {
    let addr = free_addr();
    let mut drover = Drover::start(&["-w", "2", "--boot-timeout", "0", "-b", &addr.to_string()]);
    assert_eq!(distinct_pids(addr, 2), drover.worker_pids());
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn a_header_read_timeout_of_zero_means_no_limit() {
    let addr = free_addr();
    let mut drover = Drover::start(&[
        "-w",
        "1",
        "--header-read-timeout",
        "0",
        "-b",
        &addr.to_string(),
    ]);
    // A request head written in two parts, the second once the server has
    // read the first: a zero deadline would have cut it.
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    std::io::Write::write_all(&mut client, b"GET / HTTP/1.1\r\nhost: t\r\n").unwrap();
    drover_tests::wait_until_server_read(&client);
    std::io::Write::write_all(&mut client, b"connection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut client, &mut answer).unwrap();
    assert_eq!(
        drover_tests::parse(&answer).unwrap(),
        (200, "hello\n".into())
    );
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn a_straggler_killed_at_the_graceful_timeout_makes_the_exit_code_1() {
    let addr = free_addr();
    let mut drover = Drover::start(&[
        "-w",
        "1",
        "--graceful-timeout",
        "1",
        "--worker-timeout",
        "0",
        "-b",
        &addr.to_string(),
    ]);
    // A handler that blocks its runtime: the worker cannot close by itself.
    let mut blocking = TcpStream::connect(addr).unwrap();
    write!(blocking, "GET /block?ms=30000 HTTP/1.1\r\nhost: t\r\n\r\n").unwrap();
    drover_tests::wait_until_server_read(&blocking);
    drover.signal(Signal::SIGTERM);
    let killed = drover.wait_for_event(events::WORKER_KILLED);
    assert!(killed.line.contains("graceful timeout"), "{}", killed.line);
    assert_eq!(drover.wait_exit(), 1);
}
