//! The supervisor's event loop: single-threaded, blocked in poll(2) on the
//! signal pipe, every worker's control socket and, during a binary upgrade,
//! the channel to the new supervisor, with the nearest deadline as the
//! timeout. No fixed tick: an idle supervisor sleeps.
//!
//! A worker as the supervisor sees it is `worker`; what the workers say is
//! read in `messages`; replacing workers while serving (HUP, recycling,
//! TTIN/TTOU) is `rollout`; the binary upgrade (USR2), on both the old and
//! the new supervisor's side, is `upgrade`; stopping is `stop`.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::control::ControlSocket;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTTIN, SIGTTOU, SIGUSR2};
use signal_hook::iterator::backend::SignalDelivery;
use signal_hook::iterator::exfiltrator::SignalOnly;

mod messages;
mod rollout;
mod stop;
mod upgrade;
mod worker;

use messages::Batch;
use rollout::Rollout;
use upgrade::Upgrade;
use worker::{Worker, WorkerState};

use crate::backoff::Backoff;
use crate::cli::SpawnMode;
use crate::config::Config;
use crate::credentials::{self, Credentials};
use crate::notify;
use crate::sockets::Sockets;
use crate::spawn::{spawn_child, ExecImage, Launch};

/// A worker that dies sooner than this after it was ready counts as
/// failing at boot (it backs off): long enough to catch a crash at the
/// first request under load, short enough that killing serving workers
/// (chaos tests, the OOM killer) never costs capacity.
const SERVING: Duration = Duration::from_millis(100);

/// Runs the supervisor until it stops; the exit code is the process's.
pub fn run(config: &Config, worker_entry: &dyn Fn() -> ExitCode) -> ExitCode {
    match Supervisor::start(config, worker_entry) {
        Ok(mut supervisor) => supervisor.run(),
        Err(message) => {
            eprintln!("drover: {message}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// The first workers are starting; any failure ends drover.
    Booting,
    Running,
    /// Stopping: the workers are closing; drover exits once they are gone.
    Stopping,
    /// After a binary upgrade: the new supervisor serves; this one's
    /// workers drain, then it exits. It no longer speaks for the service:
    /// it tells systemd nothing, and a stop signal changes nothing (a
    /// QUIT still cuts its own workers).
    HandedOver,
}

/// When to ping systemd's watchdog.
struct Watchdog {
    every: Duration,
    next: Instant,
}

struct Supervisor<'a> {
    config: &'a Config,
    sockets: Sockets,
    /// This binary's path, as started: what a binary upgrade executes.
    binary: PathBuf,
    /// What an exec'd worker runs (`None` in fork mode).
    image: Option<ExecImage>,
    /// Whom the workers run as (`--user`, `--group`).
    credentials: Option<Credentials>,
    worker_entry: &'a dyn Fn() -> ExitCode,
    signals: SignalDelivery<UnixStream, SignalOnly>,
    workers: Vec<Worker>,
    phase: Phase,
    /// Workers to run (TTIN/TTOU change it).
    wanted: usize,
    next_id: u64,
    /// The generation new workers are started in; HUP moves it on.
    generation: u64,
    rollout: Rollout,
    /// A new supervisor this one is upgrading to.
    upgrade: Upgrade,
    /// In a supervisor started by a binary upgrade: the channel to the one
    /// it replaces, until it has taken over.
    predecessor: Option<ControlSocket>,
    watchdog: Option<Watchdog>,
    backoff: Backoff,
    /// When the next replacement worker may start.
    respawn_at: Option<Instant>,
    exit_code: ExitCode,
}

/// What woke the loop.
struct Woken {
    signals: bool,
    workers: Vec<u64>,
    successor: bool,
}

impl<'a> Supervisor<'a> {
    fn start(config: &'a Config, worker_entry: &'a dyn Fn() -> ExitCode) -> Result<Self, String> {
        let predecessor =
            ControlSocket::upgrade_from_env().map_err(|e| format!("binary upgrade: {e}"))?;
        let credentials = credentials::resolve(config.user.as_deref(), config.group.as_deref())?;
        let sockets = Sockets::open(config, predecessor.is_some(), credentials.as_ref())?;
        let binary =
            ExecImage::current_binary().map_err(|e| format!("cannot find this binary: {e}"))?;
        if credentials.is_some() {
            credentials::warn_if_others_can_change(&binary);
        }
        let image = match config.spawn {
            SpawnMode::Exec => Some(
                ExecImage::worker(&binary).map_err(|e| format!("cannot use this binary: {e}"))?,
            ),
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
        // After an upgrade: as many as the old one ran (TTIN/TTOU carry over).
        let inherited_count = predecessor
            .as_ref()
            .and_then(|_| {
                std::env::var(drover_shared::env::UPGRADE_WORKERS)
                    .ok()?
                    .parse()
                    .ok()
            })
            .filter(|n| *n > 0);
        let wanted = inherited_count.unwrap_or_else(|| config.workers);
        let mut supervisor = Self {
            config,
            sockets,
            binary,
            image,
            credentials,
            worker_entry,
            signals,
            workers: Vec::with_capacity(wanted),
            phase: Phase::Booting,
            wanted,
            next_id: 1,
            generation: 0,
            rollout: Rollout::Idle,
            upgrade: Upgrade::Idle,
            predecessor,
            watchdog: notify::watchdog_interval().map(|every| Watchdog {
                every,
                next: Instant::now(),
            }),
            backoff: Backoff::default(),
            respawn_at: None,
            exit_code: ExitCode::SUCCESS,
        };
        tracing::info!(
            pid = std::process::id(),
            workers = wanted,
            spawn = ?supervisor.config.spawn,
            addrs = ?supervisor.sockets.addrs(),
            "starting"
        );
        for _ in 0..wanted {
            if let Err(error) = supervisor.spawn(None) {
                supervisor.abandon();
                return Err(format!("cannot start a worker: {error}"));
            }
        }
        Ok(supervisor)
    }

    fn run(&mut self) -> ExitCode {
        loop {
            let leaving = matches!(self.phase, Phase::Stopping | Phase::HandedOver);
            if leaving && self.workers.is_empty() {
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
            let woken = match self.wait(timeout) {
                Ok(woken) => woken,
                Err(error) => {
                    tracing::error!(%error, "poll failed");
                    return ExitCode::FAILURE;
                }
            };
            // The new supervisor's word first: a stop signal or a deadline
            // in the same turn must not undo an upgrade already done.
            if woken.successor {
                self.read_successor();
            }
            if woken.signals {
                let pending: Vec<i32> = self.signals.pending().collect();
                for signal in pending {
                    self.on_signal(signal);
                }
            }
            for id in woken.workers {
                self.read_control(id, Batch::Turn);
            }
            self.on_timers(Instant::now());
            self.reconcile();
        }
    }

    /// Blocks until a signal, a message or the timeout.
    fn wait(&self, timeout: PollTimeout) -> io::Result<Woken> {
        let watched: Vec<&Worker> = self
            .workers
            .iter()
            .filter(|w| w.control.is_some())
            .collect();
        let mut fds = Vec::with_capacity(watched.len() + 2);
        fds.push(PollFd::new(
            self.signals.get_read().as_fd(),
            PollFlags::POLLIN,
        ));
        for worker in &watched {
            let control = worker.control.as_ref().expect("filtered above");
            fds.push(PollFd::new(control.as_fd(), PollFlags::POLLIN));
        }
        let successor = self.upgrade.channel();
        if let Some(channel) = successor {
            fds.push(PollFd::new(channel.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {
                return Ok(Woken {
                    signals: true,
                    workers: Vec::new(),
                    successor: false,
                })
            }
            Err(errno) => return Err(errno.into()),
        }
        let has_events = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        let workers = watched
            .iter()
            .zip(&fds[1..])
            .filter(|(_, fd)| has_events(fd))
            .map(|(worker, _)| worker.id)
            .collect();
        Ok(Woken {
            signals: has_events(&fds[0]),
            workers,
            successor: successor.is_some() && fds.last().is_some_and(has_events),
        })
    }

    fn next_deadline(&self) -> Option<Instant> {
        let heartbeat = self.config.worker_timeout;
        let workers = self.workers.iter().filter_map(|w| match w.state {
            WorkerState::Booting { deadline } => Some(deadline),
            WorkerState::Ready => heartbeat.map(|timeout| w.last_heard + timeout),
            WorkerState::Retiring { kill_at } => kill_at,
            WorkerState::Killed => None,
        });
        workers
            .chain(self.respawn_at)
            .chain(self.upgrade.deadline())
            .chain(self.next_recycle_retry())
            .chain(self.watchdog.as_ref().map(|w| w.next))
            .min()
    }

    /// Starts a worker (to replace worker `replaces` once ready, if given);
    /// returns its id.
    fn spawn(&mut self, replaces: Option<u64>) -> io::Result<u64> {
        let (ours, theirs) = ControlSocket::pair()?;
        let launch = match &self.image {
            Some(image) => Launch::Exec(image),
            None => Launch::Fork(self.worker_entry),
        };
        let pid = spawn_child(
            &self.sockets.fds(),
            self.sockets.names(),
            &theirs,
            launch,
            self.credentials.as_ref(),
        )?;
        drop(theirs);
        let id = self.next_id;
        self.next_id += 1;
        let now = Instant::now();
        tracing::info!(worker = id, pid = pid.as_raw(), replaces, "worker started");
        self.workers.push(Worker {
            id,
            pid,
            control: Some(ours),
            state: WorkerState::Booting {
                deadline: now + self.config.boot_timeout,
            },
            last_heard: now,
            boot_failure: None,
            generation: self.generation,
            replaces,
            recycle: None,
            ready_at: None,
        });
        Ok(id)
    }

    fn on_signal(&mut self, signal: i32) {
        let name = match signal {
            SIGCHLD => return self.reap(),
            SIGTERM | SIGINT => {
                return match self.phase {
                    Phase::Stopping => self.stop_now("second stop signal"),
                    Phase::HandedOver => tracing::info!(
                        signal,
                        "ignored: leaving already, the new supervisor serves"
                    ),
                    _ => self.stop_gracefully(signal),
                }
            }
            SIGQUIT => return self.stop_now("SIGQUIT"),
            SIGHUP => "HUP",
            SIGUSR2 => "USR2",
            SIGTTIN => "TTIN",
            SIGTTOU => "TTOU",
            other => return tracing::warn!(signal = other, "ignored signal"),
        };
        match self.phase {
            Phase::Running => match signal {
                SIGHUP => self.restart(),
                SIGUSR2 => self.upgrade(),
                SIGTTIN => self.scale_up(),
                _ => self.scale_down(),
            },
            Phase::Booting => tracing::warn!(signal = name, "ignored: still starting"),
            Phase::Stopping | Phase::HandedOver => {
                tracing::warn!(signal = name, "ignored: stopping")
            }
        }
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
            if self.upgrade.is_successor(pid) {
                self.successor_exited(&how);
                continue;
            }
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
        let reason = || {
            worker
                .boot_failure
                .clone()
                .unwrap_or_else(|| format!("exited before it was ready ({how})"))
        };
        match self.phase {
            Phase::Booting => {
                let reason = reason();
                tracing::error!(worker = worker.id, pid = worker.pid.as_raw(), %reason, "worker failed to boot");
                eprintln!("drover: worker {} failed to boot: {reason}", worker.id);
                self.exit_code = ExitCode::FAILURE;
                if self.predecessor.is_some() {
                    self.abandon_take_over();
                } else {
                    self.stop_now("a first worker failed to boot");
                }
            }
            Phase::Running if matches!(worker.state, WorkerState::Retiring { .. }) => {
                tracing::info!(worker = worker.id, pid = worker.pid.as_raw(), exited = %how, "worker left");
            }
            // It never got ready: the worker it was to replace serves on.
            Phase::Running if worker.replaces.is_some() => {
                self.replacement_failed(&worker, reason());
            }
            Phase::Running => {
                tracing::warn!(worker = worker.id, pid = worker.pid.as_raw(), exited = %how, "worker died; replacing it");
                // One that had been serving is replaced at once, however
                // often that happens (kill -9, the OOM killer, a crash
                // under load): capacity comes first, as in gunicorn. One
                // that died before it was ready, or within SERVING of it
                // (it crashes at its first request, or right after its
                // start), is a crash loop in the making, and backs off.
                let now = Instant::now();
                let delay = match worker.ready_at {
                    Some(ready) if now.duration_since(ready) >= SERVING => Duration::ZERO,
                    _ => self.backoff.next_delay(now),
                };
                if delay.is_zero() {
                    self.replace();
                } else {
                    tracing::warn!(?delay, "workers keep dying: waiting before the next one");
                    self.respawn_at = Some(Instant::now() + delay);
                }
            }
            Phase::Stopping | Phase::HandedOver => {
                tracing::info!(worker = worker.id, pid = worker.pid.as_raw(), exited = %how, "worker stopped");
            }
        }
    }

    fn on_timers(&mut self, now: Instant) {
        let heartbeat = self.config.worker_timeout;
        for worker in &mut self.workers {
            match worker.state {
                WorkerState::Booting { deadline } if deadline <= now => {
                    let reason = format!(
                        "not ready within {:?} (--boot-timeout)",
                        self.config.boot_timeout
                    );
                    tracing::error!(worker = worker.id, pid = worker.pid.as_raw(), %reason, "killing worker");
                    worker.boot_failure = Some(reason);
                    worker.kill();
                }
                WorkerState::Ready => {
                    if let Some(timeout) = heartbeat.filter(|t| worker.last_heard + *t <= now) {
                        tracing::error!(worker = worker.id, pid = worker.pid.as_raw(), silent_for = ?timeout, "worker missed its heartbeats: killing it");
                        worker.kill();
                    }
                }
                WorkerState::Retiring {
                    kill_at: Some(kill_at),
                } if kill_at <= now => {
                    tracing::warn!(
                        worker = worker.id,
                        pid = worker.pid.as_raw(),
                        "still running past the graceful timeout: killing it"
                    );
                    worker.cut();
                }
                _ => {}
            }
        }
        if self.respawn_at.is_some_and(|at| at <= now) && self.phase == Phase::Running {
            self.replace();
        }
        if self.upgrade.deadline().is_some_and(|at| at <= now) {
            // It may have said Ready just now.
            self.read_successor();
            if self.upgrade.deadline().is_some_and(|at| at <= now) {
                self.upgrade_timed_out();
            }
        }
        if let Some(watchdog) = self.watchdog.as_mut().filter(|w| w.next <= now) {
            notify::watchdog();
            watchdog.next = now + watchdog.every;
        }
    }
}
