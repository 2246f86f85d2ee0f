//! `--metrics` and `status` figures against the real binary: what they
//! show under load, a request counter that never goes down, and a scrape
//! a real Prometheus parser reads.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Instant;

use drover_tests::operator::{ctl, parse_with_prometheus_client, sample, scrape, status};
use drover_tests::{events, free_addr, get, test_dir, Drover, WAIT};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A drover with a control socket and a metrics endpoint: the drover,
/// the socket, where it serves, where its metrics are.
fn observed(name: &str, extra: &[&str]) -> (Drover, PathBuf, SocketAddr, SocketAddr) {
    let socket = test_dir(name).join("ctl.sock");
    let (addr, metrics) = (free_addr(), free_addr());
    let mut args = vec!["-b".to_owned(), addr.to_string(), "--metrics".to_owned()];
    args.push(metrics.to_string());
    args.extend(["--control-socket".to_owned(), socket.display().to_string()]);
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (Drover::start(&args), socket, addr, metrics)
}

/// Asks `status` until `done` holds for its figures (each ask is a round
/// trip to every worker); fails after WAIT with the last figures.
fn status_until(
    socket: &std::path::Path,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let figures = status(socket);
        if done(&figures) {
            return figures;
        }
        assert!(Instant::now() < deadline, "never {what}: {figures:#}");
    }
}

#[test]
fn status_and_metrics_under_load_show_requests_in_flight_and_the_accept_queue() {
    let (mut drover, socket, addr, metrics) =
        observed("metrics-load", &["-w", "1", "--max-connections", "2"]);
    for _ in 0..5 {
        assert_eq!(get(addr, "/").unwrap().0, 200);
    }
    let figures = status(&socket);
    assert_eq!(
        figures["requests_total"], 5,
        "fresh: asked of the worker now"
    );
    let worker = &figures["workers"][0];
    for field in [
        "id",
        "index",
        "pid",
        "generation",
        "state",
        "age_s",
        "ready_in_ms",
        "requests",
        "in_flight",
        "connections",
        "rss_bytes",
        "cpu_s",
        "last_heard_ms",
    ] {
        assert!(!worker[field].is_null(), "{field} in {worker:#}");
    }
    assert!(worker["rss_bytes"].as_u64().unwrap() > 1024 * 1024);
    assert_eq!(figures["supervisor"]["phase"], "running");

    // Two slow requests fill the worker's two connections; three more
    // clients wait in the kernel's accept queue.
    let slow: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || get(addr, "/sleep?ms=3000")))
        .collect();
    let figures = status_until(&socket, "two requests in flight", |f| {
        f["requests_in_flight"] == 2
    });
    assert_eq!(figures["connections_open"], 2);
    let waiting: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let figures = status_until(&socket, "three clients queued", |f| {
        f["listeners"][0]["queue_depth"] == 3
    });
    assert!(figures["listeners"][0]["queue_limit"].as_u64().unwrap() >= 3);
    let (code, text) = scrape(metrics);
    assert_eq!(code, 200);
    assert_eq!(sample(&text, "drover_requests_in_flight"), 2.0);
    assert_eq!(
        sample(
            &text,
            &format!("drover_listener_queue_depth{{listener=\"{addr}\"}}")
        ),
        3.0
    );
    drop(waiting);
    for request in slow {
        assert_eq!(request.join().unwrap().unwrap().0, 200);
    }
    let figures = status_until(&socket, "the slow requests counted", |f| {
        f["requests_in_flight"] == 0
    });
    assert!(
        figures["requests_total"].as_u64().unwrap() >= 7,
        "{figures:#}"
    );
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn the_request_counter_never_goes_down_across_a_reload_a_recycling_and_a_kill_9() {
    let (mut drover, socket, addr, metrics) =
        observed("metrics-monotonic", &["-w", "2", "--max-requests", "20"]);
    let mut seen = 0.0;
    let mut check = |step: &str, at_least: f64| {
        let (code, text) = scrape(metrics);
        assert_eq!(code, 200, "{text}");
        let total = sample(&text, "drover_requests_total");
        assert!(
            total >= seen,
            "{step}: the counter went down from {seen} to {total}:\n{text}"
        );
        assert!(
            total >= at_least,
            "{step}: {total} < {at_least}:\n{text}\n{:#}",
            status(&socket)
        );
        seen = total;
    };
    for _ in 0..10 {
        get(addr, "/").unwrap();
    }
    check("served", 10.0);
    assert_eq!(ctl(&socket, &["reload"]).code, 0);
    check("after a reload", 10.0);
    // 50 over two workers: one of them reaches its quota of 20.
    for _ in 0..50 {
        get(addr, "/").unwrap();
    }
    drover.wait_for_event(events::RECYCLING);
    check("after a recycling began", 60.0);
    drover.wait_for_event(events::WORKER_READY);
    check("after a recycling", 60.0);
    for _ in 0..5 {
        get(addr, "/").unwrap();
    }
    check("served more", 65.0);
    // A serving worker (the recycled one may still be closing: its exit
    // would be a worker leaving, not dying).
    let figures = status(&socket);
    let serving = figures["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["state"] == "ready");
    let victim = serving.expect("a serving worker")["pid"].as_i64().unwrap() as i32;
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    drover.wait_for_event_where(events::WORKER_DIED, |e| {
        e.number("pid") == i64::from(victim)
    });
    check("after kill -9", 65.0);
    drover.wait_for_event(events::WORKER_READY);
    check("after the replacement", 65.0);
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn a_scrape_is_openmetrics_text_with_every_fixed_series() {
    let (mut drover, socket, addr, metrics) = observed("metrics-format", &["-w", "2"]);
    get(addr, "/").unwrap();
    let (code, text) = scrape(metrics);
    assert_eq!(code, 200);
    let samples = parse_with_prometheus_client(&text);
    for wanted in [
        "drover_requests_total{} ".to_owned(),
        "drover_requests_in_flight{} ".to_owned(),
        "drover_connections_open{} ".to_owned(),
        "drover_workers{state=ready} 2".to_owned(),
        "drover_worker_exits_total{reason=crash} 0".to_owned(),
        "drover_reloads_total{result=completed} 0".to_owned(),
        format!("drover_listener_queue_depth{{listener={addr}}} "),
        "drover_worker_requests_total{index=0} ".to_owned(),
        "drover_worker_requests_total{index=1} ".to_owned(),
        "drover_worker_resident_memory_bytes{index=1} ".to_owned(),
    ] {
        assert!(
            samples.iter().any(|s| s.starts_with(&wanted)),
            "{wanted:?} not in {samples:#?}"
        );
    }
    // The control socket's `metrics` is the same text.
    let through_ctl = ctl(&socket, &["metrics"]);
    assert!(
        through_ctl
            .stdout
            .contains("# TYPE drover_requests counter"),
        "{through_ctl:?}"
    );
    // Anything but GET /metrics is refused, and the endpoint serves on.
    let (code, _) = drover_tests::get(metrics, "/").unwrap();
    assert_eq!(code, 404);
    assert_eq!(scrape(metrics).0, 200);
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn metrics_on_a_unix_socket() {
    let dir = test_dir("metrics-unix");
    let path = dir.join("metrics.sock");
    let spec = format!("unix:{}", path.display());
    let addr = free_addr();
    let mut drover = Drover::start(&["-w", "1", "-b", &addr.to_string(), "--metrics", &spec]);
    let (code, text) = drover_tests::operator::scrape_unix(&path);
    assert_eq!(code, 200);
    assert_eq!(sample(&text, "drover_workers{state=\"ready\"}"), 1.0);
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
    assert!(!path.exists(), "its socket file goes with the supervisor");
}
