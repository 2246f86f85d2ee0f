//! The worker side of drover's control channel: run this process as one
//! worker of a `drover` supervisor.
//!
//! The supervisor passes the listening sockets by the LISTEN_FDS
//! convention and a `SOCK_SEQPACKET` control socket named by
//! `DROVER_CONTROL_FD`. The worker builds its server with
//! [`Server::from_env`](drover_worker::Server::from_env), reports `Ready` once
//! `start_serving` has returned (or `BootFailed` with the reason), sends a
//! heartbeat with its counters every interval from its runtime, closes on
//! `Close` (draining), and reports `Closed` with the close report before it
//! exits. EOF on the control socket means the supervisor is gone: the
//! worker closes gracefully and exits, so it never outlives it.

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::control::protocol::{SupervisorMessage, WorkerCounters, WorkerMessage, MAX_DATAGRAM};
use crate::control::recv_with_fd;
use crate::control::ControlSocket;
use std::os::fd::AsFd;
use tokio::net::UnixDatagram;
use tokio_util::task::TaskTracker;

use drover_worker::{BoxError, CloseReport, Error, IntoHttpService, Server, ServerHandle, Tls};

use crate::worker_tls::WorkerTls;

use drover_shared::events;

use crate::app_start::start_app;
use crate::config::Config;
use crate::worker_context::{Worker, WorkerIdentity};

/// The drain window of a worker whose supervisor is gone: its clients
/// get a moment to send the request they are writing (no one replaces
/// it, and nothing else bounds its exit).
const ORPHAN_DRAIN: Duration = Duration::from_secs(1);

/// How long the runtime's remaining tasks get once the server has closed.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(2);

/// This worker's request quota: `--max-requests` plus its own random
/// share of the jitter, so that workers started together are not all
/// recycled together.
fn request_quota(config: &Config) -> Option<u64> {
    use std::hash::{BuildHasher, Hasher};
    let quota = config.max_requests?.max(1);
    // Keyed per process from the OS, and the pid mixed in: forked
    // workers must not all inherit one seed.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let jitter = hasher.finish() % config.max_requests_jitter.saturating_add(1);
    Some(quota.saturating_add(jitter))
}

/// Raises this process's soft descriptor limit to its hard limit (as Go's
/// runtime does: the soft limit is often 1024 for compatibility with
/// `select(2)`, which nothing here uses), and returns the connection limit
/// to serve with: `--max-connections` if given, else the soft limit less
/// a reserve for the application's own files and sockets (a tenth of it,
/// at least 64), so that accepting never takes the last descriptors. Logs
/// both (`fd_limits`).
fn connection_limit(config: &Config) -> usize {
    let (soft, hard) = raise_fd_limit();
    let derived = usize::try_from(soft.saturating_sub((soft / 10).max(64)))
        .unwrap_or(usize::MAX)
        .max(1);
    let max_connections = config.max_connections().unwrap_or(derived);
    tracing::info!(
        event = events::FD_LIMITS,
        nofile_soft = soft,
        nofile_hard = hard,
        max_connections,
        explicit = config.max_connections().is_some(),
        "worker descriptor limits"
    );
    max_connections
}

/// Sets the soft RLIMIT_NOFILE to the hard one, or as near as the kernel
/// allows (an unlimited hard limit is capped by `fs.nr_open`); returns the
/// limits now in force (1024 each if they cannot be read).
fn raise_fd_limit() -> (u64, u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return (1024, 1024);
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_err() {
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok());
        if let Some(cap) = nr_open.filter(|cap| *cap > soft) {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, cap.min(hard), hard);
        }
    }
    getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((soft, hard))
}

/// Runs this process as a drover worker serving what `factory` builds on
/// the sockets the supervisor passed, until the supervisor says close (or
/// goes away). Returns the process's exit code: success after a clean
/// close, failure when the server or the application could not start
/// (after reporting why).
pub(crate) fn serve_as_worker<F, Fut, S, E, K>(
    config: &Config,
    control: ControlSocket,
    factory: F,
) -> ExitCode
where
    F: FnOnce(Worker) -> Fut,
    Fut: Future<Output = Result<S, E>>,
    S: IntoHttpService<K>,
    E: Into<BoxError>,
{
    // The supervisor's signals are its own (started ignored: see signals.rs).
    if let Err(error) = crate::signals::ignore_in_worker() {
        tracing::warn!(%error, "cannot install the worker's signal handlers");
    }
    // Every line this process logs says which worker it is: the span is
    // entered on every thread of its runtime (and on this one, which runs
    // a current-thread runtime's tasks), and tasks run inside it.
    let identity = WorkerIdentity::from_env();
    crate::process_title::set_worker(identity);
    let span = tracing::info_span!("worker", index = identity.index, pid = std::process::id());
    let _entered = span.clone().entered();
    // The certificate comes first, from the supervisor (this process may
    // not be able to read the key file: it never tries).
    let tls = match config
        .tls
        .as_ref()
        .map(|_| crate::worker_tls::receive(&control, config))
    {
        None => None,
        Some(Ok(tls)) => Some(tls),
        Some(Err(reason)) => {
            report(&control, &boot_failed(reason));
            return ExitCode::FAILURE;
        }
    };
    let runtime = runtime(config.threads, span);
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            report(
                &control,
                &boot_failed(format!("cannot start a runtime: {error}")),
            );
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(serve(config, control, identity, tls, factory));
    // Tasks still running once the server has closed (a `spawn_blocking`
    // that never ends) must not keep the process alive for ever, least of
    // all once its supervisor is gone.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    code
}

thread_local! {
    /// The worker's span, entered for the life of each runtime thread.
    static IN_WORKER_SPAN: std::cell::RefCell<Option<tracing::span::EnteredSpan>> =
        const { std::cell::RefCell::new(None) };
}

/// The worker's runtime: one thread (a current-thread runtime) or
/// `threads`, each in `span` for its whole life.
fn runtime(threads: usize, span: tracing::Span) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .on_thread_start(move || {
            IN_WORKER_SPAN.with(|entered| *entered.borrow_mut() = Some(span.clone().entered()));
        })
        .on_thread_stop(|| IN_WORKER_SPAN.with(|entered| drop(entered.borrow_mut().take())))
        .build()
}

async fn serve<F, Fut, S, E, K>(
    config: &Config,
    control: ControlSocket,
    identity: WorkerIdentity,
    mut tls: Option<WorkerTls>,
    factory: F,
) -> ExitCode
where
    F: FnOnce(Worker) -> Fut,
    Fut: Future<Output = Result<S, E>>,
    S: IntoHttpService<K>,
    E: Into<BoxError>,
{
    let work = TaskTracker::new();
    let served_tls = tls.as_ref().map(|t| t.tls().clone());
    let Some(server) = start(config, &control, factory, identity, served_tls, &work).await else {
        return ExitCode::FAILURE;
    };
    // Messages go out with a plain non-blocking send (the socket buffer
    // holds far more than a worker sends between the supervisor's reads);
    // they come in through tokio: a SOCK_SEQPACKET socket reads like a
    // connected datagram socket (one message each, 0 bytes at EOF), so
    // UnixDatagram can wait on a second descriptor for it.
    let control = Arc::new(control);
    let incoming = control
        .try_clone()
        .and_then(|fd| UnixDatagram::from_std(std::os::unix::net::UnixDatagram::from(fd)));
    let incoming = match incoming {
        Ok(incoming) => incoming,
        Err(error) => {
            tracing::error!(%error, "cannot watch the control socket");
            server.handle().abort();
            return ExitCode::FAILURE;
        }
    };
    report(&control, &WorkerMessage::Ready);
    // Until now the kernel would have killed this process with its parent
    // (the supervisor sets that up at fork); from here on, EOF on the
    // control socket makes it close gracefully instead. The supervisor's
    // signals are ignored (`serve_as_worker`): a Ctrl-C or a `systemctl
    // stop` reaching the whole process group is the supervisor's to turn
    // into a Close.
    // (If the supervisor died meanwhile, its end is closed: the control
    // loop below reads EOF at once.)
    let _ = nix::sys::prctl::set_pdeathsig(None);
    let handle = server.handle();
    let heartbeats = config
        .heartbeat_interval
        .map(|every| tokio::spawn(heartbeat(handle.clone(), every, Arc::clone(&control))));

    let recycle = config.max_requests.map(|_| {
        let (handle, control) = (handle.clone(), Arc::clone(&control));
        tokio::spawn(async move {
            handle.quota_reached().await;
            let requests = handle.stats().requests_served;
            tracing::info!(
                event = events::QUOTA_REACHED,
                requests,
                "request quota reached: asking for a replacement"
            );
            report(&control, &WorkerMessage::Recycle { requests });
        })
    });

    let deadline = tokio::select! {
        deadline = follow_supervisor(&incoming, &handle, &control, tls.as_mut()) => deadline,
        () = handle.closing() => None,
    };
    let cut_at = tokio::time::Instant::now() + deadline.unwrap_or(config.graceful_timeout);
    // A closing worker still counts for the operator's status.
    let result = tokio::select! {
        result = wait_closed_within(&server, deadline) => result,
        never = keep_reporting(&incoming, &handle, &control) => match never {},
    };
    finish_tracked_work(&work, cut_at).await;
    for task in heartbeats.into_iter().chain(recycle) {
        task.abort();
    }
    match result {
        Ok(closed) => {
            report(
                &control,
                &WorkerMessage::Closed {
                    drained: closed.drained,
                    aborted: closed.aborted,
                    requests: closed.requests_served,
                    tls_handshake_failures: handle.stats().tls_handshake_failures,
                },
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "worker server failed");
            ExitCode::FAILURE
        }
    }
}

/// Builds the server (its sockets taken, not yet accepting: connections
/// wait in the backlog, or go to the other workers), then the application
/// with the server's handle and `work` (what the process waits for before
/// it exits) in its context, and starts serving it. `None`
/// once the reason it could not was reported to the supervisor.
async fn start<F, Fut, S, E, K>(
    config: &Config,
    control: &ControlSocket,
    factory: F,
    identity: WorkerIdentity,
    tls: Option<Tls>,
    work: &TaskTracker,
) -> Option<Server>
where
    F: FnOnce(Worker) -> Fut,
    Fut: Future<Output = Result<S, E>>,
    S: IntoHttpService<K>,
    E: Into<BoxError>,
{
    let builder = config.server_builder().request_quota(request_quota(config));
    let mut builder = builder.max_connections(connection_limit(config));
    if let Some(tls) = tls {
        builder = builder
            .tls(tls)
            .plain_listener(crate::sockets::INSECURE_NAME);
    }
    let reason = match builder.from_env() {
        Ok(server) => {
            match start_app(
                factory,
                Worker::new(identity, server.handle(), work.clone()),
            )
            .await
            {
                Ok(app) => match server.start_serving(app).await {
                    Ok(()) => return Some(server),
                    Err(error) => error.to_string(),
                },
                Err(reason) => reason,
            }
        }
        Err(error) => error.to_string(),
    };
    report(control, &boot_failed(reason));
    None
}

/// Follows the supervisor's messages until the server is told to close or
/// the supervisor is gone. Returns the supervisor's graceful deadline for
/// the close, if it gave one.
async fn follow_supervisor(
    incoming: &UnixDatagram,
    server: &ServerHandle,
    control: &ControlSocket,
    mut tls: Option<&mut WorkerTls>,
) -> Option<Duration> {
    let mut buffer = [0u8; MAX_DATAGRAM];
    loop {
        let received = incoming
            .async_io(tokio::io::Interest::READABLE, || {
                recv_with_fd(incoming.as_fd(), &mut buffer)
            })
            .await;
        let (len, fd) = match received {
            Ok((len, fd)) => (Ok(len), fd),
            Err(error) => (Err(error), None),
        };
        match len {
            Ok(len @ 1..) => match SupervisorMessage::decode(&buffer[..len]) {
                Ok(SupervisorMessage::Close {
                    drain_ms,
                    graceful_ms,
                }) => {
                    server.close_draining(Duration::from_millis(drain_ms));
                    return Some(Duration::from_millis(graceful_ms));
                }
                // Answered from this task, on the runtime: a blocked
                // runtime answers late, and the supervisor says so.
                Ok(SupervisorMessage::Report { query }) => {
                    answer_report(server, control, query);
                }
                Ok(SupervisorMessage::Tls) => crate::worker_tls::replace(tls.as_deref_mut(), fd),
                Err(error) => tracing::warn!(%error, "ignoring a bad control message"),
            },
            Ok(_eof) => {
                tracing::warn!(event = events::SUPERVISOR_GONE, "supervisor gone: closing");
                server.close_draining(ORPHAN_DRAIN);
                return None;
            }
            Err(error) => {
                // ECONNRESET when the supervisor died with messages of
                // ours unread: gone all the same.
                tracing::warn!(event = events::SUPERVISOR_GONE, %error, "supervisor gone (control socket failed): closing");
                server.close_draining(ORPHAN_DRAIN);
                return None;
            }
        }
    }
}

/// Once the server is closing: answers the supervisor's `Report` queries
/// (a closing worker still serves its last requests). Never returns; once
/// the supervisor is gone there is nothing to answer.
async fn keep_reporting(
    incoming: &UnixDatagram,
    server: &ServerHandle,
    control: &ControlSocket,
) -> std::convert::Infallible {
    let mut buffer = [0u8; MAX_DATAGRAM];
    loop {
        match incoming.recv(&mut buffer).await {
            Ok(len @ 1..) => {
                if let Ok(SupervisorMessage::Report { query }) =
                    SupervisorMessage::decode(&buffer[..len])
                {
                    answer_report(server, control, query);
                }
            }
            Ok(_) | Err(_) => std::future::pending().await,
        }
    }
}

/// Waits until the closing `server` is closed; connections still open at
/// `deadline` (the supervisor's, which may be shorter than the server's
/// own graceful timeout: a restart in a hurry) are aborted then.
async fn wait_closed_within(
    server: &Server,
    deadline: Option<Duration>,
) -> Result<CloseReport, Error> {
    let closed = server.wait_closed();
    let Some(deadline) = deadline else {
        return closed.await;
    };
    tokio::pin!(closed);
    tokio::select! {
        result = &mut closed => result,
        () = tokio::time::sleep(deadline) => { // sleep-ok: the supervisor's deadline, a timer
            server.handle().abort();
            closed.await
        }
    }
}

/// Waits, until `cut_at`, for the application's tracked work
/// (`Worker::track`, `Worker::spawn`) to end; what is left then is cut
/// when the process exits.
async fn finish_tracked_work(work: &TaskTracker, cut_at: tokio::time::Instant) {
    work.close();
    if tokio::time::timeout_at(cut_at, work.wait()).await.is_err() {
        tracing::warn!(
            tracked = work.len(),
            "tracked work still running at the graceful deadline: cut"
        );
    }
}

/// Sends the server's counters every `every`, from this runtime: a blocked
/// runtime stops them, which is what the supervisor watches for.
async fn heartbeat(server: ServerHandle, every: Duration, control: Arc<ControlSocket>) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let beat = WorkerMessage::Heartbeat(counters(&server));
        if send_now(&control, &beat).is_err() {
            return;
        }
    }
}

/// Answers the supervisor's `Report { query }` with the counters now.
fn answer_report(server: &ServerHandle, control: &ControlSocket, query: u64) {
    let counters = counters(server);
    let _ = send_now(control, &WorkerMessage::Report { query, counters });
}

fn counters(server: &ServerHandle) -> WorkerCounters {
    let stats = server.stats();
    WorkerCounters {
        requests: stats.requests_served,
        in_flight: stats.requests_in_flight,
        connections: stats.open_connections,
        tls_handshake_failures: stats.tls_handshake_failures,
    }
}

/// Sends a message that is worth nothing late: a full buffer (a stalled
/// supervisor) skips it. Err once the supervisor is gone.
fn send_now(control: &ControlSocket, message: &WorkerMessage) -> Result<(), ()> {
    match control.send(&message.encode()) {
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
        Err(_) => Err(()),
        Ok(()) => Ok(()),
    }
}

fn boot_failed(reason: String) -> WorkerMessage {
    tracing::error!(%reason, "worker cannot start");
    WorkerMessage::BootFailed { reason }
}

fn report(control: &ControlSocket, message: &WorkerMessage) {
    if let Err(error) = control.send(&message.encode()) {
        tracing::warn!(%error, ?message, "cannot reach the supervisor");
    }
}

#[cfg(test)]
mod tests {
    use super::wait_closed_within;
    use drover_worker::Server;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tokio::sync::Notify;

    #[tokio::test]
    async fn the_supervisors_deadline_cuts_what_the_servers_own_would_wait_for() {
        let entered = Arc::new(Notify::new());
        let handler_entered = Arc::clone(&entered);
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(move || async move {
                handler_entered.notify_one();
                std::future::pending::<&'static str>().await
            }),
        );
        // The server's own deadline: none, it would wait for ever.
        let server = Server::builder()
            .graceful_timeout(None)
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        server.start_serving(app).await.unwrap();
        let addr = server.local_addrs()[0].tcp().unwrap();
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .unwrap();
        entered.notified().await;

        server.close();
        let report = tokio::time::timeout(
            Duration::from_secs(10),
            wait_closed_within(&server, Some(Duration::from_millis(50))),
        )
        .await
        .expect("the deadline must end the close")
        .unwrap();
        assert_eq!(report.aborted, 1);
    }
}
