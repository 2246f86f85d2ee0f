//! [`Worker`]: what a worker process knows of itself, handed to the
//! application's factory.

use std::future::Future;

use drover_shared::env::{WORKER_GENERATION, WORKER_INDEX};
use drover_worker::ServerHandle;

/// One worker process's context, given to the application's factory
/// (see [`Drover::serve`](crate::Drover::serve)); cheap to clone into
/// handlers and background tasks.
#[derive(Clone)]
pub struct Worker {
    index: usize,
    generation: u64,
    server: ServerHandle,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("index", &self.index)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// This worker's context from what its supervisor set in its
    /// environment (both modes set it: an exec'd worker reads what it was
    /// started with, a forked one what was set after the fork).
    pub(crate) fn from_env(server: ServerHandle) -> Self {
        let number = |name| std::env::var(name).ok().and_then(|v| v.parse().ok());
        Self {
            index: number(WORKER_INDEX).unwrap_or(0) as usize,
            generation: number(WORKER_GENERATION).unwrap_or(0),
            server,
        }
    }

    /// Its slot number, from 0 to the worker count less one (more while
    /// `TTIN` adds workers). A worker started to replace another (a rolling
    /// restart, `--max-requests`, a crash) gets the index of the one it
    /// replaces; two workers may hold the same index while one replaces
    /// the other. Also in the environment as `DROVER_WORKER_INDEX`.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Its restart generation: 0 for the workers of the first start, one
    /// more with each rolling restart (HUP); a worker started to replace a
    /// crashed one is in the generation current then. Also in the
    /// environment as `DROVER_WORKER_GENERATION`.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Resolves once this worker starts to close (it is being replaced,
    /// scaled down or stopped): the moment for background tasks to stop
    /// and for connections the server no longer tracks (WebSockets, which
    /// leave the server once upgraded) to say goodbye. Requests in flight
    /// still complete after it resolves, within `--graceful-timeout`;
    /// anything still running when the worker exits is cut.
    pub fn closing(&self) -> impl Future<Output = ()> + Send + 'static {
        let server = self.server.clone();
        async move { server.closing().await }
    }

    /// The worker's server, to watch or stop it from the application.
    pub fn server(&self) -> &ServerHandle {
        &self.server
    }
}
