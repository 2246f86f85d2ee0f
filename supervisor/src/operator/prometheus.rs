//! The metrics in the OpenMetrics text format (which Prometheus scrapes),
//! encoded by `prometheus-client` from one [`Figures`] snapshot.
//!
//! Per-worker series are labelled by index, the slot a replacement
//! inherits, so their number stays the worker count whatever restarts:
//! while a replacement and the worker it replaces both run, the slot's
//! gauges add the two, and its request counter adds what the slot's
//! earlier workers served, so it never goes down either.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
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

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// A family of one metric type, one sample per label value.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    (name, help, label): (&str, &str, &str),
    samples: impl IntoIterator<Item = (String, M)>,
    metric_type: prometheus_client::metrics::MetricType,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (value, sample) in samples {
        let labels = [(label, value.as_str())];
        sample.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::MetricType::{Counter, Gauge};
        let figures = &self.figures;
        let e = &mut encoder;
        counter(
            e,
            "drover_requests",
            "Requests the fleet served (monotonic across worker restarts).",
            figures.requests_total,
        )?;
        gauge(
            e,
            "drover_requests_in_flight",
            "Requests whose responses are not sent in full yet.",
            as_i64(figures.requests_in_flight),
        )?;
        gauge(
            e,
            "drover_connections_open",
            "Client connections open.",
            as_i64(figures.connections_open),
        )?;
        gauge(
            e,
            "drover_workers_wanted",
            "Workers the supervisor is to run.",
            figures.supervisor.workers_wanted as i64,
        )?;
        let states = ["booting", "ready", "retiring", "killed"].map(|state| {
            let count = figures.workers.iter().filter(|w| w.state == state).count();
            (state.to_owned(), ConstGauge::new(count as i64))
        });
        family(
            e,
            ("drover_workers", "Worker processes by state.", "state"),
            states,
            Gauge,
        )?;
        let exits = figures
            .exits
            .iter()
            .map(|(reason, n)| (reason.clone(), ConstCounter::new(*n)));
        family(
            e,
            (
                "drover_worker_exits",
                "Workers that left, by reason.",
                "reason",
            ),
            exits,
            Counter,
        )?;
        let reloads = figures
            .reloads
            .iter()
            .map(|(result, n)| (result.clone(), ConstCounter::new(*n)));
        family(
            e,
            ("drover_reloads", "Rolling restarts, by result.", "result"),
            reloads,
            Counter,
        )?;
        let known = || figures.listeners.iter().filter(|l| l.queue_depth.is_some());
        let depth = known().map(|l| {
            (
                l.addr.clone(),
                ConstGauge::new(i64::from(l.queue_depth.unwrap_or(0))),
            )
        });
        family(
            e,
            (
                "drover_listener_queue_depth",
                "Connections waiting in the kernel's accept queue (TCP listeners).",
                "listener",
            ),
            depth,
            Gauge,
        )?;
        let limit = known().map(|l| {
            (
                l.addr.clone(),
                ConstGauge::new(i64::from(l.queue_limit.unwrap_or(0))),
            )
        });
        family(
            e,
            (
                "drover_listener_queue_limit",
                "The accept queue's limit (the listen backlog).",
                "listener",
            ),
            limit,
            Gauge,
        )?;
        let slots = self.slots();
        let per_slot = |pick: fn(&Slot) -> u64| {
            slots
                .iter()
                .enumerate()
                .map(move |(i, s)| (i.to_string(), ConstGauge::new(as_i64(pick(s)))))
        };
        let served = slots
            .iter()
            .enumerate()
            .map(|(i, s)| (i.to_string(), ConstCounter::new(s.requests)));
        family(
            e,
            (
                "drover_worker_requests",
                "Requests served by the workers of this slot.",
                "index",
            ),
            served,
            Counter,
        )?;
        family(
            e,
            (
                "drover_worker_requests_in_flight",
                "Requests in flight in this slot.",
                "index",
            ),
            per_slot(|s| s.in_flight),
            Gauge,
        )?;
        family(
            e,
            (
                "drover_worker_connections_open",
                "Connections open in this slot.",
                "index",
            ),
            per_slot(|s| s.connections),
            Gauge,
        )?;
        family(
            e,
            (
                "drover_worker_resident_memory_bytes",
                "Resident memory of this slot's worker processes.",
                "index",
            ),
            per_slot(|s| s.rss_bytes),
            Gauge,
        )?;
        Ok(())
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
                },
                ListenerFigures {
                    addr: "unix:/run/app.sock".into(),
                    ..ListenerFigures::default()
                },
            ],
            requests_total: 117,
            requests_in_flight: 3,
            connections_open: 4,
            ..Figures::default()
        };
        let text = encode(figures, vec![100]);
        for line in [
            "drover_requests_total 117",
            "drover_requests_in_flight 3",
            "drover_connections_open 4",
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
