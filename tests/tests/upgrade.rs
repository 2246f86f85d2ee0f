//! USR2: the binary upgrade, handing the sockets to a new supervisor.

use std::process::Command;

use drover_shared::env;
use drover_tests::events;
use drover_tests::{
    children, deploy, deploy_broken, deployable, distinct_pids, drover_bin, example_bin, free_addr,
    get, keep_alive_request, read_pid, test_dir, unix_get, Drover, KillOnDrop,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[test]
fn usr2_hands_the_sockets_to_a_new_supervisor_running_the_binary_on_disk() {
    let dir = test_dir("usr2");
    let pid_file = dir.join("drover.pid");
    let socket = dir.join("web.sock");
    let (mut command, binary) = deployable(&dir);
    let addr = free_addr();
    command.args(["-w", "2", "-b", &addr.to_string()]);
    command.arg("-b").arg(format!("unix:{}", socket.display()));
    command.arg("--pid-file").arg(&pid_file);
    let mut old = Drover::spawn(command);
    assert_eq!(old.wait_for_event(events::READY).number("workers"), 2);
    // Scaled up since the start: the new supervisor runs as many.
    old.signal(Signal::SIGTTIN);
    old.wait_for_worker_event(events::WORKER_READY, 3);
    let old_workers = old.worker_pids();
    assert_eq!(read_pid(&pid_file), old.pid());

    deploy(example_bin("axum"), &binary);
    let since = old.log.len();
    old.signal(Signal::SIGUSR2);
    let new_pid = old.wait_for_successor();
    let _guard = KillOnDrop(new_pid);
    old.wait_for_event(events::UPGRADE_COMPLETE);
    // The new supervisor's workers are a generation on from the old ones.
    let started: Vec<i64> = old.log[since..]
        .iter()
        .filter_map(|line| drover_tests::Event::parse(line))
        .filter(|e| e.name() == events::WORKER_STARTED)
        .map(|e| e.number("generation"))
        .collect();
    assert_eq!(started, vec![1, 1, 1], "the new supervisor's workers");
    // The old supervisor leaves once its workers have closed.
    assert_eq!(old.wait_exit_keeping_log(), 0);
    assert!(
        old_workers
            .iter()
            .all(|w| kill(Pid::from_raw(*w), None).is_err()),
        "the old workers are gone"
    );

    assert_eq!(
        read_pid(&pid_file),
        new_pid,
        "the pid file names the new one"
    );
    let new_workers = children(new_pid);
    assert_eq!(new_workers.len(), 3, "TTIN carried over");
    assert!(new_workers.is_disjoint(&old_workers));
    assert_eq!(distinct_pids(addr, 3), new_workers);
    assert_eq!(
        get(addr, "/").unwrap(),
        (200, "hello from my axum app\n".into())
    );
    assert!(socket.exists(), "the old supervisor left the socket file");
    assert_eq!(unix_get(&socket, "/").0, 200);

    // The new supervisor owns the socket file now: it removes it at its stop.
    kill(Pid::from_raw(new_pid), Signal::SIGTERM).unwrap();
    old.wait_for_stopped(new_pid);
    old.read_to_end();
    assert!(
        !socket.exists(),
        "removed by the new supervisor at its stop"
    );
    assert!(!pid_file.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failed_upgrade_leaves_the_old_supervisor_serving_and_usr2_can_retry() {
    let dir = test_dir("usr2-broken");
    let pid_file = dir.join("drover.pid");
    let (mut command, binary) = deployable(&dir);
    let addr = free_addr();
    command.args(["-w", "2", "-b", &addr.to_string()]);
    command.arg("--pid-file").arg(&pid_file);
    let mut drover = Drover::spawn(command);
    assert_eq!(drover.wait_for_event(events::READY).number("workers"), 2);
    let workers = drover.worker_pids();

    // A build that dies at once.
    deploy_broken(&binary);
    drover.signal(Signal::SIGUSR2);
    let failed = drover.wait_for_event(events::UPGRADE_FAILED);
    assert!(failed.line.contains("exit code 3"), "{}", failed.line);
    assert_eq!(
        drover.worker_pids(),
        workers,
        "the old workers are untouched"
    );
    assert_eq!(distinct_pids(addr, 2), workers, "and serve");
    assert_eq!(read_pid(&pid_file), drover.pid());

    deploy(drover_bin(), &binary);
    // Fixed: USR2 again goes through.
    drover.signal(Signal::SIGUSR2);
    drover.wait_for_event(events::UPGRADE_COMPLETE);
    let new_pid = read_pid(&pid_file);
    let _guard = KillOnDrop(new_pid);
    assert_ne!(new_pid, drover.pid());
    assert_eq!(drover.wait_exit_keeping_log(), 0);
    assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));
    kill(Pid::from_raw(new_pid), Signal::SIGTERM).unwrap();
    drover.wait_for_stopped(new_pid);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_new_supervisor_whose_workers_cannot_boot_is_abandoned() {
    let dir = test_dir("usr2-boot");
    let (mut command, _) = deployable(&dir);
    let addr = free_addr();
    // The marker file makes the demo app fail at boot once it exists: the
    // running workers booted before it did, the new supervisor's do not.
    let marker = dir.join("fail-boot");
    command
        .args(["-w", "1", "--boot-timeout", "5", "-b", &addr.to_string()])
        .env(env::demo::FAIL_BOOT_IF, &marker);
    let mut drover = Drover::spawn(command);
    assert_eq!(drover.wait_for_event(events::READY).number("workers"), 1);
    let workers = drover.worker_pids();

    std::fs::write(&marker, "").unwrap();
    drover.signal(Signal::SIGUSR2);
    let failed = drover.wait_for_event(events::UPGRADE_FAILED);
    assert!(failed.line.contains("exit code 1"), "{}", failed.line);
    assert_eq!(drover.worker_pids(), workers);
    assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));

    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_old_supervisor_that_handed_over_ignores_term_and_tells_systemd_nothing() {
    use std::os::unix::net::UnixDatagram;
    let dir = test_dir("usr2-term");
    let notify = dir.join("notify.sock");
    let systemd = UnixDatagram::bind(&notify).unwrap();
    let pid_file = dir.join("drover.pid");
    let addr = free_addr();
    let mut command = Command::new(drover_bin());
    command
        .args(["-w", "1", "-b", &addr.to_string()])
        .arg("--pid-file")
        .arg(&pid_file)
        .env(env::NOTIFY_SOCKET, &notify);
    let mut old = Drover::spawn(command);
    assert_eq!(old.wait_for_event(events::READY).number("workers"), 1);
    // An idle keep-alive connection keeps the old worker draining (for up
    // to the keep-alive timeout) after the handover.
    let mut idle = std::net::TcpStream::connect(addr).unwrap();
    idle.set_read_timeout(Some(drover_tests::WAIT)).unwrap();
    keep_alive_request(&mut idle, "/pid");

    old.signal(Signal::SIGUSR2);
    old.wait_for_event(events::UPGRADE_COMPLETE);
    let new_pid = read_pid(&pid_file);
    let _guard = KillOnDrop(new_pid);
    old.signal(Signal::SIGTERM);
    old.wait_for_line("ignored: leaving already");
    // The old worker still answers its client, then the old one leaves.
    let answer = keep_alive_request(&mut idle, "/");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert_eq!(old.wait_exit_keeping_log(), 0);

    // Everything the old one said is in the socket by now: never STOPPING.
    systemd.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    while let Ok(len) = systemd.recv(&mut buf) {
        let message = String::from_utf8_lossy(&buf[..len]);
        assert!(!message.contains("STOPPING=1"), "{message:?}");
    }
    assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));
    kill(Pid::from_raw(new_pid), Signal::SIGTERM).unwrap();
    old.wait_for_stopped(new_pid);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_new_supervisor_never_ready_is_killed_at_the_deadline() {
    let dir = test_dir("usr2-hang");
    let (mut command, binary) = deployable(&dir);
    let addr = free_addr();
    command.args(["-w", "1", "--boot-timeout", "1", "-b", &addr.to_string()]);
    let mut drover = Drover::spawn(command);
    assert_eq!(drover.wait_for_event(events::READY).number("workers"), 1);
    let workers = drover.worker_pids();

    // A build that starts and never says anything.
    let hanging = dir.join("hanging");
    let written = Command::new("sh")
        .arg("-c")
        .arg("printf '#!/bin/sh\\nexec tail -f /dev/null\\n' > \"$1\" && chmod 755 \"$1\"")
        .arg("sh")
        .arg(&hanging)
        .status()
        .unwrap();
    assert!(written.success());
    deploy(&hanging, &binary);
    drover.signal(Signal::SIGUSR2);
    let new_pid = drover.wait_for_successor();
    let _guard = KillOnDrop(new_pid);
    let failed = drover.wait_for_event(events::UPGRADE_FAILED);
    assert!(failed.line.contains("not ready within"), "{}", failed.line);
    let mut children = drover.worker_pids();
    children.remove(&new_pid); // killed, perhaps not reaped yet
    assert_eq!(children, workers);
    assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));

    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
    assert!(
        kill(Pid::from_raw(new_pid), None).is_err(),
        "killed and reaped"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failed_upgrade_gives_systemd_the_old_pid_back_and_ttin_meanwhile_is_said_to_stay_here() {
    use std::os::unix::net::UnixDatagram;
    let dir = test_dir("usr2-mainpid");
    let notify = dir.join("notify.sock");
    let systemd = UnixDatagram::bind(&notify).unwrap();
    systemd.set_read_timeout(Some(drover_tests::WAIT)).unwrap();
    let (mut command, binary) = deployable(&dir);
    let addr = free_addr();
    let pid_file = dir.join("drover.pid");
    command
        .args(["-w", "1", "--boot-timeout", "1", "-b", &addr.to_string()])
        .arg("--pid-file")
        .arg(&pid_file)
        .env(env::NOTIFY_SOCKET, &notify);
    let mut drover = Drover::spawn(command);
    assert_eq!(drover.wait_for_event(events::READY).number("workers"), 1);

    // A build that writes its pid to the pid file, as a new supervisor
    // does just before it says Ready, and then hangs.
    let hanging = dir.join("hanging");
    let written = Command::new("sh")
        .arg("-c")
        .arg("printf '#!/bin/sh\\nwhile [ \"$1\" ]; do [ \"$1\" = --pid-file ] && echo $$ > \"$2\"; shift; done\\nexec tail -f /dev/null\\n' > \"$1\" && chmod 755 \"$1\"")
        .arg("sh")
        .arg(&hanging)
        .status()
        .unwrap();
    assert!(written.success());
    deploy(&hanging, &binary);
    drover.signal(Signal::SIGUSR2);
    let new_pid = drover.wait_for_successor();
    let _guard = KillOnDrop(new_pid);
    drover.signal(Signal::SIGTTIN);
    drover.wait_for_line("during a binary upgrade");
    drover.wait_for_event(events::UPGRADE_FAILED);
    assert_eq!(
        read_pid(&pid_file),
        drover.pid(),
        "the pid file names the old one again"
    );

    let mainpid = format!("MAINPID={}", drover.pid());
    let mut buf = [0u8; 4096];
    loop {
        let len = systemd
            .recv(&mut buf)
            .expect("systemd hears the old pid again");
        if String::from_utf8_lossy(&buf[..len])
            .lines()
            .any(|l| l == mainpid)
        {
            break;
        }
    }
    assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
