//! Faults injected into a running drover, and what survives them: killed
//! workers under load, a blocked runtime, a crash loop, running out of
//! descriptors. (A killed supervisor: fleet.rs.) `scripts/faults.sh` runs
//! the kill matrix with wrk.

use std::collections::HashSet;
use std::net::TcpStream;
use std::process::Command;

use drover_shared::env;
use drover_tests::events;
use drover_tests::load::Load;
use drover_tests::{distinct_pids, drover_bin, free_addr, get, test_dir, Drover, Event};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Whether process `pid` is a zombie (exited, not reaped).
fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_owned();
            Some(state == "Z")
        })
        .unwrap_or(false)
}

#[test]
fn workers_killed_again_and_again_under_load_are_each_replaced() {
    let addr = free_addr();
    let mut drover = Drover::start(&["-w", "2", "-b", &addr.to_string()]);
    let load = Load::start(addr, 16, 4);
    load.wait_for(500);
    let mut killed = HashSet::new();
    for round in 0..10 {
        let workers = drover.worker_pids();
        assert_eq!(workers.len(), 2, "round {round}: {workers:?}");
        assert!(
            workers.iter().all(|w| !is_zombie(*w)),
            "round {round}: a zombie among {workers:?}"
        );
        // Each worker in turn.
        let mut sorted: Vec<i32> = workers.into_iter().collect();
        sorted.sort_unstable();
        let victim = sorted[round % 2];
        kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
        killed.insert(victim);
        drover.wait_for_event_where(events::WORKER_DIED, |e| {
            e.number("pid") == i64::from(victim)
                && e.text("exited").as_deref() == Some("signal SIGKILL")
        });
        drover.wait_for_event(events::WORKER_READY);
        load.wait_for(300);
    }
    let report = load.stop();

    // What failed was in flight on a killed worker: a lost connection,
    // at most one request per client per kill; never a wrong answer.
    assert!(report.ok > 0, "{report:?}");
    assert!(
        report.failed <= 10 * 20,
        "{} failed: {:?}",
        report.failed,
        report.failures
    );
    assert!(
        report.failures.iter().all(|f| !f.starts_with("answer")),
        "{:?}",
        report.failures
    );
    let now = drover.worker_pids();
    assert_eq!(now.len(), 2);
    assert!(now.is_disjoint(&killed), "every killed worker replaced");
    assert!(now.iter().all(|w| !is_zombie(*w)));
    assert!(killed
        .iter()
        .all(|k| kill(Pid::from_raw(*k), None).is_err()));
    assert_eq!(distinct_pids(addr, 2), now);
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn a_handler_that_blocks_its_runtime_gets_its_worker_replaced_and_the_others_serve() {
    let addr = free_addr();
    let mut drover = Drover::start(&["-w", "2", "--worker-timeout", "3", "-b", &addr.to_string()]);
    let workers = drover.worker_pids();
    let blocked = std::thread::spawn(move || get(addr, "/block?ms=60000"));
    let killing = drover.wait_for_event_where(events::WORKER_KILLED, |e| {
        e.line.contains("missed its heartbeats")
    });
    let victim = killing.number("pid") as i32;
    assert!(workers.contains(&victim));
    // Its client loses the connection, and gets no made-up answer.
    assert!(!matches!(blocked.join().unwrap(), Ok((200, _))));
    drover.wait_for_event(events::WORKER_READY);
    let now = drover.worker_pids();
    let sibling = workers.iter().find(|w| **w != victim).unwrap();
    assert!(now.contains(sibling), "the sibling is untouched");
    assert!(!now.contains(&victim));
    assert_eq!(distinct_pids(addr, 2), now);
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

/// The `delay_ms` of a backoff event (a number of milliseconds).
fn delay_ms(event: &Event) -> f64 {
    let line = &event.line;
    event
        .text("delay_ms")
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no delay_ms number in {line}"))
}

#[test]
fn a_crash_loop_backs_off_exponentially_and_recovers_once_workers_boot_again() {
    let dir = test_dir("crash-loop");
    let marker = dir.join("broken");
    let addr = free_addr();
    let mut command = Command::new(drover_bin());
    command
        .args(["-w", "1", "-b", &addr.to_string()])
        .env(env::demo::FAIL_BOOT_IF, &marker);
    let mut drover = Drover::spawn(command);
    assert_eq!(drover.wait_for_event(events::READY).number("workers"), 1);

    // From now on every new worker fails at boot; the serving one dies.
    std::fs::write(&marker, "").unwrap();
    let worker = *drover.worker_pids().iter().next().unwrap();
    kill(Pid::from_raw(worker), Signal::SIGKILL).unwrap();
    let delays: Vec<f64> = (0..3)
        .map(|_| delay_ms(&drover.wait_for_event(events::BACKOFF)))
        .collect();
    assert!(
        delays
            .windows(2)
            .all(|pair| pair[1] >= 2.0 * pair[0] * 0.99),
        "doubling: {delays:?}"
    );

    // Fixed: the next attempt boots, and drover serves again.
    std::fs::remove_file(&marker).unwrap();
    drover.wait_for_event(events::WORKER_READY);
    assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn out_of_descriptors_a_worker_backs_off_and_serves_again_when_clients_leave() {
    let addr = free_addr();
    let mut command = Command::new("prlimit");
    command
        .arg("--nofile=40:40")
        .arg("--")
        .arg(drover_bin())
        // An explicit limit above the descriptors: by default a worker
        // keeps its connections below its descriptor limit.
        .args([
            "-w",
            "1",
            "--max-connections",
            "1000",
            "-b",
            &addr.to_string(),
        ]);
    let mut drover = Drover::spawn(command);
    assert_eq!(drover.wait_for_event(events::READY).number("workers"), 1);
    let workers = drover.worker_pids();

    // More clients than the worker has descriptors: the kernel queues
    // them, the worker's accept fails with EMFILE.
    let clients: Vec<TcpStream> = (0..80)
        .map(|_| {
            let client = TcpStream::connect(addr).unwrap();
            client.set_read_timeout(Some(drover_tests::WAIT)).unwrap();
            client
        })
        .collect();
    drover.wait_for_event(events::ACCEPT_BACKOFF);
    drop(clients);
    // The worker survived, and serves once descriptors are free again.
    assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));
    assert_eq!(drover.worker_pids(), workers);
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

/// A worker's control socket (its descriptor 4 with one listener), taken
/// from it as root may, to speak as the worker does.
fn control_of(worker: i32) -> std::os::fd::OwnedFd {
    drover_tests::steal_fd(worker, 4)
}

/// Sends one datagram, waiting (bounded) while the socket's buffer is full
/// (the descriptor is the worker's, non-blocking).
fn send_datagram(control: &std::os::fd::OwnedFd, datagram: &[u8]) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::{AsFd, AsRawFd};
    let deadline = std::time::Instant::now() + drover_tests::WAIT;
    loop {
        match nix::sys::socket::send(
            control.as_raw_fd(),
            datagram,
            nix::sys::socket::MsgFlags::empty(),
        ) {
            Ok(_) => return,
            Err(nix::errno::Errno::EAGAIN) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the supervisor never read"
                );
                let mut fds = [PollFd::new(control.as_fd(), PollFlags::POLLOUT)];
                poll(&mut fds, PollTimeout::from(1000u16)).unwrap();
            }
            Err(error) => panic!("send: {error}"),
        }
    }
}

/// The control protocol's version (`PROTOCOL_VERSION` in
/// `supervisor/src/control/protocol.rs`): a datagram of another version is
/// refused, so these hand-made ones follow it.
const PROTOCOL_VERSION: u8 = 1;

/// `Heartbeat` as the control protocol encodes it: the version, tag 2,
/// four little-endian u64 counters.
fn heartbeat_message() -> Vec<u8> {
    let mut datagram = vec![PROTOCOL_VERSION, 2];
    // requests, in flight, connections, TLS handshake failures
    datagram.extend([0u8; 32]);
    datagram
}

/// `Closed` as the control protocol encodes it: the version, tag 4, three
/// little-endian u64 counters.
fn closed_message(requests: u64) -> Vec<u8> {
    let mut datagram = vec![PROTOCOL_VERSION, 4];
    for field in [0u64, 0, requests] {
        datagram.extend(field.to_le_bytes());
    }
    datagram
}

#[test]
fn garbage_a_worker_sent_before_it_was_reaped_signals_nobody() {
    let addr = free_addr();
    let mut drover = Drover::start(&["-w", "2", "-b", &addr.to_string()]);
    let victim = *drover.worker_pids().iter().next().unwrap();
    let control = control_of(victim);
    // The supervisor must meet the garbage only once it has reaped the
    // worker. It is stopped while the worker speaks and dies; when it goes
    // on, it reads its loop turn's share of the messages (64), then the
    // next turn handles SIGCHLD first, and reads the rest (the garbage) as
    // the reaped worker's last words.
    drover.signal(Signal::SIGSTOP);
    for _ in 0..64 {
        send_datagram(&control, &heartbeat_message());
    }
    send_datagram(&control, b"\x07garbage");
    drop(control);
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    let deadline = std::time::Instant::now() + drover_tests::WAIT;
    while !is_zombie(victim) {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never died"
        );
        std::thread::yield_now();
    }
    drover.signal(Signal::SIGCONT);
    drover.wait_for_event_where(events::WORKER_DIED, |e| {
        e.number("pid") == i64::from(victim)
    });
    drover.wait_for_worker_event(events::WORKER_READY, 3);
    // Read as its last words, the garbage is logged, and no kill is aimed
    // at a pid that may belong to another process by now.
    assert!(
        drover.log.iter().any(|l| l.contains("before it exited")),
        "{:#?}",
        drover.log
    );
    assert!(
        drover.events(events::WORKER_KILLED).is_empty(),
        "{:#?}",
        drover.log
    );
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn a_worker_flooding_its_control_socket_cannot_flood_the_log() {
    let addr = free_addr();
    let mut drover = Drover::start(&["-w", "1", "-b", &addr.to_string()]);
    let worker = *drover.worker_pids().iter().next().unwrap();
    let control = control_of(worker);
    for requests in 0..500 {
        send_datagram(&control, &closed_message(requests));
    }
    // Read in order: once the garbage after them is acted on, all 500 were.
    send_datagram(&control, b"\x07garbage");
    drover.wait_for_event(events::WORKER_KILLED);
    let logged = drover.events(events::WORKER_CLOSED).len();
    assert!(
        (1..=20).contains(&logged),
        "{logged} lines for 500 messages"
    );
    drover.wait_for_worker_event(events::WORKER_READY, 2);
    assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn a_boot_failure_reason_is_quoted_on_one_line() {
    let mut command = Command::new(drover_bin());
    command
        .args(["-w", "1", "-b", &free_addr().to_string()])
        .env(env::demo::FAIL_BOOT, "first line\n\x1b[31mforged: all good");
    let mut drover = Drover::spawn(command);
    assert_eq!(drover.wait_exit(), 1);
    let line = drover
        .log
        .iter()
        .find(|l| l.starts_with("drover: worker"))
        .unwrap_or_else(|| panic!("{:#?}", drover.log));
    assert!(
        line.contains(r#"first line\n\u{1b}[31mforged: all good""#),
        "{line}"
    );
}

#[test]
fn a_worker_whose_supervisor_died_exits_despite_a_blocking_task() {
    let addr = free_addr();
    let mut drover = Drover::start(&["-w", "1", "-b", &addr.to_string()]);
    let (status, _) = get(addr, "/background?ms=600000").unwrap();
    assert_eq!(status, 200);
    drover.signal(Signal::SIGKILL);
    // The worker holds the log pipe: it closes when the worker has exited,
    // well before the blocking task would end.
    drover.read_to_end();
    assert!(
        !drover.events(events::SUPERVISOR_GONE).is_empty(),
        "{:#?}",
        drover.log
    );
}
