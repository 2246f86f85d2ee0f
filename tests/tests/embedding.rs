//! An application embedding drover (`examples/service.rs`): its own flags
//! and `--help`, an async factory that awaits and may fail, and the worker
//! context (index, generation) in both spawn modes.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use drover_tests::{distinct_pids, events, example_bin, free_addr, get, test_dir, Drover, WAIT};
use nix::sys::signal::Signal;

/// A greeting file for the service, holding `text`.
fn greeting(name: &str, text: &str) -> PathBuf {
    let path = test_dir(name).join("greeting");
    std::fs::write(&path, format!("{text}\n")).unwrap();
    path
}

fn service(greeting: &Path, addr: SocketAddr, args: &[&str]) -> Drover {
    let mut command = Command::new(example_bin("service"));
    command
        .arg("--greeting-file")
        .arg(greeting)
        .args(["-b", &addr.to_string()])
        .args(args);
    Drover::spawn(command)
}

/// `pid=… index=… generation=… env_index=…` from `/identity`, by pid.
fn identities(addr: SocketAddr, workers: usize) -> HashMap<i32, HashMap<String, String>> {
    let deadline = Instant::now() + WAIT;
    let mut seen = HashMap::new();
    while seen.len() < workers {
        assert!(
            Instant::now() < deadline,
            "only {seen:?} answered /identity"
        );
        // Concurrent connections wake every worker waiting in accept.
        let batch: Vec<_> = (0..8)
            .map(|_| std::thread::spawn(move || get(addr, "/identity").unwrap()))
            .collect();
        for answer in batch {
            let (status, body) = answer.join().unwrap();
            assert_eq!(status, 200);
            let fields: HashMap<String, String> = body
                .split_whitespace()
                .filter_map(|f| f.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            seen.insert(fields["pid"].parse().unwrap(), fields);
        }
    }
    seen
}

#[test]
fn an_applications_help_and_version_are_its_own_and_list_drovers_flags() {
    let help = Command::new(example_bin("service"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for wanted in [
        "An example service",
        "--greeting-file",
        "--workers",
        "--graceful-timeout",
        "Signals to the supervisor",
    ] {
        assert!(help.contains(wanted), "no {wanted:?} in:\n{help}");
    }
    let version = Command::new(example_bin("service"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&version.stdout), "greeter 3.1.4\n");
}

#[test]
fn the_drover_binarys_own_version_is_drovers() {
    let version = Command::new(drover_tests::drover_bin())
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&version.stdout).into_owned();
    assert!(text.starts_with("drover 0."), "{text}");
}

#[test]
fn an_async_factory_builds_every_worker_with_its_index_and_the_code_default_worker_count() {
    let addr = free_addr();
    let file = greeting("embed-async", "bonjour");
    // No -w: the service's code default, 2 (not the CPU count).
    let mut drover = service(&file, addr, &[]);
    assert_eq!(drover.wait_for_event(events::STARTING).number("workers"), 2);
    drover.wait_for_event(events::READY);
    let workers = identities(addr, 2);
    let indices: BTreeSet<&str> = workers.values().map(|w| w["index"].as_str()).collect();
    assert_eq!(indices, BTreeSet::from(["0", "1"]), "{workers:?}");
    for worker in workers.values() {
        assert_eq!(worker["generation"], "0");
        assert_eq!(worker["env_index"], worker["index"], "DROVER_WORKER_INDEX");
    }
    let (_, body) = get(addr, "/").unwrap();
    assert!(body.starts_with("bonjour from worker "), "{body}");
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn a_replacement_inherits_the_index_and_a_restart_moves_the_generation_on() {
    let addr = free_addr();
    let file = greeting("embed-index", "hi");
    let mut drover = service(&file, addr, &["-w", "2"]);
    drover.wait_for_event(events::READY);
    let started = drover.events(events::WORKER_STARTED);
    let second = started
        .iter()
        .find(|e| e.number("index") == 1)
        .expect("a worker with index 1");
    let since = drover.log.len();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(second.number("pid") as i32),
        Signal::SIGKILL,
    )
    .unwrap();
    let replacement = drover.wait_for_event_since(since, events::WORKER_STARTED, |_| true);
    assert_eq!(replacement.number("index"), 1, "{}", replacement.line);
    assert_eq!(replacement.number("generation"), 0);
    drover.wait_for_worker_event(events::WORKER_READY, replacement.number("worker") as u64);

    let old: Vec<u64> = drover
        .events(events::WORKER_READY)
        .iter()
        .map(|e| e.number("worker") as u64)
        .filter(|id| *id != second.number("worker") as u64)
        .collect();
    let since = drover.log.len();
    drover.restart(&old);
    let restarted: Vec<_> = drover.log[since..]
        .iter()
        .filter_map(|line| drover_tests::Event::parse(line))
        .filter(|e| e.name() == events::WORKER_STARTED)
        .collect();
    let indices: BTreeSet<i64> = restarted.iter().map(|e| e.number("index")).collect();
    assert_eq!(indices, BTreeSet::from([0, 1]));
    assert!(restarted.iter().all(|e| e.number("generation") == 1));
    let workers = identities(addr, 2);
    assert!(
        workers.values().all(|w| w["generation"] == "1"),
        "{workers:?}"
    );
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn a_failing_factory_at_the_first_start_exits_1_naming_the_error_and_its_cause() {
    let addr = free_addr();
    let missing = test_dir("embed-missing").join("no-such-greeting");
    let mut drover = service(&missing, addr, &["-w", "2", "--boot-timeout", "10"]);
    assert_eq!(drover.wait_exit(), 1);
    drover.read_to_end();
    let failed = drover
        .log
        .iter()
        .find(|line| line.starts_with("drover: worker "))
        .unwrap_or_else(|| panic!("no boot failure line in:\n{}", drover.log.join("\n")));
    assert!(
        failed.contains("reading the greeting from")
            && failed.contains("No such file or directory"),
        "{failed}"
    );
}

#[test]
fn a_factory_failing_in_a_restart_stops_it_and_the_old_workers_serve_on() {
    let addr = free_addr();
    let file = greeting("embed-restart", "hello");
    let mut drover = service(&file, addr, &["-w", "2"]);
    drover.wait_for_event(events::READY);
    let before = distinct_pids(addr, 2);
    std::fs::remove_file(&file).unwrap();
    let since = drover.log.len();
    drover.signal(Signal::SIGHUP);
    let stopped = drover.wait_for_event_since(since, events::RESTART_STOPPED, |_| true);
    assert!(
        drover.log[since..]
            .iter()
            .any(|l| l.contains("reading the greeting from")),
        "the cause is logged: {}",
        stopped.line
    );
    assert_eq!(drover.worker_pids(), before, "the old workers serve on");
    assert_eq!(distinct_pids(addr, 2), before);

    std::fs::write(&file, "hello again\n").unwrap();
    let old: Vec<u64> = drover
        .events(events::WORKER_READY)
        .iter()
        .map(|e| e.number("worker") as u64)
        .collect();
    let after = drover.restart(&old);
    assert!(after.is_disjoint(&before), "{before:?} then {after:?}");
    let (_, body) = get(addr, "/").unwrap();
    assert!(body.starts_with("hello again from worker"), "{body}");
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn forked_workers_get_their_index_in_their_environment_too() {
    let addr = free_addr();
    let file = greeting("embed-fork", "forked");
    let mut drover = service(&file, addr, &["-w", "2", "--spawn", "fork"]);
    drover.wait_for_event(events::READY);
    let workers = identities(addr, 2);
    let indices: BTreeSet<&str> = workers.values().map(|w| w["env_index"].as_str()).collect();
    assert_eq!(indices, BTreeSet::from(["0", "1"]), "{workers:?}");
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn a_closing_worker_lets_its_tracked_work_finish_before_it_exits() {
    let addr = free_addr();
    let file = greeting("embed-job", "hi");
    let mut drover = service(&file, addr, &["-w", "1"]);
    drover.wait_for_event(events::READY);
    assert_eq!(get(addr, "/job/300").unwrap(), (200, "started\n".into()));
    drover.signal(Signal::SIGTERM);
    // The server has nothing in flight: without the wait, the worker
    // would exit at once and the job would never finish.
    let finished = drover.wait_for_line("greeter: job of 300 ms finished");
    let stopped = drover.wait_for_event(events::WORKER_STOPPED);
    assert!(
        drover.log.iter().position(|l| *l == finished)
            < drover.log.iter().position(|l| *l == stopped.line),
        "the job finished before the worker exited"
    );
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn tracked_work_still_running_at_the_graceful_deadline_is_cut() {
    let addr = free_addr();
    let file = greeting("embed-job-cut", "hi");
    let mut drover = service(&file, addr, &["-w", "1", "--graceful-timeout", "1"]);
    drover.wait_for_event(events::READY);
    assert_eq!(get(addr, "/job/600000").unwrap().0, 200);
    drover.signal(Signal::SIGTERM);
    drover.wait_for_line("tracked work still running at the graceful deadline");
    assert_eq!(drover.wait_exit(), 0);
    assert!(!drover
        .log
        .iter()
        .any(|l| l.contains("job of 600000 ms finished")));
}

#[test]
fn an_applications_own_binary_has_drover_ctl() {
    let greeting = greeting("embed-ctl", "hello");
    let socket = greeting.with_file_name("ctl.sock");
    let addr = free_addr();
    let control = socket.to_str().unwrap();
    let mut drover = service(&greeting, addr, &["-w", "2", "--control-socket", control]);
    drover.wait_for_event(events::READY);
    let ctl = |args: &[&str]| {
        Command::new(example_bin("service"))
            .arg("--greeting-file")
            .arg(&greeting)
            .args(["ctl", "--control-socket", control])
            .args(args)
            .output()
            .unwrap()
    };
    let status = ctl(&["--json", "status"]);
    assert!(status.status.success(), "{status:?}");
    let reply: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        reply["data"]["workers"].as_array().unwrap().len(),
        2,
        "{reply}"
    );
    assert!(ctl(&["stop"]).status.success());
    assert_eq!(drover.wait_exit(), 0);
}
