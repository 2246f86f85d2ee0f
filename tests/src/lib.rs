//! The end-to-end tests' harness: build the real `drover` binary (and the
//! examples that use the library), start it, read its log, talk to it over
//! real sockets, and wait for events with bounded waits.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use drover_shared::events;

pub mod operator;

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(15);

/// One lifecycle event from drover's JSON log (`--log-format json`, which
/// [`Drover::spawn`] sets): its name is the `event` field, one of
/// [`events::ALL`].
#[derive(Debug, Clone)]
pub struct Event {
    /// The log line as written.
    pub line: String,
    fields: serde_json::Value,
}

impl Event {
    /// The event in `line`, if it is a JSON log line with an `event` field.
    pub fn parse(line: &str) -> Option<Self> {
        let mut record: serde_json::Value = serde_json::from_str(line).ok()?;
        let fields = record.get_mut("fields")?.take();
        fields.get("event")?.as_str()?;
        Some(Self {
            line: line.to_owned(),
            fields,
        })
    }

    pub fn name(&self) -> &str {
        self.fields["event"].as_str().unwrap_or_default()
    }

    /// A numeric field (a worker id, a pid, a count); panics if missing.
    pub fn number(&self, field: &str) -> i64 {
        self.fields[field]
            .as_i64()
            .unwrap_or_else(|| panic!("no number {field:?} in {}", self.line))
    }

    /// A field as text (numbers too); `None` if missing.
    pub fn text(&self, field: &str) -> Option<String> {
        match &self.fields[field] {
            serde_json::Value::Null => None,
            serde_json::Value::String(text) => Some(text.clone()),
            other => Some(other.to_string()),
        }
    }

    /// The whole log line as JSON (its `span`, with a worker's `index` and
    /// `pid`, beside its `fields`).
    pub fn line_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.line).expect("an event's line is JSON")
    }

    /// Whether the event is about worker `id`.
    pub fn is_of_worker(&self, id: u64) -> bool {
        self.fields["worker"].as_u64() == Some(id)
    }
}

/// A running `drover` and the lines of its log.
pub struct Drover {
    pub child: Child,
    lines: Receiver<String>,
    pub log: Vec<String>,
}

/// The `drover` binary, as cargo builds it for these tests.
pub fn drover_bin() -> &'static Path {
    executable("bin", "drover")
}

/// An example of the workspace (`axum`: a user's own app under drover),
/// built as [`drover_bin`] is.
pub fn example_bin(name: &str) -> &'static Path {
    executable("example", name)
}

/// The environment variable holding the cargo arguments (target selection,
/// profile, features) the tests were built with; `scripts/test.sh` sets it.
pub const CARGO_ARGS_ENV: &str = "DROVER_TESTS_CARGO_ARGS";

/// The executable of target `name` of `kind` (`bin`, `example`).
///
/// `CARGO_BIN_EXE_*` only exists inside the package that owns a binary, so
/// this crate asks cargo, once per test process: `cargo build` with the
/// arguments the tests were built with (from [`CARGO_ARGS_ENV`]; else the
/// whole workspace, all targets, in this build's profile). The same
/// arguments select the same features, so when the tests' own build has
/// just made everything, this build only reports the paths.
fn executable(kind: &str, name: &str) -> &'static Path {
    static BUILT: OnceLock<HashMap<(String, String), PathBuf>> = OnceLock::new();
    BUILT
        .get_or_init(build_all)
        .get(&(kind.to_owned(), name.to_owned()))
        .unwrap_or_else(|| panic!("cargo built no {kind} named {name}"))
}

fn build_all() -> HashMap<(String, String), PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let args: Vec<String> = match std::env::var(CARGO_ARGS_ENV) {
        Ok(args) => args.split_whitespace().map(str::to_owned).collect(),
        Err(_) => {
            let mut args = vec!["--workspace".to_owned(), "--all-targets".to_owned()];
            if !cfg!(debug_assertions) {
                args.push("--release".to_owned());
            }
            args
        }
    };
    let output = Command::new(env!("CARGO"))
        .current_dir(workspace)
        .args(["build", "--message-format=json-render-diagnostics"])
        .args(&args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo");
    assert!(output.status.success(), "cargo build {args:?} failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        // Not the unit-test builds of binaries, which have executables too.
        .filter(|message| message["profile"]["test"] == false)
        .filter_map(|message| {
            let executable = PathBuf::from(message["executable"].as_str()?);
            let target = &message["target"];
            let kind = target["kind"][0].as_str()?.to_owned();
            Some(((kind, target["name"].as_str()?.to_owned()), executable))
        })
        .collect()
}

/// The lines `child` writes on its (piped) stderr, as they come, read by a
/// thread of their own; the channel ends when the pipe does.
pub fn stderr_lines(child: &mut Child) -> Receiver<String> {
    let stderr = child.stderr.take().expect("stderr is piped");
    let (send, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// A free TCP port on 127.0.0.1 (the OS picks it; released for drover).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

impl Drover {
    /// Starts `command` (a drover binary with its arguments) and collects
    /// its stderr.
    pub fn spawn(mut command: Command) -> Self {
        // JSON lines, so that events are waited for by name (a test that
        // passes `--log-format` itself overrides this).
        command
            .env(drover_shared::env::flags::LOG_FORMAT, "json")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start drover");
        let lines = stderr_lines(&mut child);
        Self {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Starts `drover` with `args` and waits until it says it is ready.
    pub fn start(args: &[&str]) -> Self {
        let mut command = Command::new(drover_bin());
        command.args(args);
        let mut drover = Self::spawn(command);
        drover.wait_for_event(events::READY);
        drover
    }

    /// Waits for the next event named `name`; fails after WAIT.
    pub fn wait_for_event(&mut self, name: &str) -> Event {
        self.wait_for_event_where(name, |_| true)
    }

    /// Waits for the next event named `name` about worker `id`.
    pub fn wait_for_worker_event(&mut self, name: &str, id: u64) -> Event {
        self.wait_for_event_where(name, |event| event.is_of_worker(id))
    }

    /// Waits for the next event named `name` that `wanted` accepts.
    pub fn wait_for_event_where(&mut self, name: &str, wanted: impl Fn(&Event) -> bool) -> Event {
        let found = self.wait_until(&format!("event {name:?}"), |line| {
            Event::parse(line).filter(|event| event.name() == name && wanted(event))
        });
        found
    }

    /// Where in the log (its line number) the first event named `name`
    /// about worker `id` is, if it has been logged.
    pub fn position_of(&self, name: &str, id: u64) -> Option<usize> {
        self.log.iter().position(|line| {
            Event::parse(line).is_some_and(|e| e.name() == name && e.is_of_worker(id))
        })
    }

    /// The events named `name` logged so far.
    pub fn events(&self, name: &str) -> Vec<Event> {
        self.log
            .iter()
            .filter_map(|line| Event::parse(line))
            .filter(|event| event.name() == name)
            .collect()
    }

    /// Waits until, counting from the `since`-th line of the log (lines
    /// read before this call included), an event named `name` that
    /// `wanted` accepts has been logged.
    pub fn wait_for_event_since(
        &mut self,
        since: usize,
        name: &str,
        wanted: impl Fn(&Event) -> bool,
    ) -> Event {
        let seen = self.log[since..]
            .iter()
            .filter_map(|line| Event::parse(line))
            .find(|event| event.name() == name && wanted(event));
        match seen {
            Some(event) => event,
            None => self.wait_for_event_where(name, wanted),
        }
    }

    /// Waits for a log line containing `needle` (drover's message text, or
    /// another program's output); fails after WAIT. For drover's lifecycle
    /// events, wait by name: [`wait_for_event`](Self::wait_for_event).
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        self.wait_until(&format!("{needle:?}"), |line| {
            line.contains(needle).then(|| line.to_owned())
        })
    }

    /// Reads lines until `found` finds something in one; fails after WAIT
    /// (saying it waited for `what`) or when the log ends.
    fn wait_until<T>(&mut self, what: &str, found: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    let hit = found(&line);
                    self.log.push(line);
                    if let Some(hit) = hit {
                        return hit;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no log line with {what} within {WAIT:?}; log so far:\n{}",
                        self.log.join("\n")
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "drover's log ended before {what}; log:\n{}",
                        self.log.join("\n")
                    )
                }
            }
        }
    }

    /// Waits for this supervisor to exit after a binary upgrade, while the
    /// new one keeps the log open: its last line, then its exit status.
    pub fn wait_exit_keeping_log(&mut self) -> i32 {
        let pid = self.pid();
        self.wait_for_stopped(pid);
        self.child.wait().unwrap().code().unwrap_or(-1)
    }

    /// Waits until the supervisor with `pid` logs that it stopped.
    pub fn wait_for_stopped(&mut self, pid: i32) -> Event {
        self.wait_for_event_where(events::STOPPED, |e| e.number("pid") == i64::from(pid))
    }

    /// Sends HUP and waits until the rolling restart is complete and the
    /// workers numbered `old` (the supervisor's worker ids) have left;
    /// returns the workers' pids then.
    pub fn restart(&mut self, old: &[u64]) -> HashSet<i32> {
        let since = self.log.len();
        self.signal(nix::sys::signal::Signal::SIGHUP);
        self.wait_for_event_since(since, events::RESTART_COMPLETE, |_| true);
        for id in old {
            self.wait_for_event_since(since, events::WORKER_LEFT, |e| e.is_of_worker(*id));
        }
        self.worker_pids()
    }

    /// Waits until this supervisor has started a new one (USR2); its pid.
    pub fn wait_for_successor(&mut self) -> i32 {
        let started = self.wait_for_event(events::UPGRADE_BEGUN);
        started.number("new_supervisor") as i32
    }

    /// Reads the log to its end (every process holding it has exited).
    pub fn read_to_end(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => self.log.push(line),
                Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => panic!("drover's log still open after {WAIT:?}"),
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The supervisor's children (its workers).
    pub fn worker_pids(&self) -> HashSet<i32> {
        children(self.pid())
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).unwrap();
    }

    /// Waits for the process to exit; its exit code.
    pub fn wait_exit(&mut self) -> i32 {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.read_to_end();
                return status.code().unwrap_or(-1);
            }
            // The log closes when every process holding it exits: wait on
            // that instead of sleeping.
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => self.log.push(line),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().unwrap();
                    return status.code().unwrap_or(-1);
                }
                Err(RecvTimeoutError::Timeout) => panic!("drover did not exit within {WAIT:?}"),
            }
        }
    }
}

impl Drop for Drover {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One HTTP/1.1 GET on a fresh connection: (status, body).
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(WAIT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    parse(&response)
}

/// Sends one request on `client` and reads its whole response (headers
/// and a content-length body).
pub fn keep_alive_request(client: &mut TcpStream, path: &str) -> String {
    write!(client, "GET {path} HTTP/1.1\r\nhost: test\r\n\r\n").unwrap();
    let mut response = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = client.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed mid-response: {response:?}");
        response.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&response).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|n| n.trim().parse().ok())
                .expect("a content-length");
            if body.len() >= length {
                return text;
            }
        }
    }
}

/// One HTTP/1.1 GET over the Unix socket at `path`: (status, body).
pub fn unix_get(path: &Path, target: &str) -> (u16, String) {
    let mut stream = std::os::unix::net::UnixStream::connect(path).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    parse(&response).unwrap()
}

pub fn parse(response: &str) -> std::io::Result<(u16, String)> {
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad response: {response:?}"),
        )
    };
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .ok_or_else(bad)?;
    Ok((status, body))
}

/// Waits until the server side of `client`'s connection has read
/// everything sent so far (its receive queue in /proc/net/tcp is empty).
/// No event tells this; the kernel's queue is what is watched, bounded.
pub fn wait_until_server_read(client: &TcpStream) {
    let server = client.peer_addr().unwrap().port();
    let ours = client.local_addr().unwrap().port();
    let deadline = Instant::now() + WAIT;
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let queued = table.lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = |f: &str| u16::from_str_radix(f.rsplit(':').next()?, 16).ok();
            (port(fields[1])? == server && port(fields[2])? == ours)
                .then(|| usize::from_str_radix(fields[4].split(':').nth(1)?, 16).ok())
                .flatten()
        });
        if queued == Some(0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server never read the request"
        );
        std::thread::yield_now();
    }
}

/// The fields of the row of /proc/net/tcp for the socket listening on
/// 127.0.0.1:`port` (4: `tx_queue:rx_queue`, 9: the inode), if there is one.
pub fn listening_row(port: u16) -> Option<Vec<String>> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local = u16::from_str_radix(fields[1].rsplit(':').next()?, 16).ok()?;
        (local == port && fields[3] == "0A").then(|| fields.iter().map(|f| f.to_string()).collect())
    })
}

/// A duplicate of descriptor `fd` of process `pid` (pidfd_getfd; root or
/// ptrace rights needed, which the tests have).
pub fn steal_fd(pid: i32, fd: i32) -> std::os::fd::OwnedFd {
    use nix::libc;
    use std::os::fd::FromRawFd;
    // SAFETY: plain syscalls on integers; the results are checked.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    assert!(
        pidfd >= 0,
        "pidfd_open: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: as above.
    let stolen = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) };
    assert!(
        stolen >= 0,
        "pidfd_getfd: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
    drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(pidfd as i32) });
    // SAFETY: pidfd_getfd returned a new descriptor that nothing else owns.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(stolen as i32) }
}

/// Asks `/pid` on fresh connections, a few at a time, until `count`
/// distinct workers have answered (bounded by WAIT).
pub fn distinct_pids(addr: SocketAddr, count: usize) -> HashSet<i32> {
    let deadline = Instant::now() + WAIT;
    let mut seen = HashSet::new();
    while seen.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {seen:?} answered within {WAIT:?}"
        );
        // Concurrent connections wake every worker waiting in accept.
        let batch: Vec<_> = (0..8)
            .map(|_| std::thread::spawn(move || get(addr, "/pid")))
            .collect();
        for answer in batch {
            let (status, body) = answer.join().unwrap().unwrap();
            assert_eq!(status, 200);
            seen.insert(body.trim().parse::<i32>().unwrap());
        }
    }
    seen
}

/// A process the test did not start itself (a supervisor started by a
/// binary upgrade): killed when the guard drops, if still there, so a
/// failing test leaves nothing running.
pub struct KillOnDrop(pub i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// The children of process `pid` (a supervisor's workers).
pub fn children(pid: i32) -> HashSet<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// A fresh directory for one test, under the system's temp directory.
pub fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("drover-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Puts a copy of `source` at `target` the way a deploy does: written
/// beside it, then renamed over it (a running binary cannot be written to
/// in place, and a rename never leaves a half-written file).
///
/// The copy is written by a `cp` process, not by this one: a test thread
/// holding the new file open for writing would leak that descriptor into
/// any child another test thread forks meanwhile (until the child's exec),
/// and executing the file then fails with ETXTBSY.
pub fn deploy(source: &Path, target: &Path) {
    let staged = target.with_extension("staged");
    let copied = Command::new("cp")
        .arg(source)
        .arg(&staged)
        .status()
        .unwrap();
    assert!(
        copied.success(),
        "cp {} {}",
        source.display(),
        staged.display()
    );
    std::fs::rename(&staged, target).unwrap();
}

/// A command that runs drover from a copy of its binary at `dir/app`, so
/// that a test can deploy other builds over it; and that path.
pub fn deployable(dir: &Path) -> (Command, PathBuf) {
    let binary = dir.join("app");
    deploy(drover_bin(), &binary);
    (Command::new(&binary), binary)
}

/// Deploys a broken build at `target`: an executable that exits 3 at once
/// (written by a shell, for the reason [`deploy`] gives).
pub fn deploy_broken(target: &Path) {
    let staged = target.with_extension("staged");
    let written = Command::new("sh")
        .arg("-c")
        .arg("printf '#!/bin/sh\\necho broken build >&2\\nexit 3\\n' > \"$1\" && chmod 755 \"$1\"")
        .arg("sh")
        .arg(&staged)
        .status()
        .unwrap();
    assert!(written.success());
    std::fs::rename(&staged, target).unwrap();
}

/// The pid written in `path` (a pid file).
pub fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("pid file {}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

pub mod load;
pub mod postgres;
pub mod tls;
