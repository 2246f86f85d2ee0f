//! The supervisor's event loop: single-threaded, blocked in poll(2) on the
//! signal pipe and every worker's control socket, with the nearest
//! deadline as the timeout. No fixed tick: an idle supervisor sleeps.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use drover_shared::control::SupervisorMessage;
use drover_shared::ControlSocket;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTTIN, SIGTTOU, SIGUSR2};
use signal_hook::iterator::backend::SignalDelivery;
use signal_hook::iterator::exfiltrator::SignalOnly;

mod messages;

use messages::Batch;

use crate::backoff::Backoff;
use crate::cli::{Cli, SpawnMode};
use crate::sockets::Sockets;
use crate::spawn::{spawn_worker, ExecImage, Launch};

/// Runs the supervisor until it stops; the exit code is the process's.
pub fn run(cli: Cli, worker_entry: &dyn Fn() -> ExitCode) -> ExitCode {
    match Supervisor::start(cli, worker_entry) {
        Ok(mut supervisor) => supervisor.run(),
        Err(message) => {
            eprintln!("drover: {message}");
            ExitCode::FAILURE
        }
    }
}

struct Worker {
    id: u64,
    pid: Pid,
    /// `None` once the worker closed its end (it is exiting).
    control: Option<ControlSocket>,
    state: WorkerState,
    last_heard: Instant,
    boot_failure: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum WorkerState {
    /// Started; must report `Ready` by the deadline.
    Booting {
        deadline: Instant,
    },
    Ready,
    /// Told to close, or killed; waiting for it to exit.
    Leaving,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// The first workers are starting; any failure ends drover.
    Booting,
    Running,
    /// Stopping: workers are closing; at the deadline the rest are killed
    /// (`None` once they were: they are reaped on SIGCHLD).
    Stopping {
        deadline: Option<Instant>,
    },
}

struct Supervisor<'a> {
    cli: Cli,
    sockets: Sockets,
    image: Option<ExecImage>,
    worker_entry: &'a dyn Fn() -> ExitCode,
    signals: SignalDelivery<UnixStream, SignalOnly>,
    workers: Vec<Worker>,
    phase: Phase,
    wanted: usize,
    next_id: u64,
    backoff: Backoff,
    /// When the next replacement worker may start.
    respawn_at: Option<Instant>,
    /// Whether this instance wrote the pid file (then it removes it).
    wrote_pid_file: bool,
    exit_code: ExitCode,
}

impl<'a> Supervisor<'a> {
    fn start(cli: Cli, worker_entry: &'a dyn Fn() -> ExitCode) -> Result<Self, String> {
        let sockets = Sockets::open(&cli)?;
        let image = match cli.spawn {
            SpawnMode::Exec => {
                Some(ExecImage::current().map_err(|e| format!("cannot find this binary: {e}"))?)
            }
            SpawnMode::Fork => None,
        };
        let (read, write) = UnixStream::pair().map_err(|e| format!("signal pipe: {e}"))?;
        read.set_nonblocking(true)
            .map_err(|e| format!("signal pipe: {e}"))?;
        let signals = SignalDelivery::with_pipe(
            read,
            write,
            SignalOnly,
            [
                SIGTERM, SIGINT, SIGQUIT, SIGCHLD, SIGHUP, SIGUSR2, SIGTTIN, SIGTTOU,
            ],
        )
        .map_err(|e| format!("cannot watch signals: {e}"))?;
        let wanted = cli.worker_count();
        let mut supervisor = Self {
            cli,
            sockets,
            image,
            worker_entry,
            signals,
            workers: Vec::with_capacity(wanted),
            phase: Phase::Booting,
            wanted,
            next_id: 1,
            backoff: Backoff::default(),
            respawn_at: None,
            wrote_pid_file: false,
            exit_code: ExitCode::SUCCESS,
        };
        tracing::info!(
            workers = wanted,
            spawn = ?supervisor.cli.spawn,
            addrs = ?supervisor.sockets.addrs(),
            "starting"
        );
        for _ in 0..wanted {
            if let Err(error) = supervisor.spawn() {
                supervisor.abandon();
                return Err(format!("cannot start a worker: {error}"));
            }
        }
        Ok(supervisor)
    }

    fn run(&mut self) -> ExitCode {
        loop {
            if matches!(self.phase, Phase::Stopping { .. }) && self.workers.is_empty() {
                return self.finish();
            }
            let timeout = match self.next_deadline() {
                // Round up: a deadline 0.4 ms away must not be polled at 0.
                Some(deadline) => {
                    let wait = deadline.saturating_duration_since(Instant::now());
                    PollTimeout::try_from(
                        wait.as_millis() as u64 + u64::from(wait.subsec_nanos() % 1_000_000 != 0),
                    )
                    .unwrap_or(PollTimeout::MAX)
                }
                None => PollTimeout::NONE,
            };
            let (signal_ready, ready_workers) = match self.wait(timeout) {
                Ok(ready) => ready,
                Err(error) => {
                    tracing::error!(%error, "poll failed");
                    return ExitCode::FAILURE;
                }
            };
            if signal_ready {
                let pending: Vec<i32> = self.signals.pending().collect();
                for signal in pending {
                    self.on_signal(signal);
                }
            }
            for id in ready_workers {
                self.read_control(id, Batch::Turn);
            }
            self.on_timers(Instant::now());
        }
    }

    /// Blocks until a signal, a control message or the timeout. Returns
    /// whether signals are pending and which workers have something.
    fn wait(&self, timeout: PollTimeout) -> io::Result<(bool, Vec<u64>)> {
        let watched: Vec<&Worker> = self
            .workers
            .iter()
            .filter(|w| w.control.is_some())
            .collect();
        let mut fds = Vec::with_capacity(watched.len() + 1);
        fds.push(PollFd::new(
            self.signals.get_read().as_fd(),
            PollFlags::POLLIN,
        ));
        for worker in &watched {
            let control = worker.control.as_ref().expect("filtered above");
            fds.push(PollFd::new(control.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok((true, Vec::new())),
            Err(errno) => return Err(errno.into()),
        }
        let has_events = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        let ready = watched
            .iter()
            .zip(&fds[1..])
            .filter(|(_, fd)| has_events(fd))
            .map(|(worker, _)| worker.id)
            .collect();
        Ok((has_events(&fds[0]), ready))
    }

    fn next_deadline(&self) -> Option<Instant> {
        let heartbeat = (!self.cli.worker_timeout.is_zero()).then_some(self.cli.worker_timeout);
        let workers = self.workers.iter().filter_map(|w| match w.state {
            WorkerState::Booting { deadline } => Some(deadline),
            WorkerState::Ready => heartbeat.map(|timeout| w.last_heard + timeout),
            WorkerState::Leaving => None,
        });
        let stop = match self.phase {
            Phase::Stopping { deadline } => deadline,
            _ => None,
        };
        workers.chain(stop).chain(self.respawn_at).min()
    }

    fn spawn(&mut self) -> io::Result<()> {
        let (ours, theirs) = ControlSocket::pair()?;
        let launch = match &self.image {
            Some(image) => Launch::Exec(image),
            None => Launch::Fork(self.worker_entry),
        };
        let pid = spawn_worker(&self.sockets.fds(), self.sockets.names(), &theirs, launch)?;
        drop(theirs);
        let id = self.next_id;
        self.next_id += 1;
        let now = Instant::now();
        tracing::info!(worker = id, pid = pid.as_raw(), "worker started");
        self.workers.push(Worker {
            id,
            pid,
            control: Some(ours),
            state: WorkerState::Booting {
                deadline: now + self.cli.boot_timeout,
            },
            last_heard: now,
            boot_failure: None,
        });
        Ok(())
    }

    fn on_signal(&mut self, signal: i32) {
        match signal {
            SIGCHLD => self.reap(),
            SIGTERM | SIGINT => match self.phase {
                Phase::Stopping { .. } => self.stop_now("second stop signal"),
                _ => self.stop_gracefully(signal),
            },
            SIGQUIT => self.stop_now("SIGQUIT"),
            other => tracing::warn!(signal = other, "ignored: not supported yet"),
        }
    }

    fn stop_gracefully(&mut self, signal: i32) {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        self.sockets.close();
        tracing::info!(signal, graceful_timeout = ?self.cli.graceful_timeout, "stopping gracefully");
        // A full stop closes fast: nothing would serve a client kept waiting.
        let close = SupervisorMessage::Close {
            drain_ms: 0,
            graceful_ms: self.cli.graceful_timeout.as_millis() as u64,
        };
        for worker in &mut self.workers {
            if let Some(control) = &worker.control {
                if let Err(error) = control.send(&close.encode()) {
                    tracing::warn!(worker = worker.id, %error, "cannot send close");
                }
            }
            worker.state = WorkerState::Leaving;
        }
        self.respawn_at = None;
        // The workers abort their own connections at the graceful timeout;
        // a moment more for them to report and exit.
        self.phase = Phase::Stopping {
            deadline: Some(Instant::now() + self.cli.graceful_timeout + Duration::from_secs(1)),
        };
    }

    fn stop_now(&mut self, why: &str) {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        self.sockets.close();
        tracing::warn!(why, "stopping now");
        for worker in &mut self.workers {
            let _ = kill(worker.pid, Signal::SIGKILL);
            worker.state = WorkerState::Leaving;
        }
        self.respawn_at = None;
        // Killed already: they are reaped on SIGCHLD, nothing left to time.
        self.phase = Phase::Stopping { deadline: None };
    }

    fn reap(&mut self) {
        loop {
            let (pid, how) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, format!("exit code {code}")),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, format!("signal {signal}")),
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(error) => {
                    tracing::warn!(%error, "waitpid failed");
                    return;
                }
            };
            let Some(id) = self.workers.iter().find(|w| w.pid == pid).map(|w| w.id) else {
                continue;
            };
            // Its last words (a BootFailed reason) may still be unread.
            self.read_control(id, Batch::LastWords);
            let Some(index) = self.workers.iter().position(|w| w.pid == pid) else {
                continue;
            };
            let worker = self.workers.swap_remove(index);
            self.on_exit(worker, how);
        }
    }

    fn on_exit(&mut self, worker: Worker, how: String) {
        match self.phase {
            Phase::Booting => {
                let reason = worker
                    .boot_failure
                    .unwrap_or_else(|| format!("exited before it was ready ({how})"));
                tracing::error!(worker = worker.id, pid = worker.pid.as_raw(), %reason, "worker failed to boot");
                eprintln!("drover: worker {} failed to boot: {reason}", worker.id);
                self.exit_code = ExitCode::FAILURE;
                self.stop_now("a first worker failed to boot");
            }
            Phase::Running => {
                tracing::warn!(worker = worker.id, pid = worker.pid.as_raw(), exited = %how, "worker died; replacing it");
                let delay = self.backoff.next_delay(Instant::now());
                if delay.is_zero() {
                    self.replace();
                } else {
                    tracing::warn!(?delay, "workers keep dying: waiting before the next one");
                    self.respawn_at = Some(Instant::now() + delay);
                }
            }
            Phase::Stopping { .. } => {
                tracing::info!(worker = worker.id, pid = worker.pid.as_raw(), exited = %how, "worker stopped");
            }
        }
    }

    /// Starts workers until there are as many as wanted.
    fn replace(&mut self) {
        self.respawn_at = None;
        while self.workers.len() < self.wanted {
            if let Err(error) = self.spawn() {
                tracing::error!(%error, "cannot start a worker");
                self.respawn_at = Some(
                    Instant::now()
                        + self
                            .backoff
                            .next_delay(Instant::now())
                            .max(Duration::from_millis(100)),
                );
                return;
            }
        }
    }

    fn on_timers(&mut self, now: Instant) {
        let heartbeat = (!self.cli.worker_timeout.is_zero()).then_some(self.cli.worker_timeout);
        for worker in &mut self.workers {
            match worker.state {
                WorkerState::Booting { deadline } if deadline <= now => {
                    let reason = format!(
                        "not ready within {:?} (--boot-timeout)",
                        self.cli.boot_timeout
                    );
                    tracing::error!(worker = worker.id, pid = worker.pid.as_raw(), %reason, "killing worker");
                    worker.boot_failure = Some(reason);
                    let _ = kill(worker.pid, Signal::SIGKILL);
                    worker.state = WorkerState::Leaving;
                }
                WorkerState::Ready => {
                    if let Some(timeout) = heartbeat.filter(|t| worker.last_heard + *t <= now) {
                        tracing::error!(worker = worker.id, pid = worker.pid.as_raw(), silent_for = ?timeout, "worker missed its heartbeats: killing it");
                        let _ = kill(worker.pid, Signal::SIGKILL);
                        worker.state = WorkerState::Leaving;
                    }
                }
                _ => {}
            }
        }
        if let Phase::Stopping {
            deadline: Some(deadline),
        } = self.phase
        {
            if deadline <= now {
                for worker in &self.workers {
                    tracing::warn!(
                        worker = worker.id,
                        pid = worker.pid.as_raw(),
                        "still running at the deadline: killing it"
                    );
                    let _ = kill(worker.pid, Signal::SIGKILL);
                }
                self.phase = Phase::Stopping { deadline: None };
            }
        }
        if self.respawn_at.is_some_and(|at| at <= now) && self.phase == Phase::Running {
            self.replace();
        }
    }

    /// Gives up during start: kills and reaps the workers already started,
    /// removes the socket files, leaves nothing running or bound.
    fn abandon(&mut self) {
        for worker in self.workers.drain(..) {
            let _ = kill(worker.pid, Signal::SIGKILL);
            let _ = waitpid(worker.pid, None);
        }
        self.sockets.remove_files();
    }

    fn finish(&mut self) -> ExitCode {
        self.sockets.remove_files();
        if let Some(path) = self.cli.pid_file.as_ref().filter(|_| self.wrote_pid_file) {
            let _ = std::fs::remove_file(path);
        }
        tracing::info!("stopped");
        self.exit_code
    }
}
