//! The fixed-rate load generator the latency benchmark relies on
//! (tests/examples/loadgen.rs) against a real drover.

use std::process::Command;

use drover_tests::{example_bin, free_addr, Drover};
use nix::sys::signal::Signal;

/// `key=value` fields of the generator's one-line report.
fn field(report: &str, key: &str) -> u64 {
    report
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key} in {report:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {report:?}"))
}

#[test]
fn the_load_generator_sends_at_its_rate_and_reads_every_answer() {
    let addr = free_addr();
    let mut drover = Drover::start(&["-w", "2", "-b", &addr.to_string()]);
    let output = Command::new(example_bin("loadgen"))
        .args([&addr.to_string(), "200", "4", "1"])
        .output()
        .expect("run loadgen");
    assert!(output.status.success(), "{output:?}");
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(field(&report, "sent"), 200, "{report}");
    assert_eq!(field(&report, "errors"), 0, "{report}");
    assert!(field(&report, "p50_us") > 0, "{report}");
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn the_load_generator_refuses_bad_arguments_with_usage() {
    let output = Command::new(example_bin("loadgen"))
        .args(["127.0.0.1:1", "fast", "4", "1"])
        .output()
        .expect("run loadgen");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("usage: loadgen"));
}
