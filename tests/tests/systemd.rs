//! drover under systemd's protocols: socket activation by the real
//! `systemd-socket-activate` (TCP and Unix sockets, named), through HUP
//! and USR2, and what systemd hears on NOTIFY_SOCKET.

use std::collections::HashSet;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;

use drover_shared::env;
use drover_tests::events;
use drover_tests::{
    children, distinct_pids, drover_bin, free_addr, get, read_pid, test_dir, unix_get, Drover,
    KillOnDrop, WAIT,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The NOTIFY_SOCKET a test listens on, as systemd would.
struct Systemd(UnixDatagram);

impl Systemd {
    fn bind(path: &Path) -> Self {
        let socket = UnixDatagram::bind(path).unwrap();
        socket.set_read_timeout(Some(WAIT)).unwrap();
        Self(socket)
    }

    /// The next notification, as its lines.
    fn next(&self) -> Vec<String> {
        let mut buf = [0u8; 4096];
        let len = self.0.recv(&mut buf).expect("a message on NOTIFY_SOCKET");
        String::from_utf8_lossy(&buf[..len])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The next notification that is not a watchdog ping.
    fn next_state(&self) -> Vec<String> {
        loop {
            let message = self.next();
            if message != ["WATCHDOG=1"] {
                return message;
            }
        }
    }
}

/// The sockets (kernel inodes) at descriptors 3 and 4 of `pid`.
fn inherited_sockets(pid: i32) -> Vec<String> {
    (3..5)
        .map(|fd| {
            std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// `LISTEN_FDNAMES` as worker `pid` got it.
fn fd_names(pid: i32) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    environ
        .split(|b| *b == 0)
        .filter_map(|var| std::str::from_utf8(var).ok())
        .find_map(|var| var.strip_prefix("LISTEN_FDNAMES=").map(str::to_owned))
}

fn has(message: &[String], line: &str) -> bool {
    message.iter().any(|l| l == line)
}

#[test]
fn socket_activated_sockets_survive_hup_and_usr2_and_systemd_hears_each_step() {
    let dir = test_dir("activate");
    let web = free_addr();
    let admin = dir.join("admin.sock");
    let notify = dir.join("notify.sock");
    let pid_file = dir.join("drover.pid");
    let systemd = Systemd::bind(&notify);
    let mut command = Command::new("systemd-socket-activate");
    command
        .arg(format!("--listen={web}"))
        .arg(format!("--listen={}", admin.display()))
        .arg("--fdname=web:admin")
        .arg(format!("--setenv=NOTIFY_SOCKET={}", notify.display()))
        .arg("--setenv=DROVER_LOG_FORMAT=json")
        .arg(drover_bin())
        .args(["-w", "2", "-b", "127.0.0.1:1"])
        .arg("--pid-file")
        .arg(&pid_file);
    let mut drover = Drover::spawn(command);
    drover.wait_for_line("Listening on");
    // The first connection makes systemd-socket-activate exec drover.
    assert_eq!(get(web, "/").unwrap(), (200, "hello\n".into()));
    assert_eq!(drover.wait_for_event(events::READY).number("workers"), 2);
    let ready = systemd.next_state();
    assert!(has(&ready, "READY=1"), "{ready:?}");
    let sockets = inherited_sockets(drover.pid());
    assert_eq!(unix_get(&admin, "/").0, 200);
    for worker in drover.worker_pids() {
        assert_eq!(fd_names(worker).as_deref(), Some("web:admin"));
    }

    // HUP: RELOADING with the time, new workers, READY again.
    let before = drover.worker_pids();
    drover.signal(Signal::SIGHUP);
    let reloading = systemd.next_state();
    assert!(has(&reloading, "RELOADING=1"), "{reloading:?}");
    assert!(
        reloading.iter().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading:?}"
    );
    let ready = systemd.next_state();
    assert!(has(&ready, "READY=1"), "{ready:?}");
    drover.wait_for_event_since(0, events::RESTART_COMPLETE, |_| true);
    for worker in [1, 2] {
        drover.wait_for_event_since(0, events::WORKER_LEFT, |e| e.is_of_worker(worker));
    }
    let after = drover.worker_pids();
    assert!(after.is_disjoint(&before));
    assert_eq!(distinct_pids(web, 2), after);
    assert_eq!(unix_get(&admin, "/").0, 200);
    assert_eq!(inherited_sockets(drover.pid()), sockets, "the same sockets");

    // USR2: the new supervisor tells systemd its pid, then READY.
    drover.signal(Signal::SIGUSR2);
    drover.wait_for_event(events::UPGRADE_COMPLETE);
    let new_pid = read_pid(&pid_file);
    let _guard = KillOnDrop(new_pid);
    let main_pid = systemd.next_state();
    assert!(
        has(&main_pid, &format!("MAINPID={new_pid}")),
        "{main_pid:?}"
    );
    assert!(has(&main_pid, "READY=1"), "{main_pid:?}");
    assert_eq!(drover.wait_exit_keeping_log(), 0);
    assert_eq!(inherited_sockets(new_pid), sockets, "the same sockets");
    let workers = children(new_pid);
    assert_eq!(distinct_pids(web, 2), workers);
    assert_eq!(unix_get(&admin, "/").0, 200);
    for worker in workers {
        assert_eq!(fd_names(worker).as_deref(), Some("web:admin"));
    }

    // TERM: STOPPING; the socket file is systemd's, never drover's to remove.
    kill(Pid::from_raw(new_pid), Signal::SIGTERM).unwrap();
    let stopping = systemd.next_state();
    assert!(has(&stopping, "STOPPING=1"), "{stopping:?}");
    drover.wait_for_stopped(new_pid);
    drover.read_to_end();
    assert!(admin.exists(), "drover removed a socket file it inherited");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_watchdog_is_pinged_while_watchdog_usec_is_set() {
    let dir = test_dir("watchdog");
    let notify = dir.join("notify.sock");
    let systemd = Systemd::bind(&notify);
    let addr = free_addr();
    let mut command = Command::new(drover_bin());
    command
        .args(["-w", "1", "-b", &addr.to_string()])
        .env(env::NOTIFY_SOCKET, &notify)
        .env(env::WATCHDOG_USEC, "200000");
    let mut drover = Drover::spawn(command);
    assert_eq!(drover.wait_for_event(events::READY).number("workers"), 1);
    let mut seen = HashSet::new();
    let mut pings = 0;
    while pings < 3 || !seen.contains("READY=1") {
        let message = systemd.next();
        if message == ["WATCHDOG=1"] {
            pings += 1;
        }
        seen.extend(message);
    }
    // The workers are not the service: they do not get the variables.
    let worker = *drover.worker_pids().iter().next().unwrap();
    let environ = std::fs::read(format!("/proc/{worker}/environ")).unwrap();
    assert!(!String::from_utf8_lossy(&environ).contains("WATCHDOG_USEC"));
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
