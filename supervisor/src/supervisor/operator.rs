//! The operator's requests as the supervisor answers them: each request
//! on the control socket gets a ticket, goes through the command table as
//! a signal does, and is answered when what it asked for is done (a
//! reload completed or stopped, a new supervisor took over, the fleet is
//! at the count asked for), not when it starts.
//!
//! `status` and scrapes want the workers' counters as of now: the
//! supervisor asks every serving worker over its control channel and
//! answers once all have replied, or at [`QUERY_BOUND`] with the late ones
//! marked. Nothing polls the workers in between.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::command::{Command, Request, Requester};
use super::Supervisor;
use crate::control::protocol::SupervisorMessage;
use crate::operator::desk::{Asked, Desk, Source, MAX_PENDING};
use crate::operator::endpoint::{ControlMode, Endpoint};
use crate::operator::{http, prometheus, wire};

/// How long the workers get to answer a query for their counters.
pub(super) const QUERY_BOUND: Duration = Duration::from_millis(250);

/// What a query for the fleet's figures is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FiguresFor {
    /// `status`: the figures as JSON.
    Status,
    /// `metrics`: the metrics text, in JSON.
    Metrics,
}

/// What an operator's request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Awaiting {
    /// Taken, not yet told what it waits for.
    Nothing,
    Reload,
    Upgrade,
    /// The fleet at the wanted count, every worker serving.
    Scale,
    /// This replacement serving (or failing).
    Recycle {
        replacement: u64,
    },
    /// Every worker gone.
    Stop,
    /// Its query's answers.
    Figures,
}

struct Ticket {
    no: u64,
    client: u64,
    id: Value,
    awaiting: Awaiting,
}

/// The control socket (with its mode) and the metrics endpoint, each if
/// asked for.
pub(super) type Endpoints = (Option<(Endpoint, ControlMode)>, Option<Endpoint>);

/// Who gets a query's figures.
enum Answer {
    Ticket(u64, FiguresFor),
    Scrape { client: u64, head_only: bool },
}

struct Query {
    no: u64,
    /// Workers asked that have not answered yet.
    waiting: Vec<u64>,
    deadline: Instant,
    answer: Answer,
}

/// The supervisor's operator side: the endpoints and clients (`desk`),
/// the requests waiting for their answers, the queries under way.
pub(super) struct Operator {
    pub(super) desk: Desk,
    tickets: Vec<Ticket>,
    next_ticket: u64,
    queries: Vec<Query>,
    next_query: u64,
}

impl Operator {
    pub(super) fn new(desk: Desk) -> Self {
        Self {
            desk,
            tickets: Vec::new(),
            next_ticket: 1,
            queries: Vec::new(),
            next_query: 1,
        }
    }

    /// The nearest deadline: a client that would be cut, a query's bound.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let queries = self.queries.iter().map(|q| q.deadline).min();
        [self.desk.next_deadline(), queries]
            .into_iter()
            .flatten()
            .min()
    }
}

/// Binds the endpoints the configuration asks for (`taking_over`: a new
/// supervisor of a binary upgrade, once it took over).
pub(super) fn open_endpoints(
    config: &crate::config::Config,
    taking_over: bool,
) -> Result<Endpoints, String> {
    let control = match &config.control_socket {
        Some(path) => Some((
            Endpoint::unix(path, taking_over)
                .map_err(|e| format!("--control-socket {}: {e}", path.display()))?,
            config.control_socket_mode,
        )),
        None => None,
    };
    let metrics = match &config.metrics {
        Some(spec) => Some(Endpoint::metrics(spec, taking_over)?),
        None => None,
    };
    Ok((control, metrics))
}

impl Supervisor<'_> {
    /// Serves what poll reported on the operator's descriptors.
    pub(super) fn serve_operator(&mut self, sources: Vec<Source>) {
        let now = Instant::now();
        for source in sources {
            match source {
                Source::Listener(kind) => self.operator.desk.accept(kind, now),
                Source::Client(client) => {
                    self.operator.desk.flush(client, now);
                    for asked in self.operator.desk.read(client, now) {
                        self.on_asked(client, asked);
                    }
                }
            }
        }
        self.operator.desk.sweep(now);
    }

    fn on_asked(&mut self, client: u64, asked: Asked) {
        let incoming = match asked {
            Asked::Scrape { head_only } => {
                self.operator.desk.set_pending(client, true);
                return self.start_query(Answer::Scrape { client, head_only });
            }
            Asked::Line(incoming) => incoming,
        };
        let order = match incoming.order {
            Ok(order) => order,
            Err(error) => return self.reply(client, &wire::error_line(&incoming.id, &error)),
        };
        if self.operator.desk.mode() == Some(ControlMode::ReadOnly) && !order.reads_only() {
            let error = format!(
                "`{}`: this control socket is read-only (status, metrics)",
                order.name()
            );
            return self.reply(client, &wire::error_line(&incoming.id, &error));
        }
        if self.operator.desk.pending(client) >= MAX_PENDING {
            let error = format!("more than {MAX_PENDING} requests waiting on this connection");
            return self.reply(client, &wire::error_line(&incoming.id, &error));
        }
        let no = self.operator.next_ticket;
        self.operator.next_ticket += 1;
        self.operator.tickets.push(Ticket {
            no,
            client,
            id: incoming.id,
            awaiting: Awaiting::Nothing,
        });
        self.operator.desk.set_pending(client, true);
        tracing::info!(command = order.name(), "control socket: request");
        let from = Requester::Operator(no);
        self.handle(Request {
            command: Command::from_order(order),
            from,
        });
        // Every action answers or says what it waits for; one that did
        // neither must not leave its client hanging.
        if self
            .ticket(no)
            .is_some_and(|t| t.awaiting == Awaiting::Nothing)
        {
            tracing::debug!(
                command = order.name(),
                "request answered as done: nothing to wait for"
            );
            self.answer(from, Ok(json!({ "message": "done" })));
        }
    }

    fn ticket(&self, no: u64) -> Option<&Ticket> {
        self.operator.tickets.iter().find(|t| t.no == no)
    }

    fn reply(&mut self, client: u64, line: &str) {
        self.operator
            .desk
            .answer(client, line.as_bytes(), Instant::now());
    }

    /// The operator who asked (if one did) is answered once `awaiting`
    /// happens.
    pub(super) fn expect(&mut self, from: Requester, awaiting: Awaiting) {
        let Requester::Operator(no) = from else {
            return;
        };
        if let Some(ticket) = self.operator.tickets.iter_mut().find(|t| t.no == no) {
            ticket.awaiting = awaiting;
        }
    }

    /// Answers the operator who asked, if one did, now.
    pub(super) fn answer(&mut self, from: Requester, result: Result<Value, String>) {
        let Requester::Operator(no) = from else {
            return;
        };
        let Some(at) = self.operator.tickets.iter().position(|t| t.no == no) else {
            return;
        };
        let ticket = self.operator.tickets.swap_remove(at);
        self.send_answer(&ticket, result);
    }

    /// Answers every request waiting for what `matches`.
    pub(super) fn settle(
        &mut self,
        matches: impl Fn(Awaiting) -> bool,
        result: Result<Value, String>,
    ) {
        let (settled, waiting) = std::mem::take(&mut self.operator.tickets)
            .into_iter()
            .partition(|t| matches(t.awaiting));
        self.operator.tickets = waiting;
        for ticket in settled {
            self.send_answer(&ticket, result.clone());
        }
    }

    fn send_answer(&mut self, ticket: &Ticket, result: Result<Value, String>) {
        let line = match result {
            Ok(data) => wire::ok_line(&ticket.id, data),
            Err(error) => wire::error_line(&ticket.id, &error),
        };
        let desk = &mut self.operator.desk;
        desk.set_pending(ticket.client, false);
        desk.answer(ticket.client, line.as_bytes(), Instant::now());
    }

    /// On the way out: what waits for a change that will not happen now is
    /// told so (a stop is answered when it is done).
    pub(super) fn refuse_changes(&mut self, why: &str) {
        self.settle(
            |a| !matches!(a, Awaiting::Stop | Awaiting::Figures),
            Err(why.to_owned()),
        );
    }

    /// `status` or `metrics`: asks every worker that serves for its
    /// counters.
    pub(super) fn ask_figures(&mut self, what: FiguresFor, from: Requester) {
        let Requester::Operator(no) = from else {
            return;
        };
        self.expect(from, Awaiting::Figures);
        self.start_query(Answer::Ticket(no, what));
    }

    fn start_query(&mut self, answer: Answer) {
        let no = self.operator.next_query;
        self.operator.next_query += 1;
        let ask = SupervisorMessage::Report { query: no }.encode();
        // A booting worker answers nothing until it serves; a closing one
        // does, until it exits.
        let waiting = self
            .workers
            .iter()
            .filter(|w| w.is_ready() || w.is_retiring())
            .filter_map(|w| Some((w.id, w.control.as_ref()?)))
            .filter(|(_, control)| control.send(&ask).is_ok())
            .map(|(id, _)| id)
            .collect();
        self.operator.queries.push(Query {
            no,
            waiting,
            deadline: Instant::now() + QUERY_BOUND,
            answer,
        });
        self.finish_queries(Instant::now());
    }

    /// Worker `id` answered query `query`.
    pub(super) fn reported(&mut self, id: u64, query: u64) {
        if let Some(q) = self.operator.queries.iter_mut().find(|q| q.no == query) {
            q.waiting.retain(|w| *w != id);
        }
        self.finish_queries(Instant::now());
    }

    /// Answers every query that has all its answers, or is past its bound
    /// (the workers still waited for marked late). A worker gone meanwhile
    /// is not waited for.
    pub(super) fn finish_queries(&mut self, now: Instant) {
        let live: Vec<u64> = self.workers.iter().map(|w| w.id).collect();
        let (done, pending) = std::mem::take(&mut self.operator.queries)
            .into_iter()
            .map(|mut q| {
                q.waiting.retain(|id| live.contains(id));
                q
            })
            .partition(|q| q.waiting.is_empty() || q.deadline <= now);
        self.operator.queries = pending;
        for query in done {
            self.answer_query(query);
        }
    }

    fn answer_query(&mut self, query: Query) {
        let figures = self.figures(&query.waiting);
        match query.answer {
            Answer::Ticket(no, FiguresFor::Status) => {
                let data = serde_json::to_value(&figures).unwrap_or(Value::Null);
                self.answer(Requester::Operator(no), Ok(data));
            }
            Answer::Ticket(no, FiguresFor::Metrics) => {
                let text = prometheus::encode(figures, self.tally.served_by_index.clone());
                self.answer(Requester::Operator(no), Ok(json!({ "text": text })));
            }
            Answer::Scrape { client, head_only } => {
                let text = prometheus::encode(figures, self.tally.served_by_index.clone());
                let response =
                    http::response(200, "OK", prometheus::CONTENT_TYPE, &text, head_only);
                let desk = &mut self.operator.desk;
                desk.set_pending(client, false);
                desk.answer(client, &response, Instant::now());
            }
        }
    }

    /// At a deadline: clients that stall are cut, queries past their bound
    /// are answered.
    pub(super) fn on_operator_timer(&mut self, now: Instant) {
        self.finish_queries(now);
        self.operator.desk.sweep(now);
    }

    /// Once the listeners are the new supervisor's: this one stops taking
    /// operators (the path reaches the new one), and answers those here.
    pub(super) fn hand_over_endpoints(&mut self) {
        self.operator.desk.hand_over();
    }

    /// A new supervisor that took over opens its endpoints over the old
    /// one's.
    pub(super) fn open_endpoints_after_takeover(&mut self) {
        match open_endpoints(self.config, true) {
            Ok((control, metrics)) => self.operator.desk.open(control, metrics),
            Err(error) => tracing::error!(%error, "cannot open the operator's endpoints"),
        }
    }

    /// At the very end: a stop asked for is answered, the endpoints close.
    pub(super) fn close_operator(&mut self) {
        let code = if self.exit_code == std::process::ExitCode::SUCCESS {
            0
        } else {
            1
        };
        self.settle(
            |a| a == Awaiting::Stop,
            Ok(json!({ "message": "stopped", "exit_code": code })),
        );
        self.refuse_changes("drover stopped");
        self.operator.desk.close(Instant::now());
    }
}
