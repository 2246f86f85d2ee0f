//! Starting a child process: fork, move the listeners to descriptors 3..
//! and the channel socket after them, then exec this binary again (a
//! worker in exec mode, or a new supervisor at a binary upgrade: what is
//! executed is an `ExecImage`, `exec_image.rs`) or run the worker in the
//! forked child (fork mode).
//!
//! Between fork and exec the child only calls async-signal-safe functions
//! and writes into buffers prepared before the fork, so exec mode is sound
//! whatever the parent does. Fork mode runs the worker in the child, which
//! is only sound because the supervisor is single-threaded (no tokio, no
//! thread-spawning library); [`spawn_child`] checks that before forking.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::process::ExitCode;

use drover_shared::env::{
    CONTROL_FD, LISTEN_FDNAMES, LISTEN_FDS, LISTEN_FDS_START as START_VAR, LISTEN_PID,
    TEST_NO_CLOSE_RANGE,
};
use drover_shared::listen_fds::LISTEN_FDS_START;

use crate::control::ControlSocket;

use crate::credentials::Credentials;
use crate::exec_image::{ExecImage, Role, OWN_VARS, SUPERVISOR_ONLY_VARS};
use crate::signals::{SUPERVISOR_SIGNALS, WORKER_IGNORED};
use crate::worker_context::WorkerIdentity;
use nix::libc;
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::unistd::{fork, ForkResult, Pid};

/// The most descriptors handed to one worker (listeners + control).
const MAX_HANDOFF: usize = 64;

/// How the child becomes what it is to be.
pub(crate) enum Launch<'a> {
    /// Exec this image (a worker, or a new supervisor).
    Exec(&'a ExecImage),
    /// Run this worker in the forked child; its result is the exit code.
    Fork(&'a dyn Fn() -> ExitCode),
}

/// Forks a child (a worker, or with [`ExecImage::successor`] a new
/// supervisor) that gets `listeners` at descriptors 3.. (LISTEN_FDS,
/// LISTEN_PID = its own pid, `names` as LISTEN_FDNAMES when given) and its
/// end of `channel` right after them (named by DROVER_CONTROL_FD, or
/// DROVER_UPGRADE_FD for a new supervisor). Every other descriptor of the
/// supervisor is closed in the child: `owned` (the supervisor's own
/// descriptors: its signal pipe, the control sockets' other ends, an
/// upgrade channel) and the listeners' originals, explicitly, plus in exec
/// mode everything else (`close_range`; failing that, close-on-exec, which
/// [`cloexec_inherited`] set at start). A forked worker keeps every other
/// descriptor: state built before the fork is shared. Until the child says
/// it is ready it dies with this process (PR_SET_PDEATHSIG). With `credentials`, the
/// child switches to that user and group first (it exits with code 125,
/// after one line on stderr, if it cannot). Returns the child's pid.
pub(crate) fn spawn_child(
    listeners: &[BorrowedFd<'_>],
    names: Option<&str>,
    channel: &ControlSocket,
    owned: &[RawFd],
    launch: Launch<'_>,
    identity: Option<WorkerIdentity>,
    credentials: Option<&Credentials>,
) -> io::Result<Pid> {
    let mut child = ChildSetup::prepare(listeners, names, channel, owned, &launch, credentials)?;
    if let Some(identity) = identity {
        child.vars.extend(identity.vars());
    }
    let exec = match &launch {
        Launch::Exec(image) => Some(ExecCall::prepare(image, &mut child)),
        Launch::Fork(_) => {
            ensure_single_threaded()?;
            None
        }
    };
    // Every signal blocked across the fork: none reaches the supervisor's
    // handler in the child (it would write to the supervisor's pipe)
    // before the child has reset the dispositions and unblocked them.
    let mask = SigSet::all().thread_swap_mask(SigmaskHow::SIG_SETMASK)?;
    // SAFETY: in exec mode the child runs `exec_child`, which calls only
    // async-signal-safe functions and writes only into memory prepared
    // above. In fork mode the supervisor is single-threaded (checked
    // above), so the child may run ordinary code: no other thread can
    // hold a lock it needs.
    let forked = unsafe { fork() };
    if let Ok(ForkResult::Parent { .. }) | Err(_) = forked {
        mask.thread_set_mask()?;
    }
    match forked? {
        ForkResult::Parent { child } => Ok(child),
        // SAFETY: this is the child of the fork above, and `exec` was
        // prepared from `child` for `image`.
        ForkResult::Child => match (launch, exec) {
            (Launch::Exec(image), Some(exec)) => unsafe { exec_child(&child, image, &exec) },
            (Launch::Fork(run), _) => unsafe { fork_child(&child, run) },
            (Launch::Exec(_), None) => unsafe { libc::_exit(127) },
        },
    }
}

/// What every child needs, prepared before the fork: after it, the exec
/// child may not allocate.
struct ChildSetup<'a> {
    /// The descriptors to hand over, in order: the listeners, then the
    /// channel.
    sources: [RawFd; MAX_HANDOFF],
    count: usize,
    /// Where the handed-over descriptors go: 3 (the LISTEN_FDS convention)
    /// for an exec'd child; for a forked worker, above every descriptor
    /// the supervisor holds, so that the application's state opened before
    /// `drover::run` keeps its numbers (`DROVER_LISTEN_FDS_START` says
    /// where).
    base: RawFd,
    role: Role,
    /// The supervisor's own descriptors, closed in the child.
    owned: Vec<RawFd>,
    /// Exec mode: close every other descriptor with close_range (not in
    /// fork mode, where the process's other descriptors are shared state).
    close_range: bool,
    credentials: Option<&'a Credentials>,
    /// LISTEN_FDS, the channel's variable, LISTEN_FDNAMES.
    vars: Vec<CString>,
    /// `LISTEN_PID=` and room for the child's pid, written in the child.
    listen_pid: Vec<u8>,
    pid_at: usize,
    /// The supervisor's pid: a child whose parent is already another
    /// process has no point going on.
    parent: libc::pid_t,
}

impl<'a> ChildSetup<'a> {
    fn prepare(
        listeners: &[BorrowedFd<'_>],
        names: Option<&str>,
        channel: &ControlSocket,
        owned: &[RawFd],
        launch: &Launch<'_>,
        credentials: Option<&'a Credentials>,
    ) -> io::Result<Self> {
        let count = listeners.len() + 1;
        if count > MAX_HANDOFF {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many listeners",
            ));
        }
        let mut sources = [0 as RawFd; MAX_HANDOFF];
        for (slot, fd) in sources.iter_mut().zip(listeners) {
            *slot = fd.as_raw_fd();
        }
        sources[listeners.len()] = channel.as_raw_fd();
        let (channel_var, role, base) = match launch {
            Launch::Exec(image) => (image.channel_var, image.role, LISTEN_FDS_START),
            Launch::Fork(_) => (CONTROL_FD, Role::Worker, above_every_descriptor()?),
        };
        let channel_fd = base + listeners.len() as RawFd;
        let mut vars = vec![
            CString::new(format!("{LISTEN_FDS}={}", listeners.len())).expect("no NUL"),
            CString::new(format!("{channel_var}={channel_fd}")).expect("no NUL"),
        ];
        if base != LISTEN_FDS_START {
            vars.push(CString::new(format!("{START_VAR}={base}")).expect("no NUL"));
        }
        if let Some(names) = names {
            vars.push(
                CString::new(format!("{LISTEN_FDNAMES}={names}")).map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, "NUL in a socket name")
                })?,
            );
        }
        let mut listen_pid = format!("{LISTEN_PID}=").into_bytes();
        let pid_at = listen_pid.len();
        listen_pid.resize(pid_at + 24, 0);
        Ok(Self {
            sources,
            count,
            base,
            role,
            owned: owned.to_vec(),
            // The test-only variable stands for a kernel (before 5.9) or a
            // seccomp profile without close_range.
            close_range: matches!(launch, Launch::Exec(_))
                && std::env::var_os(TEST_NO_CLOSE_RANGE).is_none(),
            credentials,
            vars,
            listen_pid,
            pid_at,
            // SAFETY: getpid has no preconditions.
            parent: unsafe { libc::getpid() },
        })
    }
}

/// execve's arguments, as pointers into memory that outlives the fork.
struct ExecCall {
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// Where the child writes its pid, inside `ChildSetup::listen_pid`.
    pid_digits: *mut u8,
}

impl ExecCall {
    fn prepare(image: &ExecImage, child: &mut ChildSetup<'_>) -> Self {
        let mut argv: Vec<*const libc::c_char> = image.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = image
            .env
            .iter()
            .chain(&child.vars)
            .map(|e| e.as_ptr())
            .collect();
        envp.push(child.listen_pid.as_ptr().cast());
        envp.push(std::ptr::null());
        Self {
            argv,
            envp,
            // SAFETY: `pid_at` is within `listen_pid` (24 bytes reserved
            // after it), which is never resized after this.
            pid_digits: unsafe { child.listen_pid.as_mut_ptr().add(child.pid_at) },
        }
    }
}

/// The child's side of the handover, common to both modes: signals reset,
/// credentials switched, the parent-death signal set, the supervisor's
/// descriptors closed, the handed-over ones moved to 3.. (in exec mode
/// every other one closed too). Exits the child, after one line on stderr
/// (125: cannot switch user; 127: the parent is gone or a descriptor could
/// not move), rather than run half set up.
///
/// # Safety
///
/// Only in the child of a fork, before anything else runs there; it calls
/// only async-signal-safe functions (sigaction, sigprocmask, setgroups,
/// setgid, setuid, write, prctl, getppid, fcntl, dup2, close, close_range,
/// _exit) and allocates nothing.
unsafe fn enter_child(child: &ChildSetup<'_>) {
    // SAFETY: async-signal-safe calls in a fresh child, as required above.
    unsafe {
        reset_signals(child.role);
        // Before the parent-death signal, which a change of credentials
        // clears.
        if let Some(credentials) = child.credentials {
            if !switch_user(credentials) {
                child_failed(b"drover: a worker cannot switch to --user/--group", None);
                libc::_exit(125);
            }
        }
        // Until it is ready the worker dies with the supervisor (it is not
        // watching its control socket yet); if the supervisor is already
        // gone, so is the point.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != child.parent {
            child_failed(
                b"drover: the supervisor is gone before the child started",
                None,
            );
            libc::_exit(127);
        }
        // The supervisor's own descriptors first (none is handed over), so
        // that a forked worker holds nothing of the supervisor's.
        for &fd in &child.owned {
            libc::close(fd);
        }
        let errno = move_descriptors(&child.sources[..child.count], child.base);
        if errno != 0 {
            child_failed(b"drover: cannot hand the sockets to the child", Some(errno));
            libc::_exit(127);
        }
        // Exec mode: nothing else stays open, whatever this process
        // inherited. Without close_range (Linux < 5.9, a seccomp profile:
        // ENOSYS, EPERM), close-on-exec does the same, set at start
        // (`cloexec_inherited`) on every descriptor not handed over.
        if child.close_range {
            libc::syscall(
                libc::SYS_close_range,
                3 + child.count as u32,
                u32::MAX,
                0u32,
            );
        }
    }
}

/// The exec child: set up, then execve the image with the prepared
/// arguments, its own pid written into `LISTEN_PID`.
///
/// # Safety
///
/// Only in the child of a fork, with `exec` prepared from `child` for
/// `image` before the fork; async-signal-safe calls only (those of
/// [`enter_child`], getpid, execve, write, _exit).
unsafe fn exec_child(child: &ChildSetup<'_>, image: &ExecImage, exec: &ExecCall) -> ! {
    // SAFETY: as required above; `pid_digits` has room for 12 bytes.
    unsafe {
        enter_child(child);
        write_decimal(exec.pid_digits, libc::getpid());
        libc::execve(image.path.as_ptr(), exec.argv.as_ptr(), exec.envp.as_ptr());
        child_failed(
            b"drover: cannot execute the binary for a child",
            Some(*libc::__errno_location()),
        );
        libc::_exit(127)
    }
}

/// The fork child: set up, give it the environment an exec'd worker
/// gets, then run the worker; its result is the exit code.
///
/// # Safety
///
/// Only in the child of a fork of a single-threaded process (no other
/// thread can hold a lock the worker needs).
unsafe fn fork_child(child: &ChildSetup<'_>, run: &dyn Fn() -> ExitCode) -> ! {
    // SAFETY: as required above.
    unsafe { enter_child(child) };
    crate::signals::forget_pipe_after_fork();
    for own in OWN_VARS.iter().chain(&SUPERVISOR_ONLY_VARS) {
        std::env::remove_var(own);
    }
    for var in &child.vars {
        let (name, value) = split_var(var);
        std::env::set_var(name, value);
    }
    // The supervisor took the LISTEN_FDS sockets in this memory; the
    // worker takes its copies at 3.. again.
    drover_shared::listen_fds::release_after_fork();
    std::env::set_var(LISTEN_PID, std::process::id().to_string());
    // A panic must not unwind out of here: the frames above are the
    // supervisor's (its `main`), whose destructors are not the worker's
    // to run.
    let code =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or(ExitCode::FAILURE);
    std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 1 })
}

/// Signal handlers and masks are inherited across fork; the child starts
/// from the defaults with nothing blocked (exec resets handlers, not the
/// mask, so both modes need this), except that a worker ignores the
/// supervisor's signals (`signals::WORKER_IGNORED`: an ignored disposition
/// survives exec, and the worker replaces it with a no-op handler at its
/// start): `pkill -HUP drover`, a Ctrl-C or `systemctl stop` hit the whole
/// process group, and acting on them is the supervisor's job. Every signal
/// is blocked from before the fork until the end of this function.
///
/// # Safety
///
/// Only in the child of a fork before exec: it must stay async-signal-safe
/// (plain system calls, no allocation).
unsafe fn reset_signals(role: Role) {
    for signal in SUPERVISOR_SIGNALS {
        let ignored = role == Role::Worker && WORKER_IGNORED.contains(&signal);
        let disposition = if ignored {
            libc::SIG_IGN
        } else {
            libc::SIG_DFL
        };
        // SAFETY: setting a disposition is async-signal-safe.
        unsafe { libc::signal(signal as libc::c_int, disposition) };
    }
    // SAFETY: an empty set on the stack; sigprocmask is async-signal-safe.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

/// One line on stderr before the child exits, so that its exit code comes
/// with a reason (a binary the worker's user cannot execute, RLIMIT_NPROC
/// after the switch): `text`, then the errno's digits if given, built on
/// the stack and written with write(2) alone.
///
/// # Safety
///
/// Only in the child of a fork before exec: it must stay async-signal-safe
/// (plain system calls, no allocation).
unsafe fn child_failed(text: &[u8], errno: Option<libc::c_int>) {
    let mut line = [0u8; 160];
    let mut len = text.len().min(line.len() - 24);
    line[..len].copy_from_slice(&text[..len]);
    if let Some(errno) = errno {
        line[len..len + 8].copy_from_slice(b": errno ");
        len += 8;
        // SAFETY: 16 bytes left after `len`, and write_decimal writes at
        // most 12.
        unsafe { write_decimal(line.as_mut_ptr().add(len), errno) };
        len += line[len..].iter().position(|b| *b == 0).unwrap_or(0);
    }
    line[len] = b'\n';
    // SAFETY: a buffer on the stack; write(2) is async-signal-safe.
    unsafe { libc::write(2, line.as_ptr().cast(), len + 1) };
}

/// Supplementary groups, group, user: in that order, since once the user
/// is no longer root the others cannot change. All three are plain
/// system calls (async-signal-safe); the lists were built before the fork.
///
/// # Safety
///
/// Only in the child of a fork before exec: it must stay async-signal-safe
/// (plain system calls, no allocation).
unsafe fn switch_user(credentials: &Credentials) -> bool {
    let groups = &credentials.groups;
    // SAFETY: a pointer and length of a live Vec, read by the kernel.
    let grouped = unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } == 0;
    // SAFETY: plain system calls on integers.
    grouped
        && unsafe { libc::setgid(credentials.gid) } == 0
        && unsafe { libc::setuid(credentials.uid) } == 0
}

/// Moves `sources` to descriptors `base`, `base + 1`, ...: first each to a
/// free number above that range (close-on-exec), then onto its place (dup2
/// clears close-on-exec there), so that no source is overwritten before it
/// moved; then closes the temporary copies and the originals outside the
/// range (the ones within it were replaced). Returns 0, or the errno.
///
/// # Safety
///
/// Only in the child of a fork before exec: it must stay async-signal-safe
/// (plain system calls, no allocation).
unsafe fn move_descriptors(sources: &[RawFd], base: RawFd) -> libc::c_int {
    let floor = base + sources.len() as RawFd;
    let mut moved = [0 as RawFd; MAX_HANDOFF];
    // SAFETY: errno is thread-local; reading it is async-signal-safe.
    let errno = || unsafe { *libc::__errno_location() };
    for (slot, &fd) in moved.iter_mut().zip(sources) {
        // SAFETY: fcntl on an int; async-signal-safe.
        *slot = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, floor) };
        if *slot < 0 {
            return errno();
        }
    }
    for (index, &fd) in moved[..sources.len()].iter().enumerate() {
        // SAFETY: dup2 on ints; async-signal-safe.
        if unsafe { libc::dup2(fd, base + index as RawFd) } < 0 {
            return errno();
        }
    }
    // The copies, and every original not replaced by a handed-over one.
    let replaced = |fd: RawFd| (base..floor).contains(&fd);
    for &fd in moved[..sources.len()].iter().chain(sources) {
        if !replaced(fd) {
            // SAFETY: close on an int; async-signal-safe.
            unsafe { libc::close(fd) };
        }
    }
    0
}

/// Writes `pid` in decimal, NUL-terminated, at `at` (at most 12 bytes).
///
/// # Safety
///
/// `at` must point to at least 12 writable bytes.
unsafe fn write_decimal(at: *mut u8, pid: libc::pid_t) {
    let mut digits = [0u8; 12];
    let mut n = pid.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        // SAFETY: at most 11 digits and a NUL in the 24 bytes reserved.
        unsafe { *at.add(i) = digits[len - 1 - i] };
    }
    // SAFETY: as above.
    unsafe { *at.add(len) = 0 };
}

fn split_var(var: &CString) -> (&str, &str) {
    let text = var.to_str().unwrap_or_default();
    text.split_once('=').unwrap_or((text, ""))
}

/// Fork mode runs ordinary code in the child: only sound if no other
/// thread exists in the parent.
fn ensure_single_threaded() -> io::Result<()> {
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    if threads == 1 {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "fork mode needs a single-threaded supervisor, found {threads} threads"
        )))
    }
}

/// At the supervisor's start, once it has adopted its sockets: every
/// descriptor from 3 on becomes close-on-exec. What this process inherited
/// without the flag (from a shell, a parent that leaked it) must not reach
/// an exec'd child even where close_range is missing; the sockets the
/// children get are dup2'd into place, which clears the flag on the copy.
/// (State opened before `drover::run` by Rust's std is close-on-exec
/// already, and a forked worker keeps it either way.)
pub(crate) fn cloexec_inherited() -> io::Result<()> {
    let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= LISTEN_FDS_START)
        .collect();
    for fd in open {
        // SAFETY: fcntl on an int changes only the descriptor's flags; a
        // number not open (the directory's own, closed by now) is EBADF.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

/// The first descriptor number above every one this process holds: where
/// a forked worker's sockets go, so that none of the application's state
/// opened before `drover::run` (at 3, 4, … as a rule) is replaced.
fn above_every_descriptor() -> io::Result<RawFd> {
    let highest = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<RawFd>().ok())
        .max()
        .unwrap_or(2);
    Ok((highest + 1).max(LISTEN_FDS_START))
}
