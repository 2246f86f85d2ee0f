//! The control protocol's decoders against arbitrary input: they never
//! panic, never take more than the datagram holds, and what one side
//! encodes the other decodes unchanged. A bounded number of cases, so the
//! time CI spends here is fixed.

use super::protocol::{
    DecodeError, SupervisorMessage, WorkerCounters, WorkerMessage, MAX_DATAGRAM, PROTOCOL_VERSION,
};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 20_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Datagrams near the shape of real ones (this version, a known or unknown
/// tag, fields of any length) as well as pure noise.
fn datagram() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2 * MAX_DATAGRAM),
        (0u8..8, prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(tag, fields)| {
            let mut datagram = vec![PROTOCOL_VERSION, tag];
            datagram.extend(fields);
            datagram
        }),
        (
            0u8..8,
            any::<u16>(),
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(tag, len, rest)| {
                let mut datagram = vec![PROTOCOL_VERSION, tag];
                datagram.extend(len.to_le_bytes());
                datagram.extend(rest);
                datagram
            }),
    ]
}

fn counters() -> impl Strategy<Value = WorkerCounters> {
    (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
        |(requests, in_flight, connections, tls_handshake_failures)| WorkerCounters {
            requests,
            in_flight,
            connections,
            tls_handshake_failures,
        },
    )
}

fn worker_message() -> impl Strategy<Value = WorkerMessage> {
    prop_oneof![
        Just(WorkerMessage::Ready),
        counters().prop_map(WorkerMessage::Heartbeat),
        (any::<u64>(), counters())
            .prop_map(|(query, counters)| WorkerMessage::Report { query, counters }),
        // At most 800 bytes: longer reasons are cut (a unit test covers that).
        ".{0,200}".prop_map(|reason| WorkerMessage::BootFailed { reason }),
        any::<u64>().prop_map(|requests| WorkerMessage::Recycle { requests }),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(drained, aborted, requests, tls_handshake_failures)| WorkerMessage::Closed {
                drained,
                aborted,
                requests,
                tls_handshake_failures,
            }
        ),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_datagram_decodes_or_is_an_error(datagram in datagram()) {
        let worker = WorkerMessage::decode(&datagram);
        let supervisor = SupervisorMessage::decode(&datagram);
        if datagram.len() > MAX_DATAGRAM {
            prop_assert_eq!(worker, Err(DecodeError::TooLong));
            prop_assert_eq!(supervisor, Err(DecodeError::TooLong));
        }
        // What decodes takes no more than the datagram held.
        if let Ok(WorkerMessage::BootFailed { reason }) = WorkerMessage::decode(&datagram) {
            prop_assert!(reason.len() <= datagram.len());
        }
    }

    #[test]
    fn what_a_worker_encodes_the_supervisor_decodes(message in worker_message()) {
        let encoded = message.encode();
        prop_assert!(encoded.len() <= MAX_DATAGRAM);
        prop_assert_eq!(WorkerMessage::decode(&encoded), Ok(message));
    }

    #[test]
    fn what_the_supervisor_encodes_a_worker_decodes(drain_ms: u64, graceful_ms: u64) {
        let message = SupervisorMessage::Close { drain_ms, graceful_ms };
        prop_assert_eq!(SupervisorMessage::decode(&message.encode()), Ok(message));
    }
}
