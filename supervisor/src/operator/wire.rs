//! The control socket's wire format: one JSON object per line each way.
//!
//! ```text
//! → {"id": 1, "command": "scale", "args": {"by": -1}}
//! ← {"id": 1, "ok": true, "data": {"workers": 3}}
//! ← {"id": 1, "ok": false, "error": "still starting"}
//! ```
//!
//! `id` is the client's, any JSON value, echoed as it came (`null` when
//! the line was not JSON at all); `args` may be left out when a command
//! takes none. Parsing never panics: a line that is not a request is an
//! [`Order`] error, answered on the same connection.

use serde::Deserialize;
use serde_json::{json, Value};

/// The longest request line taken; a longer one is answered with an
/// error and its connection closed.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// What an operator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// The supervisor and every worker, fresh.
    Status,
    /// The metrics, as `/metrics` serves them.
    Metrics,
    /// The rolling restart (HUP); answered once it completed or stopped.
    Reload,
    /// The binary upgrade (USR2); answered once the new supervisor took
    /// over or the upgrade failed.
    Upgrade,
    /// Change the worker count; answered once exactly that many serve.
    Scale(ScaleTo),
    /// Replace one worker (by its id), ready-gated; answered once the
    /// replacement serves or failed to boot.
    Recycle { worker: u64 },
    /// Stop (gracefully, or at once); answered once every worker is gone.
    Stop { now: bool },
    /// Re-read and check the certificate and key, and hand them to every
    /// worker (as USR1).
    TlsReload,
}

/// What `scale` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScaleTo {
    Exactly(usize),
    By(i64),
}

impl ScaleTo {
    /// The worker count this asks for from `current`, never below one.
    pub(crate) fn from(self, current: usize) -> usize {
        let wanted = match self {
            Self::Exactly(n) => n as i64,
            Self::By(delta) => (current as i64).saturating_add(delta),
        };
        usize::try_from(wanted.max(1)).unwrap_or(1)
    }

    /// As `drover ctl scale` takes it: `N`, `+N` or `-N`.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not a worker count (N, +N or -N)");
        if text.starts_with(['+', '-']) {
            let by = text.parse::<i64>().map_err(|_| bad())?;
            return Ok(Self::By(by));
        }
        match text.parse::<usize>() {
            Ok(0) => Err("scale to 0: drover runs one worker at least".into()),
            Ok(n) => Ok(Self::Exactly(n)),
            Err(_) => Err(bad()),
        }
    }
}

impl Order {
    /// Whether a read-only control socket (`--control-socket-mode
    /// read-only`) allows it.
    pub(crate) fn reads_only(self) -> bool {
        matches!(self, Self::Status | Self::Metrics)
    }

    /// Its command name on the wire.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Metrics => "metrics",
            Self::Reload => "reload",
            Self::Upgrade => "upgrade",
            Self::Scale(_) => "scale",
            Self::Recycle { .. } => "recycle",
            Self::Stop { .. } => "stop",
            Self::TlsReload => "tls_reload",
        }
    }

    /// Its `args` on the wire.
    fn args(self) -> Value {
        match self {
            Self::Scale(ScaleTo::Exactly(workers)) => json!({ "workers": workers }),
            Self::Scale(ScaleTo::By(by)) => json!({ "by": by }),
            Self::Recycle { worker } => json!({ "worker": worker }),
            Self::Stop { now } => json!({ "now": now }),
            _ => json!({}),
        }
    }

    /// The request line for it (newline included), as `drover ctl` sends.
    pub(crate) fn request_line(self, id: u64) -> String {
        let request = json!({ "id": id, "command": self.name(), "args": self.args() });
        format!("{request}\n")
    }
}

/// One request line, read: the client's id and what it asks, or why the
/// line is not a request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Incoming {
    pub(crate) id: Value,
    pub(crate) order: Result<Order, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    #[serde(default)]
    id: Value,
    command: String,
    #[serde(default)]
    args: Args,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Args {
    workers: Option<usize>,
    by: Option<i64>,
    worker: Option<u64>,
    now: Option<bool>,
}

/// Reads one request line (without its newline).
pub(crate) fn parse_line(line: &[u8]) -> Incoming {
    let raw: RawRequest = match serde_json::from_slice(line) {
        Ok(raw) => raw,
        Err(error) => {
            // The id, if the line is JSON with one, for the answer.
            let id = serde_json::from_slice::<Value>(line)
                .ok()
                .and_then(|v| v.get("id").cloned())
                .unwrap_or(Value::Null);
            return Incoming {
                id,
                order: Err(format!("not a request: {error}")),
            };
        }
    };
    Incoming {
        id: raw.id,
        order: order(&raw.command, &raw.args),
    }
}

fn order(command: &str, args: &Args) -> Result<Order, String> {
    let order = match command {
        "status" => Order::Status,
        "metrics" => Order::Metrics,
        "reload" => Order::Reload,
        "upgrade" => Order::Upgrade,
        "scale" => match (args.workers, args.by) {
            (Some(0), None) => return Err("scale to 0: drover runs one worker at least".into()),
            (Some(workers), None) => Order::Scale(ScaleTo::Exactly(workers)),
            (None, Some(by)) => Order::Scale(ScaleTo::By(by)),
            _ => return Err("scale takes args {\"workers\": N} or {\"by\": ±N}".into()),
        },
        "recycle" => match args.worker {
            Some(worker) => Order::Recycle { worker },
            None => return Err("recycle takes args {\"worker\": ID}".into()),
        },
        "stop" => Order::Stop {
            now: args.now.unwrap_or(false),
        },
        "tls_reload" => Order::TlsReload,
        other => {
            return Err(format!(
                "unknown command `{other}` (status, metrics, reload, upgrade, scale, recycle, stop, tls_reload)"
            ))
        }
    };
    Ok(order)
}

/// A success line (newline included).
pub(crate) fn ok_line(id: &Value, data: Value) -> String {
    format!("{}\n", json!({ "id": id, "ok": true, "data": data }))
}

/// A failure line (newline included).
pub(crate) fn error_line(id: &Value, error: &str) -> String {
    format!("{}\n", json!({ "id": id, "ok": false, "error": error }))
}

/// A reply line, read back (by `drover ctl`).
#[derive(Debug, Deserialize)]
pub(crate) struct Reply {
    pub(crate) ok: bool,
    #[serde(default)]
    pub(crate) data: Value,
    #[serde(default)]
    pub(crate) error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_order_round_trips_through_its_request_line() {
        let orders = [
            Order::Status,
            Order::Metrics,
            Order::Reload,
            Order::Upgrade,
            Order::Scale(ScaleTo::Exactly(3)),
            Order::Scale(ScaleTo::By(-1)),
            Order::Recycle { worker: 7 },
            Order::Stop { now: true },
            Order::Stop { now: false },
            Order::TlsReload,
        ];
        for (id, order) in orders.into_iter().enumerate() {
            let line = order.request_line(id as u64);
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            let incoming = parse_line(line.trim_end().as_bytes());
            assert_eq!(incoming.id, json!(id));
            assert_eq!(incoming.order, Ok(order));
        }
    }

    #[test]
    fn args_may_be_left_out_and_the_id_is_any_json() {
        let incoming = parse_line(br#"{"id":"a-1","command":"status"}"#);
        assert_eq!(incoming.order, Ok(Order::Status));
        assert_eq!(incoming.id, json!("a-1"));
        let no_id = parse_line(br#"{"command":"stop"}"#);
        assert_eq!(no_id.id, Value::Null);
        assert_eq!(no_id.order, Ok(Order::Stop { now: false }));
    }

    #[test]
    fn garbage_and_bad_args_are_errors_that_keep_the_id_when_there_is_one() {
        for line in [&b"hello"[..], b"", b"\xff\xfe", b"[1,2]", b"{\"id\":1}"] {
            assert!(parse_line(line).order.is_err(), "{line:?}");
        }
        let unknown = parse_line(br#"{"id":5,"command":"explode"}"#);
        assert_eq!(unknown.id, json!(5));
        assert!(unknown.order.unwrap_err().contains("unknown command"));
        let bad = parse_line(br#"{"id":6,"command":"scale","args":{"workers":"x"}}"#);
        assert_eq!(bad.id, json!(6));
        assert!(bad.order.is_err());
        let zero = parse_line(br#"{"command":"scale","args":{"workers":0}}"#);
        assert!(zero.order.unwrap_err().contains("one worker at least"));
        let both = parse_line(br#"{"command":"scale","args":{"workers":2,"by":1}}"#);
        assert!(both.order.is_err());
        let recycle = parse_line(br#"{"command":"recycle"}"#);
        assert!(recycle.order.is_err());
    }

    #[test]
    fn scale_is_a_count_or_a_step_and_never_below_one() {
        assert_eq!(ScaleTo::parse("3"), Ok(ScaleTo::Exactly(3)));
        assert_eq!(ScaleTo::parse("+1"), Ok(ScaleTo::By(1)));
        assert_eq!(ScaleTo::parse("-2"), Ok(ScaleTo::By(-2)));
        assert!(ScaleTo::parse("0").is_err());
        assert!(ScaleTo::parse("two").is_err());
        assert_eq!(ScaleTo::By(-5).from(3), 1);
        assert_eq!(ScaleTo::By(2).from(3), 5);
        assert_eq!(ScaleTo::Exactly(4).from(1), 4);
    }

    #[test]
    fn only_status_and_metrics_are_read_only() {
        assert!(Order::Status.reads_only() && Order::Metrics.reads_only());
        assert!(!Order::Reload.reads_only());
        assert!(!Order::Stop { now: false }.reads_only());
    }

    #[test]
    fn replies_are_one_line_each() {
        let ok = ok_line(&json!(1), json!({"a": "x\ny"}));
        assert_eq!(ok.matches('\n').count(), 1);
        let reply: Reply = serde_json::from_str(&ok).unwrap();
        assert!(reply.ok);
        let failed: Reply = serde_json::from_str(&error_line(&Value::Null, "no")).unwrap();
        assert_eq!((failed.ok, failed.error.as_deref()), (false, Some("no")));
    }
}
