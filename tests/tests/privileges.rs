//! `--user` / `--group`: the supervisor stays root, the workers switch.
//! These tests run as root (CI does); as another user drover must refuse.

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use drover_tests::{drover_bin, free_addr, get, test_dir, unix_get, Drover};
use nix::sys::signal::Signal;
use nix::unistd::{Group, User};

/// The `Uid:`/`Gid:`/`Groups:` line of /proc/<pid>/status, its fields.
fn status_ids(pid: i32, key: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in the status of {pid}"))
        .split_whitespace()
        .map(|id| id.parse().unwrap())
        .collect()
}

#[test]
fn workers_run_as_the_user_and_group_while_the_supervisor_stays_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test checks a switch of user: run it as root (CI does)"
    );
    let nobody = User::from_name("nobody").unwrap().expect("a user `nobody`");
    let group = Group::from_gid(nobody.gid)
        .unwrap()
        .expect("nobody's group");
    let dir = test_dir("user");
    // Reachable by the user: the socket file's directory.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let socket = dir.join("app.sock");
    let addr = free_addr();
    for spawn in ["exec", "fork"] {
        let mut drover = Drover::start(&[
            "-w",
            "2",
            "--spawn",
            spawn,
            "--user",
            "nobody",
            "-b",
            &addr.to_string(),
            "-b",
            &format!("unix:{}", socket.display()),
        ]);
        assert_eq!(status_ids(drover.pid(), "Uid:"), [0, 0, 0, 0], "{spawn}");
        let (uid, gid) = (nobody.uid.as_raw(), nobody.gid.as_raw());
        let name = std::ffi::CString::new("nobody").unwrap();
        let mut groups: Vec<u32> = nix::unistd::getgrouplist(&name, nobody.gid)
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        groups.sort_unstable();
        groups.dedup();
        assert!(!groups.is_empty());
        for worker in drover.worker_pids() {
            assert_eq!(status_ids(worker, "Uid:"), [uid; 4], "{spawn}");
            assert_eq!(status_ids(worker, "Gid:"), [gid; 4], "{spawn}");
            assert_eq!(status_ids(worker, "Groups:"), groups, "{spawn}");
        }
        let meta = std::fs::metadata(&socket).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (uid, gid),
            "the socket file is the user's"
        );
        assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));
        assert_eq!(unix_get(&socket, "/"), (200, "hello\n".into()));
        drover.signal(Signal::SIGTERM);
        assert_eq!(drover.wait_exit(), 0, "{spawn}");
    }

    // --group alone: the workers keep root's user, take the group.
    let mut drover = Drover::start(&["-w", "1", "--group", &group.name, "-b", &addr.to_string()]);
    let worker = *drover.worker_pids().iter().next().unwrap();
    assert_eq!(status_ids(worker, "Gid:"), [group.gid.as_raw(); 4]);
    assert_eq!(status_ids(worker, "Groups:"), [group.gid.as_raw()]);
    assert_eq!(status_ids(worker, "Uid:"), [0; 4]);
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unknown_user_or_group_is_one_line_and_nothing_starts() {
    let dir = test_dir("no-user");
    let socket = dir.join("app.sock");
    for (flag, value, message) in [
        (
            "--user",
            "no-such-user-drover",
            "--user no-such-user-drover: no such user",
        ),
        (
            "--group",
            "no-such-group-drover",
            "--group no-such-group-drover: no such group",
        ),
    ] {
        let output = Command::new(drover_bin())
            .args([flag, value, "-b", &format!("unix:{}", socket.display())])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim(), format!("drover: {message}"));
        assert!(!socket.exists(), "nothing bound");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
