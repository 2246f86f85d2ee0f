//! `fd://N`: in a test binary of its own, because it clears close-on-exec
//! on a socket, which any process spawned meanwhile would inherit.

use std::os::fd::AsRawFd;
use std::process::Command;

use drover_tests::events;
use drover_tests::{drover_bin, get, Drover};
use nix::sys::signal::Signal;

#[test]
fn fd_bind_serves_an_inherited_socket() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Inherited by the child: not close-on-exec.
    socket2::SockRef::from(&listener)
        .set_cloexec(false)
        .unwrap();
    let fd = listener.as_raw_fd();
    let mut command = Command::new(drover_bin());
    command.args(["-w", "1", "-b", &format!("fd://{fd}")]);
    let mut drover = Drover::spawn(command);
    drover.wait_for_event(events::READY);
    drop(listener);
    assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}
