//! What drover's supervisor and its workers must agree on.
//!
//! - [`ListenerSpec`]: the `--bind` syntax (`HOST:PORT`, `[V6]:PORT`,
//!   `unix:PATH`, `fd://N`), parsed and opened.
//! - [`Listener`] and [`ListenAddr`]: an open listening socket and where it
//!   listens.
//! - [`listen_fds`]: the LISTEN_FDS convention by which systemd and the
//!   supervisor pass sockets on.
//! - [`env`](mod@env): every environment variable drover reads or sets, named once.
//! - [`events`]: the names of the lifecycle events drover logs.
//!
//! Nothing here knows about HTTP or about processes beyond descriptors.
//! (The supervisor ↔ worker control protocol is the `drover` crate's: both
//! of its ends run there.)
#![deny(missing_docs)]

pub mod env;
pub mod events;
pub mod listen_fds;
mod listener;
mod spec;

pub use listener::{adopt_fd, is_open, ListenAddr, Listener, SocketFile};
pub use spec::{ListenerSpec, SpecError, DEFAULT_BACKLOG};
