//! Zero downtime under load: keep-alive and fresh-connection clients ask
//! as fast as they can while drover is restarted (HUP ×5), scaled (TTIN,
//! TTOU) and upgraded (USR2 ×2); every request must succeed.
//! `scripts/zero-downtime.sh` runs the same scenario with wrk.

use std::process::Command;

use drover_tests::events;
use drover_tests::load::Load;
use drover_tests::{drover_bin, free_addr, read_pid, test_dir, Drover, KillOnDrop};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[test]
fn no_request_fails_through_restarts_scaling_and_upgrades() {
    let dir = test_dir("zero-downtime");
    let pid_file = dir.join("drover.pid");
    let addr = free_addr();
    let mut command = Command::new(drover_bin());
    command
        .args(["-w", "2", "-b", &addr.to_string()])
        .arg("--pid-file")
        .arg(&pid_file);
    let mut drover = Drover::spawn(command);
    assert_eq!(drover.wait_for_event(events::READY).number("workers"), 2);
    let mut guards = Vec::new();

    // Between steps, the clients make this many requests more: each step
    // meets a steady load, and is under way while requests are in flight.
    const BETWEEN: u64 = 2000;
    let load = Load::start(addr, 16, 4);
    load.wait_for(BETWEEN);
    for _ in 0..5 {
        drover.signal(Signal::SIGHUP);
        drover.wait_for_event(events::RESTART_COMPLETE);
        load.wait_for(BETWEEN);
    }
    drover.signal(Signal::SIGTTIN);
    drover.wait_for_line("TTIN: one worker more");
    let added = drover
        .wait_for_event(events::WORKER_STARTED)
        .number("worker") as u64;
    drover.wait_for_worker_event(events::WORKER_READY, added);
    load.wait_for(BETWEEN);
    drover.signal(Signal::SIGTTOU);
    drover.wait_for_line("TTOU: one worker fewer");
    // The newest goes: the one TTIN added.
    drover.wait_for_worker_event(events::WORKER_LEFT, added);
    load.wait_for(BETWEEN);
    // Two upgrades: the second goes to the supervisor the first started.
    let mut supervisor = drover.pid();
    for _ in 0..2 {
        kill(Pid::from_raw(supervisor), Signal::SIGUSR2).unwrap();
        drover.wait_for_event(events::UPGRADE_COMPLETE);
        drover.wait_for_stopped(supervisor);
        supervisor = read_pid(&pid_file);
        guards.push(KillOnDrop(supervisor));
        load.wait_for(BETWEEN);
    }
    let report = load.stop();

    assert_eq!(report.failed, 0, "failed requests: {:?}", report.failures);
    assert!(report.ok > 0, "{report:?}");
    // 2 first workers, 5 × 2 restarted, 1 added, 2 × 2 upgraded.
    assert!(report.pids.len() >= 10, "answered by {:?}", report.pids);

    kill(Pid::from_raw(supervisor), Signal::SIGTERM).unwrap();
    drover.wait_for_stopped(supervisor);
    assert_eq!(drover.child.wait().unwrap().code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
