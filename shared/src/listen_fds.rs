//! The LISTEN_FDS convention (systemd's `sd_listen_fds`): listening sockets
//! passed from descriptor 3 on, `LISTEN_FDS` of them, meant for the process
//! whose pid is `LISTEN_PID`, named by the colon-separated `LISTEN_FDNAMES`.
//!
//! drover's supervisor hands sockets to its workers the same way, so one
//! worker binary runs unchanged under systemd directly or under drover.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::env::{LISTEN_FDNAMES, LISTEN_FDS, LISTEN_FDS_START as START_VAR, LISTEN_PID};
use crate::listener::{adopt_fd, is_open, Listener};

/// The first passed descriptor.
pub const LISTEN_FDS_START: i32 = 3;

/// Set once the LISTEN_FDS sockets have been taken.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// In a child forked (without exec) from a process that took its sockets,
/// after the child has put its own copies at descriptors 3.. and set the
/// variables for itself: lets it take them.
pub fn release_after_fork() {
    TAKEN.store(false, Ordering::Release);
}

/// A socket received through LISTEN_FDS, with its name.
#[derive(Debug)]
pub struct InheritedListener {
    /// The socket, close-on-exec, still in the mode it was passed in.
    pub listener: Listener,
    /// Its entry in `LISTEN_FDNAMES` (systemd's `FileDescriptorName=`,
    /// `systemd-socket-activate --fdname`), or `None` when no names came.
    pub name: Option<String>,
}

/// Why the LISTEN_FDS sockets could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum ListenFdsError {
    /// `LISTEN_FDS` is not in the environment: nothing was passed.
    #[error("no sockets were passed: LISTEN_FDS is not set")]
    Missing,
    /// `LISTEN_PID` names another process (the variables were inherited
    /// from a parent they were meant for).
    #[error("LISTEN_FDS is meant for pid {intended}, not for this process ({ours})")]
    OtherProcess {
        /// The value of `LISTEN_PID` as found.
        intended: String,
        /// This process's pid.
        ours: u32,
    },
    /// A variable does not parse, `LISTEN_PID` is missing, the names do not
    /// match the count, or a passed descriptor is not open.
    #[error("malformed socket activation environment ({LISTEN_FDS}={fds:?}, {LISTEN_PID}={pid:?}): {source}")]
    Malformed {
        /// `LISTEN_FDS` as found.
        fds: String,
        /// `LISTEN_PID` as found.
        pid: String,
        /// What sd_listen_fds objected to.
        #[source]
        source: io::Error,
    },
    /// `LISTEN_FDS=0`.
    #[error("LISTEN_FDS is 0: no sockets were passed")]
    Empty,
    /// The sockets were already taken by this process (each is owned once).
    #[error("the LISTEN_FDS sockets were already taken by this process")]
    AlreadyTaken,
    /// A passed descriptor is not a listening stream socket.
    #[error("passed descriptor {fd}: {source}")]
    BadDescriptor {
        /// The descriptor number.
        fd: i32,
        /// What is wrong with it.
        #[source]
        source: io::Error,
    },
}

/// The descriptors (with their names) of a drover worker whose sockets start
/// at `start` instead of 3: what `sd_listen_fds_with_names` does, from
/// there. They are set close-on-exec, as it does.
fn passed_from(start: &str, count: &str) -> io::Result<Vec<(i32, String)>> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
    let start: i32 = start
        .parse()
        .ok()
        .filter(|s| *s >= LISTEN_FDS_START)
        .ok_or_else(|| {
            invalid(format!(
                "{START_VAR}={start:?} is not a descriptor from 3 on"
            ))
        })?;
    let count: i32 = count
        .parse()
        .map_err(|_| invalid(format!("{LISTEN_FDS}={count:?} is not a count")))?;
    let names: Vec<String> = match std::env::var(LISTEN_FDNAMES) {
        Ok(names) => names.split(':').map(str::to_owned).collect(),
        Err(_) => vec![String::from("unknown"); count.max(0) as usize],
    };
    if names.len() != count.max(0) as usize {
        return Err(invalid(format!(
            "{LISTEN_FDNAMES} has {} names for {count} sockets",
            names.len()
        )));
    }
    (start..start.saturating_add(count))
        .zip(names)
        .map(|(fd, name)| {
            if !is_open(fd) {
                return Err(invalid(format!("descriptor {fd} is not open")));
            }
            // SAFETY: F_SETFD on a descriptor number; no memory is touched.
            if unsafe { nix::libc::fcntl(fd, nix::libc::F_SETFD, nix::libc::FD_CLOEXEC) } < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok((fd, name))
        })
        .collect()
}

/// Takes every socket passed by LISTEN_FDS, in order.
///
/// The variables are checked (set, meant for this pid, well formed, names
/// matching the count) and every descriptor must be a listening stream
/// socket; anything else is an error that says which. The environment is
/// left as it is: changing it is unsound once threads run, and a child
/// never matches `LISTEN_PID` anyway. The sockets are taken once per
/// process; a later call fails with [`ListenFdsError::AlreadyTaken`].
pub fn inherited_listeners() -> Result<Vec<InheritedListener>, ListenFdsError> {
    if TAKEN.load(Ordering::Acquire) {
        return Err(ListenFdsError::AlreadyTaken);
    }
    let fds = std::env::var(LISTEN_FDS).map_err(|_| ListenFdsError::Missing)?;
    let pid = std::env::var(LISTEN_PID).unwrap_or_default();
    let ours = std::process::id();
    // sd_listen_fds answers "nothing" for a foreign pid; tell which.
    if pid.parse::<u32>().is_ok_and(|p| p != ours) {
        return Err(ListenFdsError::OtherProcess {
            intended: pid,
            ours,
        });
    }
    let malformed = |source| ListenFdsError::Malformed {
        fds: fds.clone(),
        pid: pid.clone(),
        source,
    };
    let named = std::env::var_os(LISTEN_FDNAMES).is_some();
    let passed: Vec<(i32, String)> = match std::env::var(START_VAR) {
        Err(_) => sd_notify::listen_fds_with_names()
            .map_err(malformed)?
            .collect(),
        Ok(start) => passed_from(&start, &fds).map_err(malformed)?,
    };
    if passed.is_empty() {
        // sd_listen_fds reports "nothing" for a missing LISTEN_PID too.
        return Err(if pid.is_empty() {
            malformed(io::Error::new(
                io::ErrorKind::InvalidInput,
                "LISTEN_PID is not set",
            ))
        } else {
            ListenFdsError::Empty
        });
    }
    if TAKEN.swap(true, Ordering::AcqRel) {
        return Err(ListenFdsError::AlreadyTaken);
    }
    passed
        .into_iter()
        .map(|(fd, name)| {
            // SAFETY: by the LISTEN_FDS convention these descriptors were
            // passed to this process (LISTEN_PID matched) for it to own,
            // and TAKEN makes sure this process takes them once.
            let adopted = unsafe { adopt_fd(fd) };
            let listener =
                adopted.map_err(|source| ListenFdsError::BadDescriptor { fd, source })?;
            Ok(InheritedListener {
                listener,
                name: named.then_some(name),
            })
        })
        .collect()
}
