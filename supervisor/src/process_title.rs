//! Worker process titles: what `ps -o comm`, `top` and `pidof` show, so
//! that an operator tells the workers from the supervisor.
//!
//! The mechanism is the kernel's process name (`prctl(PR_SET_NAME)`, the
//! `comm` of `/proc/PID/comm`), at most 15 bytes: a worker is named
//! `<program> w<index> g<generation>` (`drover w3 g2`), the program's name
//! shortened to fit if need be. The supervisor keeps its own name (the
//! program's), so `pidof drover` and `pkill -x drover` find the
//! supervisor alone, and the pid file's liveness check (which compares
//! names) is unchanged. The command line (`ps aux`, `/proc/PID/cmdline`)
//! is not touched.

use std::ffi::CString;

use crate::worker_context::WorkerIdentity;

/// The kernel keeps this many bytes of a process name.
const NAME_MAX: usize = 15;

/// Names this process as the worker `identity` says. Best effort: a name
/// that cannot be set leaves the program's.
pub(crate) fn set_worker(identity: WorkerIdentity) {
    let program = std::fs::read_to_string("/proc/self/comm").unwrap_or_default();
    let title = worker_title(program.trim_end(), identity.index, identity.generation);
    if let Ok(title) = CString::new(title) {
        let _ = nix::sys::prctl::set_name(&title);
    }
}

/// `<program> w<index> g<generation>`, within `NAME_MAX` bytes: the
/// program's name is what gets shortened.
fn worker_title(program: &str, index: usize, generation: u64) -> String {
    let suffix = format!(" w{index} g{generation}");
    let room = NAME_MAX.saturating_sub(suffix.len());
    let mut name = program.to_owned();
    while name.len() > room {
        name.pop();
    }
    format!("{name}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::worker_title;

    #[test]
    fn a_worker_title_names_its_index_and_generation() {
        assert_eq!(worker_title("drover", 3, 2), "drover w3 g2");
    }

    #[test]
    fn a_long_program_name_is_shortened_to_fit_the_kernels_15_bytes() {
        let title = worker_title("my-long-service", 12, 140);
        assert_eq!(title, "my-lon w12 g140");
        assert_eq!(title.len(), 15);
    }
}
