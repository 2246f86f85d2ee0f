//! Opt-in: stop a server on SIGINT/SIGTERM. The library never installs a
//! signal handler unless this is called.

use std::io;

use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;

use crate::handle::ServerHandle;

impl ServerHandle {
    /// Wires SIGINT and SIGTERM to this server: the first one calls
    /// [`close`](Self::close), a second one [`abort`](Self::abort)s the
    /// connections still open. The returned task ends when the server is
    /// closed.
    ///
    /// Must be called inside a tokio runtime. Note that tokio keeps its
    /// handler installed for the life of the process: once this has been
    /// called, SIGINT/SIGTERM no longer terminate the process by default.
    pub fn close_on_signals(&self) -> io::Result<JoinHandle<()>> {
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let handle = self.clone();
        Ok(tokio::spawn(async move {
            let closed = handle.wait_closed();
            tokio::pin!(closed);
            tokio::select! {
                _ = &mut closed => return,
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            tracing::info!("signal received: closing (a second one aborts connections)");
            handle.close();
            tokio::select! {
                _ = &mut closed => {}
                _ = interrupt.recv() => handle.abort(),
                _ = terminate.recv() => handle.abort(),
            }
        }))
    }
}
