//! When to start a replacement for a worker that died before it was ready:
//! at once after a single such death; with exponential backoff, capped,
//! while they keep happening (a crash loop: a broken config, a database
//! down); back to at once after a quiet spell. (A worker that had been
//! serving is replaced at once, always: see `CRASH_LOOP_WINDOW` in `supervisor/exits.rs`.)

use std::time::{Duration, Instant};

/// The first delay once deaths repeat.
const FIRST: Duration = Duration::from_millis(100);
/// The longest delay.
const CAP: Duration = Duration::from_secs(10);
/// Deaths further apart than this are not "repeated": a replacement that
/// stayed up this long resets the backoff. Longer than CAP, so that a crash
/// loop stays at the cap instead of starting over.
const QUIET: Duration = Duration::from_secs(30);

/// Repeated worker deaths and the delay they earn.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    repeated: u32,
    last_death: Option<Instant>,
}

impl Backoff {
    /// Records a death at `now`; the delay before the replacement starts.
    pub(crate) fn next_delay(&mut self, now: Instant) -> Duration {
        let repeated = self
            .last_death
            .is_some_and(|last| now.duration_since(last) < QUIET);
        self.last_death = Some(now);
        if !repeated {
            self.repeated = 0;
            return Duration::ZERO;
        }
        self.repeated = self.repeated.saturating_add(1);
        FIRST
            .saturating_mul(1 << (self.repeated - 1).min(16))
            .min(CAP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_death_is_replaced_at_once_then_delays_double_to_the_cap() {
        let mut backoff = Backoff::default();
        let start = Instant::now();
        let delays: Vec<Duration> = (0..10)
            .map(|i| backoff.next_delay(start + Duration::from_millis(i)))
            .collect();
        assert_eq!(delays[0], Duration::ZERO);
        assert_eq!(delays[1], FIRST);
        assert_eq!(delays[2], FIRST * 2);
        assert_eq!(delays[9], CAP);
        // Still dying right after each capped wait: stays at the cap.
        assert_eq!(backoff.next_delay(start + CAP * 2), CAP);
        // After a quiet spell, the next death is replaced at once again.
        assert_eq!(backoff.next_delay(start + QUIET * 3), Duration::ZERO);
    }
}
