//! A private PostgreSQL cluster for one test: its own data directory and
//! Unix socket under a fresh temp directory, the real `postgres` server as
//! a child process, never TCP and never the system's service.
//!
//! The binaries are found on `PATH` (`initdb`), else in the highest version
//! under `/usr/lib/postgresql/*/bin` (Debian's layout, not on `PATH`);
//! `scripts/test.sh` and `.ci/run` install Debian's `postgresql` package.
//! `initdb` and `postgres` refuse to run as root: as root, every command
//! runs as the `postgres` system user that package creates.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{Gid, Pid, Uid, User};

/// How long starting (initdb included), stopping, or one `psql` may take.
pub const PG_WAIT: Duration = Duration::from_secs(30);

/// The port of the socket file (`<socket_dir>/.s.PGSQL.5432`); no TCP port
/// is opened, so every cluster can use the same one.
pub const PORT: u16 = 5432;

/// The line the server logs once it accepts connections (`lc_messages=C`).
const READY: &str = "database system is ready to accept connections";

/// A running (or stopped, see [`Postgres::stop`]) private cluster. Dropping
/// it stops the server and removes its directory.
pub struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    owner: Owner,
    server: Option<Server>,
    log: Vec<String>,
}

/// The OS user every PostgreSQL command runs as, who is also the cluster's
/// superuser.
#[derive(Clone)]
struct Owner {
    name: String,
    /// `Some` when this process is root and commands switch to the user.
    switch_to: Option<(Uid, Gid)>,
}

/// The postmaster and its log lines (its stderr, read by a thread).
struct Server {
    child: Child,
    lines: Receiver<String>,
}

impl Postgres {
    /// Creates a cluster in a new `/tmp/drover-pg-XXXXXX` (`initdb`,
    /// superuser [`Postgres::user`], trust authentication, UTF8, C locale)
    /// and starts it; returns once it accepts connections. Panics, with
    /// the tool's output or the server's log, if any step fails or takes
    /// longer than [`PG_WAIT`].
    pub fn start() -> Self {
        let bin = bin_dir();
        let owner = Owner::current();
        let dir = temp_dir(&owner);
        let mut cluster = Self {
            dir,
            bin,
            owner,
            server: None,
            log: Vec::new(),
        };
        cluster.initdb();
        cluster.start_again();
        cluster
    }

    /// Starts the server again on the same data directory and socket
    /// directory (after [`Postgres::stop`]); returns once it accepts
    /// connections. Panics if it is running, or as [`Postgres::start`].
    pub fn start_again(&mut self) {
        assert!(self.server.is_none(), "postgres is already running");
        let mut command = self.command("postgres");
        command
            .arg("-D")
            .arg(self.data_dir())
            .arg("-k")
            .arg(self.socket_dir())
            .args(["-p", &PORT.to_string()])
            .args(SERVER_SETTINGS.iter().flat_map(|s| ["-c", s]))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {}/postgres: {e}", self.bin.display()));
        let lines = crate::stderr_lines(&mut child);
        self.server = Some(Server { child, lines });
        self.wait_until_ready();
    }

    /// Fast shutdown: SIGINT to the server, then waits until it and every
    /// process it started have exited (their log pipe closed). Panics if
    /// that takes longer than [`PG_WAIT`] (the server is killed then) or if
    /// it is not running.
    pub fn stop(&mut self) {
        let server = self.server.take().expect("postgres is not running");
        if let Err(timeout) = self.shut_down(server) {
            panic!("{timeout}; its log:\n{}", self.log.join("\n"));
        }
    }

    /// The directory holding the server's socket file
    /// (`.s.PGSQL.5432`), under 100 bytes with it.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// The cluster's superuser (no password: trust authentication).
    pub fn user(&self) -> &str {
        &self.owner.name
    }

    /// The server's pid; panics if it is not running.
    pub fn pid(&self) -> i32 {
        let server = self.server.as_ref().expect("postgres is not running");
        server.child.id() as i32
    }

    /// The directory everything of this cluster is in (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A libpq key-value connection string,
    /// `host=<socket_dir> port=5432 user=<user> dbname=postgres`: a `host`
    /// that is a directory means the Unix socket in it. It is what
    /// `tokio_postgres::Config::from_str` (and so `deadpool_postgres`, or
    /// `psql`) parse. The socket dir has no spaces or quotes.
    pub fn connection_string(&self) -> String {
        format!(
            "host={} port={PORT} user={} dbname=postgres",
            self.socket_dir().display(),
            self.owner.name
        )
    }

    /// Runs `sql` with `psql -At` (unaligned, tuples only; stops at the
    /// first error) against database `postgres`; its stdout with the final
    /// newline trimmed. Panics with psql's stderr if it fails.
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql)
            .unwrap_or_else(|stderr| panic!("psql failed on {sql:?}: {stderr}"))
    }

    /// [`Postgres::psql`], returning psql's stderr if it exits non-zero
    /// (as it does when the server is stopped).
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        let mut command = self.command("psql");
        command
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .arg(self.connection_string());
        let output = run_bounded(command, "psql");
        let stdout = String::from_utf8_lossy(&output.stdout);
        if output.status.success() {
            Ok(stdout.trim_end_matches('\n').to_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `bin/tool`, run as the cluster's owner, in the cluster's directory
    /// (the owner may not be allowed into the test's working directory).
    fn command(&self, tool: &str) -> Command {
        let mut command = Command::new(self.bin.join(tool));
        command.current_dir(&self.dir);
        if let Some((uid, gid)) = self.owner.switch_to {
            // As root, std also drops the supplementary groups
            // (setgroups(0)) before setuid when none are given.
            command.uid(uid.as_raw()).gid(gid.as_raw());
        }
        command
    }

    fn initdb(&self) {
        let mut command = self.command("initdb");
        command
            .arg("-D")
            .arg(self.data_dir())
            .args(["-U", &self.owner.name])
            .args(["--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"]);
        let output = run_bounded(command, "initdb");
        assert!(
            output.status.success(),
            "initdb failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Reads the log until the server says it is ready; panics with the
    /// log if it exits first or [`PG_WAIT`] passes.
    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + PG_WAIT;
        let server = self.server.as_mut().unwrap();
        let failure = loop {
            match server
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    let ready = line.contains(READY);
                    self.log.push(line);
                    if ready {
                        return;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = server.child.wait().unwrap();
                    self.server = None;
                    break format!("postgres exited ({status}) before accepting connections");
                }
                Err(RecvTimeoutError::Timeout) => {
                    break format!("postgres not accepting connections after {PG_WAIT:?}");
                }
            }
        };
        if let Some(server) = self.server.take() {
            let _ = self.shut_down(server);
        }
        panic!("{failure}; its log:\n{}", self.log.join("\n"));
    }

    /// SIGINT (fast shutdown), then the log to its end; kills the server
    /// and returns an error after [`PG_WAIT`].
    fn shut_down(&mut self, mut server: Server) -> Result<(), String> {
        let pid = Pid::from_raw(server.child.id() as i32);
        let _ = kill(pid, Signal::SIGINT);
        let deadline = Instant::now() + PG_WAIT;
        loop {
            match server
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => self.log.push(line),
                Err(RecvTimeoutError::Disconnected) => {
                    server.child.wait().unwrap();
                    return Ok(());
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = server.child.kill();
                    let _ = server.child.wait();
                    return Err(format!("postgres did not stop within {PG_WAIT:?}"));
                }
            }
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            let _ = self.shut_down(server);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Test-friendly server settings: Unix socket only, no durability (the
/// data lives as long as the test), little memory, English messages.
const SERVER_SETTINGS: &[&str] = &[
    "listen_addresses=",
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "shared_buffers=16MB",
    "max_wal_senders=0",
    "wal_level=minimal",
    "lc_messages=C",
];

impl Owner {
    /// The `postgres` system user when this process is root, else the
    /// current user.
    fn current() -> Self {
        let uid = Uid::current();
        if uid.is_root() {
            let user = User::from_name("postgres")
                .expect("look up the postgres user")
                .unwrap_or_else(|| {
                    panic!(
                        "running as root, and there is no `postgres` system user to run \
                         PostgreSQL as: install Debian's `postgresql` package \
                         (scripts/test.sh installs it)"
                    )
                });
            Self {
                name: user.name,
                switch_to: Some((user.uid, user.gid)),
            }
        } else {
            let user = User::from_uid(uid)
                .expect("look up the current user")
                .unwrap_or_else(|| panic!("uid {uid} has no user name"));
            Self {
                name: user.name,
                switch_to: None,
            }
        }
    }
}

/// A new `/tmp/drover-pg-XXXXXX` (short: the socket path must stay under
/// the 108-byte limit) with an empty `sock` in it, owned by `owner`.
fn temp_dir(owner: &Owner) -> PathBuf {
    let dir = nix::unistd::mkdtemp("/tmp/drover-pg-XXXXXX").expect("create a temp dir in /tmp");
    let sock = dir.join("sock");
    std::fs::create_dir(&sock).unwrap();
    if let Some((uid, gid)) = owner.switch_to {
        for path in [&dir, &sock] {
            nix::unistd::chown(path, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        }
    }
    dir
}

/// The directory of PostgreSQL's server binaries: where the `initdb` on
/// `PATH` really is (symlinks resolved, so its `postgres` and `psql` are
/// of the same version), else the highest `/usr/lib/postgresql/N/bin`.
/// Panics, saying what to install, when there is none.
pub fn bin_dir() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("initdb"))
        .find(|initdb| initdb.is_file())
        .and_then(|initdb| std::fs::canonicalize(initdb).ok())
        .and_then(|initdb| initdb.parent().map(Path::to_path_buf));
    let dir = on_path.or_else(debian_bin_dir).unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries (initdb on PATH or under \
             /usr/lib/postgresql/*/bin): install Debian's `postgresql` package \
             (scripts/test.sh installs it)"
        )
    });
    for tool in ["initdb", "postgres", "psql"] {
        assert!(
            dir.join(tool).is_file(),
            "{} has no {tool}: install Debian's `postgresql` package",
            dir.display()
        );
    }
    dir
}

/// The `bin` of the highest numeric version under `/usr/lib/postgresql`
/// that has an `initdb`.
fn debian_bin_dir() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version: f64 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, bin)| bin)
}

/// Runs `command` to its end, its stdout and stderr captured; kills it and
/// panics if it takes longer than [`PG_WAIT`].
fn run_bounded(mut command: Command, what: &str) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let pid = Pid::from_raw(child.id() as i32);
    let (send, done) = channel();
    std::thread::spawn(move || send.send(child.wait_with_output()));
    match done.recv_timeout(PG_WAIT) {
        Ok(output) => output.unwrap_or_else(|e| panic!("wait for {what}: {e}")),
        Err(_) => {
            let _ = kill(pid, Signal::SIGKILL);
            panic!("{what} did not finish within {PG_WAIT:?}");
        }
    }
}
