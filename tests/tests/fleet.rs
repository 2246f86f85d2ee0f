//! The supervisor against real processes, sockets and signals.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Instant;

use drover_shared::env;
use drover_tests::events;
use drover_tests::{distinct_pids, drover_bin, free_addr, get, Drover, WAIT};
use nix::sys::signal::Signal;

fn serves_with_distinct_workers(spawn: &str) {
    let addr = free_addr();
    let mut drover = Drover::start(&["-w", "3", "--spawn", spawn, "-b", &addr.to_string()]);
    let pids = distinct_pids(addr, 3);
    assert_eq!(
        pids,
        drover.worker_pids(),
        "the answers come from the supervisor's workers"
    );
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn exec_mode_serves_from_three_workers() {
    serves_with_distinct_workers("exec");
}

#[test]
fn fork_mode_serves_from_three_workers() {
    serves_with_distinct_workers("fork");
}

#[test]
fn a_killed_worker_is_replaced_and_the_new_one_answers() {
    let addr = free_addr();
    let mut drover = Drover::start(&["-w", "2", "-b", &addr.to_string()]);
    let before = drover.worker_pids();
    let victim = *before.iter().next().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    drover.wait_for_event(events::WORKER_DIED);
    drover.wait_for_worker_event(events::WORKER_STARTED, 3);
    drover.wait_for_event(events::WORKER_READY);
    let after = drover.worker_pids();
    assert_eq!(after.len(), 2);
    let new = *after.difference(&before).next().expect("a new worker");
    assert!(
        distinct_pids(addr, 2).contains(&new),
        "the replacement answers"
    );
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn a_stopped_worker_misses_its_heartbeats_and_is_replaced() {
    let addr = free_addr();
    let mut drover = Drover::start(&["-w", "2", "--worker-timeout", "1", "-b", &addr.to_string()]);
    let workers = drover.worker_pids();
    let frozen = *workers.iter().next().unwrap();
    let healthy = *workers.iter().find(|p| **p != frozen).unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(frozen), Signal::SIGSTOP).unwrap();
    let line = drover.wait_for_line("missed its heartbeats");
    assert!(line.contains(&frozen.to_string()), "{line}");
    drover.wait_for_event(events::WORKER_READY);
    let now = drover.worker_pids();
    assert!(!now.contains(&frozen));
    // The other worker, up for longer than the timeout, kept beating.
    assert!(
        now.contains(&healthy),
        "a healthy worker was killed: {:#?}",
        drover.log
    );
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_and_exits_zero() {
    let addr = free_addr();
    let mut drover = Drover::start(&["-w", "2", "-b", &addr.to_string()]);
    // Idle keep-alive connections, and one request in flight.
    let idle: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut stream = TcpStream::connect(addr).unwrap();
            write!(stream, "GET / HTTP/1.1\r\nhost: t\r\n\r\n").unwrap();
            let mut buf = [0u8; 512];
            let _ = stream.read(&mut buf).unwrap();
            stream
        })
        .collect();
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(WAIT)).unwrap();
    write!(slow, "GET /sleep?ms=300 HTTP/1.1\r\nhost: t\r\n\r\n").unwrap();
    // In flight once a worker has read it off the socket.
    drover_tests::wait_until_server_read(&slow);
    drover.signal(Signal::SIGTERM);
    let mut answer = String::new();
    slow.read_to_string(&mut answer).unwrap();
    let (status, body) = drover_tests::parse(&answer).unwrap();
    assert_eq!((status, body.as_str()), (200, "slept 300 ms\n"));
    assert_eq!(drover.wait_exit(), 0);
    drop(idle);
}

#[test]
fn a_stopping_drover_refuses_new_clients_while_it_finishes_the_old() {
    let addr = free_addr();
    let mut drover = Drover::start(&["-w", "1", "-b", &addr.to_string()]);
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.set_read_timeout(Some(WAIT)).unwrap();
    write!(idle, "GET / HTTP/1.1\r\nhost: t\r\n\r\n").unwrap();
    let mut buf = [0u8; 512];
    assert!(idle.read(&mut buf).unwrap() > 0);
    // Keeps the worker, and so drover, running while the test looks.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(WAIT)).unwrap();
    write!(slow, "GET /sleep?ms=1500 HTTP/1.1\r\nhost: t\r\n\r\n").unwrap();
    drover_tests::wait_until_server_read(&slow);

    drover.signal(Signal::SIGTERM);
    // The supervisor has closed its copy of the socket once it says it is
    // stopping; the worker closes its own before it ends idle connections.
    drover.wait_for_event(events::STOPPING);
    assert_eq!(idle.read(&mut buf).unwrap(), 0, "the idle connection ends");
    let refused = TcpStream::connect(addr);
    assert!(
        matches!(&refused, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "a client arriving during the stop must be refused, not queued: {refused:?}"
    );

    let mut answer = String::new();
    slow.read_to_string(&mut answer).unwrap();
    assert_eq!(
        drover_tests::parse(&answer).unwrap(),
        (200, "slept 1500 ms\n".into())
    );
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn workers_do_not_outlive_a_killed_supervisor() {
    let addr = free_addr();
    let mut drover = Drover::start(&["-w", "2", "-b", &addr.to_string()]);
    drover.signal(Signal::SIGKILL);
    // Every worker holds the log pipe: it closes when the last one exits.
    drover.read_to_end();
    assert!(
        drover.log.iter().any(|l| l.contains("supervisor gone")),
        "{:#?}",
        drover.log
    );
}

#[test]
fn a_first_boot_failure_exits_non_zero_with_the_reason() {
    let mut command = Command::new(drover_bin());
    command
        .args(["-w", "2", "-b", &free_addr().to_string()])
        .env(env::demo::FAIL_BOOT, "database unreachable");
    let mut drover = Drover::spawn(command);
    assert_eq!(drover.wait_exit(), 1);
    let log = drover.log.join("\n");
    // The supervisor's own line carries the worker's reason (BootFailed).
    let line = drover
        .log
        .iter()
        .find(|l| l.starts_with("drover: worker"))
        .expect(&log);
    assert!(
        line.contains("failed to boot") && line.contains("database unreachable"),
        "{log}"
    );
}

/// Socket inodes a process holds.
fn socket_inodes(pid: i32) -> HashSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .map(|target| target.display().to_string())
        .filter(|target| target.starts_with("socket:"))
        .collect()
}

/// The inode of the socket listening on 127.0.0.1:`port`.
fn listening_inode(port: u16) -> String {
    drover_tests::listening_row(port).expect("a listening socket")[9].clone()
}

fn workers_hold_only_their_own_descriptors(spawn: &str) {
    // A descriptor drover inherits without close-on-exec, as from a careless
    // parent: the supervisor has it, no exec'd worker may; a forked one
    // keeps it (state from before the fork is shared: tests/fork_state.rs).
    let (stray, stray_writer) = nix::unistd::pipe().unwrap();
    let stray_target = std::fs::read_link(format!("/proc/self/fd/{}", stray.as_raw_fd()))
        .unwrap()
        .display()
        .to_string();
    let addr = free_addr();
    // The operator's endpoints are the supervisor's alone too.
    let dir = drover_tests::test_dir(&format!("fds-{spawn}"));
    let control = dir.join("ctl.sock");
    let metrics = free_addr().to_string();
    let mut drover = Drover::start(&[
        "-w",
        "2",
        "--spawn",
        spawn,
        "-b",
        &addr.to_string(),
        "--control-socket",
        control.to_str().unwrap(),
        "--metrics",
        &metrics,
    ]);
    drop((stray, stray_writer));
    let supervisor = socket_inodes(drover.pid());
    for worker in drover.worker_pids() {
        let fds: Vec<(i32, String)> = std::fs::read_dir(format!("/proc/{worker}/fd"))
            .unwrap()
            .filter_map(|e| {
                let e = e.ok()?;
                let fd = e.file_name().to_str()?.parse().ok()?;
                Some((fd, std::fs::read_link(e.path()).ok()?.display().to_string()))
            })
            .collect();
        let shared: Vec<&String> = fds
            .iter()
            .map(|(_, target)| target)
            .filter(|target| supervisor.contains(*target))
            .collect();
        // At 3 and 4 in an exec'd worker; a forked one gets them above
        // every descriptor the supervisor holds (its own state keeps 3, 4…).
        let listening = format!("socket:[{}]", listening_inode(addr.port()));
        let base = match spawn {
            "exec" => 3,
            _ => fds
                .iter()
                .filter(|(_, target)| *target == listening)
                .map(|(fd, _)| *fd)
                .max()
                .expect("the listener"),
        };
        let control_fd = base + 1;
        let listener = &fds
            .iter()
            .find(|(fd, _)| *fd == base)
            .expect("the listener at the sockets' start")
            .1;
        assert_eq!(*listener, listening, "{fds:?}");
        assert!(
            shared.iter().all(|target| *target == listener),
            "worker {worker} ({spawn}) shares more than the listener with the supervisor: {fds:?}"
        );
        let control = &fds
            .iter()
            .find(|(fd, _)| *fd == control_fd)
            .expect("the control socket after the listener")
            .1;
        assert!(control.starts_with("socket:"), "{fds:?}");
        assert_eq!(
            fds.iter().any(|(_, target)| *target == stray_target),
            spawn == "fork",
            "worker {worker} ({spawn}) and a descriptor drover inherited: {fds:?}"
        );
    }
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn exec_workers_hold_only_their_own_descriptors() {
    workers_hold_only_their_own_descriptors("exec");
}

#[test]
fn fork_workers_hold_only_their_own_descriptors() {
    workers_hold_only_their_own_descriptors("fork");
}

#[test]
fn unix_socket_with_mode_is_served_and_removed_at_exit() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("drover-uds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("app.sock");
    let bind = format!("unix:{}", path.display());
    let mut drover = Drover::start(&["-w", "1", "--uds-mode", "600", "-b", &bind]);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(drover_tests::unix_get(&path, "/"), (200, "hello\n".into()));
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
    assert!(!path.exists(), "drover removes the socket file it created");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Runs drover expecting it to refuse: (exit code, stderr).
fn refused(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut command = Command::new(drover_bin());
    command.args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    let mut drover = Drover::spawn(command);
    let code = drover.wait_exit();
    let log = drover.log.join("\n");
    assert!(!log.contains("panicked"), "{log}");
    (code, log)
}

#[test]
fn bad_input_is_one_clear_line_and_a_non_zero_exit() {
    let (code, log) = refused(&["--workers", "many"], &[]);
    assert_eq!(code, 2, "{log}");
    assert!(log.contains("many"), "{log}");

    let (code, log) = refused(&["-b", "fd://nope"], &[]);
    assert_eq!(code, 2, "{log}");
    assert!(log.contains("fd://nope"), "{log}");

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = busy.local_addr().unwrap().to_string();
    let (code, log) = refused(&["-b", &taken], &[]);
    assert_eq!(code, 1, "{log}");
    assert!(log.contains(&taken) && log.contains("in use"), "{log}");

    // LISTEN_FDS meant for this very process, but not a number.
    let mut command = Command::new("sh");
    command
        .args(["-c", "LISTEN_PID=$$ LISTEN_FDS=three exec \"$0\" -w 1"])
        .arg(drover_bin());
    let mut drover = Drover::spawn(command);
    let code = drover.wait_exit();
    let log = drover.log.join("\n");
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("malformed") && log.contains("LISTEN_FDS"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn text_logs_carry_the_event_names_too() {
    let addr = free_addr();
    let mut command = Command::new(drover_bin());
    command.args(["-w", "1", "--log-format", "text", "-b", &addr.to_string()]);
    let mut drover = Drover::spawn(command);
    let line = drover.wait_for_line("event=\"ready\"");
    assert!(
        line.contains("INFO") && line.contains("workers=1"),
        "{line}"
    );
    drover.signal(Signal::SIGTERM);
    drover.wait_for_line("event=\"stopped\"");
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn access_log_and_json_logs() {
    let addr = free_addr();
    let mut command = Command::new(drover_bin());
    command.args([
        "-w",
        "1",
        "--access-log",
        "--log-format",
        "json",
        "-b",
        &addr.to_string(),
    ]);
    let mut drover = Drover::spawn(command);
    let starting = drover.wait_for_event(events::STARTING);
    // Plain values, not Rust's Debug renderings.
    assert_eq!(
        starting.text("addrs").as_deref(),
        Some(addr.to_string().as_str())
    );
    assert_eq!(starting.text("spawn").as_deref(), Some("exec"));
    let serving = drover.wait_for_event(events::SERVING);
    drover.wait_for_event(events::READY);
    let worker_pid = serving.line_json()["span"]["pid"].as_i64();
    assert!(worker_pid.is_some(), "the worker's span: {}", serving.line);
    assert_eq!(serving.line_json()["span"]["index"].as_i64(), Some(0));

    let mut client = std::net::TcpStream::connect(addr).unwrap();
    let client_addr = client.local_addr().unwrap();
    let response = drover_tests::keep_alive_request(&mut client, "/healthz");
    assert!(response.ends_with("ok\n"), "{response}");
    let line = drover.wait_for_line("\"path\":\"/healthz\"");
    let entry: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    let fields = &entry["fields"];
    assert_eq!(fields["remote"], client_addr.to_string(), "{line}");
    assert_eq!(fields["method"], "GET", "{line}");
    assert_eq!(fields["status"], 200, "{line}");
    assert_eq!(fields["bytes"], 3, "the body, ok\\n: {line}");
    assert!(fields["duration_ms"].is_number(), "{line}");
    assert_eq!(
        entry["span"]["pid"].as_i64(),
        worker_pid,
        "which worker: {line}"
    );
    drop(client);

    drover.signal(Signal::SIGTERM);
    let stopping = drover.wait_for_event(events::STOPPING);
    assert_eq!(stopping.text("signal").as_deref(), Some("SIGTERM"));
    let closed = drover.wait_for_event(events::CLOSED);
    assert_eq!(closed.number("requests_served"), 1, "{}", closed.line);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn a_users_own_axum_binary_runs_under_drover_with_one_call() {
    let example = drover_tests::example_bin("axum");
    let addr = free_addr();
    let mut command = Command::new(example);
    command.args(["-w", "2", "-b", &addr.to_string()]);
    let mut drover = Drover::spawn(command);
    assert_eq!(drover.wait_for_event(events::READY).number("workers"), 2);
    assert_eq!(
        get(addr, "/").unwrap(),
        (200, "hello from my axum app\n".into())
    );
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn a_worker_not_ready_within_the_boot_timeout_is_killed_and_drover_exits_1() {
    let mut command = Command::new(drover_bin());
    command
        .args([
            "-w",
            "1",
            "--boot-timeout",
            "0.2",
            "-b",
            &free_addr().to_string(),
        ])
        .env(env::demo::HANG_BOOT, "1");
    let mut drover = Drover::spawn(command);
    assert_eq!(drover.wait_exit(), 1);
    let log = drover.log.join("\n");
    assert!(log.contains("boot-timeout"), "{log}");
}

#[test]
fn quit_stops_at_once_and_exits_1() {
    // A second TERM counts only a second after the first: tests/signals.rs.
    let quit: &[Signal] = &[Signal::SIGQUIT];
    for signals in [quit] {
        let addr = free_addr();
        let mut drover = Drover::start(&["-w", "1", "-b", &addr.to_string()]);
        // A request that would hold a graceful stop for ten seconds.
        let mut slow = TcpStream::connect(addr).unwrap();
        write!(slow, "GET /sleep?ms=10000 HTTP/1.1\r\nhost: t\r\n\r\n").unwrap();
        drover_tests::wait_until_server_read(&slow);
        for (i, signal) in signals.iter().enumerate() {
            drover.signal(*signal);
            if i + 1 < signals.len() {
                drover.wait_for_event(events::STOPPING);
            }
        }
        let begun = Instant::now();
        assert_eq!(drover.wait_exit(), 1, "a stop that cut a running worker");
        assert!(
            drover.log.iter().any(|l| l.contains("stopping now")),
            "{signals:?}: {:#?}",
            drover.log
        );
        let mut rest = Vec::new();
        let _ = slow.read_to_end(&mut rest);
        assert!(
            begun.elapsed() < std::time::Duration::from_secs(10),
            "did not wait for the request"
        );
    }
}

#[test]
fn a_worker_that_sends_garbage_on_its_control_socket_is_replaced() {
    let addr = free_addr();
    let mut drover = Drover::start(&["-w", "2", "-b", &addr.to_string()]);
    let workers = drover.worker_pids();
    let culprit = *workers.iter().next().unwrap();
    // Speak on the worker's own control socket (its fd 4), as root may.
    let control = drover_tests::steal_fd(culprit, 4);
    nix::sys::socket::send(
        control.as_raw_fd(),
        b"\x07garbage",
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    drover.wait_for_line("malformed control message");
    drover.wait_for_event(events::WORKER_DIED);
    drover.wait_for_worker_event(events::WORKER_STARTED, 3);
    let after = drover.worker_pids();
    assert!(!after.contains(&culprit));
    assert_eq!(after.len(), 2);
    let sibling = workers.iter().find(|p| **p != culprit).unwrap();
    assert!(after.contains(sibling), "the sibling is unaffected");
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn systemd_socket_activation_in_both_spawn_modes() {
    for spawn in ["exec", "fork"] {
        let addr = free_addr();
        let mut command = Command::new("systemd-socket-activate");
        command
            .arg(format!("--listen={addr}"))
            .arg(drover_bin())
            .args(["-w", "2", "--spawn", spawn, "-b", "127.0.0.1:1"])
            // systemd-socket-activate passes no environment on.
            .args(["--log-format", "json"]);
        let mut drover = Drover::spawn(command);
        drover.wait_for_line("Listening on");
        // The first connection makes systemd-socket-activate exec drover.
        assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()), "{spawn}");
        drover.wait_for_line("using sockets passed by systemd");
        assert_eq!(drover.wait_for_event(events::READY).number("workers"), 2);
        assert_eq!(distinct_pids(addr, 2), drover.worker_pids(), "{spawn}");
        drover.signal(Signal::SIGTERM);
        assert_eq!(drover.wait_exit(), 0, "{spawn}");
    }
}

#[test]
fn flags_from_the_environment_and_the_pid_file() {
    let addr = free_addr();
    let pid_file = std::env::temp_dir().join(format!("drover-pid-{}", std::process::id()));
    let mut command = Command::new(drover_bin());
    command
        .env(env::flags::WORKERS, "2")
        .env(env::flags::BIND, addr.to_string())
        .env(env::flags::PID_FILE, &pid_file);
    let mut drover = Drover::spawn(command);
    assert_eq!(drover.wait_for_event(events::READY).number("workers"), 2);
    let written = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(written.trim(), drover.pid().to_string());
    assert_eq!(drover.worker_pids().len(), 2);
    assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
    assert!(!pid_file.exists(), "the pid file goes at exit");
}

#[test]
fn systemd_hears_ready_with_a_status_and_then_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = std::env::temp_dir().join(format!("drover-notify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let systemd = UnixDatagram::bind(&path).unwrap();
    systemd.set_read_timeout(Some(WAIT)).unwrap();
    let next_message = || {
        let mut buf = [0u8; 4096];
        let len = systemd.recv(&mut buf).expect("a message on NOTIFY_SOCKET");
        String::from_utf8_lossy(&buf[..len]).into_owned()
    };

    let addr = free_addr();
    let mut command = Command::new(drover_bin());
    command
        .args(["-w", "2", "-b", &addr.to_string()])
        .env(env::NOTIFY_SOCKET, &path);
    let mut drover = Drover::spawn(command);
    let ready = next_message();
    let lines: Vec<&str> = ready.lines().collect();
    assert!(lines.contains(&"READY=1"), "{ready:?}");
    assert!(lines.contains(&"STATUS=2 workers serving"), "{ready:?}");
    // The log says it too, and the workers answer.
    assert_eq!(drover.wait_for_event(events::READY).number("workers"), 2);
    assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));

    drover.signal(Signal::SIGTERM);
    let stopping = next_message();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert_eq!(drover.wait_exit(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The kernel's name of process `pid` (`ps -o comm`).
fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim_end()
        .to_owned()
}

#[test]
fn ps_tells_the_workers_by_index_and_generation_from_the_supervisor() {
    let addr = free_addr();
    let mut drover = Drover::start(&["-w", "2", "-b", &addr.to_string()]);
    assert_eq!(
        comm(drover.pid()),
        "drover",
        "the supervisor keeps its name"
    );
    let titles = |drover: &Drover| -> std::collections::BTreeSet<String> {
        drover.worker_pids().into_iter().map(comm).collect()
    };
    let expected = |generation: u32| -> std::collections::BTreeSet<String> {
        (0..2)
            .map(|i| format!("drover w{i} g{generation}"))
            .collect()
    };
    assert_eq!(titles(&drover), expected(0));
    let old: Vec<u64> = vec![1, 2];
    drover.restart(&old);
    assert_eq!(titles(&drover), expected(1));
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}
