//! How much of what one worker says reaches the supervisor's log: a worker
//! (a bug, or code an attacker controls) must not be able to flood the
//! root supervisor's log through its control socket. A token bucket per
//! worker: a burst, then a steady rate; what is held back is counted and
//! reported once logging resumes.

use std::time::{Duration, Instant};

/// Lines logged at once before the rate applies.
const BURST: u32 = 20;
/// One more line per this much time.
const REFILL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub(super) struct LogBudget {
    tokens: u32,
    refilled_at: Instant,
    /// Lines held back since the last one logged.
    held_back: u64,
}

/// Whether to log a line, and how many were held back before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Log it; `held_back` lines before it were not.
    Log { held_back: u64 },
    /// Hold it back.
    HoldBack,
}

impl LogBudget {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            tokens: BURST,
            refilled_at: now,
            held_back: 0,
        }
    }

    /// Spends a token for one line at `now`, if there is one.
    pub(super) fn spend(&mut self, now: Instant) -> Verdict {
        let earned = now.saturating_duration_since(self.refilled_at).as_nanos() / REFILL.as_nanos();
        if earned > 0 {
            self.tokens = BURST.min(
                self.tokens
                    .saturating_add(earned.min(u128::from(BURST)) as u32),
            );
            self.refilled_at = now;
        }
        if self.tokens == 0 {
            self.held_back += 1;
            return Verdict::HoldBack;
        }
        self.tokens -= 1;
        Verdict::Log {
            held_back: std::mem::take(&mut self.held_back),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_line_a_second_with_the_held_back_counted() {
        let start = Instant::now();
        let mut budget = LogBudget::new(start);
        for _ in 0..BURST {
            assert_eq!(budget.spend(start), Verdict::Log { held_back: 0 });
        }
        for _ in 0..1000 {
            assert_eq!(budget.spend(start), Verdict::HoldBack);
        }
        let later = start + REFILL;
        assert_eq!(budget.spend(later), Verdict::Log { held_back: 1000 });
        assert_eq!(budget.spend(later), Verdict::HoldBack);
        // A long quiet spell refills the burst, no more.
        let much_later = later + REFILL * 1000;
        for _ in 0..BURST {
            assert!(matches!(budget.spend(much_later), Verdict::Log { .. }));
        }
        assert_eq!(budget.spend(much_later), Verdict::HoldBack);
    }
}
