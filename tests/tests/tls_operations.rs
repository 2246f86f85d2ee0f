//! TLS in operation, against the real binary and real clients: a listener
//! kept plain beside the TLS ones (`--insecure-bind`), handshake failures
//! in `status` and the metrics, client CAs changed by USR1, and `wrk` over
//! https through a rolling restart and a certificate reload with no error.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};

use drover_tests::operator::{ctl, status};
use drover_tests::tls::{
    certificate, certificate_valid_for, client_ca, client_cert_get, curl, resumed_get,
    resumed_get_with, s_client, serial, tls_drover,
};
use drover_tests::{
    drover_bin, events, free_addr, get, read_pid, test_dir, Drover, KillOnDrop, WAIT,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Writes an HTTP request in plain text to a TLS port and reads until the
/// server closes: by then the worker has counted the failed handshake.
fn plain_http_to(addr: SocketAddr) -> Vec<u8> {
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    client
        .read_to_end(&mut answer)
        .expect("the server closes a failed handshake");
    answer
}

#[test]
fn an_insecure_bind_stays_plain_and_failed_handshakes_are_counted() {
    let dir = test_dir("tls-insecure-bind");
    let (cert, key) = certificate(&dir, "a");
    let plain = free_addr();
    let pid_file = dir.join("drover.pid");
    let (mut drover, addr, socket) = tls_drover(
        &dir,
        &cert,
        &key,
        &[
            "-w",
            "2",
            "--insecure-bind",
            &plain.to_string(),
            "--pid-file",
            pid_file.to_str().unwrap(),
        ],
    );
    assert_eq!(
        curl(addr, &cert, &["--http1.1"]),
        (0, "hello\n1.1\n".into())
    );
    assert_eq!(
        get(plain, "/").unwrap(),
        (200, "hello\n".into()),
        "plain HTTP on --insecure-bind"
    );
    assert_ne!(curl(plain, &cert, &[]).0, 0, "no TLS on --insecure-bind");

    // Three plain-HTTP clients on the TLS port: each fails alone, counted
    // by the worker that took it, summed by the supervisor.
    for _ in 0..3 {
        let answer = plain_http_to(addr);
        assert!(
            !answer.starts_with(b"HTTP/"),
            "no HTTP answer without TLS: {answer:?}"
        );
    }
    let figures = status(&socket);
    assert_eq!(figures["tls_handshake_failures_total"], 3, "{figures}");
    let per_worker: u64 = figures["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["tls_handshake_failures"].as_u64().unwrap())
        .sum();
    assert_eq!(per_worker, 3, "{figures}");
    let tls_of = |wanted: SocketAddr| {
        let listeners = figures["listeners"].as_array().unwrap();
        let row = listeners
            .iter()
            .find(|l| l["addr"] == wanted.to_string())
            .unwrap_or_else(|| panic!("{wanted} not in {figures}"));
        row["tls"].as_bool().unwrap()
    };
    assert!(tls_of(addr) && !tls_of(plain), "{figures}");
    let metrics = ctl(&socket, &["metrics"]);
    assert!(
        metrics
            .stdout
            .lines()
            .any(|l| l == "drover_tls_handshake_failures_total 3"),
        "{}",
        metrics.stdout
    );
    let table = ctl(&socket, &["status"]).stdout;
    assert!(table.contains("tls handshake failures 3"), "{table}");
    assert!(table.contains(&format!("listener {addr}  tls")), "{table}");

    // A worker that leaves takes nothing from the count.
    drover.signal(Signal::SIGHUP);
    drover.wait_for_event(events::RESTART_COMPLETE);
    assert_eq!(status(&socket)["tls_handshake_failures_total"], 3);

    // A binary upgrade: the new supervisor's workers keep the plain one plain.
    drover.signal(Signal::SIGUSR2);
    drover.wait_for_event(events::UPGRADE_COMPLETE);
    let successor = read_pid(&pid_file);
    let _guard = KillOnDrop(successor);
    assert_eq!(drover.wait_exit_keeping_log(), 0);
    assert_eq!(get(plain, "/").unwrap(), (200, "hello\n".into()));
    assert_eq!(curl(addr, &cert, &[]), (0, "hello\n2\n".into()));
    kill(Pid::from_raw(successor), Signal::SIGTERM).unwrap();
    drover.wait_for_stopped(successor);
}

#[test]
fn a_socket_systemd_names_insecure_stays_plain() {
    let dir = test_dir("tls-activated-insecure");
    let (cert, key) = certificate(&dir, "a");
    let (web, health) = (free_addr(), free_addr());
    let mut command = Command::new("systemd-socket-activate");
    command
        .arg(format!("--listen={web}"))
        .arg(format!("--listen={health}"))
        .arg("--fdname=web:insecure")
        .arg("--setenv=DROVER_LOG_FORMAT=json")
        .arg(drover_bin())
        .args(["-w", "1", "--certfile"])
        .arg(&cert)
        .arg("--keyfile")
        .arg(&key);
    let mut drover = Drover::spawn(command);
    // It listens on one socket after the other: wait for the second.
    drover.wait_for_line(&format!("Listening on {health}"));
    // The first connection makes systemd-socket-activate exec drover.
    assert_eq!(get(health, "/").unwrap(), (200, "hello\n".into()));
    drover.wait_for_event(events::READY);
    assert_eq!(curl(web, &cert, &[]), (0, "hello\n2\n".into()));
    assert!(
        !plain_http_to(web).starts_with(b"HTTP/"),
        "the unnamed socket speaks TLS"
    );
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn usr1_swaps_the_client_cas_too() {
    let dir = test_dir("tls-ca-reload");
    let (cert, key) = certificate(&dir, "server");
    let (old_ca, old_client, old_key) = client_ca(&dir, "old");
    let (new_ca, new_client, new_key) = client_ca(&dir, "new");
    let ca = dir.join("ca.pem");
    std::fs::copy(&old_ca, &ca).unwrap();
    let (mut drover, addr, _) = tls_drover(
        &dir,
        &cert,
        &key,
        &[
            "-w",
            "2",
            "--ca-certs",
            ca.to_str().unwrap(),
            "--cert-reqs",
            "required",
        ],
    );
    let workers = drover.worker_pids();
    let old = Some((old_client.as_path(), old_key.as_path()));
    let new = Some((new_client.as_path(), new_key.as_path()));
    assert_eq!(client_cert_get(addr, &cert, old).0, 0);
    assert_ne!(client_cert_get(addr, &cert, new).0, 0, "not yet trusted");
    // A session made with the old CA's client certificate resumes...
    let session = dir.join("session.pem");
    let old_args = [
        "-cert",
        old_client.to_str().unwrap(),
        "-key",
        old_key.to_str().unwrap(),
    ];
    assert!(!resumed_get_with(addr, &session, true, &old_args).0);
    assert!(resumed_get_with(addr, &session, false, &old_args).0);

    // A CA file that does not parse: refused, the old CAs serve on.
    std::fs::write(&ca, "not a certificate\n").unwrap();
    drover.signal(Signal::SIGUSR1);
    let refused = drover.wait_for_event(events::TLS_RELOAD_FAILED);
    assert!(refused.line.contains("--ca-certs"), "{}", refused.line);
    assert_eq!(client_cert_get(addr, &cert, old).0, 0);

    std::fs::copy(&new_ca, &ca).unwrap();
    drover.signal(Signal::SIGUSR1);
    // The supervisor's line and one from each worker as it swaps, in
    // whichever order they come.
    for _ in 0..3 {
        drover.wait_for_event(events::TLS_LOADED);
    }
    // ...until the CAs change: a resumed session skips the client's
    // verification, so it must not outlive the CA that verified it.
    let (reused, answer) = resumed_get_with(addr, &session, false, &old_args);
    assert!(!reused && answer.is_empty(), "resumed after the CA change");
    // New connections go to either worker: a few of each kind.
    for _ in 0..4 {
        assert_eq!(client_cert_get(addr, &cert, new).0, 0, "the new CA trusted");
        assert_ne!(client_cert_get(addr, &cert, old).0, 0, "the old CA dropped");
    }
    assert_eq!(drover.worker_pids(), workers, "no worker restarted");
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

/// A wrk process whose Lua script prints a line every `every` responses,
/// so the test can wait for load to have gone through a step.
struct Wrk {
    child: Child,
    progress: Receiver<String>,
}

impl Wrk {
    fn start(dir: &Path, name: &str, addr: SocketAddr, extra: &[&str]) -> Self {
        let script = dir.join(format!("{name}.lua"));
        std::fs::write(
            &script,
            "local n = 0\n\
             response = function(status, headers, body)\n\
               n = n + 1\n\
               if n % 200 == 0 then io.write(\"progress\\n\"); io.flush() end\n\
             end\n",
        )
        .unwrap();
        // Bounded: stopped with SIGINT once the steps are done, or at 300 s.
        let mut child = Command::new("wrk")
            .args(["-t1", "-d300s", "--timeout", "10s", "-s"])
            .arg(&script)
            .args(extra)
            .arg(format!("https://127.0.0.1:{}/", addr.port()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("wrk is needed (scripts/test.sh installs it)");
        let stdout = child.stdout.take().unwrap();
        let (send, progress) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, progress }
    }

    /// Waits for `lines` more progress lines (each 200 responses); wrk's
    /// banner lines in between are passed over.
    fn wait_for_progress(&self, lines: usize) {
        let mut seen = 0;
        while seen < lines {
            let line = self
                .progress
                .recv_timeout(WAIT)
                .expect("wrk made no progress, or ended");
            seen += usize::from(line == "progress");
        }
    }

    /// Stops wrk (SIGINT: it prints its report) and returns the report.
    fn stop(mut self) -> String {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT).unwrap();
        let mut report = Vec::new();
        while let Ok(line) = self.progress.recv_timeout(WAIT) {
            if line != "progress" {
                report.push(line);
            }
        }
        assert!(self.child.wait().unwrap().success());
        report.join("\n")
    }
}

impl Drop for Wrk {
    /// A test that failed midway leaves no load behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests wrk made, and that it reports no error of any kind.
fn no_errors(report: &str) -> u64 {
    assert!(!report.contains("Socket errors"), "{report}");
    assert!(!report.contains("Non-2xx"), "{report}");
    let requests = report
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count in {report}"));
    assert!(requests > 0, "{report}");
    requests
}

#[test]
fn wrk_over_https_sees_no_error_through_restarts_and_a_certificate_reload() {
    let dir = test_dir("tls-zero-downtime");
    let (cert, key) = certificate(&dir, "served");
    let (mut drover, addr, socket) = tls_drover(&dir, &cert, &key, &["-w", "2"]);
    // Keep-alive connections, and a new TLS handshake for every request.
    let keep_alive = Wrk::start(&dir, "keep-alive", addr, &["-c16"]);
    let fresh = Wrk::start(&dir, "fresh", addr, &["-c4", "-H", "Connection: close"]);
    let both = |lines| {
        keep_alive.wait_for_progress(lines);
        fresh.wait_for_progress(lines);
    };
    both(2);
    for _ in 0..2 {
        drover.signal(Signal::SIGHUP);
        drover.wait_for_event(events::RESTART_COMPLETE);
        both(2);
    }
    // A renewal: the new pair over the files, then USR1 while under load.
    let (renewed, renewed_key) = certificate(&dir, "renewed");
    std::fs::copy(&renewed_key, &key).unwrap();
    std::fs::copy(&renewed, &cert).unwrap();
    let reload = ctl(&socket, &["tls", "reload"]);
    assert_eq!(reload.code, 0, "{reload:?}");
    for _ in 0..2 {
        drover.wait_for_event_where(events::TLS_LOADED, |e| e.line.contains("\"span\""));
    }
    both(2);
    // And a restart after it: the new workers read the renewed files.
    drover.signal(Signal::SIGHUP);
    drover.wait_for_event(events::RESTART_COMPLETE);
    both(2);
    let keep_alive = keep_alive.stop();
    let fresh = fresh.stop();
    no_errors(&keep_alive);
    no_errors(&fresh);
    assert_eq!(
        serial(s_client(addr, &[]).as_bytes()),
        serial(&std::fs::read(&renewed).unwrap()),
        "the renewed certificate is served"
    );
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn a_session_resumes_across_a_binary_upgrade() {
    let dir = test_dir("tls-upgrade-resume");
    let (cert, key) = certificate(&dir, "a");
    let pid_file = dir.join("drover.pid");
    let pid_arg = pid_file.to_str().unwrap();
    let (mut drover, addr, _) = tls_drover(&dir, &cert, &key, &["-w", "2", "--pid-file", pid_arg]);
    let session = dir.join("session.pem");
    let (reused, before) = resumed_get(addr, &session, true);
    assert!(!reused, "the first connection is a full handshake");
    drover.signal(Signal::SIGUSR2);
    drover.wait_for_event(events::UPGRADE_COMPLETE);
    let successor = read_pid(&pid_file);
    let _guard = KillOnDrop(successor);
    assert_eq!(drover.wait_exit_keeping_log(), 0);
    // The new supervisor's workers, with the old fleet's ticket keys.
    let (reused, after) = resumed_get(addr, &session, false);
    assert_ne!(after, before, "answered by a new worker");
    assert!(reused, "a full handshake after the upgrade");
    kill(Pid::from_raw(successor), Signal::SIGTERM).unwrap();
    drover.wait_for_stopped(successor);
}

#[test]
fn a_hup_alone_serves_renewed_files_and_a_near_expiry_is_warned() {
    let dir = test_dir("tls-hup-renewal");
    // Three days left: served, with a warning at start.
    let (cert, key) = certificate_valid_for(&dir, "short", 3);
    let (mut drover, addr, _) = tls_drover(&dir, &cert, &key, &["-w", "2"]);
    // Logged before the workers started, so before `ready`.
    let warning = drover.events(events::TLS_EXPIRING);
    assert_eq!(warning.len(), 1, "{:#?}", drover.log);
    assert!(
        (1..=3).contains(&warning[0].number("days_left")),
        "{warning:?}"
    );
    assert_eq!(curl(addr, &cert, &[]).0, 0);

    // The renewal written over the files, then a HUP and no USR1: the
    // new workers read the new pair.
    let (renewed, renewed_key) = certificate(&dir, "renewed");
    std::fs::copy(&renewed_key, &key).unwrap();
    std::fs::copy(&renewed, &cert).unwrap();
    drover.signal(Signal::SIGHUP);
    drover.wait_for_event(events::RESTART_COMPLETE);
    assert_eq!(
        serial(s_client(addr, &[]).as_bytes()),
        serial(&std::fs::read(&renewed).unwrap()),
        "the renewed certificate is served after a HUP"
    );
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}
