//! An operator's mistakes and a hostile local user's tricks, at start:
//! each is one clear line and a non-zero exit, or is made harmless; none
//! takes over what another drover runs.

use std::os::unix::fs::symlink;
use std::process::Command;

use drover_shared::env;
use drover_tests::events;
use drover_tests::{drover_bin, free_addr, get, read_pid, test_dir, Drover};
use nix::sys::signal::Signal;

#[test]
fn a_second_drover_with_the_same_pid_file_refuses_to_start() {
    let dir = test_dir("pid-file-twice");
    let pid_file = dir.join("drover.pid");
    let addr = free_addr();
    let mut first = Drover::start(&[
        "-w",
        "1",
        "-b",
        &addr.to_string(),
        "--pid-file",
        pid_file.to_str().unwrap(),
    ]);
    assert_eq!(read_pid(&pid_file), first.pid());

    let mut command = Command::new(drover_bin());
    command.args(["-w", "1", "-b", &free_addr().to_string(), "--pid-file"]);
    command.arg(&pid_file);
    let mut second = Drover::spawn(command);
    assert_eq!(second.wait_exit(), 1);
    let log = second.log.join("\n");
    assert!(
        log.contains(&format!("names pid {}", first.pid())) && log.contains("running"),
        "{log}"
    );
    // The running one's file is untouched, and so is its service.
    assert_eq!(read_pid(&pid_file), first.pid());
    assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));
    first.signal(Signal::SIGTERM);
    assert_eq!(first.wait_exit(), 0);
    assert!(!pid_file.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_symlink_in_the_pid_files_place_is_replaced_not_followed() {
    let dir = test_dir("pid-file-symlink");
    let precious = dir.join("precious");
    std::fs::write(&precious, "root's own file\n").unwrap();
    let pid_file = dir.join("drover.pid");
    symlink(&precious, &pid_file).unwrap();
    let mut drover = Drover::start(&[
        "-w",
        "1",
        "-b",
        &free_addr().to_string(),
        "--pid-file",
        pid_file.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(&precious).unwrap(),
        "root's own file\n"
    );
    assert!(!std::fs::symlink_metadata(&pid_file).unwrap().is_symlink());
    assert_eq!(read_pid(&pid_file), drover.pid());
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// drover started by a shell that forked (no `exec`) after systemd set
/// LISTEN_FDS for the shell: LISTEN_PID names the shell.
fn behind_a_forking_wrapper(args: &str) -> Drover {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!(
            "LISTEN_PID=$$ LISTEN_FDS=1 \"$0\" -w 1 {args}; exit $?"
        ))
        .arg(drover_bin());
    Drover::spawn(command)
}

#[test]
fn sockets_activated_for_another_process_are_refused_unless_bind_is_given() {
    let mut drover = behind_a_forking_wrapper("");
    assert_eq!(drover.wait_exit(), 1);
    let log = drover.log.join("\n");
    assert!(
        log.contains("LISTEN_FDS is meant for pid") && log.contains("--bind"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");

    let addr = free_addr();
    let mut drover = behind_a_forking_wrapper(&format!("-b {addr}"));
    drover.wait_for_event(events::READY);
    assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));
    // The shell is the child; the supervisor is its child.
    let supervisor = drover.events(events::STARTING)[0].number("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(supervisor as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn boolean_variables_take_the_usual_spellings_and_a_bad_value_names_its_variable() {
    for yes in ["1", "yes", "true", "on"] {
        let addr = free_addr();
        let mut command = Command::new(drover_bin());
        command
            .args(["-w", "1", "-b", &addr.to_string()])
            .env(env::flags::ACCESS_LOG, yes);
        let mut drover = Drover::spawn(command);
        drover.wait_for_event(events::READY);
        assert_eq!(get(addr, "/healthz").unwrap(), (200, "ok\n".into()));
        drover.wait_for_line("\"path\":\"/healthz\"");
        drover.signal(Signal::SIGTERM);
        assert_eq!(drover.wait_exit(), 0, "{yes}");
    }
    for (variable, value) in [
        (env::flags::ACCESS_LOG, "maybe"),
        (env::flags::WORKERS, "many"),
    ] {
        let mut command = Command::new(drover_bin());
        command.env(variable, value);
        let mut drover = Drover::spawn(command);
        assert_eq!(drover.wait_exit(), 2, "{variable}={value}");
        let log = drover.log.join("\n");
        assert!(log.contains(value) && log.contains(variable), "{log}");
    }
}
