//! `--pid-file`: the supervisor's pid, for whoever signals it.
//!
//! The supervisor runs as root and the file's directory may be writable by
//! the workers' user, so nothing here follows a symlink put in the file's
//! place: the pid is written to a fresh temporary file (`O_EXCL`,
//! `O_NOFOLLOW`) beside it, which is then renamed over the path (a rename
//! replaces a symlink, never its target). A file that names a live process
//! other than this one means another drover is running: the start is
//! refused rather than the file taken over (gunicorn refuses too).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// Refuses a pid file that names a live process other than this one (a
/// missing, unreadable or stale file is fine: it will be replaced).
pub(crate) fn check_not_running(path: &Path) -> Result<(), String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return Ok(());
    };
    let alive = pid > 1
        && pid != std::process::id() as i32
        && matches!(kill(Pid::from_raw(pid), None), Ok(()) | Err(Errno::EPERM));
    // Only another drover counts: a pid a stale file shares with some
    // other process now, or one written there to keep drover from
    // starting, does not.
    if alive && is_drover(pid) {
        return Err(format!(
            "--pid-file {} names pid {pid}, which is running: another drover? \
             (stop it, or remove the file if that process is not drover)",
            path.display()
        ));
    }
    Ok(())
}

/// Whether process `pid` runs this program: the same command name (what
/// the kernel shows in `comm`; a deploy may have replaced the binary
/// since, so the file itself is not compared).
fn is_drover(pid: i32) -> bool {
    let comm = |pid: &str| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok();
    matches!((comm(&pid.to_string()), comm("self")), (Some(theirs), Some(ours)) if theirs == ours)
}

/// Writes this process's pid to `path`, replacing what is there without
/// following a symlink.
pub(crate) fn write(path: &Path) -> io::Result<()> {
    let pid = std::process::id();
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a pid file needs a name"))?;
    let mut staged_name = std::ffi::OsString::from(".");
    staged_name.push(name);
    staged_name.push(format!(".{pid}.tmp"));
    let staged = path.with_file_name(staged_name);
    let _ = std::fs::remove_file(&staged); // a leftover of a crashed write with our pid
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&staged)
        .and_then(|mut file| file.write_all(format!("{pid}\n").as_bytes()))
        .and_then(|()| std::fs::rename(&staged, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    written
}

/// Removes the file if it still holds this process's pid (after a binary
/// upgrade it holds the new supervisor's).
pub(crate) fn remove_if_ours(path: &Path) {
    let ours =
        std::fs::read_to_string(path).is_ok_and(|pid| pid.trim() == std::process::id().to_string());
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("drover-pidfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_symlink_in_the_files_place_is_replaced_not_followed() {
        let dir = dir("symlink");
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let path = dir.join("drover.pid");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        remove_if_ours(&path);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_a_live_process_of_this_program_refuses_the_start() {
        // (A live drover refusing a second one: tests/tests/misuse.rs.)
        let dir = dir("live");
        let path = dir.join("drover.pid");
        assert!(check_not_running(&path).is_ok(), "no file");
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(&path, format!("{}\n", other.id())).unwrap();
        assert!(check_not_running(&path).is_ok(), "another program's pid");
        std::fs::write(&path, "1\n").unwrap();
        assert!(check_not_running(&path).is_ok(), "pid 1");
        other.kill().unwrap();
        other.wait().unwrap();
        assert!(check_not_running(&path).is_ok(), "a stale pid");
        std::fs::write(&path, format!("{}\n", std::process::id())).unwrap();
        assert!(check_not_running(&path).is_ok(), "our own pid");
        std::fs::write(&path, "garbage").unwrap();
        assert!(check_not_running(&path).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
