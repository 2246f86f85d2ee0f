//! Slow clients cannot take a worker out of service: a request body that
//! stops coming is cut at `--body-read-timeout`, a client that stops
//! reading at `--send-timeout`, and everyone else is served meanwhile.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use drover_tests::{distinct_pids, free_addr, get, Drover};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;

/// Slow clients of each kind.
const CLIENTS: usize = 300;
/// Both timeouts, in seconds.
const TIMEOUT: u64 = 2;
/// How soon after its last byte a slow client must be cut: the timeout
/// plus a generous margin.
const CUT_WITHIN: Duration = Duration::from_secs(TIMEOUT + 10);

/// This process holds two descriptors per slow upload (the pacer's copy)
/// and one per non-reader: raise its soft limit to the hard one.
fn raise_own_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let needed = (3 * CLIENTS + 256) as u64;
    assert!(
        hard >= needed,
        "this test needs {needed} descriptors; the hard limit is {hard}"
    );
}

fn assert_served(addr: SocketAddr) {
    assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));
}

/// A client that sends the head of a 2 MB upload and one byte of it.
fn slow_upload(addr: SocketAddr) -> (TcpStream, Instant) {
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(CUT_WITHIN)).unwrap();
    client
        .write_all(b"POST /upload HTTP/1.1\r\nhost: t\r\ncontent-length: 2000000\r\n\r\nx")
        .unwrap();
    (client, Instant::now())
}

/// A client that asks for a gigabyte and reads none of it; its receive
/// buffer is small, so the server's writes wait within a few kilobytes
/// and the kernel holds little.
fn non_reader(addr: SocketAddr) -> (TcpStream, Instant) {
    let (mut client, _) = non_reader_socket(addr);
    client
        .write_all(b"GET /bytes?n=1000000000 HTTP/1.1\r\nhost: t\r\n\r\n")
        .unwrap();
    (client, Instant::now())
}

/// A connection with a small receive buffer.
fn non_reader_socket(addr: SocketAddr) -> (TcpStream, Instant) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    (TcpStream::from(socket), Instant::now())
}

/// Reads what the server sends until it closes; `None` if it did not
/// within the read timeout.
fn read_until_closed(client: &mut TcpStream) -> Option<String> {
    let mut answer = Vec::new();
    match client.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(_) => return None,
    }
    Some(String::from_utf8_lossy(&answer).into_owned())
}

/// Waits, until `deadline`, for the connection to be reset or hung up
/// (without reading: reading would let the server's writes progress).
fn wait_for_hangup(client: &TcpStream, deadline: Instant) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(client.as_fd(), PollFlags::empty())];
        match poll(&mut fds, timeout) {
            Ok(0) => return false,
            Ok(_) => {
                let revents = fds[0].revents().unwrap_or(PollFlags::empty());
                if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                    return true;
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(error) => panic!("poll: {error}"),
        }
    }
}

#[test]
fn slow_uploads_and_non_readers_are_cut_and_everyone_else_is_served() {
    raise_own_fd_limit();
    let addr = free_addr();
    let timeout = TIMEOUT.to_string();
    let mut drover = Drover::start(&[
        "-w",
        "2",
        "--body-read-timeout",
        &timeout,
        "--send-timeout",
        &timeout,
        "-b",
        &addr.to_string(),
    ]);
    let workers = drover.worker_pids();

    let mut uploads = Vec::with_capacity(CLIENTS);
    let mut readers = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        uploads.push(slow_upload(addr));
        readers.push(non_reader(addr));
        if i % 50 == 0 {
            assert_served(addr);
        }
    }
    // The slow ones are held now; others are served.
    for _ in 0..5 {
        assert_served(addr);
    }
    // Now and then another byte of each upload, slower than the timeout.
    let (stop, stopped) = mpsc::channel::<()>();
    let mut paced: Vec<TcpStream> = uploads
        .iter()
        .map(|(c, _)| c.try_clone().unwrap())
        .collect();
    let pacer = std::thread::spawn(move || {
        // sleep-ok: the wait is the pacing of a client slower than the timeout
        while stopped
            .recv_timeout(Duration::from_secs(TIMEOUT + 1))
            .is_err()
        {
            for client in &mut paced {
                let _ = client.write_all(b"x");
            }
        }
    });

    // Each upload is answered 408 (or only cut) within the margin.
    for (i, (client, sent)) in uploads.iter_mut().enumerate() {
        let answer = read_until_closed(client)
            .unwrap_or_else(|| panic!("upload {i} was not cut within {CUT_WITHIN:?}"));
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "upload {i}: {answer:?}"
        );
        assert!(sent.elapsed() < CUT_WITHIN, "upload {i} cut late");
    }
    // Each non-reader is reset within the margin.
    for (i, (client, sent)) in readers.iter().enumerate() {
        assert!(
            wait_for_hangup(client, *sent + CUT_WITHIN),
            "non-reader {i} was not cut within {CUT_WITHIN:?}"
        );
    }
    stop.send(()).unwrap();
    pacer.join().unwrap();

    // Both workers are still the same, and both accept new clients.
    assert_eq!(drover.worker_pids(), workers, "no worker was replaced");
    assert_eq!(distinct_pids(addr, 2), workers);
    drop((uploads, readers));
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn an_http2_client_that_stops_reading_is_cut_at_the_send_timeout() {
    let addr = free_addr();
    let timeout = TIMEOUT.to_string();
    let mut drover = Drover::start(&[
        "-w",
        "1",
        "--send-timeout",
        &timeout,
        "-b",
        &addr.to_string(),
    ]);
    let (mut client, _) = non_reader_socket(addr);
    // Prior knowledge; SETTINGS with the largest stream window, and the
    // connection window opened as wide: HTTP/2 flow control never stops
    // the server, only the socket does.
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend([0, 0, 6, 0x4, 0, 0, 0, 0, 0, 0, 0x4, 0x7f, 0xff, 0xff, 0xff]);
    hello.extend([0, 0, 4, 0x8, 0, 0, 0, 0, 0, 0x7f, 0xff, 0, 0]);
    // HEADERS, END_STREAM | END_HEADERS, stream 1: GET http://t/bytes?n=1e9
    // (HPACK: indexed :method GET and :scheme http, literal :path and
    // :authority).
    let path = b"/bytes?n=1000000000";
    let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
    block.extend(path);
    block.extend([0x01, 0x01, b't']);
    hello.extend([0, 0, block.len() as u8, 0x1, 0x5, 0, 0, 0, 1]);
    hello.extend(block);
    client.write_all(&hello).unwrap();
    let sent = Instant::now();
    assert!(
        wait_for_hangup(&client, sent + CUT_WITHIN),
        "the HTTP/2 connection was not cut within {CUT_WITHIN:?}"
    );
    assert_served(addr);
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

/// drover started with a soft descriptor limit of 400 (the hard one
/// unchanged), and the `fd_limits` line of its worker.
fn fd_limits_with(args: &[&str]) -> (drover_tests::Event, u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    use std::os::unix::process::CommandExt;
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let addr = free_addr().to_string();
    let mut command = std::process::Command::new(drover_tests::drover_bin());
    command.args(["-w", "1", "-b", &addr]).args(args);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between
    // fork and exec.
    unsafe {
        command.pre_exec(move || {
            setrlimit(Resource::RLIMIT_NOFILE, 400, hard).map_err(std::io::Error::from)
        });
    }
    let mut drover = Drover::spawn(command);
    let limits = drover.wait_for_event(drover_tests::events::FD_LIMITS);
    drover.wait_for_event(drover_tests::events::READY);
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
    (limits, hard)
}

#[test]
fn a_worker_raises_its_descriptor_limit_and_keeps_connections_below_it() {
    let (limits, hard) = fd_limits_with(&[]);
    let hard = i64::try_from(hard).unwrap_or(i64::MAX);
    assert_eq!(limits.number("nofile_hard"), hard, "{limits:?}");
    assert_eq!(limits.number("nofile_soft"), hard, "raised: {limits:?}");
    let reserve = (hard / 10).max(64);
    assert_eq!(
        limits.number("max_connections"),
        hard - reserve,
        "{limits:?}"
    );
    // An explicit --max-connections wins.
    let (limits, _) = fd_limits_with(&["--max-connections", "7"]);
    assert_eq!(limits.number("max_connections"), 7, "{limits:?}");
}
