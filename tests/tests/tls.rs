//! TLS termination against the real binary and real clients: curl over
//! HTTP/1.1 and HTTP/2, `openssl s_client` for ALPN and the served
//! certificate, a reload in place (USR1, `drover ctl tls reload`) while a
//! connection stays open, a refused pair, and a key only root can read.
//! The certificates are made by the tests (`openssl req`), never committed.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use drover_tests::operator::ctl;
use drover_tests::tls::{
    certificate, client_ca, client_cert_get, curl, resumed_get, s_client, serial, tls_drover,
    Session,
};
use drover_tests::{drover_bin, events, free_addr, test_dir};
use nix::sys::signal::Signal;

#[test]
fn https_with_http1_and_http2_and_alpn() {
    let dir = test_dir("tls-serve");
    let (cert, key) = certificate(&dir, "a");
    let (mut drover, addr, _) = tls_drover(&dir, &cert, &key, &["-w", "2"]);
    let loaded = drover.events(events::TLS_LOADED);
    assert!(
        loaded[0].text("subject").unwrap().contains("localhost"),
        "{loaded:?}"
    );
    assert!(loaded[0].text("not_after").is_some());
    assert_eq!(
        curl(addr, &cert, &["--http1.1"]),
        (0, "hello\n1.1\n".into())
    );
    assert_eq!(curl(addr, &cert, &["--http2"]), (0, "hello\n2\n".into()));
    let h2 = s_client(addr, &["-alpn", "h2,http/1.1"]);
    assert!(h2.contains("ALPN protocol: h2"), "{h2}");
    let h1 = s_client(addr, &["-alpn", "http/1.1"]);
    assert!(h1.contains("ALPN protocol: http/1.1"), "{h1}");
    assert_eq!(
        serial(h1.as_bytes()),
        serial(&std::fs::read(&cert).unwrap())
    );
    // TLS 1.2 is accepted by default, and only 1.3 with --tls-min-version 1.3.
    assert!(s_client(addr, &["-tls1_2"]).contains("New, TLSv1.2"));
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
    let (mut strict, addr, _) =
        tls_drover(&dir, &cert, &key, &["-w", "1", "--tls-min-version", "1.3"]);
    assert!(
        s_client(addr, &["-tls1_2"]).contains("Cipher is (NONE)"),
        "refused"
    );
    assert!(s_client(addr, &["-tls1_3"]).contains("New, TLSv1.3"));
    strict.signal(Signal::SIGTERM);
    assert_eq!(strict.wait_exit(), 0);
}

#[test]
fn a_reload_in_place_serves_the_new_certificate_and_keeps_open_connections() {
    let dir = test_dir("tls-reload");
    let (cert, key) = certificate(&dir, "served");
    let old_serial = serial(&std::fs::read(&cert).unwrap());
    let (mut drover, addr, socket) = tls_drover(&dir, &cert, &key, &["-w", "2"]);
    let workers = drover.worker_pids();
    let mut open = Session::open(addr);
    assert!(open.get().starts_with("HTTP/1.1 200"));

    // A renewal written as a mismatched pair: refused, the old one serves.
    let (new_cert, new_key) = certificate(&dir, "renewed");
    std::fs::copy(&new_key, &key).unwrap();
    drover.signal(Signal::SIGUSR1);
    let refused = drover.wait_for_event(events::TLS_RELOAD_FAILED);
    assert!(refused.line.contains("does not match"), "{}", refused.line);
    assert_eq!(curl(addr, &cert, &[]).0, 0, "the old certificate serves on");
    let refused = ctl(&socket, &["tls", "reload"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("does not match"), "{refused:?}");

    // The whole renewal: accepted, in every worker, no worker restarted.
    std::fs::copy(&new_cert, &cert).unwrap();
    let reload = ctl(&socket, &["tls", "reload"]);
    assert_eq!(reload.code, 0, "{reload:?}");
    for _ in 0..2 {
        drover.wait_for_event_where(events::TLS_LOADED, |e| e.line.contains("\"span\""));
    }
    let fresh = s_client(addr, &[]);
    let new_serial = serial(&std::fs::read(&new_cert).unwrap());
    assert_eq!(serial(fresh.as_bytes()), new_serial);
    assert_ne!(new_serial, old_serial);
    assert!(
        open.get().starts_with("HTTP/1.1 200"),
        "the open connection goes on"
    );
    assert_eq!(drover.worker_pids(), workers, "no worker restarted");
    drop(open);
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn a_bad_pair_at_start_is_one_line_and_exit_1() {
    let dir = test_dir("tls-bad");
    let (cert, _) = certificate(&dir, "a");
    let (_, other_key) = certificate(&dir, "b");
    let output = Command::new(drover_bin())
        .args(["-w", "1", "-b", &free_addr().to_string(), "--certfile"])
        .arg(&cert)
        .arg("--keyfile")
        .arg(&other_key)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("drover: --certfile") && stderr.contains("does not match"),
        "{stderr}"
    );
    let alone = Command::new(drover_bin())
        .arg("--certfile")
        .arg(&cert)
        .output()
        .unwrap();
    assert_eq!(alone.status.code(), Some(2), "--certfile needs --keyfile");
}

#[test]
fn workers_running_as_nobody_serve_a_key_only_root_can_read() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test switches users: run it as root (CI does)"
    );
    let dir = test_dir("tls-root-key");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (cert, key) = certificate(&dir, "a");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let as_nobody = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "cat",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(!as_nobody.status.success(), "nobody cannot read the key");
    for spawn in ["exec", "fork"] {
        let (mut drover, addr, _) = tls_drover(
            &dir,
            &cert,
            &key,
            &["-w", "2", "--user", "nobody", "--spawn", spawn],
        );
        assert_eq!(curl(addr, &cert, &[]), (0, "hello\n2\n".into()), "{spawn}");
        drover.signal(Signal::SIGTERM);
        assert_eq!(drover.wait_exit(), 0);
    }
}

#[test]
fn a_session_resumes_on_every_worker_with_the_fleets_ticket_key() {
    let dir = test_dir("tls-resume");
    let (cert, key) = certificate(&dir, "a");
    let (mut drover, addr, _) = tls_drover(&dir, &cert, &key, &["-w", "4"]);
    let session = dir.join("session.pem");
    let (reused, _) = resumed_get(addr, &session, true);
    assert!(!reused, "the first connection is a full handshake");
    let mut workers = std::collections::HashSet::new();
    for _ in 0..16 {
        let (reused, pid) = resumed_get(addr, &session, false);
        assert!(reused, "a reconnect (to worker {pid}) did a full handshake");
        workers.insert(pid);
    }
    assert!(
        workers.len() >= 2,
        "the reconnects reached one worker only: {workers:?}"
    );
    drover.signal(Signal::SIGTERM);
    assert_eq!(drover.wait_exit(), 0);
}

#[test]
fn client_certificates_are_verified_optional_or_required_and_reach_the_handler() {
    let dir = test_dir("tls-clients");
    let (cert, key) = certificate(&dir, "server");
    let (ca, client, client_key) = client_ca(&dir, "client");
    let ca_arg = ca.to_str().unwrap();
    let presented = Some((client.as_path(), client_key.as_path()));
    let der_len = {
        let der = Command::new("openssl")
            .args(["x509", "-outform", "der", "-in"])
            .arg(&client)
            .output()
            .unwrap();
        format!("{} bytes\n", der.stdout.len())
    };
    let (mut optional, addr, _) = tls_drover(
        &dir,
        &cert,
        &key,
        &["-w", "1", "--ca-certs", ca_arg, "--cert-reqs", "optional"],
    );
    assert_eq!(client_cert_get(addr, &cert, None), (0, "none\n".into()));
    assert_eq!(
        client_cert_get(addr, &cert, presented),
        (0, der_len.clone())
    );
    // A certificate another CA signed is refused.
    let (stranger, stranger_key) = certificate(&dir, "stranger");
    assert_ne!(
        client_cert_get(addr, &cert, Some((&stranger, &stranger_key))).0,
        0
    );
    optional.signal(Signal::SIGTERM);
    assert_eq!(optional.wait_exit(), 0);

    let (mut required, addr, _) = tls_drover(
        &dir,
        &cert,
        &key,
        &["-w", "1", "--ca-certs", ca_arg, "--cert-reqs", "required"],
    );
    assert_ne!(
        client_cert_get(addr, &cert, None).0,
        0,
        "refused without one"
    );
    assert_eq!(client_cert_get(addr, &cert, presented), (0, der_len));
    required.signal(Signal::SIGTERM);
    assert_eq!(required.wait_exit(), 0);

    let missing = Command::new(drover_bin())
        .args(["-w", "1", "-b", &free_addr().to_string(), "--certfile"])
        .arg(&cert)
        .arg("--keyfile")
        .arg(&key)
        .args(["--cert-reqs", "required"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("needs --ca-certs"));
}
