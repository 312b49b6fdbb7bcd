//! The queue's clock: when a message is due, and how long it has been in the queue.
//!
//! Neither follows the wall clock, which an operator or NTP may step by hours or days: a
//! forward step would make young messages look old enough to give up on, and a backward
//! step would make every deferred message wait for the step on top of its retry delay.
//!
//! - **Due times** (the schedule, [`Record::next_attempt_ms`](crate::Record)) are on the
//!   *queue clock*: the wall clock read once when the process starts, plus the monotonic
//!   time since ([`now_ms`]). Within one run it never jumps. Across runs it agrees with
//!   itself as far as the wall clock does: due times are kept over a restart. A wall clock
//!   set back while the server was stopped would leave messages waiting too long, so at
//!   start-up a due time beyond `queue.retry_max` is brought back to it; one set forward
//!   makes messages overdue, and those start gradually ([`crate::ramp`]).
//! - **Age** (for `queue.max_lifetime` and `queue.delay_warning`) is the time the message
//!   has actually spent in a running server's queue, kept in the record ([`QueueAge`]) and
//!   carried over restarts. The time the server was stopped does not count, nor does the
//!   time between a message's last write and a crash.
//!
//! Queue ids and the `received_at` date stay on the wall clock: they are what people read.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// This process's queue clock.
struct Run {
    /// The wall clock when the clock was first read, Unix ms (never 0).
    base_ms: u64,
    /// The monotonic time at the same moment.
    start: Instant,
    /// Tells this run's records from those of other runs (never 0).
    id: u64,
}

fn run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| Run {
        base_ms: wall_ms().max(1),
        start: Instant::now(),
        id: rand::random::<u64>().max(1),
    })
}

/// The wall clock, Unix milliseconds (0 before 1970).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The queue clock, in milliseconds: this process's start on the wall clock plus the
/// monotonic time since. Steps of the wall clock do not move it.
pub fn now_ms() -> u64 {
    reading().now_ms
}

/// A due time on the queue clock as a wall-clock time, Unix ms, for people to read.
pub fn to_wall_ms(queue_ms: u64) -> u64 {
    let now = now_ms();
    let wall = wall_ms();
    if queue_ms >= now {
        wall.saturating_add(queue_ms - now)
    } else {
        wall.saturating_sub(now - queue_ms)
    }
}

/// The queue clock read once, with what tells this run apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// [`now_ms`].
    pub now_ms: u64,
    /// When this run's clock started, on the queue clock.
    pub run_start_ms: u64,
    /// This run's id.
    pub run: u64,
}

/// Reads the queue clock.
pub fn reading() -> Reading {
    let run = run();
    let elapsed = run.start.elapsed().as_millis() as u64;
    Reading {
        now_ms: run.base_ms.saturating_add(elapsed),
        run_start_ms: run.base_ms,
        run: run.id,
    }
}

/// How long a message has been in the queue: `queued_ms` up to `at_ms` on the clock of run
/// `run`. Stored in its record; records from before this field existed read as all zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueAge {
    /// Milliseconds in the queue, up to `at_ms`.
    pub queued_ms: u64,
    /// When `queued_ms` was measured, on the queue clock of run `run`.
    pub at_ms: u64,
    /// The run whose clock `at_ms` is on; 0: unknown (a record written before ages were
    /// kept).
    pub run: u64,
}

impl QueueAge {
    /// The age of a message queued at `clock`.
    pub fn new(clock: Reading) -> QueueAge {
        QueueAge {
            queued_ms: 0,
            at_ms: clock.now_ms,
            run: clock.run,
        }
    }

    /// The age at `clock`. Measured in this run: the stored age plus the time since. Last
    /// measured in another run: the stored age plus the time since this run started (the
    /// message has been in the queue all that time).
    pub fn at(&self, clock: Reading) -> Duration {
        let since = if self.run == clock.run {
            clock.now_ms.saturating_sub(self.at_ms)
        } else {
            clock.now_ms.saturating_sub(clock.run_start_ms)
        };
        Duration::from_millis(self.queued_ms.saturating_add(since))
    }

    /// Brings the stored age up to `clock` (before the record is written), and returns it.
    pub fn update(&mut self, clock: Reading) -> Duration {
        let age = self.at(clock);
        *self = QueueAge {
            queued_ms: age.as_millis() as u64,
            at_ms: clock.now_ms,
            run: clock.run,
        };
        age
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(now_ms: u64, run_start_ms: u64, run: u64) -> Reading {
        Reading {
            now_ms,
            run_start_ms,
            run,
        }
    }

    #[test]
    fn age_counts_time_in_running_servers_only() {
        // Queued in run 1 at 1000, attempts at 61 000 and 361 000.
        let mut age = QueueAge::new(at(1_000, 0, 1));
        assert_eq!(age.update(at(61_000, 0, 1)), Duration::from_secs(60));
        assert_eq!(age.update(at(361_000, 0, 1)), Duration::from_secs(360));
        // Run 2 starts with a clock 6 days ahead; 30 s later the age has grown by 30 s.
        let day = 86_400_000;
        let run2 = at(6 * day + 30_000, 6 * day, 2);
        assert_eq!(age.at(run2), Duration::from_secs(390));
        assert_eq!(age.update(run2), Duration::from_secs(390));
        // Run 3 starts with a clock 2 hours behind run 1's.
        let run3 = at(10_000, 0, 3);
        assert_eq!(age.at(run3), Duration::from_secs(400));
        // A record from before ages were kept counts from this run's start.
        assert_eq!(QueueAge::default().at(run3), Duration::from_secs(10));
    }

    #[test]
    fn queue_clock_reads_run_forward() {
        let a = reading();
        let b = reading();
        assert!(b.now_ms >= a.now_ms);
        assert_eq!(a.run, b.run);
        assert!(a.run != 0 && a.run_start_ms <= a.now_ms);
        let later = to_wall_ms(now_ms() + 60_000);
        assert!(later >= wall_ms() + 59_000 && later <= wall_ms() + 61_000);
    }
}
