//! What the supervisor is asked to do, and what that does in each phase.
//!
//! Every signal, and every request on the operator's control socket,
//! becomes a [`Request`]: a [`Command`] and who asked. One table,
//! [`decide`], says what a command does in each [`Phase`]; the supervisor
//! then carries it out in [`Supervisor::handle`], and an operator who
//! asked is answered once it is done (see `operator`).

use std::time::Duration;

use nix::libc::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2};

use super::leave::Leave;
use super::operator::{Awaiting, FiguresFor};
use super::{Phase, Supervisor};
use crate::operator::wire::{Order, ScaleTo};

/// A second stop signal sooner than this after the first is the same stop,
/// not a "stop now": GNU `timeout` and some container runtimes send TERM to
/// the process and to its group at once, and the supervisor gets both.
pub(super) const SAME_STOP: Duration = Duration::from_secs(1);

/// Something the supervisor can be asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Command {
    /// Stop gracefully (TERM, INT).
    Stop,
    /// Stop at once (QUIT).
    StopNow,
    /// Rolling restart (HUP).
    Restart,
    /// Binary upgrade (USR2).
    Upgrade,
    /// One worker more (TTIN).
    ScaleUp,
    /// One worker fewer (TTOU).
    ScaleDown,
    /// Run this many workers (`scale`).
    ScaleTo(ScaleTo),
    /// Replace this worker, ready-gated (`recycle`).
    Recycle(u64),
    /// The fleet's figures (`status`, `metrics`).
    Report(FiguresFor),
    /// Re-read the certificate and key, hand them to the workers (USR1).
    TlsReload,
    /// Children have exited (CHLD).
    Reap,
}

impl Command {
    /// Its name in log lines.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::StopNow => "stop_now",
            Self::Restart => "restart",
            Self::Upgrade => "upgrade",
            Self::ScaleUp => "scale_up",
            Self::ScaleDown => "scale_down",
            Self::ScaleTo(_) => "scale",
            Self::Recycle(_) => "recycle",
            Self::Report(_) => "report",
            Self::TlsReload => "tls_reload",
            Self::Reap => "reap",
        }
    }

    /// The command an operator's order is.
    pub(super) fn from_order(order: Order) -> Self {
        match order {
            Order::Status => Self::Report(FiguresFor::Status),
            Order::Metrics => Self::Report(FiguresFor::Metrics),
            Order::Reload => Self::Restart,
            Order::Upgrade => Self::Upgrade,
            Order::Scale(to) => Self::ScaleTo(to),
            Order::Recycle { worker } => Self::Recycle(worker),
            Order::Stop { now: false } => Self::Stop,
            Order::Stop { now: true } => Self::StopNow,
            Order::TlsReload => Self::TlsReload,
        }
    }
}

/// A signal's name for log lines (`SIGTERM`), from its number.
pub(super) fn signal_name(signal: i32) -> &'static str {
    nix::sys::signal::Signal::try_from(signal).map_or("unknown", |s| s.as_str())
}

/// Who asked for a command, and so whom to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Requester {
    /// A signal: there is nobody to answer; the log says what happened.
    Signal(i32),
    /// An operator's request on the control socket: answered through
    /// this ticket once done.
    Operator(u64),
}

/// A command and who asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Request {
    pub(super) command: Command,
    pub(super) from: Requester,
}

impl Request {
    /// The request a signal makes; `None` for one the supervisor does not
    /// act on.
    pub(super) fn from_signal(signal: i32) -> Option<Self> {
        let command = match signal {
            SIGTERM | SIGINT => Command::Stop,
            SIGQUIT => Command::StopNow,
            SIGHUP => Command::Restart,
            SIGUSR1 => Command::TlsReload,
            SIGUSR2 => Command::Upgrade,
            SIGTTIN => Command::ScaleUp,
            SIGTTOU => Command::ScaleDown,
            SIGCHLD => Command::Reap,
            other => {
                tracing::warn!(signal = other, "ignored signal");
                return None;
            }
        };
        Some(Self {
            command,
            from: Requester::Signal(signal),
        })
    }
}

/// What a command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    Reap,
    Leave(Leave),
    Restart,
    Upgrade,
    ScaleUp,
    ScaleDown,
    ScaleTo(ScaleTo),
    Recycle(u64),
    Report(FiguresFor),
    TlsReload,
    /// A second stop signal within [`SAME_STOP`] of the first, or an
    /// operator's stop during one: nothing more.
    SameStop,
    /// Nothing, for this reason.
    Ignore(&'static str),
}

/// The transition table: what `command` does in `phase`, `stopping_for`
/// after a graceful stop began (if one did).
pub(super) fn decide(phase: Phase, request: Request, stopping_for: Option<Duration>) -> Action {
    use Command::*;
    use Phase::*;
    let same_stop = stopping_for.is_some_and(|d| d < SAME_STOP);
    let operator = matches!(request.from, Requester::Operator(_));
    match (phase, request.command) {
        (_, Reap) => Action::Reap,
        (_, Report(what)) => Action::Report(what),
        // An operator's `stop` waits for the stop under way; `stop --now`
        // is how to hurry it.
        (Stopping, Stop) if same_stop || operator => Action::SameStop,
        (Stopping, Stop) => Action::Leave(Leave::Now("second stop signal")),
        (HandedOver, Stop) => Action::Ignore("leaving already, the new supervisor serves"),
        (Booting | Running, Stop) => Action::Leave(Leave::Gracefully(request.from)),
        (_, StopNow) if operator => Action::Leave(Leave::Now("stop --now")),
        (_, StopNow) => Action::Leave(Leave::Now("SIGQUIT")),
        (Running, Restart) => Action::Restart,
        (Running, Upgrade) => Action::Upgrade,
        (Running, ScaleUp) => Action::ScaleUp,
        (Running, ScaleDown) => Action::ScaleDown,
        (Running, ScaleTo(to)) => Action::ScaleTo(to),
        (Running, Recycle(worker)) => Action::Recycle(worker),
        (Booting | Running, TlsReload) => Action::TlsReload,
        (Booting, _) => Action::Ignore("still starting"),
        (Stopping | HandedOver, _) => Action::Ignore("stopping"),
    }
}

impl Supervisor<'_> {
    /// Carries out what [`decide`] says `request` does now.
    pub(super) fn handle(&mut self, request: Request) {
        let stopping_for = self.stop_began.map(|began| began.elapsed());
        let from = request.from;
        match decide(self.phase, request, stopping_for) {
            Action::Reap => self.reap(),
            Action::Leave(how) => {
                if how.stops_the_service() {
                    self.expect(from, Awaiting::Stop);
                }
                self.leave(how);
            }
            Action::Restart => {
                self.expect(from, Awaiting::Reload);
                self.restart();
            }
            Action::Upgrade => {
                self.expect(from, Awaiting::Upgrade);
                self.upgrade();
            }
            Action::ScaleUp => self.scale_up(),
            Action::ScaleDown => self.scale_down(),
            Action::ScaleTo(to) => {
                self.expect(from, Awaiting::Scale);
                self.scale_to(to.from(self.wanted));
            }
            Action::Recycle(worker) => self.recycle_worker(worker, from),
            Action::Report(what) => self.ask_figures(what, from),
            Action::TlsReload => {
                let result = self.reload_tls();
                self.answer(from, result);
            }
            Action::SameStop => {
                self.expect(from, Awaiting::Stop);
                tracing::info!(
                    event = drover_shared::events::STOP_REPEATED,
                    command = request.command.name(),
                    "a second stop within {SAME_STOP:?} of the first, or an operator's: the same stop"
                );
            }
            Action::Ignore(why) => match from {
                Requester::Signal(signal) => {
                    tracing::warn!(
                        signal = signal_name(signal),
                        command = request.command.name(),
                        "ignored: {why}"
                    );
                }
                Requester::Operator(_) => self.answer(from, Err(format!("not now: {why}"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(command: Command) -> Request {
        Request {
            command,
            from: Requester::Signal(0),
        }
    }

    #[test]
    fn every_signal_maps_to_its_command() {
        let map = [
            (SIGTERM, Command::Stop),
            (SIGINT, Command::Stop),
            (SIGQUIT, Command::StopNow),
            (SIGHUP, Command::Restart),
            (SIGUSR1, Command::TlsReload),
            (SIGUSR2, Command::Upgrade),
            (SIGTTIN, Command::ScaleUp),
            (SIGTTOU, Command::ScaleDown),
            (SIGCHLD, Command::Reap),
        ];
        for (signal, command) in map {
            let request = Request::from_signal(signal).unwrap();
            assert_eq!(request.command, command);
            assert_eq!(request.from, Requester::Signal(signal));
        }
        assert_eq!(Request::from_signal(nix::libc::SIGWINCH), None);
    }

    #[test]
    fn changes_to_the_fleet_happen_only_while_running() {
        for command in [
            Command::Restart,
            Command::Upgrade,
            Command::ScaleUp,
            Command::ScaleDown,
        ] {
            for phase in [Phase::Booting, Phase::Stopping, Phase::HandedOver] {
                assert!(
                    matches!(decide(phase, asked(command), None), Action::Ignore(_)),
                    "{command:?} in {phase:?}"
                );
            }
        }
        assert_eq!(
            decide(Phase::Running, asked(Command::Restart), None),
            Action::Restart
        );
        assert_eq!(
            decide(Phase::Running, asked(Command::Upgrade), None),
            Action::Upgrade
        );
        assert_eq!(
            decide(Phase::Running, asked(Command::ScaleUp), None),
            Action::ScaleUp
        );
        assert_eq!(
            decide(Phase::Running, asked(Command::ScaleDown), None),
            Action::ScaleDown
        );
    }

    #[test]
    fn a_stop_is_graceful_then_at_once_and_ignored_after_a_handover() {
        let stop = asked(Command::Stop);
        for phase in [Phase::Booting, Phase::Running] {
            assert_eq!(
                decide(phase, stop, None),
                Action::Leave(Leave::Gracefully(stop.from))
            );
        }
        assert!(matches!(
            decide(Phase::Stopping, stop, Some(SAME_STOP)),
            Action::Leave(Leave::Now(_))
        ));
        assert_eq!(
            decide(Phase::Stopping, stop, Some(SAME_STOP / 2)),
            Action::SameStop,
            "TERM to the process and to its group at once is one stop"
        );
        assert!(matches!(
            decide(Phase::HandedOver, stop, None),
            Action::Ignore(_)
        ));
    }

    #[test]
    fn quit_stops_at_once_in_every_phase_and_children_are_always_reaped() {
        for phase in [
            Phase::Booting,
            Phase::Running,
            Phase::Stopping,
            Phase::HandedOver,
        ] {
            assert!(matches!(
                decide(phase, asked(Command::StopNow), None),
                Action::Leave(Leave::Now(_))
            ));
            assert_eq!(decide(phase, asked(Command::Reap), None), Action::Reap);
        }
    }

    fn by_operator(command: Command) -> Request {
        Request {
            command,
            from: Requester::Operator(1),
        }
    }

    #[test]
    fn every_order_is_a_command_and_reports_are_answered_in_every_phase() {
        assert_eq!(Command::from_order(Order::Reload), Command::Restart);
        assert_eq!(
            Command::from_order(Order::Stop { now: true }),
            Command::StopNow
        );
        assert_eq!(
            Command::from_order(Order::Recycle { worker: 4 }),
            Command::Recycle(4)
        );
        let report = Command::Report(FiguresFor::Status);
        for phase in [
            Phase::Booting,
            Phase::Running,
            Phase::Stopping,
            Phase::HandedOver,
        ] {
            assert_eq!(
                decide(phase, by_operator(report), None),
                Action::Report(FiguresFor::Status)
            );
        }
    }

    #[test]
    fn scale_and_recycle_happen_only_while_running() {
        let scale = Command::ScaleTo(ScaleTo::Exactly(3));
        assert_eq!(
            decide(Phase::Running, by_operator(scale), None),
            Action::ScaleTo(ScaleTo::Exactly(3))
        );
        assert_eq!(
            decide(Phase::Running, by_operator(Command::Recycle(2)), None),
            Action::Recycle(2)
        );
        for phase in [Phase::Booting, Phase::Stopping, Phase::HandedOver] {
            for command in [scale, Command::Recycle(2)] {
                assert!(matches!(
                    decide(phase, by_operator(command), None),
                    Action::Ignore(_)
                ));
            }
        }
    }

    #[test]
    fn an_operators_stop_during_a_stop_waits_for_it_instead_of_hurrying_it() {
        let stop = by_operator(Command::Stop);
        assert_eq!(
            decide(Phase::Stopping, stop, Some(SAME_STOP * 10)),
            Action::SameStop
        );
        assert!(matches!(
            decide(Phase::Stopping, by_operator(Command::StopNow), None),
            Action::Leave(Leave::Now(_))
        ));
    }
}
