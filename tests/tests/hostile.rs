//! Hostile and broken clients: hyper parses; drover's part is the limits
//! and that everyone else is still served.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use drover_tests::events;
use drover_tests::{free_addr, get, parse, Drover, WAIT};
use nix::sys::signal::Signal;

/// Reads until the server closes the connection; what it sent.
fn read_until_closed(client: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    match client.read_to_end(&mut answer) {
        Ok(_) => {}
        // A reset after the answer: what arrived still counts.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("no end within {WAIT:?}: {e}; read so far {answer:?}"),
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    client
}

#[test]
fn slowloris_clients_are_cut_at_the_header_timeout_and_others_are_served() {
    let addr = free_addr();
    let mut drover = Drover::start(&[
        "-w",
        "2",
        "--header-read-timeout",
        "1",
        "-b",
        &addr.to_string(),
    ]);
    // 200 connections that start a request head and never finish it.
    let mut slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut client = connect(addr);
            client.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
            client
        })
        .collect();
    // And a few that trickle a byte every 100 ms, which must not reset the
    // timer: the limit is on the whole head, so they are cut long before
    // their 100 bytes (10 s) are out.
    let tricklers: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut client = connect(addr);
                client.write_all(b"GET / HTTP/1.1\r\n").unwrap();
                for _ in 0..100 {
                    if client.write_all(b"X").is_err() {
                        return true; // cut
                    }
                    std::thread::sleep(Duration::from_millis(100)); // sleep-ok: the client's pacing is what is tested
                }
                false
            })
        })
        .collect();

    // Meanwhile everyone else is served.
    for _ in 0..20 {
        assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));
    }
    // Each slow connection is closed by the server (a 408 at most).
    for client in &mut slow {
        let answer = read_until_closed(client);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer:?}"
        );
    }
    for trickler in tricklers {
        assert!(trickler.join().unwrap(), "a trickling client was never cut");
    }
    assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn malformed_requests_get_400_and_oversized_heads_get_431() {
    let addr = free_addr();
    let mut drover = Drover::start(&["-w", "1", "-b", &addr.to_string()]);
    let workers = drover.worker_pids();

    let mut client = connect(addr);
    client.write_all(b"THIS IS NOT HTTP\r\n\r\n").unwrap();
    let answer = read_until_closed(&mut client);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");

    // Too many header fields.
    let mut client = connect(addr);
    let mut head = String::from("GET / HTTP/1.1\r\nhost: t\r\n");
    for i in 0..200 {
        head.push_str(&format!("x-field-{i}: {i}\r\n"));
    }
    head.push_str("\r\n");
    client.write_all(head.as_bytes()).unwrap();
    let answer = read_until_closed(&mut client);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");

    // A head larger than the read buffer.
    let mut client = connect(addr);
    let huge = format!(
        "GET / HTTP/1.1\r\nhost: t\r\nx-big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    // The server may answer and close before it has read it all.
    let _ = client.write_all(huge.as_bytes());
    let answer = read_until_closed(&mut client);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");

    assert_eq!(drover.worker_pids(), workers, "the worker survived");
    assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn a_half_closed_client_gets_its_answer() {
    let addr = free_addr();
    let mut drover = Drover::start(&["-w", "1", "-b", &addr.to_string()]);
    for path in ["/", "/sleep?ms=100"] {
        let mut client = connect(addr);
        write!(client, "GET {path} HTTP/1.1\r\nhost: t\r\n\r\n").unwrap();
        // Done sending: the write side closes while the answer is pending.
        client.shutdown(Shutdown::Write).unwrap();
        let answer = read_until_closed(&mut client);
        assert_eq!(parse(&answer).unwrap().0, 200, "{path}: {answer:?}");
    }
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn a_client_that_never_reads_holds_only_itself_and_is_cut_at_the_graceful_timeout() {
    let addr = free_addr();
    let mut drover = Drover::start(&[
        "-w",
        "1",
        "--graceful-timeout",
        "1",
        "-b",
        &addr.to_string(),
    ]);
    // A gigabyte nobody reads: the socket buffers fill within the first
    // megabytes, and the server's writes wait.
    let mut stuck = connect(addr);
    stuck
        .write_all(b"GET /bytes?n=1000000000 HTTP/1.1\r\nhost: t\r\n\r\n")
        .unwrap();
    for _ in 0..10 {
        assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));
    }
    drover.signal(Signal::SIGTERM);
    let stopped = drover.wait_for_event(events::WORKER_CLOSED);
    assert_eq!(stopped.number("aborted"), 1, "{stopped:?}");
    assert_eq!(drover.wait_exit(), 0);
    drop(stuck);
}

#[test]
fn connections_beyond_max_connections_wait_in_the_backlog() {
    let addr = free_addr();
    let mut drover = Drover::start(&["-w", "1", "--max-connections", "2", "-b", &addr.to_string()]);
    let workers = drover.worker_pids();
    // Two keep-alive connections take the worker's two places.
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut client = connect(addr);
            drover_tests::keep_alive_request(&mut client, "/");
            client
        })
        .collect();
    // A third connects and sends its request: the worker does not take
    // it, it waits in the listening socket's queue.
    let mut waiting = connect(addr);
    waiting
        .write_all(b"GET /pid HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(accept_queue(addr.port()), 1, "queued, not accepted");
    // A place frees up: the third is served, by the same worker.
    held.pop();
    let answer = read_until_closed(&mut waiting);
    let (status, body) = parse(&answer).unwrap();
    assert_eq!(status, 200);
    assert!(workers.contains(&body.trim().parse().unwrap()));
    assert_eq!(drover.worker_pids(), workers);
    drop(held);
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

/// Connections waiting in the accept queue of the socket listening on
/// 127.0.0.1:`port` (its LISTEN row's rx_queue in /proc/net/tcp).
fn accept_queue(port: u16) -> usize {
    let row = drover_tests::listening_row(port).expect("the listening socket");
    row[4]
        .split(':')
        .nth(1)
        .and_then(|rx| usize::from_str_radix(rx, 16).ok())
        .expect("an rx_queue")
}

/// One HTTP/2 frame: (type, flags, stream, payload).
fn read_frame(stream: &mut TcpStream) -> std::io::Result<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head)?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload)?;
    Ok((head[3], head[4], id, payload))
}

#[test]
fn an_idle_http2_connection_gets_goaway_when_the_server_closes() {
    const SETTINGS: u8 = 0x4;
    const PING: u8 = 0x6;
    const GOAWAY: u8 = 0x7;
    let addr = free_addr();
    let mut drover = Drover::start(&["-w", "1", "-b", &addr.to_string()]);
    let mut client = connect(addr);
    // Prior knowledge: the preface and an empty SETTINGS frame.
    client
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    // The server's SETTINGS, acknowledged.
    loop {
        let (kind, flags, _, _) = read_frame(&mut client).unwrap();
        if kind == SETTINGS && flags & 1 == 0 {
            client.write_all(b"\0\0\0\x04\x01\0\0\0\0").unwrap();
            break;
        }
    }
    drover.signal(Signal::SIGTERM);
    // A GOAWAY comes before the connection closes. (hyper's graceful
    // shutdown sends one with the highest stream id, then a PING, and on
    // its acknowledgement the final GOAWAY: the client answers PINGs as
    // any HTTP/2 client does.)
    let mut goaways = 0;
    loop {
        match read_frame(&mut client) {
            Ok((GOAWAY, _, 0, _)) => goaways += 1,
            Ok((PING, flags, 0, payload)) if flags & 1 == 0 => {
                let mut ack = vec![0, 0, 8, PING, 1, 0, 0, 0, 0];
                ack.extend(payload);
                client.write_all(&ack).unwrap();
            }
            Ok(_) => {}
            Err(_) => break, // closed
        }
    }
    assert!(goaways >= 1, "the connection ended without a GOAWAY");
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn http2_with_prior_knowledge_is_served_and_gets_goaway_on_close() {
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;
    let addr = free_addr();
    let mut drover = Drover::start(&["-w", "1", "-b", &addr.to_string()]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        let connection = tokio::spawn(connection);
        for _ in 0..3 {
            let request = hyper::Request::get(format!("http://{addr}/"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.version(), hyper::Version::HTTP_2);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"hello\n");
        }
        // Closing the server: the idle HTTP/2 connection gets GOAWAY and
        // ends cleanly (the client's connection task finishes without
        // error), long before the graceful timeout.
        drover.signal(Signal::SIGTERM);
        let ended = tokio::time::timeout(WAIT, connection)
            .await
            .expect("the connection ended")
            .unwrap();
        assert!(ended.is_ok(), "{ended:?}");
    });
    assert_eq!(drover.wait_exit(), 0);
}

/// Sends `head` on a fresh connection; the status of the answer, and
/// whether the server then closed the connection.
fn status_of(addr: std::net::SocketAddr, head: &str) -> u16 {
    let mut client = connect(addr);
    // The server may answer and close before it has read it all.
    let _ = client.write_all(head.as_bytes());
    let answer = read_until_closed(&mut client);
    parse(&answer)
        .unwrap_or_else(|e| panic!("{e}: {answer:?}"))
        .0
}

#[test]
fn request_heads_are_held_to_gunicorns_limits() {
    let addr = free_addr();
    let mut drover = Drover::start(&["-w", "1", "-b", &addr.to_string()]);
    let workers = drover.worker_pids();
    let request = |line: &str, fields: &str| {
        format!("{line}\r\nhost: t\r\nconnection: close\r\n{fields}\r\n")
    };
    // One 7 KB field: under the 8 KiB field limit.
    let ok = request(
        "GET / HTTP/1.1",
        &format!("x-big: {}\r\n", "a".repeat(7000)),
    );
    assert_eq!(status_of(addr, &ok), 200);
    // One 9 KB field: over it (the head is not).
    let field = request(
        "GET / HTTP/1.1",
        &format!("x-big: {}\r\n", "a".repeat(9000)),
    );
    assert_eq!(status_of(addr, &field), 431);
    // One 200 KB field: over the 64 KiB head limit (hyper's buffer).
    let huge = request(
        "GET / HTTP/1.1",
        &format!("x-big: {}\r\n", "a".repeat(200_000)),
    );
    assert_eq!(status_of(addr, &huge), 431);
    // 100 fields pass, 101 do not (host and connection are two).
    let fields = |n: usize| {
        (0..n)
            .map(|i| format!("x-f{i}: {i}\r\n"))
            .collect::<String>()
    };
    assert_eq!(
        status_of(addr, &request("GET / HTTP/1.1", &fields(98))),
        200
    );
    assert_eq!(
        status_of(addr, &request("GET / HTTP/1.1", &fields(99))),
        431
    );
    // A request line of 9 KiB: 414; of 7 KiB: served (a 404).
    let line = |len: usize| format!("GET /{} HTTP/1.1", "a".repeat(len));
    assert_eq!(status_of(addr, &request(&line(9 * 1024), "")), 414);
    assert_eq!(status_of(addr, &request(&line(7 * 1024), "")), 404);
    assert_eq!(drover.worker_pids(), workers, "the worker survived");
    assert_eq!(get(addr, "/").unwrap(), (200, "hello\n".into()));
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn the_head_limits_follow_their_flags() {
    let addr = free_addr();
    let mut drover = Drover::start(&[
        "-w",
        "1",
        "--limit-request-line",
        "100",
        "--limit-request-field-size",
        "0",
        "--limit-request-fields",
        "5",
        "-b",
        &addr.to_string(),
    ]);
    let request = |line: &str, fields: &str| {
        format!("{line}\r\nhost: t\r\nconnection: close\r\n{fields}\r\n")
    };
    let line = |len: usize| format!("GET /{} HTTP/1.1", "a".repeat(len));
    assert_eq!(status_of(addr, &request(&line(200), "")), 414);
    // No field limit of its own: a 20 KB field passes (the head limit holds).
    let field = request(
        "GET / HTTP/1.1",
        &format!("x-big: {}\r\n", "a".repeat(20_000)),
    );
    assert_eq!(status_of(addr, &field), 200);
    let head = request(
        "GET / HTTP/1.1",
        &format!("x-big: {}\r\n", "a".repeat(100_000)),
    );
    assert_eq!(status_of(addr, &head), 431, "over the 64 KiB head limit");
    let fields = |n: usize| {
        (0..n)
            .map(|i| format!("x-f{i}: {i}\r\n"))
            .collect::<String>()
    };
    assert_eq!(status_of(addr, &request("GET / HTTP/1.1", &fields(3))), 200);
    assert_eq!(status_of(addr, &request("GET / HTTP/1.1", &fields(4))), 431);
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn http2_settings_bound_streams_windows_and_headers() {
    const SETTINGS: u8 = 0x4;
    let addr = free_addr();
    let mut drover = Drover::start(&["-w", "1", "-b", &addr.to_string()]);
    let mut client = connect(addr);
    client
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    let settings = loop {
        let (kind, flags, _, payload) = read_frame(&mut client).unwrap();
        if kind == SETTINGS && flags & 1 == 0 {
            break payload;
        }
    };
    let announced: std::collections::HashMap<u16, u32> = settings
        .chunks_exact(6)
        .map(|s| {
            let id = u16::from_be_bytes([s[0], s[1]]);
            (id, u32::from_be_bytes([s[2], s[3], s[4], s[5]]))
        })
        .collect();
    // MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_HEADER_LIST_SIZE.
    assert_eq!(announced.get(&0x3), Some(&100), "{announced:?}");
    assert_eq!(announced.get(&0x4), Some(&(256 * 1024)), "{announced:?}");
    assert_eq!(announced.get(&0x6), Some(&(64 * 1024)), "{announced:?}");
    drop(client);
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}
