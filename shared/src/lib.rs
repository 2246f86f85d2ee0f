//! What drover's supervisor and its workers must agree on.
//!
//! - [`ListenerSpec`]: the `--bind` syntax (`HOST:PORT`, `[V6]:PORT`,
//!   `unix:PATH`, `fd://N`), parsed and opened.
//! - [`Listener`] and [`ListenAddr`]: an open listening socket and where it
//!   listens.
//! - [`listen_fds`]: the LISTEN_FDS convention by which systemd and the
//!   supervisor pass sockets on.
//!
//! Nothing here knows about HTTP or about processes beyond descriptors.
#![deny(missing_docs)]

pub mod listen_fds;
mod listener;
mod spec;

pub use listener::{adopt_fd, ListenAddr, Listener, SocketFile};
pub use spec::{ListenerSpec, SpecError, DEFAULT_BACKLOG};
