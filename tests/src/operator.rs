//! Talking to a running drover as its operator does: `drover ctl` as a
//! process, a raw client on the control socket, a scrape of `/metrics`,
//! and Python's `prometheus_client` parser for the scrape's format.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::{drover_bin, WAIT};

/// What a `drover ctl` run printed, and its exit code.
#[derive(Debug)]
pub struct CtlRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CtlRun {
    /// The reply of a `--json` run.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("ctl --json printed no JSON ({e}): {self:?}"))
    }

    /// A `--json status` run's figures.
    pub fn data(&self) -> serde_json::Value {
        let reply = self.json();
        assert_eq!(reply["ok"], true, "{reply}");
        reply["data"].clone()
    }
}

fn finished(output: Output) -> CtlRun {
    CtlRun {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `drover ctl --control-socket SOCKET ARGS...`, run to its end.
pub fn ctl(socket: &Path, args: &[&str]) -> CtlRun {
    ctl_with(Command::new(drover_bin()), socket, args)
}

/// `ctl` as `program` (e.g. `setpriv ... drover`) runs it.
pub fn ctl_with(mut program: Command, socket: &Path, args: &[&str]) -> CtlRun {
    let output = program
        .arg("ctl")
        .arg("--control-socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run drover ctl");
    finished(output)
}

/// `drover ctl --json ... status`'s figures.
pub fn status(socket: &Path) -> serde_json::Value {
    let run = ctl(socket, &["--json", "status"]);
    assert_eq!(run.code, 0, "{run:?}");
    run.data()
}

/// One request line on a fresh connection, and the reply line.
pub fn ask(socket: &Path, line: &str) -> serde_json::Value {
    let mut stream = UnixStream::connect(socket).expect("connect to the control socket");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(line.as_bytes()).unwrap();
    stream.write_all(b"\n").unwrap();
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).unwrap();
    serde_json::from_str(&reply).unwrap_or_else(|e| panic!("reply {reply:?}: {e}"))
}

/// `GET /metrics` at `addr`: the status and the body.
pub fn scrape(addr: SocketAddr) -> (u16, String) {
    let stream = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    scrape_on(stream)
}

/// `GET /metrics` on a metrics endpoint's Unix socket.
pub fn scrape_unix(path: &Path) -> (u16, String) {
    let stream = UnixStream::connect(path).expect("connect to the metrics socket");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    scrape_on(stream)
}

fn scrape_on(mut stream: impl Read + Write) -> (u16, String) {
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: test\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    crate::parse(&response).unwrap()
}

/// A sample's value in a scrape (`name` with its labels as written, e.g.
/// `drover_workers{state="ready"}`).
pub fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// The Python with `prometheus_client` that `scripts/test.sh` sets up
/// (`DROVER_TESTS_PYTHON`), else `python3`.
pub fn python() -> PathBuf {
    std::env::var_os("DROVER_TESTS_PYTHON").map_or_else(|| "python3".into(), PathBuf::from)
}

/// Parses `text` with `prometheus_client`'s OpenMetrics parser; returns
/// `name value` per sample, or panics with the parser's error.
pub fn parse_with_prometheus_client(text: &str) -> Vec<String> {
    const SCRIPT: &str = "
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ','.join(f'{k}={v}' for k, v in sorted(s.labels.items()))
        print(f'{s.name}{{{labels}}} {s.value}')
";
    let mut child = Command::new(python())
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3 (scripts/test.sh sets DROVER_TESTS_PYTHON to a venv with prometheus-client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "prometheus_client could not parse the scrape (is it installed? scripts/test.sh \
         sets up a venv): {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}
