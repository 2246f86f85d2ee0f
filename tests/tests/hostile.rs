//! Hostile and broken clients: hyper parses; drover's part is the limits
//! and that everyone else is still served.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

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
    // And a few that trickle a byte at a time, which must not reset the
    // timer: the limit is on the whole head.
    let tricklers: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut client = connect(addr);
                client.write_all(b"GET / HTTP/1.1\r\n").unwrap();
                for _ in 0..100 {
                    if client.write_all(b"X").is_err() {
                        break; // cut
                    }
                    // sleep-ok: the client's pacing is what is tested
                    std::thread::sleep(Duration::from_millis(100));
                }
                read_until_closed(&mut client)
            })
        })
        .collect();

    // Meanwhile everyone else is served.
    for _ in 0..20 {
        assert_eq!(get(addr, "/").unwrap(), (200, "hello".into()));
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
        let answer = trickler.join().unwrap();
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer:?}"
        );
    }
    assert_eq!(get(addr, "/").unwrap(), (200, "hello".into()));
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
    assert_eq!(get(addr, "/").unwrap(), (200, "hello".into()));
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
    // An endless body nobody reads: the socket buffers fill, the server's
    // writes wait.
    let mut stuck = connect(addr);
    stuck
        .write_all(b"GET /stream HTTP/1.1\r\nhost: t\r\n\r\n")
        .unwrap();
    for _ in 0..10 {
        assert_eq!(get(addr, "/").unwrap(), (200, "hello".into()));
    }
    drover.signal(Signal::SIGTERM);
    let stopped = drover.wait_for_line("worker closed");
    assert!(stopped.contains("aborted=1"), "{stopped}");
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
    // A third connects (the kernel queues it) and sends its request.
    let mut waiting = connect(addr);
    waiting
        .write_all(b"GET /pid HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .unwrap();
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
            assert_eq!(&body[..], b"hello");
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
