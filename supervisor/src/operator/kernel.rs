//! What the kernel says, read at the moment of a `status` or a scrape: a
//! worker's resident memory and CPU time (`/proc/PID/stat`), and a TCP
//! listener's accept queue (`TCP_INFO`).

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::libc;

/// A process's resident memory and CPU time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ProcessUsage {
    pub(crate) rss_bytes: u64,
    /// User and system time.
    pub(crate) cpu_s: f64,
}

/// `pid`'s usage, `None` if it cannot be read (it is gone).
pub(crate) fn process_usage(pid: i32) -> Option<ProcessUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat, clock_ticks()?, page_size()?)
}

/// Fields of `/proc/PID/stat` after the command name (which may hold
/// spaces and parentheses, so it is skipped up to its last `)`): utime
/// and stime are the 14th and 15th fields, rss (pages) the 24th.
fn parse_stat(stat: &str, ticks_per_s: u64, page: u64) -> Option<ProcessUsage> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // `fields[0]` is the 3rd field (state).
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let ticks = field(14)? + field(15)?;
    Some(ProcessUsage {
        rss_bytes: field(24)? * page,
        cpu_s: ticks as f64 / ticks_per_s as f64,
    })
}

fn clock_ticks() -> Option<u64> {
    use nix::unistd::{sysconf, SysconfVar};
    let ticks = sysconf(SysconfVar::CLK_TCK).ok()??;
    u64::try_from(ticks).ok().filter(|t| *t > 0)
}

fn page_size() -> Option<u64> {
    use nix::unistd::{sysconf, SysconfVar};
    u64::try_from(sysconf(SysconfVar::PAGE_SIZE).ok()??).ok()
}

/// A listening TCP socket's accept queue: connections the kernel has
/// completed that no worker has accepted yet, and the queue's limit (the
/// backlog, as the kernel capped it). `None` for a socket that is not a
/// TCP listener (a Unix socket: the kernel has no such figure for it).
pub(crate) fn accept_queue(listener: BorrowedFd<'_>) -> Option<(u32, u32)> {
    let info = tcp_info(listener)?;
    // For a listener, Linux reports the queue in tcpi_unacked and its
    // limit in tcpi_sacked (as `ss -lt` shows them: Recv-Q, Send-Q).
    (info.tcpi_state == TCP_LISTEN).then_some((info.tcpi_unacked, info.tcpi_sacked))
}

/// `TCP_LISTEN` in `tcpi_state` (include/net/tcp_states.h).
const TCP_LISTEN: u8 = 10;

fn tcp_info(socket: BorrowedFd<'_>) -> Option<libc::tcp_info> {
    // SAFETY: tcp_info is plain old data (integers only): all zeros is a
    // valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which is
    // that large, and sets `len`; the descriptor is borrowed open. On a
    // socket that is not TCP it fails and nothing is read.
    let status = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            std::ptr::addr_of_mut!(info).cast(),
            &mut len,
        )
    };
    (status == 0).then_some(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn stat_fields_are_read_past_a_name_with_spaces_and_parentheses() {
        let stat = "42 (drover w1 (x)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 \
                    100 12345678 300 18446744073709551615";
        let usage = parse_stat(stat, 100, 4096).unwrap();
        assert_eq!(usage.rss_bytes, 300 * 4096);
        assert!((usage.cpu_s - 3.0).abs() < 1e-9);
        assert_eq!(parse_stat("garbage", 100, 4096), None);
    }

    #[test]
    fn this_process_has_memory_and_a_listener_has_a_queue() {
        let own = process_usage(std::process::id() as i32).unwrap();
        assert!(own.rss_bytes > 0);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (depth, limit) = accept_queue(listener.as_fd()).unwrap();
        assert_eq!(depth, 0);
        assert!(limit > 0);
        let _waiting = [
            std::net::TcpStream::connect(addr).unwrap(),
            std::net::TcpStream::connect(addr).unwrap(),
        ];
        // The handshake completes in the kernel, perhaps just after connect.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while accept_queue(listener.as_fd()).unwrap().0 < 2 {
            assert!(
                std::time::Instant::now() < until,
                "the queue never showed 2"
            );
            std::thread::yield_now();
        }
        let (unix, _) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(accept_queue(unix.as_fd()), None);
    }
}
