//! The operator's control socket and `drover ctl`, against the real
//! binary: every command answered once done, a broken build's failure
//! answered as such, who may ask, and clients that misbehave.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use drover_tests::operator::{ask, ctl, ctl_with, status};
use drover_tests::{
    deploy_broken, deployable, drover_bin, events, free_addr, get, test_dir, Drover, WAIT,
};
use nix::sys::signal::Signal;

/// A drover with a control socket in a fresh directory: the drover, the
/// socket's path, where it serves.
fn with_control_socket(name: &str, extra: &[&str]) -> (Drover, PathBuf, std::net::SocketAddr) {
    let dir = test_dir(name);
    let socket = dir.join("ctl.sock");
    let addr = free_addr();
    let mut args = vec!["-b".to_owned(), addr.to_string()];
    args.extend(["--control-socket".to_owned(), socket.display().to_string()]);
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (Drover::start(&args), socket, addr)
}

fn workers_in(figures: &serde_json::Value, state: &str) -> Vec<serde_json::Value> {
    figures["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["state"] == state)
        .cloned()
        .collect()
}

#[test]
fn reload_scale_recycle_and_stop_are_answered_once_done() {
    let (mut drover, socket, addr) = with_control_socket("ctl-commands", &["-w", "2"]);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o600,
        "the control socket is the supervisor's user's alone"
    );

    let reload = ctl(&socket, &["reload"]);
    assert_eq!(reload.code, 0, "{reload:?}");
    assert!(reload.stdout.contains("reload complete"), "{reload:?}");
    // Answered once done: every serving worker is of the new generation.
    let figures = status(&socket);
    let ready = workers_in(&figures, "ready");
    assert_eq!(ready.len(), 2, "{figures:#}");
    assert!(ready.iter().all(|w| w["generation"] == 1), "{figures:#}");
    assert_eq!(figures["reloads"]["completed"], 1);

    let up = ctl(&socket, &["scale", "+1"]);
    assert_eq!(up.code, 0, "{up:?}");
    assert_eq!(workers_in(&status(&socket), "ready").len(), 3);
    let down = ctl(&socket, &["scale", "-1"]);
    assert_eq!(down.code, 0, "{down:?}");
    assert_eq!(workers_in(&status(&socket), "ready").len(), 2);
    let exactly = ctl(&socket, &["--json", "scale", "1"]);
    assert_eq!(exactly.data()["workers"], 1, "{exactly:?}");
    assert_eq!(workers_in(&status(&socket), "ready").len(), 1);

    let old = workers_in(&status(&socket), "ready")[0]["id"]
        .as_u64()
        .unwrap();
    let recycled = ctl(&socket, &["--json", "recycle", &old.to_string()]);
    let data = recycled.data();
    assert_eq!(data["replaced"], old, "{data}");
    let new = data["worker"].as_u64().unwrap();
    let ready = workers_in(&status(&socket), "ready");
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0]["id"], new, "the replacement serves");
    // Exits are counted once reaped: two replaced by the reload, two
    // scaled down, one recycled.
    while drover.events(events::WORKER_LEFT).len() < 5 {
        drover.wait_for_event(events::WORKER_LEFT);
    }
    let exits = status(&socket)["exits"].clone();
    assert_eq!(exits["recycle"], 1, "{exits}");
    assert_eq!(exits["reload"], 2, "{exits}");
    assert_eq!(exits["scale_down"], 2, "{exits}");
    assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));

    let missing = ctl(&socket, &["recycle", "999"]);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("no worker 999"), "{missing:?}");
    let zero = ctl(&socket, &["scale", "0"]);
    assert_ne!(zero.code, 0, "refused before it is sent: {zero:?}");

    let stop = ctl(&socket, &["stop"]);
    assert_eq!(stop.code, 0, "{stop:?}");
    assert_eq!(stop.stdout.trim(), "stopped");
    assert_eq!(drover.wait_exit(), 0);
    assert!(!socket.exists(), "the socket file goes with the supervisor");
}

#[test]
fn status_watch_redraws_the_table_until_it_is_stopped() {
    use std::io::BufRead;
    let (mut drover, socket, _) = with_control_socket("ctl-watch", &["-w", "1"]);
    let mut watch = Command::new(drover_bin())
        .args(["ctl", "--control-socket"])
        .arg(&socket)
        .args(["status", "--watch"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = drover_tests::KillOnDrop(watch.id() as i32);
    // Each redraw clears the screen, then prints the table.
    let mut lines = std::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut redraws = 0;
    while redraws < 2 {
        let line = lines.next().expect("ctl status --watch stopped").unwrap();
        if line.contains("\x1b[H\x1b[2J") {
            assert!(line.contains("drover pid"), "{line:?}");
            redraws += 1;
        }
    }
    drop(lines);
    let _ = watch.kill();
    let _ = watch.wait();
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn stop_now_is_answered_once_the_workers_are_killed() {
    let (mut drover, socket, _) = with_control_socket("ctl-stop-now", &["-w", "2"]);
    let stop = ctl(&socket, &["--json", "stop", "--now"]);
    assert_eq!(stop.code, 0, "{stop:?}");
    assert_eq!(stop.data()["exit_code"], 1, "workers were cut");
    assert_eq!(drover.wait_exit(), 1);
}

#[test]
fn reload_and_upgrade_answer_success_then_a_broken_builds_failure() {
    let dir = test_dir("ctl-deploy");
    let socket = dir.join("ctl.sock");
    let (mut command, binary) = deployable(&dir);
    let addr = free_addr();
    command.args(["-w", "2", "--boot-timeout", "5", "-b", &addr.to_string()]);
    command.arg("--control-socket").arg(&socket);
    let metrics = free_addr();
    command.args(["--metrics", &metrics.to_string()]);
    let mut drover = Drover::spawn(command);
    drover.wait_for_event(events::READY);

    let upgrade = ctl(&socket, &["--json", "upgrade"]);
    let successor = upgrade.data()["new_supervisor"].as_i64().unwrap();
    // The path now reaches the new supervisor, which serves.
    let figures = status(&socket);
    assert_eq!(figures["supervisor"]["pid"], successor, "{figures:#}");
    // So does the metrics port (the old supervisor closed its own).
    let (code, text) = drover_tests::operator::scrape(metrics);
    assert_eq!(code, 200, "{text}");
    assert_eq!(
        drover_tests::operator::sample(&text, "drover_workers{state=\"ready\"}"),
        2.0
    );
    assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));

    deploy_broken(&binary);
    let reload = ctl(&socket, &["reload"]);
    assert_eq!(reload.code, 1, "{reload:?}");
    assert!(reload.stderr.contains("reload stopped"), "{reload:?}");
    assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));
    let upgrade = ctl(&socket, &["upgrade"]);
    assert_eq!(upgrade.code, 1, "{upgrade:?}");
    assert!(upgrade.stderr.contains("upgrade failed"), "{upgrade:?}");
    assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));
    let figures = status(&socket);
    assert_eq!(figures["reloads"]["stopped"], 1, "{figures:#}");
    assert_eq!(
        workers_in(&figures, "ready").len(),
        2,
        "the old workers serve on"
    );

    let stop = ctl(&socket, &["stop"]);
    assert_eq!(stop.code, 0, "{stop:?}");
    assert_eq!(drover.wait_exit(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `drover` run as uid/gid 65534 (nobody), through setpriv.
fn as_nobody() -> Command {
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(drover_bin());
    command
}

const EVERY_COMMAND: [&[&str]; 8] = [
    &["status"],
    &["metrics"],
    &["reload"],
    &["upgrade"],
    &["scale", "3"],
    &["recycle", "1"],
    &["stop"],
    &["stop", "--now"],
];

#[test]
fn only_root_and_the_supervisors_own_user_may_use_the_control_socket() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test runs drover ctl as another user: run it as root (CI does)"
    );
    let (mut drover, socket, addr) = with_control_socket("ctl-peer", &["-w", "1"]);
    let dir = socket.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let workers = drover.worker_pids();
    for command in EVERY_COMMAND {
        // The file's mode (0600) keeps others out...
        let refused = ctl_with(as_nobody(), &socket, command);
        assert_eq!(refused.code, 1, "{command:?}: {refused:?}");
        assert!(refused.stderr.contains("Permission denied"), "{refused:?}");
    }
    // ...and so does the peer check, should the mode be opened up.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    for command in EVERY_COMMAND {
        let refused = ctl_with(as_nobody(), &socket, command);
        assert_eq!(refused.code, 1, "{command:?}: {refused:?}");
        assert!(
            refused.stderr.contains("permission denied: uid 65534"),
            "{command:?}: {refused:?}"
        );
    }
    assert_eq!(drover.worker_pids(), workers, "nothing changed");
    assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));
    // Root is served, every command.
    for command in EVERY_COMMAND.iter().take(6) {
        let run = ctl(&socket, command);
        assert!(
            run.code == 0 || run.stderr.contains("no worker 1"),
            "{command:?}: {run:?}"
        );
    }
    assert_eq!(ctl(&socket, &["stop"]).code, 0);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn a_read_only_control_socket_answers_status_and_metrics_only() {
    let (mut drover, socket, _) =
        with_control_socket("ctl-ro", &["-w", "1", "--control-socket-mode", "read-only"]);
    assert_eq!(ctl(&socket, &["status"]).code, 0);
    assert_eq!(ctl(&socket, &["metrics"]).code, 0);
    let workers = drover.worker_pids();
    for command in &EVERY_COMMAND[2..] {
        let refused = ctl(&socket, command);
        assert_eq!(refused.code, 1, "{command:?}: {refused:?}");
        assert!(refused.stderr.contains("read-only"), "{refused:?}");
    }
    assert_eq!(drover.worker_pids(), workers);
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

/// A client that sends `bytes` and reads the reply line (if any).
fn send_raw(socket: &Path, bytes: &[u8]) -> String {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    // The supervisor may cut us before we are done: that is the point.
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        let bytes = bytes.to_vec();
        std::thread::spawn(move || {
            let _ = stream.write_all(&bytes);
        })
    };
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    writer.join().unwrap();
    reply
}

#[test]
fn hostile_control_clients_leave_the_supervisor_serving_and_answering() {
    let (mut drover, socket, addr) = with_control_socket("ctl-hostile", &["-w", "1"]);
    let garbage = ask(&socket, "hello, is this HTTP?");
    assert_eq!(garbage["ok"], false);
    assert!(garbage["error"].as_str().unwrap().contains("not a request"));
    let unknown = ask(&socket, r#"{"id": 7, "command": "explode"}"#);
    assert_eq!(
        (unknown["id"].clone(), unknown["ok"].clone()),
        (7.into(), false.into())
    );

    // 10 MB without a newline: an error, then the connection closes.
    let huge = send_raw(&socket, &vec![b'x'; 10 * 1024 * 1024]);
    assert!(huge.contains("longer than"), "{huge:?}");
    let binary = send_raw(&socket, b"\x00\xff\x13\n");
    assert!(binary.contains("\"ok\":false"), "{binary:?}");

    // A thousand silent clients: the newest are served, the idlest cut.
    let silent: Vec<UnixStream> = (0..1000)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    assert_eq!(ctl(&socket, &["status"]).code, 0);
    drop(silent);

    // A client that asks and never reads.
    let mut greedy = UnixStream::connect(&socket).unwrap();
    greedy.set_nonblocking(true).unwrap();
    let line = b"{\"command\":\"status\"}\n";
    for _ in 0..5000 {
        if greedy.write(line).is_err() {
            break; // its buffer is full, or it was cut
        }
    }
    assert_eq!(ctl(&socket, &["status"]).code, 0, "others are answered");
    assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));
    drop(greedy);

    assert!(
        drover.events(events::STOPPING).is_empty(),
        "it never stopped"
    );
    assert_eq!(ctl(&socket, &["stop"]).code, 0);
    assert_eq!(drover.wait_exit(), 0);
}
