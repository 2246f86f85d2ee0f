//! The operator's endpoints and the clients connected to them, as the
//! supervisor's poll loop serves them: which descriptors to poll, taking
//! new clients (peer check, client limit), reading what they send into
//! requests, queueing replies, and cutting clients that stall.
//!
//! What a request *means* is the supervisor's business
//! (`supervisor/operator.rs`); this keeps the bytes moving without ever
//! blocking the loop.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use nix::poll::PollFlags;

use super::client::{Client, Received};
use super::endpoint::{check_peer, ControlMode, Endpoint};
use super::{http, wire};

/// At most this many clients at once on each endpoint; a newcomer past
/// it takes the place of the longest-idle client with nothing pending,
/// or is refused if every one waits for an answer.
const MAX_CLIENTS: usize = 64;

/// At most this many requests of one client wait for their answers at
/// once; more are answered with an error at once.
pub(crate) const MAX_PENDING: usize = 16;

/// Which endpoint a client came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Control,
    Metrics,
}

/// What a poll result is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Listener(Kind),
    Client(u64),
}

/// What a client asked.
#[derive(Debug, PartialEq)]
pub(crate) enum Asked {
    /// A control request line.
    Line(wire::Incoming),
    /// A metrics scrape.
    Scrape { head_only: bool },
}

struct Entry {
    id: u64,
    kind: Kind,
    client: Client,
    /// Requests of its still waiting for their answers: while there are,
    /// it is not cut for silence.
    pending: usize,
    /// Dropped at the next sweep, whatever it still has to send.
    cut: bool,
}

impl Entry {
    fn cut(&mut self) {
        self.cut = true;
    }
}

/// The endpoints and their clients.
pub(crate) struct Desk {
    control: Option<(Endpoint, ControlMode)>,
    metrics: Option<Endpoint>,
    clients: Vec<Entry>,
    next_id: u64,
}

impl Desk {
    pub(crate) fn new(control: Option<(Endpoint, ControlMode)>, metrics: Option<Endpoint>) -> Self {
        Self {
            control,
            metrics,
            clients: Vec::new(),
            next_id: 1,
        }
    }

    /// Puts in endpoints bound later (a new supervisor's, once it took
    /// over).
    pub(crate) fn open(
        &mut self,
        control: Option<(Endpoint, ControlMode)>,
        metrics: Option<Endpoint>,
    ) {
        self.control = control.or(self.control.take());
        self.metrics = metrics.or(self.metrics.take());
    }

    /// The control socket's mode, if there is one.
    pub(crate) fn mode(&self) -> Option<ControlMode> {
        self.control.as_ref().map(|(_, mode)| *mode)
    }

    /// Where the endpoints are, for the log.
    pub(crate) fn addrs(&self) -> (Option<String>, Option<String>) {
        (
            self.control.as_ref().map(|(e, _)| e.addr()),
            self.metrics.as_ref().map(Endpoint::addr),
        )
    }

    /// The descriptors to poll, and for what.
    pub(crate) fn poll_set(&self) -> Vec<(Source, BorrowedFd<'_>, PollFlags)> {
        let listeners = [
            self.control.as_ref().map(|(e, _)| (Kind::Control, e)),
            self.metrics.as_ref().map(|e| (Kind::Metrics, e)),
        ];
        let listeners = listeners
            .into_iter()
            .flatten()
            .map(|(kind, e)| (Source::Listener(kind), e.as_fd(), PollFlags::POLLIN));
        let clients = self.clients.iter().map(|entry| {
            let mut flags = PollFlags::empty();
            if !entry.client.read_closed && !entry.client.closing {
                flags |= PollFlags::POLLIN;
            }
            if entry.client.wants_write() {
                flags |= PollFlags::POLLOUT;
            }
            (Source::Client(entry.id), entry.client.stream.as_fd(), flags)
        });
        listeners.chain(clients).collect()
    }

    /// Takes every client waiting on `kind`'s endpoint.
    pub(crate) fn accept(&mut self, kind: Kind, now: Instant) {
        loop {
            let endpoint = match kind {
                Kind::Control => self.control.as_ref().map(|(e, _)| e),
                Kind::Metrics => self.metrics.as_ref(),
            };
            let Some(endpoint) = endpoint else { return };
            let stream = match endpoint.accept() {
                Ok(Some(stream)) => stream,
                Ok(None) => return,
                Err(error) => {
                    // EMFILE and the like: the loop comes back at the next turn.
                    tracing::warn!(%error, "operator endpoint: cannot accept");
                    return;
                }
            };
            let limit = match kind {
                Kind::Control => wire::MAX_LINE,
                Kind::Metrics => http::MAX_HEAD,
            };
            let Ok(mut client) = Client::new(stream, limit, now) else {
                continue;
            };
            if kind == Kind::Control {
                if let Err(refusal) = check_peer(&client.stream) {
                    tracing::warn!(why = %refusal, "control socket: client refused");
                    refuse(
                        client,
                        &wire::error_line(&serde_json::Value::Null, &refusal),
                        now,
                    );
                    continue;
                }
            }
            if !self.make_room(kind) {
                let busy = match kind {
                    Kind::Control => wire::error_line(
                        &serde_json::Value::Null,
                        "too many control clients; try again",
                    ),
                    Kind::Metrics => {
                        String::from_utf8_lossy(&http::refusal(503, "Service Unavailable"))
                            .into_owned()
                    }
                };
                refuse(client, &busy, now);
                continue;
            }
            client.deadline = now + super::client::IDLE_TIMEOUT;
            let id = self.next_id;
            self.next_id += 1;
            self.clients.push(Entry {
                id,
                kind,
                client,
                pending: 0,
                cut: false,
            });
        }
    }

    /// Whether there is room for one more client of `kind`, making it by
    /// cutting the longest-idle one with nothing pending if need be.
    fn make_room(&mut self, kind: Kind) -> bool {
        let of_kind = self.clients.iter().filter(|e| e.kind == kind).count();
        if of_kind < MAX_CLIENTS {
            return true;
        }
        let idlest = self
            .clients
            .iter()
            .enumerate()
            .filter(|(_, e)| e.kind == kind && e.pending == 0)
            .min_by_key(|(_, e)| e.client.deadline)
            .map(|(at, _)| at);
        match idlest {
            Some(at) => {
                self.clients.swap_remove(at);
                true
            }
            None => false,
        }
    }

    /// Reads what client `id` sent: the requests complete so far. A client
    /// that sent too much, or whose socket failed, is cut (a control
    /// client told why first).
    pub(crate) fn read(&mut self, id: u64, now: Instant) -> Vec<Asked> {
        let Some(entry) = self.clients.iter_mut().find(|e| e.id == id) else {
            return Vec::new();
        };
        if entry.client.closing || entry.client.read_closed {
            return Vec::new();
        }
        let received = entry.client.read(now);
        let mut asked = Vec::new();
        match entry.kind {
            Kind::Control => {
                while let Some(line) = entry.client.next_line() {
                    asked.push(Asked::Line(wire::parse_line(&line)));
                }
            }
            Kind::Metrics => match http::parse(entry.client.input()) {
                http::Head::Partial => {}
                http::Head::Metrics { head_only } => {
                    entry.client.closing = true;
                    asked.push(Asked::Scrape { head_only });
                }
                http::Head::Refused(status, reason) => {
                    let _ = entry.client.send(&http::refusal(status, reason));
                    entry.client.closing = true;
                }
            },
        }
        match received {
            Ok(Received::More | Received::Eof) => {}
            Ok(Received::TooLong) => {
                let answer = match entry.kind {
                    Kind::Control => wire::error_line(
                        &serde_json::Value::Null,
                        &format!("request line longer than {} bytes", wire::MAX_LINE),
                    )
                    .into_bytes(),
                    Kind::Metrics => http::refusal(431, "Request Header Fields Too Large"),
                };
                let _ = entry.client.send(&answer);
                entry.client.closing = true;
                asked.clear();
            }
            Err(_) => {
                entry.cut();
                asked.clear();
            }
        }
        asked
    }

    /// Queues an answer for client `id` (gone: nothing happens), and
    /// writes what its socket takes now.
    pub(crate) fn answer(&mut self, id: u64, bytes: &[u8], now: Instant) {
        let Some(entry) = self.clients.iter_mut().find(|e| e.id == id) else {
            return;
        };
        // Megabytes left unread: not a client, a leak.
        if !entry.client.send(bytes) || entry.client.flush(now).is_err() {
            entry.cut();
        }
        // One that was only waiting for this goes now, not at its deadline.
        self.sweep(now);
    }

    /// One more (or one fewer, `false`) request of client `id` waits for
    /// its answer.
    pub(crate) fn set_pending(&mut self, id: u64, more: bool) {
        if let Some(entry) = self.clients.iter_mut().find(|e| e.id == id) {
            entry.pending = if more {
                entry.pending + 1
            } else {
                entry.pending.saturating_sub(1)
            };
        }
    }

    /// How many requests of client `id` wait for their answers.
    pub(crate) fn pending(&self, id: u64) -> usize {
        self.clients
            .iter()
            .find(|e| e.id == id)
            .map_or(0, |e| e.pending)
    }

    /// Writes what client `id`'s socket takes now.
    pub(crate) fn flush(&mut self, id: u64, now: Instant) {
        if let Some(entry) = self.clients.iter_mut().find(|e| e.id == id) {
            if entry.client.flush(now).is_err() {
                entry.cut();
            }
        }
    }

    /// Drops the clients that are done, and those past their deadline
    /// with nothing pending (silent, or not reading what they were sent).
    pub(crate) fn sweep(&mut self, now: Instant) {
        self.clients.retain(|e| {
            let stalled = e.client.deadline <= now && (e.pending == 0 || e.client.wants_write());
            let done = e.client.is_done() && e.pending == 0;
            !(e.cut || stalled || done)
        });
    }

    /// When the next client would be cut for stalling.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.clients
            .iter()
            .filter(|e| e.pending == 0 || e.client.wants_write())
            .map(|e| e.client.deadline)
            .min()
    }

    /// Stops taking clients (the endpoints close) and leaves the control
    /// socket's file to whoever put theirs at its path: after a binary
    /// upgrade, the new supervisor. The clients already here still get
    /// their answers.
    pub(crate) fn hand_over(&mut self) {
        if let Some((endpoint, _)) = self.control.take() {
            drop(endpoint.forget_file());
        }
        if let Some(endpoint) = self.metrics.take() {
            drop(endpoint.forget_file());
        }
    }

    /// At the end: writes what can be written without waiting, removes
    /// the endpoints' socket files (if still this supervisor's).
    pub(crate) fn close(&mut self, now: Instant) {
        for entry in &mut self.clients {
            let _ = entry.client.flush(now);
        }
        self.clients.clear();
        if let Some((endpoint, _)) = self.control.take() {
            endpoint.remove_file();
        }
        if let Some(endpoint) = self.metrics.take() {
            endpoint.remove_file();
        }
    }
}

/// Answers a client that is not taken, once, without waiting (it is
/// closed as it drops).
fn refuse(mut client: Client, answer: &str, now: Instant) {
    let _ = client.send(answer.as_bytes());
    let _ = client.flush(now);
}
