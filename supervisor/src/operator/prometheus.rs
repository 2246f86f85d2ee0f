//! The metrics in the OpenMetrics text format (which Prometheus scrapes),
//! encoded by `prometheus-client` from one [`Figures`] snapshot.
//!
//! Per-worker series are labelled by index, the slot a replacement
//! inherits, so their number stays the worker count whatever restarts:
//! while a replacement and the worker it replaces both run, the slot's
//! gauges add the two, and its request counter adds what the slot's
//! earlier workers served, so it never goes down either.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::figures::Figures;

/// The `Content-Type` of [`encode`]'s output.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The figures, with every slot's requests (`served_by_index[i]`: what
/// the workers of slot `i` that left had served).
#[derive(Debug)]
struct Snapshot {
    figures: Figures,
    served_by_index: Vec<u64>,
}

/// The metrics text for `figures`.
pub(crate) fn encode(figures: Figures, served_by_index: Vec<u64>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot {
        figures,
        served_by_index,
    }));
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

/// One slot's figures, summed over its workers.
#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    requests: u64,
    in_flight: u64,
    connections: u64,
    rss_bytes: u64,
}

impl Snapshot {
    fn slots(&self) -> Vec<Slot> {
        let highest = self.figures.workers.iter().map(|w| w.index + 1).max();
        let count = highest.unwrap_or(0).max(self.served_by_index.len());
        let mut slots = vec![Slot::default(); count];
        for (slot, served) in slots.iter_mut().zip(&self.served_by_index) {
            slot.requests = *served;
        }
        for worker in &self.figures.workers {
            let slot = &mut slots[worker.index];
            slot.requests += worker.requests;
            slot.in_flight += worker.in_flight;
            slot.connections += worker.connections;
            slot.rss_bytes += worker.rss_bytes.unwrap_or(0);
        }
        slots
    }
}

/// A series: its name (a counter's without `_total`, which the encoder
/// adds), its help, and the label its samples differ by (none: one
/// sample).
struct Series {
    name: &'static str,
    help: &'static str,
    label: Option<&'static str>,
    counter: bool,
}

const fn counter(name: &'static str, help: &'static str, label: Option<&'static str>) -> Series {
    Series {
        name,
        help,
        label,
        counter: true,
    }
}

const fn gauge(name: &'static str, help: &'static str, label: Option<&'static str>) -> Series {
    Series {
        name,
        help,
        label,
        counter: false,
    }
}

const REQUESTS: Series = counter(
    "drover_requests",
    "Requests the fleet served (monotonic across worker restarts).",
    None,
);
const IN_FLIGHT: Series = gauge(
    "drover_requests_in_flight",
    "Requests whose responses are not sent in full yet.",
    None,
);
const CONNECTIONS: Series = gauge("drover_connections_open", "Client connections open.", None);
const TLS_FAILURES: Series = counter(
    "drover_tls_handshake_failures",
    "TLS handshakes that failed (monotonic across worker restarts).",
    None,
);
const WANTED: Series = gauge(
    "drover_workers_wanted",
    "Workers the supervisor is to run.",
    None,
);
const WORKERS: Series = gauge(
    "drover_workers",
    "Worker processes by state.",
    Some("state"),
);
const EXITS: Series = counter(
    "drover_worker_exits",
    "Workers that left, by reason.",
    Some("reason"),
);
const RELOADS: Series = counter(
    "drover_reloads",
    "Rolling restarts, by result.",
    Some("result"),
);
const QUEUE_DEPTH: Series = gauge(
    "drover_listener_queue_depth",
    "Connections waiting in the kernel's accept queue (TCP listeners).",
    Some("listener"),
);
const QUEUE_LIMIT: Series = gauge(
    "drover_listener_queue_limit",
    "The accept queue's limit (the listen backlog).",
    Some("listener"),
);
const SLOT_REQUESTS: Series = counter(
    "drover_worker_requests",
    "Requests served by the workers of this slot.",
    Some("index"),
);
const SLOT_IN_FLIGHT: Series = gauge(
    "drover_worker_requests_in_flight",
    "Requests in flight in this slot.",
    Some("index"),
);
const SLOT_CONNECTIONS: Series = gauge(
    "drover_worker_connections_open",
    "Connections open in this slot.",
    Some("index"),
);
const SLOT_RSS: Series = gauge(
    "drover_worker_resident_memory_bytes",
    "Resident memory of this slot's worker processes.",
    Some("index"),
);

/// Encodes `series` with `samples` (label value, value); a series without
/// a label takes the first sample's value alone.
fn encode_series(
    encoder: &mut DescriptorEncoder,
    series: &Series,
    samples: impl IntoIterator<Item = (String, u64)>,
) -> Result<(), std::fmt::Error> {
    use prometheus_client::metrics::MetricType;
    let kind = if series.counter {
        MetricType::Counter
    } else {
        MetricType::Gauge
    };
    let mut metric = encoder.encode_descriptor(series.name, series.help, None, kind)?;
    let Some(label) = series.label else {
        let value = samples.into_iter().next().map_or(0, |(_, value)| value);
        return encode_value(series, value, metric);
    };
    for (label_value, value) in samples {
        encode_value(
            series,
            value,
            metric.encode_family(&[(label, label_value.as_str())])?,
        )?;
    }
    Ok(())
}

fn encode_value(
    series: &Series,
    value: u64,
    encoder: MetricEncoder,
) -> Result<(), std::fmt::Error> {
    if series.counter {
        ConstCounter::new(value).encode(encoder)
    } else {
        ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(encoder)
    }
}

/// One sample without a label.
fn single(value: u64) -> [(String, u64); 1] {
    [(String::new(), value)]
}

impl Snapshot {
    fn encode_fleet(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let f = &self.figures;
        encode_series(e, &REQUESTS, single(f.requests_total))?;
        encode_series(e, &IN_FLIGHT, single(f.requests_in_flight))?;
        encode_series(e, &CONNECTIONS, single(f.connections_open))?;
        encode_series(e, &TLS_FAILURES, single(f.tls_handshake_failures_total))?;
        encode_series(e, &WANTED, single(f.supervisor.workers_wanted as u64))?;
        let states = ["booting", "ready", "retiring", "killed"].map(|state| {
            let count = f.workers.iter().filter(|w| w.state == state).count();
            (state.to_owned(), count as u64)
        });
        encode_series(e, &WORKERS, states)?;
        encode_series(e, &EXITS, f.exits.iter().map(|(r, n)| (r.clone(), *n)))?;
        encode_series(e, &RELOADS, f.reloads.iter().map(|(r, n)| (r.clone(), *n)))
    }

    /// The accept queues of the listeners the kernel reports them for.
    fn encode_listeners(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let known = || {
            self.figures
                .listeners
                .iter()
                .filter(|l| l.queue_depth.is_some())
        };
        let depth = known().map(|l| (l.addr.clone(), u64::from(l.queue_depth.unwrap_or(0))));
        encode_series(e, &QUEUE_DEPTH, depth)?;
        let limit = known().map(|l| (l.addr.clone(), u64::from(l.queue_limit.unwrap_or(0))));
        encode_series(e, &QUEUE_LIMIT, limit)
    }

    fn encode_slots(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let slots = self.slots();
        let per_slot = |pick: fn(&Slot) -> u64| {
            slots
                .iter()
                .enumerate()
                .map(move |(i, s)| (i.to_string(), pick(s)))
        };
        encode_series(e, &SLOT_REQUESTS, per_slot(|s| s.requests))?;
        encode_series(e, &SLOT_IN_FLIGHT, per_slot(|s| s.in_flight))?;
        encode_series(e, &SLOT_CONNECTIONS, per_slot(|s| s.connections))?;
        encode_series(e, &SLOT_RSS, per_slot(|s| s.rss_bytes))
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_fleet(&mut encoder)?;
        self.encode_listeners(&mut encoder)?;
        self.encode_slots(&mut encoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::figures::{ListenerFigures, WorkerFigures};

    fn worker(index: usize, requests: u64, state: &str) -> WorkerFigures {
        WorkerFigures {
            index,
            requests,
            in_flight: 1,
            state: state.into(),
            rss_bytes: Some(1000),
            ..WorkerFigures::default()
        }
    }

    #[test]
    fn every_fixed_series_is_there_with_its_labels() {
        let figures = Figures {
            workers: vec![
                worker(0, 10, "ready"),
                worker(1, 5, "ready"),
                worker(1, 2, "booting"),
            ],
            exits: [("crash".into(), 2), ("reload".into(), 0)].into(),
            reloads: [("completed".into(), 1), ("stopped".into(), 0)].into(),
            listeners: vec![
                ListenerFigures {
                    addr: "127.0.0.1:8000".into(),
                    queue_depth: Some(3),
                    queue_limit: Some(1024),
                    tls: false,
                },
                ListenerFigures {
                    addr: "unix:/run/app.sock".into(),
                    ..ListenerFigures::default()
                },
            ],
            requests_total: 117,
            requests_in_flight: 3,
            connections_open: 4,
            tls_handshake_failures_total: 5,
            ..Figures::default()
        };
        let text = encode(figures, vec![100]);
        for line in [
            "drover_requests_total 117",
            "drover_requests_in_flight 3",
            "drover_connections_open 4",
            "drover_tls_handshake_failures_total 5",
            "drover_workers{state=\"ready\"} 2",
            "drover_workers{state=\"booting\"} 1",
            "drover_worker_exits_total{reason=\"crash\"} 2",
            "drover_reloads_total{result=\"completed\"} 1",
            "drover_listener_queue_depth{listener=\"127.0.0.1:8000\"} 3",
            "drover_listener_queue_limit{listener=\"127.0.0.1:8000\"} 1024",
            // Slot 0: 100 served by workers gone, 10 by the live one.
            "drover_worker_requests_total{index=\"0\"} 110",
            // Slot 1: a replacement and the worker it replaces, summed.
            "drover_worker_requests_total{index=\"1\"} 7",
            "drover_worker_requests_in_flight{index=\"1\"} 2",
            "drover_worker_resident_memory_bytes{index=\"1\"} 2000",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
        assert!(
            !text.contains("unix:/run/app.sock"),
            "no queue figure for a Unix socket"
        );
    }
}
