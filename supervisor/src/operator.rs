//! The operator's way in while drover runs, beside signals: the control
//! socket (newline-delimited JSON, `wire`), `drover ctl` (its client,
//! `ctl`), and the Prometheus metrics endpoint (`http`, `prometheus`).
//!
//! - `endpoint`: binding them (mode 0600, a binary upgrade without a gap)
//!   and the control socket's peer check;
//! - `client` and `desk`: the clients, served from the supervisor's poll
//!   loop without ever blocking it;
//! - `figures`: the one snapshot `status`, `/metrics` and `drover ctl
//!   status` all show; `kernel`: the figures read from the kernel.
//!
//! What a request does is decided by the supervisor (`supervisor/operator.rs`),
//! through the same command table as signals.

mod client;
pub(crate) mod ctl;
pub(crate) mod desk;
pub(crate) mod endpoint;
pub(crate) mod figures;
pub(crate) mod http;
pub(crate) mod kernel;
pub(crate) mod prometheus;
pub(crate) mod wire;

pub use ctl::CtlArgs;
pub use endpoint::ControlMode;
