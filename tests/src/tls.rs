//! TLS helpers for the end-to-end tests: certificates made by `openssl`
//! (never committed keys), real clients (curl, `openssl s_client`), and
//! drover started with a certificate.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{drover_bin, events, free_addr, Drover};

/// A fresh self-signed P-256 certificate for `localhost` at
/// `dir/name.pem`, its key at `dir/name.key`.
pub fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    certificate_valid_for(dir, name, 30)
}

/// As [`certificate`], valid for `days` days from now.
pub fn certificate_valid_for(dir: &Path, name: &str, days: u32) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-days",
            &days.to_string(),
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=DNS:localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl is needed (scripts/test.sh installs it)");
    assert!(made.success());
    (cert, key)
}

/// `openssl x509 -serial` of a PEM certificate (or of what s_client printed).
pub fn serial(pem: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(pem).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "no certificate in {}",
        String::from_utf8_lossy(pem)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// curl `path` on `addr` as `localhost`, trusting `ca`: exit code and
/// the body then the HTTP version.
pub fn curl(addr: SocketAddr, ca: &Path, extra: &[&str]) -> (i32, String) {
    let port = addr.port();
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(["-w", "%{http_version}\n"])
        .args(extra)
        .arg(format!("https://localhost:{port}/"))
        .output()
        .expect("curl is needed");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.code().unwrap_or(-1), text)
}

/// `openssl s_client` to `addr` with `args`: everything it printed.
pub fn s_client(addr: SocketAddr, args: &[&str]) -> String {
    let output = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "localhost",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// drover serving `cert`/`key` on a free port (with a control socket in
/// `dir`), ready: the process, its address and the control socket.
pub fn tls_drover(
    dir: &Path,
    cert: &Path,
    key: &Path,
    extra: &[&str],
) -> (Drover, SocketAddr, PathBuf) {
    let addr = free_addr();
    let socket = dir.join("ctl.sock");
    let mut command = Command::new(drover_bin());
    command
        .args(["-b", &addr.to_string(), "--certfile"])
        .arg(cert)
        .arg("--keyfile")
        .arg(key)
        .arg("--control-socket")
        .arg(&socket)
        .args(extra);
    let mut drover = Drover::spawn(command);
    drover.wait_for_event(events::READY);
    (drover, addr, socket)
}

/// An `openssl s_client` session kept open: requests go in, responses
/// come out.
pub struct Session {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Session {
    pub fn open(addr: SocketAddr) -> Self {
        let mut child = Command::new("openssl")
            .args([
                "s_client",
                "-quiet",
                "-connect",
                &addr.to_string(),
                "-servername",
                "localhost",
            ])
            .args(["-alpn", "http/1.1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Self { child, out }
    }

    /// One keep-alive request; the status line.
    pub fn get(&mut self) -> String {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin
            .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .unwrap();
        stdin.flush().unwrap();
        let mut status = String::new();
        self.out.read_line(&mut status).unwrap();
        let mut line = String::new();
        while line != "hello\n" {
            line.clear();
            assert!(
                self.out.read_line(&mut line).unwrap() > 0,
                "the session ended"
            );
        }
        status
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a client certificate it signed, PEM, their files named after
/// `name` in `dir`: (CA cert, client cert, client key).
pub fn client_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let (ca, ca_key) = certificate(dir, &format!("{name}-ca"));
    let (key, csr, cert) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.csr")),
        dir.join(format!("{name}.pem")),
    );
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    let request = Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-subj", "/CN=client", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(request.success());
    let signed = Command::new("openssl")
        .args(["x509", "-req", "-days", "30", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(&ca_key)
        .args(["-CAcreateserial", "-extfile"])
        .arg(&ext)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(signed.success());
    (ca, cert, key)
}

/// curl `/client-cert` with `client` (cert, key) if given.
pub fn client_cert_get(
    addr: SocketAddr,
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> (i32, String) {
    let port = addr.port();
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")]);
    if let Some((cert, key)) = client {
        command.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let output = command
        .arg(format!("https://localhost:{port}/client-cert"))
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// One `GET /pid` through `openssl s_client` (its session read from or
/// written to `session`): whether the session was reused, and the pid of
/// the worker that answered.
pub fn resumed_get(addr: SocketAddr, session: &Path, save: bool) -> (bool, String) {
    resumed_get_with(addr, session, save, &[])
}

/// As [`resumed_get`], with more `s_client` arguments (`-cert`, `-key`).
pub fn resumed_get_with(
    addr: SocketAddr,
    session: &Path,
    save: bool,
    extra: &[&str],
) -> (bool, String) {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-ign_eof",
            "-connect",
            &addr.to_string(),
            "-servername",
            "localhost",
        ])
        .arg(if save { "-sess_out" } else { "-sess_in" })
        .arg(session)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // -ign_eof: it reads on until the server closes, so the session
    // tickets (sent after the handshake) are in when it saves.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET /pid HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let reused = text.lines().any(|l| l.starts_with("Reused,"));
    // The body, the pid, is the one line that is a number.
    let pid = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or_default()
        .to_owned();
    (reused, pid)
}
