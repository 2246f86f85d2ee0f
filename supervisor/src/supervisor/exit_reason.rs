//! Why workers leave, counted: the operator's `status` and the
//! `drover_worker_exits_total{reason}` series tell a crash from a reload.

/// Why a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitReason {
    /// It died while serving (a crash, `kill -9`, the OOM killer, a
    /// malformed control message).
    Crash,
    /// Killed for missing its heartbeats (`--worker-timeout`).
    Timeout,
    /// It never got ready: it failed, exited or missed `--boot-timeout`.
    BootFailed,
    /// Replaced at its request quota (`--max-requests`).
    MaxRequests,
    /// Replaced by a rolling restart (HUP, `reload`).
    Reload,
    /// Replaced at the operator's word (`recycle`).
    Recycle,
    /// Closed by a scale-down (TTOU, `scale`).
    ScaleDown,
    /// Closed (or killed) because drover stops or handed over.
    Stop,
}

impl ExitReason {
    /// Every reason, in the order status and metrics list them.
    pub(crate) const ALL: [Self; 8] = [
        Self::Crash,
        Self::Timeout,
        Self::BootFailed,
        Self::MaxRequests,
        Self::Reload,
        Self::Recycle,
        Self::ScaleDown,
        Self::Stop,
    ];

    /// Its name in status, metrics labels and log lines.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Crash => "crash",
            Self::Timeout => "timeout",
            Self::BootFailed => "boot_failed",
            Self::MaxRequests => "max_requests",
            Self::Reload => "reload",
            Self::Recycle => "recycle",
            Self::ScaleDown => "scale_down",
            Self::Stop => "stop",
        }
    }
}

/// How many workers left for each reason since this supervisor started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ExitCounts([u64; ExitReason::ALL.len()]);

impl ExitCounts {
    pub(crate) fn count(&mut self, reason: ExitReason) {
        self.0[reason as usize] += 1;
    }

    /// Every reason with its count (zeros included: a series that exists
    /// from the start is one an alert can rate()).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (ExitReason, u64)> + '_ {
        ExitReason::ALL.into_iter().map(|r| (r, self.0[r as usize]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_counted_under_its_own_label() {
        let mut counts = ExitCounts::default();
        counts.count(ExitReason::Crash);
        counts.count(ExitReason::Crash);
        counts.count(ExitReason::Stop);
        let listed: Vec<(&str, u64)> = counts.iter().map(|(r, n)| (r.label(), n)).collect();
        assert_eq!(listed.len(), ExitReason::ALL.len());
        assert!(listed.contains(&("crash", 2)));
        assert!(listed.contains(&("stop", 1)));
        assert!(listed.contains(&("reload", 0)));
        for (at, reason) in ExitReason::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, at, "ALL is in declaration order");
        }
    }
}
