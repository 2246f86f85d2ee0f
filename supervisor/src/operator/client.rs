//! One operator client's connection (the control socket's or the metrics
//! endpoint's), served from the supervisor's poll loop: non-blocking
//! reads into a bounded buffer, writes queued and flushed when the socket
//! takes them, and a deadline that cuts a client that is silent, or that
//! does not read what it is sent.
//!
//! Nothing here blocks and nothing grows without bound: a client costs at
//! most its input limit and the replies it has not read.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// How long a client may stay silent, or leave its replies unread,
/// before it is cut.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most reply bytes a client may leave unread; past it, it is cut.
const MAX_UNREAD: usize = 4 * 1024 * 1024;

/// An accepted connection.
#[derive(Debug)]
pub(crate) enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Unix(s) => s.read(buf),
            Self::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Unix(s) => s.write(buf),
            Self::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Unix(s) => s.as_fd(),
            Self::Tcp(s) => s.as_fd(),
        }
    }
}

/// What reading found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// Bytes were added to the input (or none were there yet).
    More,
    /// The client closed its end (what it sent before is still there).
    Eof,
    /// The input is over its limit without a complete frame.
    TooLong,
}

/// One client.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) stream: Stream,
    input: Vec<u8>,
    /// The longest input kept without a complete frame.
    input_limit: usize,
    output: Vec<u8>,
    /// Bytes of `output` already written.
    written: usize,
    /// Cut then: silent, or not reading (moved on by progress either way).
    pub(crate) deadline: Instant,
    /// Set once the client is to go as soon as its output is flushed.
    pub(crate) closing: bool,
    /// Set once its end is closed: it sends nothing more.
    pub(crate) read_closed: bool,
}

impl Client {
    /// A new client; its socket is made non-blocking.
    pub(crate) fn new(stream: Stream, input_limit: usize, now: Instant) -> io::Result<Self> {
        match &stream {
            Stream::Unix(s) => s.set_nonblocking(true)?,
            Stream::Tcp(s) => s.set_nonblocking(true)?,
        }
        Ok(Self {
            stream,
            input: Vec::new(),
            input_limit,
            output: Vec::new(),
            written: 0,
            deadline: now + IDLE_TIMEOUT,
            closing: false,
            read_closed: false,
        })
    }

    /// Reads what has arrived, up to the input limit.
    pub(crate) fn read(&mut self, now: Instant) -> io::Result<Received> {
        let mut chunk = [0u8; 8192];
        loop {
            if self.input.len() > self.input_limit {
                return Ok(Received::TooLong);
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.read_closed = true;
                    return Ok(Received::Eof);
                }
                Ok(n) => {
                    self.input.extend_from_slice(&chunk[..n]);
                    self.deadline = now + IDLE_TIMEOUT;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Received::More),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The next complete line (without its newline), if one is in.
    pub(crate) fn next_line(&mut self) -> Option<Vec<u8>> {
        let end = self.input.iter().position(|&b| b == b'\n')?;
        let mut line: Vec<u8> = self.input.drain(..=end).collect();
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Some(line)
    }

    /// What has been read and not taken yet.
    pub(crate) fn input(&self) -> &[u8] {
        &self.input
    }

    /// Queues `bytes` to send; a client that leaves too much unread is
    /// to be cut (`false`).
    pub(crate) fn send(&mut self, bytes: &[u8]) -> bool {
        if self.output.len() - self.written + bytes.len() > MAX_UNREAD {
            return false;
        }
        self.output.extend_from_slice(bytes);
        true
    }

    /// Whether replies wait to be written.
    pub(crate) fn wants_write(&self) -> bool {
        self.written < self.output.len()
    }

    /// Writes what the socket takes now. Progress moves the deadline on.
    pub(crate) fn flush(&mut self, now: Instant) -> io::Result<()> {
        while self.wants_write() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    self.deadline = now + IDLE_TIMEOUT;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.output.clear();
        self.written = 0;
        Ok(())
    }

    /// Done with: told to go and everything sent, or nothing more can
    /// come and nothing is left to send.
    pub(crate) fn is_done(&self) -> bool {
        !self.wants_write() && (self.closing || self.read_closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Client, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        (
            Client::new(Stream::Unix(ours), 16, Instant::now()).unwrap(),
            theirs,
        )
    }

    #[test]
    fn lines_are_taken_one_at_a_time_and_a_partial_one_waits() {
        let (mut client, mut peer) = pair();
        peer.write_all(b"one\r\ntwo\nthr").unwrap();
        assert_eq!(client.read(Instant::now()).unwrap(), Received::More);
        assert_eq!(client.next_line().as_deref(), Some(&b"one"[..]));
        assert_eq!(client.next_line().as_deref(), Some(&b"two"[..]));
        assert_eq!(client.next_line(), None);
        assert_eq!(client.input(), b"thr");
        drop(peer);
        assert_eq!(client.read(Instant::now()).unwrap(), Received::Eof);
        assert!(client.is_done());
    }

    #[test]
    fn input_past_the_limit_without_a_line_is_too_long() {
        let (mut client, mut peer) = pair();
        peer.write_all(&[b'x'; 64]).unwrap();
        assert_eq!(client.read(Instant::now()).unwrap(), Received::TooLong);
    }

    #[test]
    fn a_client_that_does_not_read_is_bounded_and_flushes_as_it_can() {
        let (mut client, mut peer) = pair();
        let now = Instant::now();
        let chunk = vec![b'y'; 1024 * 1024];
        for _ in 0..4 {
            assert!(client.send(&chunk));
        }
        assert!(!client.send(b"z"), "past the unread limit");
        client.flush(now).unwrap();
        assert!(
            client.wants_write(),
            "the socket buffer is smaller than 4 MiB"
        );
        let mut got = vec![0u8; 4096];
        let n = peer.read(&mut got).unwrap();
        assert!(n > 0);
        client.closing = true;
        assert!(!client.is_done(), "output is still pending");
    }
}
