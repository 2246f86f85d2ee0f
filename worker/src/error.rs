//! The server's error type.

use std::error::Error as StdError;
use std::io;
use std::sync::Arc;

use drover_shared::listen_fds::ListenFdsError;
use drover_shared::{ListenAddr, SpecError};

/// What can go wrong with a server. Cheap to clone: every waiter in
/// [`wait_closed`](crate::ServerHandle::wait_closed) gets the same error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// [`Server::bind`](crate::Server::bind) could not parse or open the
    /// address (bad syntax, port in use, permission denied...).
    #[error(transparent)]
    Bind(Arc<SpecError>),
    /// [`Server::from_env`](crate::Server::from_env) found no usable
    /// LISTEN_FDS sockets.
    #[error(transparent)]
    ListenFds(Arc<ListenFdsError>),
    /// A listener given to [`Server::from_sockets`](crate::Server::from_sockets)
    /// is not a listening socket, or a listener could not be registered with
    /// the runtime when the server started.
    #[error("cannot use listener: {0}")]
    Adopt(#[source] Arc<io::Error>),
    /// [`Server::from_sockets`](crate::Server::from_sockets) was given no
    /// listener.
    #[error("no listeners given")]
    NoListeners,
    /// A startup hook returned an error; nothing is accepting.
    #[error("startup hook failed: {0}")]
    Startup(#[source] Arc<dyn StdError + Send + Sync>),
    /// `start_serving` was called on a server that is already starting or
    /// serving; the running server is unaffected.
    #[error("the server is already serving")]
    AlreadyStarted,
    /// The server was closed before (or while) it started.
    #[error("the server is closed")]
    Closed,
    /// `start_serving` was cancelled (its future dropped) or a startup hook
    /// panicked before the server started; the server is closed.
    #[error("the start was cancelled before the server was serving")]
    StartCancelled,
    /// The close did not complete: a shutdown hook panicked, or the runtime
    /// that ran `start_serving` stopped first.
    #[error("the close was interrupted (a shutdown hook panicked or the runtime stopped)")]
    ShutdownInterrupted,
    /// A listener failed in a way retrying cannot mend (the server closed).
    #[error("accepting on {addr} failed: {source}")]
    Accept {
        /// The listener's address.
        addr: ListenAddr,
        /// The system's error.
        #[source]
        source: Arc<io::Error>,
    },
}

impl From<SpecError> for Error {
    fn from(e: SpecError) -> Self {
        Self::Bind(Arc::new(e))
    }
}

impl From<ListenFdsError> for Error {
    fn from(e: ListenFdsError) -> Self {
        Self::ListenFds(Arc::new(e))
    }
}
