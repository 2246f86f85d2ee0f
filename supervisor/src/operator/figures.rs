//! The fleet's figures at one moment: what `status` answers (as JSON),
//! what `/metrics` encodes, and what `drover ctl status` prints. One
//! struct for the three, so they cannot disagree.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The supervisor and every worker, as of the moment the supervisor
/// answered (every worker's counters asked for after the request came).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Figures {
    pub(crate) supervisor: SupervisorFigures,
    pub(crate) listeners: Vec<ListenerFigures>,
    pub(crate) workers: Vec<WorkerFigures>,
    /// Workers that left, by reason (every reason listed, zeros too).
    pub(crate) exits: BTreeMap<String, u64>,
    /// Rolling restarts, by result (`completed`, `stopped`).
    pub(crate) reloads: BTreeMap<String, u64>,
    /// Requests the fleet served since this supervisor started: what the
    /// workers that left had served plus what the live ones have. Never
    /// goes down while this supervisor runs.
    pub(crate) requests_total: u64,
    /// Requests in flight over every worker.
    pub(crate) requests_in_flight: u64,
    /// Connections open over every worker.
    pub(crate) connections_open: u64,
    /// TLS handshakes that failed since this supervisor started (a
    /// plain-HTTP client on a TLS port, a scanner, a stalled handshake),
    /// over every worker, those that left included: never goes down.
    /// (Defaults: `drover ctl` of this release reads an older supervisor.)
    #[serde(default)]
    pub(crate) tls_handshake_failures_total: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SupervisorFigures {
    pub(crate) pid: u32,
    /// `booting`, `running`, `stopping` or `handed_over`.
    pub(crate) phase: String,
    pub(crate) uptime_s: f64,
    /// The generation new workers start in (HUP moves it on).
    pub(crate) generation: u64,
    /// `exec` or `fork`.
    pub(crate) spawn: String,
    /// Workers wanted (TTIN/TTOU and `scale` change it).
    pub(crate) workers_wanted: usize,
    /// Whether a rolling restart is under way.
    pub(crate) reloading: bool,
    /// The new supervisor of a binary upgrade under way, if one is.
    pub(crate) upgrading_to: Option<i32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ListenerFigures {
    /// As `--bind` spells it.
    pub(crate) addr: String,
    /// Connections the kernel holds that no worker has accepted yet, and
    /// the backlog limit; `None` where the kernel does not say (Unix
    /// sockets).
    pub(crate) queue_depth: Option<u32>,
    pub(crate) queue_limit: Option<u32>,
    /// Whether its connections speak TLS.
    #[serde(default)]
    pub(crate) tls: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct WorkerFigures {
    /// The supervisor's number for it (`recycle` takes it).
    pub(crate) id: u64,
    /// Its slot, which a replacement inherits.
    pub(crate) index: usize,
    pub(crate) pid: i32,
    pub(crate) generation: u64,
    /// `booting`, `ready`, `retiring` or `killed`.
    pub(crate) state: String,
    pub(crate) age_s: f64,
    /// How long it took from start to ready, once it was.
    pub(crate) ready_in_ms: Option<u64>,
    pub(crate) requests: u64,
    pub(crate) in_flight: u64,
    pub(crate) connections: u64,
    #[serde(default)]
    pub(crate) tls_handshake_failures: u64,
    /// From `/proc` at the moment of the answer.
    pub(crate) rss_bytes: Option<u64>,
    pub(crate) cpu_s: Option<f64>,
    /// Since its last heartbeat (or report).
    pub(crate) last_heard_ms: u64,
    /// How old its counters are: none if it never told any.
    pub(crate) counters_age_ms: Option<u64>,
    /// It did not answer within the bound: its counters are the last it
    /// told.
    pub(crate) late: bool,
}
