//! What an accept loop does after `accept()` fails: how long it waits before the next
//! `accept()`, and whether it writes a log line now.
//!
//! `accept()` fails on its own, again and again, while the process is out of descriptors
//! (EMFILE) or the system is (ENFILE, ENOBUFS): the pending connection stays in the kernel's
//! queue, so the next `accept()` fails at once too. Without a pause the loop spins at full
//! CPU, and with a log line per failure it writes millions of lines. So the pause grows
//! (10 ms doubling to 1 s) while the failures go on, and one line is logged at the first
//! failure and then at most one per [`LOG_EVERY`], carrying how many were not logged.
//! A successful accept resets both. Sans-IO: the caller passes the time and does the sleeping.

use std::time::{Duration, Instant};

/// The pause after the first failure in a row.
pub const FIRST_PAUSE: Duration = Duration::from_millis(10);

/// The pause stops doubling here: connections wait in the kernel's queue meanwhile.
pub const MAX_PAUSE: Duration = Duration::from_secs(1);

/// At most one log line per this long while failures go on.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// The failures of one accept loop.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    /// Failures since the last success (0: the last accept worked).
    in_a_row: u32,
    /// When the last line was logged, while failures go on.
    logged_at: Option<Instant>,
    /// Failures since that line that were not logged.
    unlogged: u64,
}

/// What to do after one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfterFailure {
    /// Sleep this long before the next `accept()`.
    pub pause: Duration,
    /// `Some(n)`: log this failure now, saying that `n` earlier ones were not logged.
    /// `None`: do not log it.
    pub log: Option<u64>,
}

impl AcceptBackoff {
    /// A loop whose last accept worked.
    pub fn new() -> AcceptBackoff {
        AcceptBackoff::default()
    }

    /// Records a failed accept at `now`.
    pub fn failed(&mut self, now: Instant) -> AfterFailure {
        let pause = FIRST_PAUSE
            .saturating_mul(1u32 << self.in_a_row.min(16))
            .min(MAX_PAUSE);
        self.in_a_row = self.in_a_row.saturating_add(1);
        let due = match self.logged_at {
            None => true,
            Some(at) => now.saturating_duration_since(at) >= LOG_EVERY,
        };
        let log = if due {
            self.logged_at = Some(now);
            Some(std::mem::take(&mut self.unlogged))
        } else {
            self.unlogged += 1;
            None
        };
        AfterFailure { pause, log }
    }

    /// Records a successful accept: the next failure pauses briefly and is logged. Returns
    /// how many failures since the last line were not logged, so the caller can say so.
    pub fn succeeded(&mut self) -> u64 {
        self.in_a_row = 0;
        self.logged_at = None;
        std::mem::take(&mut self.unlogged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_doubles_to_a_second_and_resets() {
        let mut b = AcceptBackoff::new();
        let t = Instant::now();
        let pauses: Vec<u64> = (0..10)
            .map(|_| b.failed(t).pause.as_millis() as u64)
            .collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        for _ in 0..100 {
            assert_eq!(b.failed(t).pause, MAX_PAUSE);
        }
        b.succeeded();
        assert_eq!(b.failed(t).pause, FIRST_PAUSE);
    }

    /// Reference model: a line is written when none was in the last `LOG_EVERY`, and each
    /// line counts the failures since the previous one; over any run of failures at random
    /// times the lines are at most one per `LOG_EVERY` plus one, and no failure is lost.
    #[test]
    fn log_lines_are_rate_limited_and_count_everything() {
        use rand::Rng;
        let mut rng = rand::rng();
        for _ in 0..200 {
            let start = Instant::now();
            let mut b = AcceptBackoff::new();
            let mut t = start;
            let (mut lines, mut counted, mut failures, mut resets) = (0u64, 0u64, 0u64, 0u64);
            let mut last_line: Option<Instant> = None;
            for _ in 0..rng.random_range(1..2000) {
                t += Duration::from_millis(rng.random_range(0..300));
                if rng.random_bool(0.01) {
                    counted += b.succeeded();
                    last_line = None;
                    resets += 1;
                    continue;
                }
                failures += 1;
                let expect_line = last_line.is_none_or(|at| t - at >= LOG_EVERY);
                match b.failed(t).log {
                    Some(skipped) => {
                        assert!(expect_line);
                        last_line = Some(t);
                        lines += 1;
                        counted += skipped + 1;
                    }
                    None => assert!(!expect_line),
                }
            }
            counted += b.succeeded();
            assert_eq!(counted, failures, "every failure is logged or counted");
            let span = (t - start).as_secs() / LOG_EVERY.as_secs();
            assert!(
                lines <= span + 1 + resets,
                "{lines} lines in {span} periods"
            );
        }
    }
}
