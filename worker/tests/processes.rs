//! Tests that need a process of their own: sockets inherited through a
//! real LISTEN_FDS environment, and running out of descriptors.
//!
//! The child is this same test binary, run with `--exact child` and
//! `DROVER_TEST_CHILD` naming the scenario; it talks to the parent over
//! stdout (and its logs on stderr).

mod common;

use std::process::Stdio;
use std::sync::Arc;

use common::{app, get_once, within, Client, Probe};
use drover_worker::{ListenAddr, Server};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

const SCENARIO: &str = "DROVER_TEST_CHILD";

/// The child side. A no-op unless run by one of the tests below.
#[test]
fn child() {
    let Ok(scenario) = std::env::var(SCENARIO) else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .try_init();
    if scenario == "emfile" {
        limit_descriptors();
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = match scenario.as_str() {
            "from-env" => match Server::from_env() {
                Ok(server) => server,
                Err(error) => {
                    println!("FROM_ENV_ERROR {error}");
                    return;
                }
            },
            "emfile" => Server::builder()
                .keep_alive_timeout(None)
                .bind("127.0.0.1:0")
                .await
                .unwrap(),
            other => panic!("unknown scenario {other}"),
        };
        let listeners: Vec<String> = server
            .handle()
            .listeners()
            .iter()
            .map(|l| format!("{}={}", l.name.as_deref().unwrap_or("-"), l.addr))
            .collect();
        println!("LISTENERS {}", listeners.join(" "));
        if scenario == "from-env" {
            let again = Server::from_env().map(|_| ()).unwrap_err();
            println!("SECOND_FROM_ENV {again}");
        }
        let probe = Arc::new(Probe::default());
        probe.handle.set(server.handle()).unwrap();
        server.serve_forever(app(probe)).await.unwrap();
        println!("CLOSED");
    });
}

/// Leaves the child room for about 16 connections.
fn limit_descriptors() {
    use nix::sys::resource::{setrlimit, Resource};
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    // + runtime (epoll, eventfd, ...) and the listener, then the connections.
    let limit = open + 8 + 16;
    setrlimit(Resource::RLIMIT_NOFILE, limit, limit).unwrap();
}

struct Spawned {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Lines<BufReader<ChildStderr>>,
}

impl Spawned {
    fn start(mut command: Command) -> Self {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn the child");
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// What follows `prefix` in the first stdout line that has it (the test
    /// harness may print `test child ... ` before it).
    async fn stdout_line(&mut self, prefix: &str) -> String {
        within(&format!("child stdout line {prefix}"), async {
            while let Some(line) = self.stdout.next_line().await.unwrap() {
                if let Some((_, rest)) = line.split_once(prefix) {
                    return rest.trim().to_owned();
                }
            }
            panic!("child stdout ended before {prefix}");
        })
        .await
    }

    async fn stderr_line(&mut self, needle: &str) -> String {
        within(&format!("child stderr line with {needle}"), async {
            while let Some(line) = self.stderr.next_line().await.unwrap() {
                if line.contains(needle) {
                    return line;
                }
            }
            panic!("child stderr ended before {needle}");
        })
        .await
    }

    async fn exits_cleanly(mut self) {
        let status = within("the child to exit", self.child.wait())
            .await
            .unwrap();
        assert!(status.success(), "child exited with {status}");
    }
}

fn child_command(scenario: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(SCENARIO, scenario);
    command
}

fn free_tcp_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

#[tokio::test]
async fn from_env_serves_sockets_passed_by_systemd_socket_activate() {
    let dir = std::env::temp_dir().join(format!("drover-ssa-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("admin.sock");
    let port = free_tcp_port();
    let tcp = ListenAddr::Tcp(format!("127.0.0.1:{port}").parse().unwrap());
    let unix = ListenAddr::Unix(path.clone());

    let exe = std::env::current_exe().unwrap();
    let mut command = Command::new("systemd-socket-activate");
    command
        .arg(format!("--listen=127.0.0.1:{port}"))
        .arg(format!("--listen={}", path.display()))
        .arg("--fdname=web:admin")
        .arg(format!("--setenv={SCENARIO}=from-env"))
        .arg(exe)
        .args(["--exact", "child", "--nocapture", "--test-threads=1"]);
    let mut child = Spawned::start(command);
    child.stderr_line(&format!("{} as 4", path.display())).await;

    // The first connection makes systemd-socket-activate exec the child,
    // which takes the sockets from LISTEN_FDS and answers it.
    let (status, body) = within(
        "a request through the activated socket",
        get_once(&tcp, "/"),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "hello"));
    let listeners = child.stdout_line("LISTENERS").await;
    assert_eq!(listeners, format!("web={tcp} admin={unix}"));
    let second = child.stdout_line("SECOND_FROM_ENV").await;
    assert!(second.contains("already taken"), "{second}");
    assert_eq!(get_once(&unix, "/").await.0, 200);

    let mut client = Client::connect(&unix).await.unwrap();
    assert_eq!(client.get("/close").await.1, "closing");
    child.stdout_line("CLOSED").await;
    child.exits_cleanly().await;
    assert!(path.exists(), "an inherited socket's file is never removed");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn from_env_rejects_missing_and_malformed_environments() {
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[], "LISTEN_FDS is not set"),
        (
            &[("LISTEN_FDS", "1"), ("LISTEN_PID", "1")],
            "meant for pid 1",
        ),
        (&[("LISTEN_FDS", "two"), ("LISTEN_PID", "$$")], "malformed"),
        // fd 3 is /dev/null (the script opens it), not a socket.
        (
            &[("LISTEN_FDS", "1"), ("LISTEN_PID", "$$")],
            "descriptor 3 is not a listening",
        ),
    ];
    for (vars, says) in cases {
        // `sh -c 'exec'` keeps the pid, so LISTEN_PID=$$ is the child's.
        let assignments: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let script = format!(
            "exec 3</dev/null; {} exec \"$0\" \"$@\"",
            assignments.join(" ")
        );
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(script)
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", "child", "--nocapture", "--test-threads=1"])
            .env(SCENARIO, "from-env")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES");
        let mut child = Spawned::start(command);
        let error = child.stdout_line("FROM_ENV_ERROR").await;
        assert!(error.contains(says), "{vars:?}: {error}");
        child.exits_cleanly().await;
    }
}

#[tokio::test]
async fn accept_backs_off_when_out_of_descriptors_and_recovers() {
    let mut child = Spawned::start(child_command("emfile"));
    let addr: ListenAddr = {
        let line = child.stdout_line("LISTENERS").await;
        ListenAddr::Tcp(line.trim_start_matches("-=").parse().unwrap())
    };

    // Open connections until the child runs out of descriptors; each one
    // that is served stays open (no keep-alive timeout in this child).
    let mut served = Vec::new();
    let stuck = {
        let backing_off = child.stderr_line("backing off");
        tokio::pin!(backing_off);
        loop {
            assert!(served.len() < 200, "the child never ran out of descriptors");
            let mut client = Client::connect(&addr).await.unwrap();
            let mut request = tokio::spawn(async move {
                let (head, _) = client.get("/").await;
                (head.status().as_u16(), client)
            });
            tokio::select! {
                response = &mut request => served.push(response.unwrap().1),
                line = &mut backing_off => {
                    assert!(line.contains("Too many open files"), "{line}");
                    break request;
                }
            }
        }
    };
    assert!(!served.is_empty());
    // While out of descriptors the loop pauses, longer each time, instead
    // of retrying at once (which would spin a core).
    let pauses: Vec<f64> = {
        let mut pauses = Vec::new();
        while pauses.len() < 3 {
            let line = child.stderr_line("backing off").await;
            let ms = line
                .split("retry_in_ms=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|ms| ms.parse().ok())
                .unwrap_or_else(|| panic!("no retry_in_ms number in {line}"));
            pauses.push(ms);
        }
        pauses
    };
    assert_eq!(
        pauses,
        [10.0, 20.0, 40.0],
        "the accept backoff doubles (5 ms was the first pause)"
    );

    drop(served); // frees the child's descriptors
    let (status, _) = within("the stuck request after descriptors freed up", stuck)
        .await
        .unwrap();
    assert_eq!(status, 200);

    let mut closer = Client::connect(&addr).await.unwrap();
    assert_eq!(closer.get("/close").await.1, "closing");
    child.stdout_line("CLOSED").await;
    child.exits_cleanly().await;
}
