//! The control protocol between the supervisor and one worker: one message
//! per `SOCK_SEQPACKET` datagram, in a small versioned binary encoding.
//!
//! ```text
//! byte 0   version (1)
//! byte 1   message tag
//! then     fields: u64 little-endian; strings as u16 length + UTF-8
//! ```
//!
//! Decoding never panics and never allocates more than the datagram holds:
//! a bad version, an unknown tag, a short or over-long datagram is a
//! [`DecodeError`], and the supervisor replaces a worker that sends one.
//!
//! Across versions of drover (an exec'd worker of a newer binary under an
//! older supervisor after a HUP, two supervisors at a binary upgrade), the
//! version stays 1 as long as messages only grow: a new field goes at the
//! end of its message, a decoder takes a missing trailing counter as 0
//! and ignores bytes past the fields it knows. The version changes only
//! for a layout an older decoder would misread.

use std::fmt;

/// The encoding's version; a datagram with another is refused.
pub(crate) const PROTOCOL_VERSION: u8 = 1;
/// The largest datagram either side sends or accepts.
pub(crate) const MAX_DATAGRAM: usize = 1024;
/// The longest `BootFailed` reason sent (longer ones are cut).
const MAX_REASON: usize = MAX_DATAGRAM - 8;

/// A worker's live counters, as its server keeps them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct WorkerCounters {
    /// Requests handed to the application so far.
    pub(crate) requests: u64,
    /// Requests whose responses are not sent in full yet.
    pub(crate) in_flight: u64,
    /// Connections open now.
    pub(crate) connections: u64,
    /// TLS handshakes that failed so far.
    pub(crate) tls_handshake_failures: u64,
}

/// Worker → supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WorkerMessage {
    /// `start_serving` returned: the worker accepts connections.
    Ready,
    /// Sent every heartbeat interval from the worker's runtime.
    Heartbeat(WorkerCounters),
    /// The answer to [`SupervisorMessage::Report`]: the counters now.
    Report {
        /// The query it answers.
        query: u64,
        counters: WorkerCounters,
    },
    /// The worker could not start serving; it exits next.
    BootFailed {
        /// Why, for the supervisor's log and stderr.
        reason: String,
    },
    /// The worker has served its request quota (`--max-requests`): it
    /// asks for a replacement and keeps serving until told to close.
    Recycle {
        /// Requests served so far.
        requests: u64,
    },
    /// The worker's server is closed; it exits next.
    Closed {
        /// Connections that finished on their own after the close.
        drained: u64,
        /// Connections cut at the graceful deadline.
        aborted: u64,
        /// Requests served over the worker's life.
        requests: u64,
        /// TLS handshakes that failed over the worker's life.
        tls_handshake_failures: u64,
    },
}

/// Supervisor → worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SupervisorMessage {
    /// Close the server: idle connections get `drain_ms` to send one more
    /// request (0: fast close); connections still open after `graceful_ms`
    /// are aborted.
    Close {
        /// The drain window, in milliseconds.
        drain_ms: u64,
        /// The graceful deadline, in milliseconds.
        graceful_ms: u64,
    },
    /// Send your counters now ([`WorkerMessage::Report`]), for an
    /// operator's `status` or a metrics scrape.
    Report {
        /// Echoed in the answer.
        query: u64,
    },
    /// The certificate and key to serve from now on (at a worker's start,
    /// and at every reload): a sealed memfd travels with the datagram
    /// (`tls_material`).
    Tls,
}

/// Why a datagram is not a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Nothing, or not even a header.
    TooShort,
    /// Longer than [`MAX_DATAGRAM`].
    TooLong,
    /// Another protocol version.
    Version(u8),
    /// A tag this version does not know.
    UnknownTag(u8),
    /// The fields do not match the tag (short, trailing bytes, bad UTF-8).
    Malformed,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort => f.write_str("datagram too short"),
            Self::TooLong => f.write_str("datagram too long"),
            Self::Version(v) => write!(f, "protocol version {v}, expected {PROTOCOL_VERSION}"),
            Self::UnknownTag(t) => write!(f, "unknown message tag {t}"),
            Self::Malformed => f.write_str("malformed message fields"),
        }
    }
}

impl std::error::Error for DecodeError {}

const READY: u8 = 1;
const HEARTBEAT: u8 = 2;
const BOOT_FAILED: u8 = 3;
const CLOSED: u8 = 4;
const RECYCLE: u8 = 5;
const REPORT: u8 = 6;
const CLOSE: u8 = 64;
const ASK_REPORT: u8 = 65;
const TLS: u8 = 66;

impl WorkerMessage {
    /// The datagram for this message.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Writer::new();
        match self {
            Self::Ready => out.tag(READY),
            Self::Heartbeat(counters) => out.tag(HEARTBEAT).counters(counters),
            Self::Report { query, counters } => out.tag(REPORT).u64(*query).counters(counters),
            Self::BootFailed { reason } => out.tag(BOOT_FAILED).str(reason),
            Self::Recycle { requests } => out.tag(RECYCLE).u64(*requests),
            Self::Closed {
                drained,
                aborted,
                requests,
                tls_handshake_failures,
            } => out
                .tag(CLOSED)
                .u64(*drained)
                .u64(*aborted)
                .u64(*requests)
                .u64(*tls_handshake_failures),
        };
        out.0
    }

    /// Parses one datagram.
    pub(crate) fn decode(datagram: &[u8]) -> Result<Self, DecodeError> {
        let (tag, mut fields) = Reader::open(datagram)?;
        let message = match tag {
            READY => Self::Ready,
            HEARTBEAT => Self::Heartbeat(fields.counters()?),
            REPORT => Self::Report {
                query: fields.u64()?,
                counters: fields.counters()?,
            },
            BOOT_FAILED => Self::BootFailed {
                reason: fields.str()?,
            },
            RECYCLE => Self::Recycle {
                requests: fields.u64()?,
            },
            CLOSED => Self::Closed {
                drained: fields.u64()?,
                aborted: fields.u64()?,
                requests: fields.u64()?,
                tls_handshake_failures: fields.later_u64(),
            },
            other => return Err(DecodeError::UnknownTag(other)),
        };
        Ok(message)
    }
}

impl SupervisorMessage {
    /// The datagram for this message.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Writer::new();
        match self {
            Self::Close {
                drain_ms,
                graceful_ms,
            } => out.tag(CLOSE).u64(*drain_ms).u64(*graceful_ms),
            Self::Report { query } => out.tag(ASK_REPORT).u64(*query),
            Self::Tls => out.tag(TLS),
        };
        out.0
    }

    /// Parses one datagram.
    pub(crate) fn decode(datagram: &[u8]) -> Result<Self, DecodeError> {
        let (tag, mut fields) = Reader::open(datagram)?;
        let message = match tag {
            CLOSE => Self::Close {
                drain_ms: fields.u64()?,
                graceful_ms: fields.u64()?,
            },
            ASK_REPORT => Self::Report {
                query: fields.u64()?,
            },
            TLS => Self::Tls,
            other => return Err(DecodeError::UnknownTag(other)),
        };
        Ok(message)
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn new() -> Self {
        Self(vec![PROTOCOL_VERSION])
    }

    fn tag(&mut self, tag: u8) -> &mut Self {
        self.0.push(tag);
        self
    }

    fn u64(&mut self, value: u64) -> &mut Self {
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }

    fn counters(&mut self, counters: &WorkerCounters) -> &mut Self {
        self.u64(counters.requests)
            .u64(counters.in_flight)
            .u64(counters.connections)
            .u64(counters.tls_handshake_failures)
    }

    fn str(&mut self, value: &str) -> &mut Self {
        let mut end = value.len().min(MAX_REASON);
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        let bytes = &value.as_bytes()[..end];
        self.0
            .extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        self.0.extend_from_slice(bytes);
        self
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn open(datagram: &'a [u8]) -> Result<(u8, Self), DecodeError> {
        if datagram.len() > MAX_DATAGRAM {
            return Err(DecodeError::TooLong);
        }
        match datagram {
            [PROTOCOL_VERSION, tag, fields @ ..] => Ok((*tag, Self(fields))),
            [version, _, ..] => Err(DecodeError::Version(*version)),
            _ => Err(DecodeError::TooShort),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let bytes = self.take(8)?;
        Ok(u64::from_le_bytes(
            bytes.try_into().map_err(|_| DecodeError::Malformed)?,
        ))
    }

    fn counters(&mut self) -> Result<WorkerCounters, DecodeError> {
        Ok(WorkerCounters {
            requests: self.u64()?,
            in_flight: self.u64()?,
            connections: self.u64()?,
            tls_handshake_failures: self.later_u64(),
        })
    }

    fn str(&mut self) -> Result<String, DecodeError> {
        let len = self.take(2)?;
        let len = u16::from_le_bytes([len[0], len[1]]) as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Malformed)
    }

    /// A counter added after version 1's first layout: 0 from a sender
    /// that does not know it yet.
    fn later_u64(&mut self) -> u64 {
        self.u64().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips() {
        let worker = [
            WorkerMessage::Ready,
            WorkerMessage::Heartbeat(WorkerCounters {
                requests: u64::MAX,
                in_flight: 3,
                connections: 7,
                tls_handshake_failures: 4,
            }),
            WorkerMessage::Report {
                query: 9,
                counters: WorkerCounters {
                    requests: 1,
                    in_flight: 0,
                    connections: 2,
                    tls_handshake_failures: 0,
                },
            },
            WorkerMessage::BootFailed {
                reason: "port 80: permission denied ✗".into(),
            },
            WorkerMessage::Recycle { requests: 1000 },
            WorkerMessage::Closed {
                drained: 1,
                aborted: 2,
                requests: 3,
                tls_handshake_failures: 4,
            },
        ];
        for message in worker {
            assert_eq!(WorkerMessage::decode(&message.encode()), Ok(message));
        }
        let supervisor = [
            SupervisorMessage::Close {
                drain_ms: 500,
                graceful_ms: 30_000,
            },
            SupervisorMessage::Report { query: u64::MAX },
            SupervisorMessage::Tls,
        ];
        for message in supervisor {
            assert_eq!(SupervisorMessage::decode(&message.encode()), Ok(message));
        }
    }

    #[test]
    fn long_reasons_are_cut_at_a_char_boundary() {
        let reason = "é".repeat(MAX_DATAGRAM);
        let encoded = WorkerMessage::BootFailed { reason }.encode();
        assert!(encoded.len() <= MAX_DATAGRAM);
        assert!(matches!(
            WorkerMessage::decode(&encoded),
            Ok(WorkerMessage::BootFailed { .. })
        ));
    }

    #[test]
    fn messages_that_grew_decode_both_ways() {
        // A heartbeat of a worker that predates the TLS counter: 0.
        let mut old = vec![PROTOCOL_VERSION, HEARTBEAT];
        for counter in [5u64, 1, 2] {
            old.extend(counter.to_le_bytes());
        }
        let counters = WorkerCounters {
            requests: 5,
            in_flight: 1,
            connections: 2,
            tls_handshake_failures: 0,
        };
        assert_eq!(
            WorkerMessage::decode(&old),
            Ok(WorkerMessage::Heartbeat(counters))
        );
        // One from a newer worker, with a field this decoder does not know.
        let mut newer = WorkerMessage::Heartbeat(counters).encode();
        newer.extend(9u64.to_le_bytes());
        assert_eq!(
            WorkerMessage::decode(&newer),
            Ok(WorkerMessage::Heartbeat(counters))
        );
        assert_eq!(
            WorkerMessage::decode(&[PROTOCOL_VERSION, READY, 0]),
            Ok(WorkerMessage::Ready)
        );
        let mut closed = vec![PROTOCOL_VERSION, CLOSED];
        for counter in [1u64, 0, 7] {
            closed.extend(counter.to_le_bytes());
        }
        assert_eq!(
            WorkerMessage::decode(&closed),
            Ok(WorkerMessage::Closed {
                drained: 1,
                aborted: 0,
                requests: 7,
                tls_handshake_failures: 0,
            })
        );
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        assert_eq!(WorkerMessage::decode(&[]), Err(DecodeError::TooShort));
        assert_eq!(WorkerMessage::decode(&[9, 1]), Err(DecodeError::Version(9)));
        assert_eq!(
            WorkerMessage::decode(&[PROTOCOL_VERSION, 200]),
            Err(DecodeError::UnknownTag(200))
        );
        assert_eq!(
            WorkerMessage::decode(&[PROTOCOL_VERSION, HEARTBEAT, 1]),
            Err(DecodeError::Malformed)
        );
        assert_eq!(
            WorkerMessage::decode(&[PROTOCOL_VERSION, BOOT_FAILED, 255, 255]),
            Err(DecodeError::Malformed)
        );
        // Every short datagram over a small alphabet, and pseudo-random long ones.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for len in 0..64usize {
            for _ in 0..200 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        state as u8
                    })
                    .collect();
                let _ = WorkerMessage::decode(&bytes);
                let _ = SupervisorMessage::decode(&bytes);
            }
        }
    }
}
