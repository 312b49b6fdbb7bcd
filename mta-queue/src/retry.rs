//! When to try again: backoff as a pure function of the attempt count, and the lifetime
//! after which a message that still cannot be delivered fails for good.

use std::time::Duration;

/// First retry delay after a deferred attempt.
pub const FIRST_RETRY: Duration = Duration::from_secs(5 * 60);
/// The delay stops doubling here.
pub const MAX_RETRY: Duration = Duration::from_secs(60 * 60);
/// How long a message may stay in the queue (RFC 5321 §4.5.4.1: "at least 4-5 days").
pub const MAX_LIFETIME: Duration = Duration::from_secs(5 * 24 * 60 * 60);
/// When the sender is told once that delivery is delayed.
pub const DELAY_WARNING: Duration = Duration::from_secs(4 * 60 * 60);

/// The delay before attempt `attempts + 1`, given that `attempts` attempts were made:
/// `first`, doubling each time up to `max` (by default 5 min, 10 min, 20 min, 40 min, then
/// 1 h), with `jitter` (0.0..1.0) adding up to 10 % so that messages deferred together do
/// not retry in lock step.
pub fn delay(attempts: u32, first: Duration, max: Duration, jitter: f64) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    let base = first.saturating_mul(1u32 << doublings).min(max);
    base + base.mul_f64(jitter.clamp(0.0, 1.0) * 0.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule() {
        let mins = |m: u64| Duration::from_secs(m * 60);
        let table = [
            (0, mins(5)),
            (1, mins(5)),
            (2, mins(10)),
            (3, mins(20)),
            (4, mins(40)),
            (5, mins(60)),
            (40, mins(60)),
        ];
        for (attempts, want) in table {
            assert_eq!(
                delay(attempts, FIRST_RETRY, MAX_RETRY, 0.0),
                want,
                "attempts {attempts}"
            );
        }
        assert_eq!(
            delay(1, FIRST_RETRY, MAX_RETRY, 1.0),
            Duration::from_secs(330)
        );
        assert_eq!(
            delay(1, FIRST_RETRY, MAX_RETRY, 7.0),
            Duration::from_secs(330)
        );
        assert_eq!(
            delay(3, Duration::from_secs(1), Duration::from_secs(3), 0.0),
            Duration::from_secs(3)
        );
    }
}
