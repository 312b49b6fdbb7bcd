//! How a restart starts what was overdue: gradually.
//!
//! Every queued message keeps its due time over a restart (the schedule is on disk), so a
//! message deferred for an hour is still tried in an hour, not at start-up. What was already
//! due when the server started (it was stopped past messages' due times, or an attempt was
//! cut short by a crash) starts at most [`BURST`] at once and then [`PER_SECOND`] a second,
//! oldest first: N overdue messages start over about N / [`PER_SECOND`] seconds instead of
//! all at once. Mail that arrives or becomes due after the start is not held back by this.

use std::time::Duration;

/// Overdue messages started at once when the server starts.
pub const BURST: u64 = 100;

/// Overdue messages started per second after the first [`BURST`].
pub const PER_SECOND: u64 = 100;

/// The start-up ramp of one scheduler run.
#[derive(Debug, Clone)]
pub struct Ramp {
    /// The queue clock when the scheduler started: entries due at or before it were
    /// overdue then.
    start_ms: u64,
    /// Overdue entries started so far.
    started: u64,
    /// False once no overdue entry is left: the ramp no longer looks at anything.
    active: bool,
}

impl Ramp {
    /// The ramp of a scheduler started at `start_ms` on the queue clock.
    pub fn new(start_ms: u64) -> Ramp {
        Ramp {
            start_ms,
            started: 0,
            active: true,
        }
    }

    /// Entries due at or before this were overdue at the start, and go through the ramp.
    pub fn start_ms(&self) -> u64 {
        self.start_ms
    }

    /// Whether overdue entries may remain.
    pub fn active(&self) -> bool {
        self.active
    }

    /// Ends the ramp: the earliest entry in the schedule is `first_due` (`None`: empty),
    /// and when that is after the start, every overdue entry has been started.
    pub fn observe(&mut self, first_due: Option<u64>) {
        if first_due.is_none_or(|due| due > self.start_ms) {
            self.active = false;
        }
    }

    /// How many more overdue entries may start at `now_ms` (queue clock).
    pub fn allowance(&self, now_ms: u64) -> u64 {
        let elapsed = now_ms.saturating_sub(self.start_ms);
        let total = BURST.saturating_add(elapsed.saturating_mul(PER_SECOND) / 1000);
        total.saturating_sub(self.started)
    }

    /// Counts an entry due at `due_ms` that was started.
    pub fn started(&mut self, due_ms: u64) {
        if due_ms <= self.start_ms {
            self.started += 1;
        }
    }

    /// How long the scheduler sleeps while overdue entries wait for the ramp: a tenth of
    /// a second, in which the allowance grows by [`PER_SECOND`] / 10.
    pub fn wait(&self) -> Duration {
        Duration::from_millis(100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn burst_then_rate() {
        let mut r = Ramp::new(1_000);
        assert_eq!(r.allowance(1_000), BURST);
        for _ in 0..BURST {
            r.started(900);
        }
        assert_eq!(r.allowance(1_000), 0);
        // Entries due after the start are not counted.
        r.started(1_001);
        assert_eq!(r.allowance(1_000), 0);
        assert_eq!(r.allowance(2_000), PER_SECOND);
        r.observe(Some(1_000));
        assert!(r.active());
        r.observe(Some(1_001));
        assert!(!r.active());
        let mut empty = Ramp::new(5);
        empty.observe(None);
        assert!(!empty.active());
    }

    proptest! {
        /// Against the plain statement: by time t after the start, at most BURST + t × rate
        /// overdue entries have started, and a ramp that starts whatever it is allowed
        /// starts exactly that many.
        #[test]
        fn never_more_than_burst_plus_rate(steps in proptest::collection::vec(0u64..5_000, 1..50)) {
            let start = 1_000_000u64;
            let mut r = Ramp::new(start);
            let mut now = start;
            let mut started = 0u64;
            for step in steps {
                now += step;
                let n = r.allowance(now);
                for _ in 0..n {
                    r.started(start - 1);
                }
                started += n;
                let bound = BURST + (now - start) * PER_SECOND / 1000;
                prop_assert_eq!(started, bound);
                prop_assert_eq!(r.allowance(now), 0);
            }
        }
    }
}
