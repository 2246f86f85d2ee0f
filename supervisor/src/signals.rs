//! Signals, handled with nothing process-global left behind for a forked
//! worker: the supervisor's own self-pipe, and the worker's no-op handlers.
//!
//! **The supervisor** installs [`SignalPipe`]: a sigaction handler that
//! writes the signal's number as one byte to a non-blocking, close-on-exec
//! pipe (write(2) is async-signal-safe; nothing else runs in the handler).
//! The event loop polls the read end. One byte per delivery: a signal sent
//! three times quickly is read three times (the kernel coalesces only a
//! signal still pending, and the handler runs for each delivery), in the
//! order they arrived. No library registry holds the handlers, so a
//! forked worker that resets the dispositions (`spawn.rs`) can install its
//! own (tokio's) for the same signals. If 64 KiB of signal bytes were ever
//! left unread, further ones would be dropped.
//!
//! **A worker** ignores the supervisor's signals ([`WORKER_IGNORED`]):
//! `pkill -HUP drover`, `systemctl kill -s HUP` or a Ctrl-C reach the
//! whole group, and acting on them is the supervisor's job. The child is
//! started with them ignored (SIG_IGN, set before exec or in the forked
//! child), and [`ignore_in_worker`] replaces that with a handler that does
//! nothing: a handled signal is reset to its default at exec, so the
//! application's own subprocesses start with the default dispositions,
//! and an application's own `tokio::signal` handler replaces it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::libc;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// The signals the supervisor acts on.
pub(crate) const SUPERVISOR_SIGNALS: [Signal; 9] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGCHLD,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
];

/// The supervisor's signals a worker does not act on (all but CHLD).
pub(crate) const WORKER_IGNORED: [Signal; 8] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
];

/// The write end of the supervisor's pipe, for the handler (-1: none).
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

/// The supervisor's handler: the signal's number, one byte, to the pipe.
/// Only async-signal-safe operations: an atomic load, write(2), and errno
/// saved and restored around it.
extern "C" fn deliver(signal: libc::c_int) {
    let fd = PIPE_WRITE.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    let byte = signal as u8;
    // SAFETY: errno is thread-local and write(2) is async-signal-safe; the
    // byte is on this handler's stack. A full pipe drops the byte (EAGAIN).
    unsafe {
        let errno = *libc::__errno_location();
        libc::write(fd, std::ptr::addr_of!(byte).cast(), 1);
        *libc::__errno_location() = errno;
    }
}

/// The supervisor's signals, as bytes on a pipe the event loop polls.
pub(crate) struct SignalPipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Drop for SignalPipe {
    /// The handler stops writing before the descriptor closes: a late
    /// signal must not land in whatever reuses its number.
    fn drop(&mut self) {
        PIPE_WRITE.store(-1, Ordering::Release);
    }
}

impl SignalPipe {
    /// Creates the pipe and installs the handler for [`SUPERVISOR_SIGNALS`].
    pub(crate) fn install() -> io::Result<Self> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        PIPE_WRITE.store(write.as_raw_fd(), Ordering::Release);
        // SA_NOCLDSTOP: a stopped worker (SIGSTOP) is no exit to reap.
        let action = SigAction::new(
            SigHandler::Handler(deliver),
            SaFlags::SA_RESTART | SaFlags::SA_NOCLDSTOP,
            SigSet::empty(),
        );
        let mut handled = SigSet::empty();
        for signal in SUPERVISOR_SIGNALS {
            // SAFETY: `deliver` calls only async-signal-safe functions.
            unsafe { sigaction(signal, &action) }?;
            handled.add(signal);
        }
        // A launcher may have left some of them blocked (an inherited
        // mask): a supervisor that never sees TERM or CHLD cannot stop or
        // reap.
        handled.thread_unblock()?;
        Ok(Self { read, write })
    }

    /// What the event loop polls.
    pub(crate) fn read_end(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Both ends: descriptors a forked worker closes.
    pub(crate) fn fds(&self) -> [RawFd; 2] {
        [self.read.as_raw_fd(), self.write.as_raw_fd()]
    }

    /// Every signal delivered since the last call, in arrival order, once
    /// per delivery.
    pub(crate) fn pending(&self) -> Vec<i32> {
        let mut signals = Vec::new();
        let mut buffer = [0u8; 64];
        loop {
            match nix::unistd::read(&self.read, &mut buffer) {
                Ok(0) | Err(Errno::EAGAIN) => return signals,
                Ok(n) => signals.extend(buffer[..n].iter().map(|b| i32::from(*b))),
                Err(Errno::EINTR) => {}
                Err(error) => {
                    tracing::error!(%error, "cannot read the signal pipe");
                    return signals;
                }
            }
        }
    }
}

/// In a forked child: the supervisor's handler is no longer installed
/// (the dispositions were reset); forget its pipe too. An atomic store:
/// async-signal-safe.
pub(crate) fn forget_pipe_after_fork() {
    PIPE_WRITE.store(-1, Ordering::Release);
}

/// A handler that does nothing: the signal is ignored, yet reset to its
/// default at exec.
extern "C" fn ignore(_signal: libc::c_int) {}

/// In a worker, at its start: [`WORKER_IGNORED`] get a handler that does
/// nothing (see the module docs). An application's `tokio::signal`
/// handler installed later replaces it.
pub(crate) fn ignore_in_worker() -> io::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(ignore),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in WORKER_IGNORED {
        // SAFETY: `ignore` does nothing at all.
        unsafe { sigaction(signal, &action) }?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{SignalPipe, SUPERVISOR_SIGNALS};
    use nix::libc;

    #[test]
    fn each_delivery_is_one_byte_in_arrival_order() {
        let pipe = SignalPipe::install().unwrap();
        // raise(3) runs the handler before it returns, on this thread.
        for signal in [libc::SIGTTIN, libc::SIGTTIN, libc::SIGHUP, libc::SIGTTIN] {
            // SAFETY: raise on a handled signal.
            unsafe { libc::raise(signal) };
        }
        // (A child of another test may add a SIGCHLD.)
        let read: Vec<i32> = pipe
            .pending()
            .into_iter()
            .filter(|s| *s != libc::SIGCHLD)
            .collect();
        assert_eq!(
            read,
            vec![libc::SIGTTIN, libc::SIGTTIN, libc::SIGHUP, libc::SIGTTIN]
        );
        // Back to the defaults for the rest of the test process.
        for signal in SUPERVISOR_SIGNALS {
            // SAFETY: restoring a default disposition.
            unsafe { libc::signal(signal as libc::c_int, libc::SIG_DFL) };
        }
    }
}
