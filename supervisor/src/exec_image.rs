//! What a child started by exec runs: this binary (as it is on disk now),
//! its arguments, and the environment it gets, with the variables that
//! belong to one process taken out. Built once, before any fork.

use std::ffi::{CString, OsString};
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use drover_shared::env::{
    CONTROL_FD, LISTEN_FDNAMES, LISTEN_FDS, LISTEN_FDS_START, LISTEN_PID, NOTIFY_SOCKET,
    OWNED_SOCKETS, UPGRADE_FD, UPGRADE_GENERATION, UPGRADE_WORKERS, WATCHDOG_PID, WATCHDOG_USEC,
    WORKER_GENERATION, WORKER_INDEX,
};

/// What a child started by exec runs: this binary (as it is on disk now),
/// its arguments, and the environment it gets.
pub(crate) struct ExecImage {
    pub(crate) path: CString,
    pub(crate) argv: Vec<CString>,
    pub(crate) env: Vec<CString>,
    /// The variable naming the child's end of its channel.
    pub(crate) channel_var: &'static str,
    pub(crate) role: Role,
}

/// Who the child is to its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Worker,
    /// A new supervisor taking over (binary upgrade).
    Successor,
}

/// Variables that belong to one process and are never passed on as they
/// are: the sockets' and channels' (set afresh per child), systemd's
/// watchdog pid.
pub(crate) const OWN_VARS: [&str; 12] = [
    LISTEN_FDS,
    LISTEN_PID,
    LISTEN_FDNAMES,
    LISTEN_FDS_START,
    CONTROL_FD,
    UPGRADE_FD,
    OWNED_SOCKETS,
    UPGRADE_WORKERS,
    UPGRADE_GENERATION,
    WATCHDOG_PID,
    WORKER_INDEX,
    WORKER_GENERATION,
];

/// systemd's notification variables: the supervisor's alone, never a
/// worker's (a new supervisor gets them).
pub(crate) const SUPERVISOR_ONLY_VARS: [&str; 2] = [NOTIFY_SOCKET, WATCHDOG_USEC];

impl ExecImage {
    /// This process's binary, by the path it was started as (`argv[0]`,
    /// made absolute against the working directory or found on PATH, but
    /// not resolved through symlinks): what a deploy replaces, whether by
    /// renaming a new file over it or by pointing a `current -> release-N`
    /// link elsewhere. Resolved once at startup. Falls back to the running
    /// binary's own link when `argv[0]` leads nowhere, or to another file
    /// than the one running (a name given with `exec -a`).
    pub(crate) fn current_binary() -> io::Result<PathBuf> {
        let started_as = std::env::args_os().next().map(PathBuf::from);
        let found = started_as.and_then(|path| {
            if path.components().count() > 1 {
                return std::path::absolute(&path).ok();
            }
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|dir| dir.join(&path))
                .find(|candidate| candidate.is_file())
                .and_then(|candidate| std::path::absolute(candidate).ok())
        });
        let running = std::fs::metadata("/proc/self/exe")?;
        let is_running = |path: &PathBuf| {
            std::fs::metadata(path)
                .is_ok_and(|m| m.dev() == running.dev() && m.ino() == running.ino())
        };
        match found.filter(is_running) {
            Some(path) => Ok(path),
            None => std::env::current_exe(),
        }
    }

    /// A worker: `binary` (whatever is at that path when the worker
    /// starts), this process's arguments, and its environment without
    /// systemd's notification variables (those are the supervisor's alone).
    pub(crate) fn worker(binary: &Path) -> io::Result<Self> {
        Self::build(
            binary,
            &SUPERVISOR_ONLY_VARS,
            Vec::new(),
            CONTROL_FD,
            Role::Worker,
        )
    }

    /// A new supervisor for a binary upgrade: the binary on disk now, the
    /// same arguments and environment (systemd's notification socket
    /// included: it is to tell systemd its pid), which inherited sockets'
    /// files it will own, how many workers to run, and the generation they
    /// start in.
    pub(crate) fn successor(
        binary: &Path,
        owned_sockets: &[usize],
        workers: usize,
        generation: u64,
    ) -> io::Result<Self> {
        let mut extra = vec![
            format!("{UPGRADE_WORKERS}={workers}"),
            format!("{UPGRADE_GENERATION}={generation}"),
        ];
        if !owned_sockets.is_empty() {
            let list: Vec<String> = owned_sockets.iter().map(ToString::to_string).collect();
            extra.push(format!("{OWNED_SOCKETS}={}", list.join(",")));
        }
        Self::build(binary, &[], extra, UPGRADE_FD, Role::Successor)
    }

    fn build(
        binary: &Path,
        not_passed: &[&str],
        extra: Vec<String>,
        channel_var: &'static str,
        role: Role,
    ) -> io::Result<Self> {
        let cstring = |s: OsString| {
            CString::new(s.into_vec())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in an argument"))
        };
        let argv = std::env::args_os()
            .map(cstring)
            .collect::<io::Result<_>>()?;
        let env = std::env::vars_os()
            .filter(|(name, _)| !OWN_VARS.iter().chain(not_passed).any(|own| name == own))
            .map(|(name, value)| {
                let mut entry = name;
                entry.push("=");
                entry.push(value);
                entry
            })
            .chain(extra.into_iter().map(OsString::from))
            .map(cstring)
            .collect::<io::Result<_>>()?;
        Ok(Self {
            path: cstring(binary.as_os_str().to_owned())?,
            argv,
            env,
            channel_var,
            role,
        })
    }
}
