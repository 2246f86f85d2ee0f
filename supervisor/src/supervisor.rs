//! The supervisor: one single-threaded event loop, blocked in poll(2) on
//! the signal pipe, every worker's control socket and, during a binary
//! upgrade, the channel to the new supervisor, with the nearest deadline
//! as the timeout. No fixed tick: an idle supervisor sleeps.
//!
//! Where each part lives:
//! - `phase`: where the supervisor is in its life, and its one way to
//!   change phase;
//! - `command`: what it is asked to do (signals map onto commands) and the
//!   one table that decides what a command does in each phase;
//! - `timers`: every deadline, listed once for both the poll timeout and
//!   what fires;
//! - `worker` and `fleet`: one worker's record and state, and the pure
//!   bookkeeping over all of them;
//! - `messages`: what the workers say; `exits`: reaping them;
//! - `rollout`: replacing workers while serving (HUP, recycling, TTIN and
//!   TTOU);
//! - `upgrade` and `takeover`: the binary upgrade, the old supervisor's
//!   side and the new one's;
//! - `leave`: the ways out;
//! - `operator` and `status`: the operator's requests (the control
//!   socket, metrics scrapes) answered once done, and the fleet's figures
//!   they show; `exit_reason`: why workers left, counted.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::Pid;

mod command;
mod exit_reason;
mod exits;
mod fleet;
mod leave;
mod log_budget;
mod messages;
mod operator;
mod phase;
mod rollout;
mod status;
mod takeover;
mod timers;
mod tls;
mod upgrade;
mod worker;

use command::Request;
use messages::Batch;
use phase::Phase;
use rollout::Rollout;
use upgrade::Upgrade;
use worker::{Replacing, Worker};

use drover_shared::events;

use crate::args::SpawnMode;
use crate::backoff::Backoff;
use crate::config::Config;
use crate::control::ControlSocket;
use crate::credentials::{self, Credentials};
use crate::operator::desk::{Desk, Source};

use crate::exec_image::ExecImage;
use crate::pid_file;
use crate::signals::SignalPipe;
use crate::sockets::Sockets;
use crate::spawn::{cloexec_inherited, spawn_child, Launch};
use crate::worker_context::WorkerIdentity;

/// Runs the supervisor until it stops; the exit code is the process's.
/// `fork_entry` is what a worker runs in a forked child (`--spawn fork`).
pub(crate) fn supervise(config: &Config, fork_entry: &dyn Fn() -> ExitCode) -> ExitCode {
    match Supervisor::start(config, fork_entry) {
        Ok(mut supervisor) => supervisor.event_loop(),
        Err(message) => {
            eprintln!("drover: {message}");
            ExitCode::FAILURE
        }
    }
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
    fork_entry: &'a dyn Fn() -> ExitCode,
    signals: SignalPipe,
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
    watchdog: Option<timers::Watchdog>,
    backoff: Backoff,
    /// When the next replacement worker may start.
    respawn_at: Option<Instant>,
    /// When the first graceful stop began (a second stop signal within
    /// `command::SAME_STOP` of it is the same stop).
    stop_began: Option<Instant>,
    /// FAILURE after a failed first boot, or a stop that cut running workers.
    exit_code: ExitCode,
    /// Children killed and not reaped yet (a new supervisor given up on):
    /// waited for on the way out, so none is left to init as a zombie.
    killed: Vec<Pid>,
    /// The operator's endpoints, clients and the requests they wait on.
    operator: operator::Operator,
    /// What is counted over this supervisor's life, for its operator.
    tally: status::Tally,
    started: Instant,
    /// The certificate, key and ticket keys every worker gets, if TLS is on.
    tls: Option<tls::TlsState>,
}

/// What woke the loop.
struct Woken {
    signals: bool,
    workers: Vec<u64>,
    successor: bool,
    operator: Vec<Source>,
}

impl<'a> Supervisor<'a> {
    fn start(config: &'a Config, fork_entry: &'a dyn Fn() -> ExitCode) -> Result<Self, String> {
        let predecessor =
            ControlSocket::upgrade_from_env().map_err(|e| format!("binary upgrade: {e}"))?;
        // A new supervisor of a binary upgrade finds its predecessor's pid
        // there, as it should.
        if let (None, Some(path)) = (&predecessor, &config.pid_file) {
            pid_file::check_not_running(path)?;
        }
        let credentials = credentials::resolve(config.user.as_deref(), config.group.as_deref())?;
        let sockets = Sockets::open(config, predecessor.is_some(), credentials.as_ref())?;
        cloexec_inherited().map_err(|e| format!("cannot list this process's descriptors: {e}"))?;
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
        // A new supervisor of a binary upgrade opens its own once it has
        // taken over: until then the old one answers.
        let (control, metrics) = match &predecessor {
            None => operator::open_endpoints(config, false)?,
            Some(_) => (None, None),
        };
        let desk = Desk::new(control, metrics);
        let inherited_tickets = predecessor.as_ref().and_then(tls::inherited_tickets);
        let tls_material = tls::load_at_start(config, inherited_tickets)?;
        let signals = SignalPipe::install().map_err(|e| format!("cannot watch signals: {e}"))?;
        // After an upgrade: as many as the old one ran (TTIN/TTOU carry over).
        let wanted = predecessor
            .as_ref()
            .and_then(|_| takeover::inherited_worker_count())
            .unwrap_or(config.workers);
        let mut supervisor = Self {
            config,
            sockets,
            binary,
            image,
            credentials,
            fork_entry,
            signals,
            workers: Vec::with_capacity(wanted),
            phase: Phase::Booting,
            wanted,
            next_id: 1,
            generation: takeover::inherited_generation(),
            rollout: Rollout::Idle,
            upgrade: Upgrade::Idle,
            predecessor,
            watchdog: timers::Watchdog::from_env(),
            backoff: Backoff::default(),
            respawn_at: None,
            stop_began: None,
            exit_code: ExitCode::SUCCESS,
            killed: Vec::new(),
            operator: operator::Operator::new(desk),
            tally: status::Tally::default(),
            started: Instant::now(),
            tls: tls_material,
        };
        let (control_socket, metrics) = supervisor.operator.desk.addrs();
        tracing::info!(
            event = events::STARTING,
            pid = std::process::id(),
            workers = wanted,
            spawn = config.spawn.name(),
            addrs = %events::addrs(&supervisor.sockets.addrs()),
            control_socket,
            metrics,
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

    fn event_loop(&mut self) -> ExitCode {
        loop {
            if self.phase.is_leaving() && self.workers.is_empty() {
                return self.finish();
            }
            let woken = match self.wait(timers::poll_timeout(self.next_deadline())) {
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
                // One per delivery, in arrival order: three TTINs are three.
                for request in self
                    .signals
                    .pending()
                    .into_iter()
                    .filter_map(Request::from_signal)
                {
                    self.handle(request);
                }
            }
            for id in woken.workers {
                self.read_control(id, Batch::Turn);
            }
            if !woken.operator.is_empty() {
                self.serve_operator(woken.operator);
            }
            self.on_timers(Instant::now());
            self.reconcile();
        }
    }

    /// Blocks until a signal, a message or the timeout.
    fn wait(&self, timeout: PollTimeout) -> io::Result<Woken> {
        let watched: Vec<(u64, &ControlSocket)> = self
            .workers
            .iter()
            .filter_map(|w| Some((w.id, w.control.as_ref()?)))
            .collect();
        let mut fds = Vec::with_capacity(watched.len() + 2);
        fds.push(PollFd::new(self.signals.read_end(), PollFlags::POLLIN));
        for (_, control) in &watched {
            fds.push(PollFd::new(control.as_fd(), PollFlags::POLLIN));
        }
        let successor = self.upgrade.channel();
        if let Some(channel) = successor {
            fds.push(PollFd::new(channel.as_fd(), PollFlags::POLLIN));
        }
        let operator_at = fds.len();
        let desk = self.operator.desk.poll_set();
        fds.extend(desk.iter().map(|(_, fd, flags)| PollFd::new(*fd, *flags)));
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {
                return Ok(Woken {
                    signals: true,
                    workers: Vec::new(),
                    successor: false,
                    operator: Vec::new(),
                })
            }
            Err(errno) => return Err(errno.into()),
        }
        let has_events = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        let workers = watched
            .iter()
            .zip(&fds[1..])
            .filter(|(_, fd)| has_events(fd))
            .map(|((id, _), _)| *id)
            .collect();
        let operator = desk
            .iter()
            .zip(&fds[operator_at..])
            .filter(|(_, fd)| has_events(fd))
            .map(|((source, _, _), _)| *source)
            .collect();
        Ok(Woken {
            signals: has_events(&fds[0]),
            workers,
            successor: successor.is_some() && fds[..operator_at].last().is_some_and(has_events),
            operator,
        })
    }

    /// Starts a worker (to replace worker `replaces` once ready, if given);
    /// returns its id.
    fn spawn(&mut self, replaces: Option<Replacing>) -> io::Result<u64> {
        let (ours, theirs) = ControlSocket::pair()?;
        let identity = WorkerIdentity {
            index: fleet::index_for(&self.workers, replaces.map(|r| r.id)),
            generation: self.generation,
        };
        let launch = match &self.image {
            Some(image) => Launch::Exec(image),
            None => Launch::Fork(self.fork_entry),
        };
        let pid = spawn_child(
            &self.sockets.fds(),
            self.sockets.names(),
            &theirs,
            &self.owned_fds(&ours),
            launch,
            Some(identity),
            self.credentials.as_ref(),
        )?;
        drop(theirs);
        // Its first message: what it serves TLS with.
        if let Some(state) = &self.tls {
            if let Err(error) = tls::hand_to(&ours, state) {
                tracing::warn!(%error, "cannot hand the certificate to a new worker");
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        tracing::info!(
            event = events::WORKER_STARTED,
            worker = id,
            pid = pid.as_raw(),
            index = identity.index,
            generation = identity.generation,
            replaces = replaces.map(|r| r.id),
            "worker started"
        );
        self.workers.push(Worker::booting(
            id,
            pid,
            Some(ours),
            self.generation,
            identity.index,
            self.config.boot_timeout,
            replaces,
        ));
        Ok(id)
    }

    /// The descriptors that are this supervisor's own, for a child to
    /// close (`ours`: the supervisor's end of the new child's channel):
    /// the signal pipe, every control socket, the upgrade channels. The
    /// listeners' originals are closed by the handover itself.
    fn owned_fds(&self, ours: &ControlSocket) -> Vec<RawFd> {
        let controls = self.workers.iter().filter_map(|w| w.control.as_ref());
        let channels = [self.upgrade.channel(), self.predecessor.as_ref()];
        let sockets = controls.chain(channels.into_iter().flatten());
        // The operator's endpoints and clients too: a forked worker must
        // not hold them (a client would wait for ever on a dead socket).
        let operator = self.operator.desk.poll_set();
        self.signals
            .fds()
            .into_iter()
            .chain(std::iter::once(ours).chain(sockets).map(|c| c.as_raw_fd()))
            .chain(operator.iter().map(|(_, fd, _)| fd.as_raw_fd()))
            // The key's memfd: a worker gets its own copy over its channel.
            .chain(self.tls.iter().map(|t| t.sealed().as_raw_fd()))
            .collect()
    }

    fn worker_mut(&mut self, id: u64) -> Option<&mut Worker> {
        self.workers.iter_mut().find(|w| w.id == id)
    }
}
