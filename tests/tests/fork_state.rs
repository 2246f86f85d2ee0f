//! What a child keeps: a forked worker shares the state built before
//! `drover::run` (a file, its own signal handlers) and holds nothing of the
//! supervisor's; an exec'd one holds nothing but its sockets, with or
//! without close_range.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use drover_shared::env;
use drover_tests::{example_bin, free_addr, get, test_dir, Drover};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const MARKER: &str = "fork-state-request";

/// The `fork_state` example, logging requests to `log`, started with `args`.
fn fork_state(log: &Path, args: &[&str]) -> Drover {
    let mut command = Command::new(example_bin("fork_state"));
    command.env("FORK_STATE_LOG", log).args(args);
    let mut drover = Drover::spawn(command);
    drover.wait_for_event(drover_tests::events::READY);
    drover
}

#[test]
fn a_file_opened_before_run_is_written_by_forked_workers_and_never_reaches_a_client() {
    let dir = test_dir("fork-file");
    let log = dir.join("requests.log");
    let addr = free_addr();
    let mut drover = fork_state(
        &log,
        &["--spawn", "fork", "-w", "2", "-b", &addr.to_string()],
    );
    let requests = 24;
    let answers: Vec<_> = (0..requests)
        .map(|_| std::thread::spawn(move || get(addr, "/").unwrap()))
        .collect();
    for answer in answers {
        let (status, body) = answer.join().unwrap();
        assert_eq!(
            (status, body.as_str()),
            (200, "ok\n"),
            "a worker lost its log"
        );
        assert!(!body.contains(MARKER));
    }
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
    let written = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        written.lines().filter(|l| l.starts_with(MARKER)).count(),
        requests
    );
}

#[test]
fn an_applications_own_hup_handler_works_in_a_forked_worker() {
    let dir = test_dir("fork-hup");
    let addr = free_addr();
    let mut drover = fork_state(
        &dir.join("log"),
        &["--spawn", "fork", "-w", "1", "-b", &addr.to_string()],
    );
    let worker = *drover.worker_pids().iter().next().unwrap();
    kill(Pid::from_raw(worker), Signal::SIGHUP).unwrap();
    drover.wait_for_line(&format!("fork_state: SIGHUP in worker {worker}"));
    let (status, body) = get(addr, "/pid").unwrap();
    assert_eq!(
        (status, body.trim()),
        (200, worker.to_string().as_str()),
        "the worker serves on"
    );
    assert!(drover.events(drover_tests::events::WORKER_DIED).is_empty());
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

/// The pipes and sockets (their `pipe:[inode]`, `socket:[inode]` links)
/// process `pid` holds at descriptors from `from` on.
fn ends(pid: i32, from: i32) -> HashSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let fd: i32 = entry.file_name().to_str()?.parse().ok()?;
            let link = std::fs::read_link(entry.path()).ok()?;
            let link = link.to_string_lossy().into_owned();
            (fd >= from).then_some(link)
        })
        .collect()
}

/// Starts drover (the demo app) with descriptor 7 open on `leak` without
/// close-on-exec (as a careless parent leaves one), with `extra_env`, and
/// checks what its workers hold: none of the supervisor's own pipes or
/// sockets but the listener; the leaked file only if `kept`.
fn children_hold_nothing_of_the_supervisors(spawn: &str, extra_env: &[(&str, &str)], kept: bool) {
    let dir = test_dir(&format!("fds-{spawn}-{}", extra_env.len()));
    let leak = dir.join("leaked");
    std::fs::write(&leak, "").unwrap();
    let addr = free_addr();
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("exec 7<>\"$0\"; exec \"$@\"")
        .arg(&leak)
        .arg(drover_tests::drover_bin())
        .args(["--spawn", spawn, "-w", "2", "-b", &addr.to_string()])
        .envs(extra_env.iter().copied());
    let mut drover = Drover::spawn(command);
    drover.wait_for_event(drover_tests::events::READY);
    let supervisor = drover.pid();
    let leaked = std::fs::read_link(format!("/proc/{supervisor}/fd/7")).unwrap();
    let workers = drover.worker_pids();
    assert_eq!(workers.len(), 2);
    for worker in workers {
        // The listening socket, the supervisor's first descriptor (a forked
        // worker holds its copy elsewhere).
        let listener = std::fs::read_link(format!("/proc/{supervisor}/fd/3")).unwrap();
        // What the supervisor inherited from this test process (a cargo
        // jobserver pipe) is not its own.
        let inherited = ends(std::process::id() as i32, 0);
        let own: HashSet<String> = ends(supervisor, 3)
            .into_iter()
            .filter(|l| l.starts_with("pipe:") || l.starts_with("socket:"))
            .filter(|l| Path::new(l) != listener && !inherited.contains(l))
            .collect();
        let held = ends(worker, 0);
        let shared: Vec<_> = own.intersection(&held).collect();
        assert!(
            shared.is_empty(),
            "worker {worker} holds the supervisor's {shared:?}"
        );
        assert_eq!(
            held.contains(&*leaked.to_string_lossy()),
            kept,
            "worker {worker} and the descriptor the supervisor inherited: {held:?}"
        );
    }
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn exec_workers_hold_only_their_sockets() {
    children_hold_nothing_of_the_supervisors("exec", &[], false);
}

#[test]
fn exec_workers_hold_only_their_sockets_without_close_range() {
    children_hold_nothing_of_the_supervisors("exec", &[(env::TEST_NO_CLOSE_RANGE, "1")], false);
}

#[test]
fn forked_workers_hold_nothing_of_the_supervisors_and_keep_the_rest() {
    children_hold_nothing_of_the_supervisors("fork", &[], true);
}

#[test]
fn a_child_that_cannot_start_says_why_with_the_errno() {
    let dir = test_dir("no-exec");
    let (mut command, binary) = drover_tests::deployable(&dir);
    let addr = free_addr();
    command.args(["-w", "1", "-b", &addr.to_string()]);
    let mut drover = Drover::spawn(command);
    drover.wait_for_event(drover_tests::events::READY);
    // The binary on disk can no longer be executed (EACCES, even for root).
    let mut mode = std::fs::metadata(&binary).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o644);
    std::fs::set_permissions(&binary, mode).unwrap();
    drover.signal(Signal::SIGHUP);
    drover.wait_for_line("drover: cannot execute the binary for a child: errno 13");
    drover.wait_for_event(drover_tests::events::RESTART_STOPPED);
    assert_eq!(get(addr, "/").unwrap().0, 200, "the old worker serves on");
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn state_at_the_descriptors_where_sockets_used_to_go_keeps_them_in_forked_workers() {
    let dir = test_dir("fork-slot");
    let held = dir.join("held");
    std::fs::write(&held, "").unwrap();
    let addr = free_addr();
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("exec 3<>\"$0\" 4<>\"$0\"; exec \"$@\"")
        .arg(&held)
        .arg(drover_tests::drover_bin())
        .args(["--spawn", "fork", "-w", "1", "-b", &addr.to_string()]);
    let mut drover = Drover::spawn(command);
    drover.wait_for_event(drover_tests::events::READY);
    assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));
    let worker = *drover.worker_pids().iter().next().unwrap();
    for fd in [3, 4] {
        let link = std::fs::read_link(format!("/proc/{worker}/fd/{fd}")).unwrap();
        assert_eq!(link, held, "descriptor {fd} of a forked worker");
    }
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}
