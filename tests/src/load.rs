//! A load generator for the zero-downtime tests: HTTP/1.1 clients built on
//! hyper's client, some reusing one keep-alive connection for request
//! after request, some connecting afresh for each, all asking `GET /pid`
//! as fast as they can until stopped. Every request that was sent and did
//! not get a whole `200` back counts as a failure, with its reason; so does
//! a refused connect.
//!
//! A keep-alive client reconnects when a response says `connection:
//! close`, or when it finds its connection closed *before* sending (what
//! any client's pool does); a request written to a connection that the
//! server then closes is a failure: that is the race a draining worker
//! must not lose.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::{handshake, SendRequest};
use hyper::header::{CONNECTION, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::WAIT;

/// What the clients saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Requests answered with a whole 200.
    pub ok: u64,
    /// How many requests (or connects) failed.
    pub failed: u64,
    /// The first failures' reasons.
    pub failures: Vec<String>,
    /// The worker pids that answered.
    pub pids: HashSet<i32>,
}

/// Running clients; [`stop`](Load::stop) ends them and reports.
pub struct Load {
    stop: watch::Sender<bool>,
    tally: Arc<Tally>,
    /// `None` once stopped.
    thread: Option<JoinHandle<Report>>,
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<Vec<String>>,
    pids: Mutex<HashSet<i32>>,
    /// Requests done (answered or failed), for [`Load::wait_for`].
    done: Mutex<u64>,
    progress: Condvar,
}

impl Tally {
    fn count(&self) {
        *self.done.lock().unwrap() += 1;
        self.progress.notify_all();
    }

    fn fail(&self, why: String) {
        self.count();
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut failures = self.failures.lock().unwrap();
        if failures.len() < 20 {
            failures.push(why);
        }
    }

    fn answered(&self, status: u16, body: &[u8]) {
        self.count();
        let pid = std::str::from_utf8(body)
            .ok()
            .and_then(|b| b.trim().parse::<i32>().ok());
        match (status, pid) {
            (200, Some(pid)) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                self.pids.lock().unwrap().insert(pid);
            }
            _ => self.fail(format!(
                "answer {status} {:?}",
                String::from_utf8_lossy(body)
            )),
        }
    }
}

impl Load {
    /// Starts `keep_alive` clients that reuse their connection and `fresh`
    /// clients that connect for every request, against `addr`, on a
    /// runtime thread of their own.
    pub fn start(addr: SocketAddr, keep_alive: usize, fresh: usize) -> Self {
        let (stop, stopped) = watch::channel(false);
        let tally = Arc::new(Tally::default());
        let shared = Arc::clone(&tally);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let tally = shared;
                let mut clients = tokio::task::JoinSet::new();
                for i in 0..keep_alive + fresh {
                    let (tally, stopped) = (Arc::clone(&tally), stopped.clone());
                    clients.spawn(client(addr, i < keep_alive, stopped, tally));
                }
                while clients.join_next().await.is_some() {}
                let failures = std::mem::take(&mut *tally.failures.lock().unwrap());
                let pids = std::mem::take(&mut *tally.pids.lock().unwrap());
                Report {
                    ok: tally.ok.load(Ordering::Relaxed),
                    failed: tally.failed.load(Ordering::Relaxed),
                    failures,
                    pids,
                }
            })
        });
        Self {
            stop,
            tally,
            thread: Some(thread),
        }
    }

    /// Waits until the clients have done `requests` more requests
    /// (answered or failed); fails the test after [`WAIT`].
    pub fn wait_for(&self, requests: u64) {
        let deadline = Instant::now() + WAIT;
        let mut done = self.tally.done.lock().unwrap();
        let target = *done + requests;
        while *done < target {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the load made {} of {requests} requests within {WAIT:?}",
                requests - (target - *done)
            );
            done = self.tally.progress.wait_timeout(done, left).unwrap().0;
        }
    }

    /// Stops the clients after their current request; what they saw.
    pub fn stop(mut self) -> Report {
        let _ = self.stop.send(true);
        let thread = self.thread.take().expect("stopped once");
        thread.join().expect("the load generator panicked")
    }
}

impl Drop for Load {
    /// A test that fails half-way stops its clients too, instead of leaving
    /// them hammering a dead port for the rest of the test binary.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn client(
    addr: SocketAddr,
    keep_alive: bool,
    stopped: watch::Receiver<bool>,
    tally: Arc<Tally>,
) {
    let mut connection: Option<SendRequest<Empty<Bytes>>> = None;
    // Stopped, or the test holding the sender is gone.
    while !*stopped.borrow() && stopped.has_changed().is_ok() {
        let mut sender = match connection.take() {
            Some(sender) => sender,
            None => match connect(addr).await {
                Ok(sender) => sender,
                Err(why) => {
                    tally.fail(why);
                    continue;
                }
            },
        };
        // Closed before this request was written (the server said
        // `connection: close`, or closed it idle): a client's pool drops
        // such a connection; nothing was lost.
        if sender.ready().await.is_err() {
            continue;
        }
        let mut request = Request::get("/pid").header(HOST, "test");
        if !keep_alive {
            request = request.header(CONNECTION, "close");
        }
        let request = request.body(Empty::new()).unwrap();
        let answer = tokio::time::timeout(WAIT, async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("request: {e}"))?;
            let status = response.status().as_u16();
            let closes = response
                .headers()
                .get(CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body, closes))
        })
        .await;
        match answer {
            Ok(Ok((status, body, closes))) => {
                tally.answered(status, &body);
                if keep_alive && !closes {
                    connection = Some(sender);
                }
            }
            Ok(Err(why)) => tally.fail(why),
            Err(_) => tally.fail(format!("no answer within {WAIT:?}")),
        }
    }
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Empty<Bytes>>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        // Its end (a close, an error) shows in the request it fails.
        let _ = connection.await;
    });
    Ok(sender)
}
