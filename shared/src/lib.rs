//! What drover's supervisor and its workers must agree on.
//!
//! - [`ListenerSpec`]: the `--bind` syntax (`HOST:PORT`, `[V6]:PORT`,
//!   `unix:PATH`, `fd://N`), parsed and opened.
//! - [`Listener`] and [`ListenAddr`]: an open listening socket and where it
//!   listens.
//! - [`listen_fds`]: the LISTEN_FDS convention by which systemd and the
//!   supervisor pass sockets on.
//! - [`control`] and [`ControlSocket`]: the supervisor ↔ worker protocol
//!   and the `SOCK_SEQPACKET` channel it travels over.
//!
//! Nothing here knows about HTTP or about processes beyond descriptors.
#![deny(missing_docs)]

pub mod control;
mod control_socket;
pub mod listen_fds;
mod listener;
mod spec;

pub use control_socket::{ControlSocket, CONTROL_FD_ENV, UPGRADE_FD_ENV};
pub use listener::{adopt_fd, ListenAddr, Listener, SocketFile};
pub use spec::{ListenerSpec, SpecError, DEFAULT_BACKLOG};
