//! An HTTP server whose lifecycle you drive from code, after Python's
//! `asyncio.Server`: open listeners or adopt ones that are already open,
//! [`start_serving`](Server::start_serving) (returns once accepting, or an
//! error, never hangs), [`close`](ServerHandle::close) (synchronous, from
//! anywhere), [`wait_closed`](ServerHandle::wait_closed) (until every
//! connection is gone), a [scoped form](Server::serve_while), and no
//! signal handlers unless asked for.
//!
//! Every worker process of the `drover` supervisor builds its server
//! through [`Server::from_env`]; a test fixture or any tokio program can
//! use it on its own:
//!
//! ```
//! use drover_worker::Server;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), drover_worker::Error> {
//! let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
//! let server = Server::bind("127.0.0.1:0").await?;
//! server.start_serving(app).await?;
//! println!("listening on {}", server.local_addrs()[0]);
//! server.close();
//! server.wait_closed().await?;
//! # Ok(()) }
//! ```
//!
//! Nothing here polls: `close()` fires one signal that every accept loop
//! and connection waits on, so it pre-empts every wait at once.
#![deny(missing_docs)]

// In reading order, leaves first: each module uses only modules above it.
// A one-way signal (close, hurry, abort).
mod latch;
// The public error type.
mod error;
// The public stats and close report.
mod report;
// What a `Builder` is not told (public).
pub mod defaults;
// The request body applications read (public), with its read timeout.
mod body;
// What counts as an application (public).
pub mod service;
// Startup and shutdown hooks, boxed.
mod hooks;
// An accepted TCP or Unix connection.
mod stream;
// The send timeout, around a connection's stream.
mod send_timeout;
// TLS on the TCP listeners (rustls).
mod tls;
// Session tickets under keys a fleet shares.
mod tls_tickets;
// What `from_sockets` adopts.
mod sockets;
// The listening sockets: accept, close, sweep.
mod listeners;
// What each request is held to: timeouts, head limits.
mod limits;
// How connections speak HTTP.
mod protocol;
// Requests, connections, the request quota.
mod counters;
// The state machine and its signals.
mod lifecycle;
// One server: lifecycle, listeners, protocol, tasks, counters.
mod server_core;
// Who is on the other end of a connection.
mod peer;
// One connection's requests.
mod activity;
// One connection's HTTP: its version told from its first bytes, then hyper.
mod hyper_conn;
// One connection: its idle limits and its close.
mod connection;
// The accept loop.
mod accept;
// The close driver.
mod shutdown;
// `ServerHandle`.
mod handle;
// `ServerHandle::close_on_signals`.
mod signals;
// `Server`: start and serve.
mod server;
// `Builder`, and `Server`'s constructors.
mod builder;

pub use body::{BodyError, RequestBody};
pub use builder::Builder;
pub use drover_shared::{ListenAddr, Listener, ListenerSpec};
pub use error::Error;
pub use handle::{ListenerInfo, ServerHandle};
pub use peer::{ConnectInfo, LocalAddr, UnixPeer};
pub use report::{CloseReport, ServerStats};
pub use server::Server;
pub use service::{BoxError, IntoHttpService};
pub use sockets::IntoListener;
pub use tls::{CertifiedPair, ClientAuth, ClientCertificate, Tls, TlsError, TlsVersion};
pub use tls_tickets::TicketKey;
