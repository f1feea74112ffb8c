//! When to try again: exponential backoff with jitter.

use std::time::Duration;

/// Exponential backoff with "equal jitter": attempt `n` (from 1) waits
/// between half and all of `min(max, base * 2^(n-1))`. The jitter spreads a
/// fleet of clients that lost the same server, so they do not all knock at
/// the same instant when it comes back; the fixed half keeps each client's
/// wait growing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first attempt's wait.
    pub base: Duration,
    /// No wait is longer than this.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(250),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The wait before attempt `attempt` (1 for the first retry), given a
    /// random number `unit` in `[0, 1)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        let ceiling = self
            .base
            .saturating_mul(1u32 << doublings)
            .min(self.max)
            .max(Duration::from_millis(1));
        let half = ceiling / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_ceiling_and_jitter_stays_within_half_of_it() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let ms = |d: Duration| d.as_millis();
        // (attempt, wait with no jitter, wait with the most jitter)
        let cases = [
            (1, 50, 100),
            (2, 100, 200),
            (3, 200, 400),
            (4, 400, 800),
            (5, 500, 1000),
            (40, 500, 1000),
            (u32::MAX, 500, 1000),
        ];
        for (attempt, low, high) in cases {
            assert_eq!(ms(b.delay(attempt, 0.0)), low, "attempt {attempt}");
            assert_eq!(ms(b.delay(attempt, 1.0)), high, "attempt {attempt}");
            let mid = ms(b.delay(attempt, 0.5));
            assert!(low < mid && mid < high, "attempt {attempt}: {mid}");
        }
    }

    #[test]
    fn attempt_zero_and_out_of_range_randoms_are_tamed() {
        let b = Backoff::default();
        assert_eq!(b.delay(0, 0.0), b.delay(1, 0.0));
        assert_eq!(b.delay(1, -3.0), b.delay(1, 0.0));
        assert_eq!(b.delay(1, 7.0), b.delay(1, 1.0));
        let zero = Backoff {
            base: Duration::ZERO,
            max: Duration::ZERO,
        };
        assert!(zero.delay(3, 0.5) > Duration::ZERO);
    }
}
