//! [`Worker`]: what a worker process knows of itself, handed to the
//! application's factory.

use std::ffi::CString;
use std::future::Future;

use drover_shared::env::{WORKER_GENERATION, WORKER_INDEX};
use drover_worker::ServerHandle;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

/// One worker process's context, given to the application's factory
/// (see [`Drover::serve`](crate::Drover::serve)); cheap to clone into
/// handlers and background tasks.
#[derive(Clone)]
pub struct Worker {
    identity: WorkerIdentity,
    server: ServerHandle,
    /// The application's work the process waits for before it exits.
    work: TaskTracker,
}

/// Work the worker's process waits for before it exits (see
/// [`Worker::track`]); the wait ends when every one is dropped.
#[derive(Debug)]
#[must_use = "the worker waits for this work only while the value lives"]
pub struct TrackedWork {
    _token: TaskTrackerToken,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("index", &self.identity.index)
            .field("generation", &self.identity.generation)
            .finish_non_exhaustive()
    }
}

/// Who a worker is in its fleet: the supervisor tells it in the child's
/// environment (`vars`, `DROVER_WORKER_INDEX` and
/// `DROVER_WORKER_GENERATION`), the worker reads it back once
/// (`from_env`): an exec'd worker what it was started with, a forked one
/// what was set after the fork.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WorkerIdentity {
    pub(crate) index: usize,
    pub(crate) generation: u64,
}

impl WorkerIdentity {
    /// The variables that tell a child who it is.
    pub(crate) fn vars(self) -> [CString; 2] {
        let var = |text: String| CString::new(text).expect("no NUL in a number");
        [
            var(format!("{WORKER_INDEX}={}", self.index)),
            var(format!("{WORKER_GENERATION}={}", self.generation)),
        ]
    }

    /// This process's identity; 0 and 0 when the variables are not there.
    pub(crate) fn from_env() -> Self {
        let number = |name| std::env::var(name).ok().and_then(|v| v.parse().ok());
        Self {
            index: number(WORKER_INDEX).unwrap_or(0) as usize,
            generation: number(WORKER_GENERATION).unwrap_or(0),
        }
    }
}

impl Worker {
    /// This worker's context.
    pub(crate) fn new(identity: WorkerIdentity, server: ServerHandle, work: TaskTracker) -> Self {
        Self {
            identity,
            server,
            work,
        }
    }

    /// Its slot number, from 0 up. A worker started to replace another (a
    /// rolling restart, `--max-requests`) gets the index of the one it
    /// replaces; any other new worker (after a crash, or `TTIN`) takes the
    /// lowest index no serving worker holds, which after a crash is the
    /// crashed worker's. A scale-down (`TTOU`) retires the highest index
    /// first, so the indices stay 0 to the worker count less one. Two
    /// workers hold the same index while one replaces the other, while a
    /// retiring one still drains, and during a binary upgrade (the new
    /// supervisor's workers count from 0 again). Also in the environment
    /// as `DROVER_WORKER_INDEX`.
    pub fn index(&self) -> usize {
        self.identity.index
    }

    /// Its restart generation: 0 for the workers of the first start, one
    /// more with each rolling restart (HUP); a worker started to replace a
    /// crashed one is in the generation current then. Also in the
    /// environment as `DROVER_WORKER_GENERATION`.
    pub fn generation(&self) -> u64 {
        self.identity.generation
    }

    /// Resolves once this worker starts to close (it is being replaced,
    /// scaled down or stopped): the moment for background tasks to stop
    /// and for connections the server no longer tracks (WebSockets, which
    /// leave the server once upgraded) to say goodbye. Requests in flight
    /// still complete after it resolves, within `--graceful-timeout`. The
    /// process then exits as soon as the server has closed and no
    /// [`track`](Self::track)ed work is left; anything else still running
    /// is cut.
    pub fn closing(&self) -> impl Future<Output = ()> + Send + 'static {
        let server = self.server.clone();
        async move { server.closing().await }
    }

    /// Keeps the worker's process from exiting while the returned value
    /// lives, for work the server does not track: an upgraded connection
    /// (move it into the socket's task, so the goodbye of
    /// [`closing`](Self::closing) is sent), a job a background task is in
    /// the middle of. The wait is bounded: once the worker starts to close,
    /// work still tracked at the graceful deadline (`--graceful-timeout`,
    /// or a shorter one the supervisor gives in a hurried restart) is cut
    /// when the process exits.
    pub fn track(&self) -> TrackedWork {
        TrackedWork {
            _token: self.work.token(),
        }
    }

    /// Spawns `task` on the worker's runtime, tracked as by
    /// [`track`](Self::track) until it ends.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.work.spawn(task)
    }

    /// The worker's server, to watch or stop it from the application.
    pub fn server(&self) -> &ServerHandle {
        &self.server
    }
}
