//! Sliding windows of counts in fixed steps, for the sending limits: the hour in minute steps,
//! the day in hour steps. A window is a short list of `(step, count)`; its storage is bounded
//! by its length in steps, whatever the counts.
//!
//! The clock may step back (an operator, NTP, a restart on a machine whose clock was wrong).
//! A count in a step later than now is then taken as made now: it still counts, so a step
//! back does not reset the limits, and it leaves the window one window length after the
//! new now, so a step back does not block for ever either.

use serde::{Deserialize, Serialize};

/// The length of a step and how many steps make the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Milliseconds per step.
    pub step_ms: u64,
    /// Steps in the window.
    pub steps: u64,
}

/// Any hour, in minutes.
pub const HOUR: Shape = Shape {
    step_ms: 60_000,
    steps: 60,
};
/// Any 24 hours, in hours.
pub const DAY: Shape = Shape {
    step_ms: 3_600_000,
    steps: 24,
};

/// Counts per step, oldest first, without empty or repeated steps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window(Vec<(u64, u32)>);

impl Window {
    /// Brings the window to `now`: steps later than now's become now's, steps that have left
    /// the window are dropped. True when a count was moved back to now (the clock stepped
    /// back), so that the caller saves it and a restart does not find it in the future again.
    pub fn settle(&mut self, shape: Shape, now_ms: u64) -> bool {
        let now = now_ms / shape.step_ms;
        let mut future = 0u32;
        self.0.retain(|&(step, n)| {
            if step > now {
                future = future.saturating_add(n);
                false
            } else {
                step + shape.steps > now
            }
        });
        if future > 0 {
            self.add_at(now, future);
        }
        future > 0
    }

    /// The counts within the window at `now` (after [`Window::settle`]).
    pub fn total(&self) -> u32 {
        self.0
            .iter()
            .fold(0u32, |sum, &(_, n)| sum.saturating_add(n))
    }

    /// Counts `n` at `now` (the window settled at `now` first).
    pub fn add(&mut self, shape: Shape, now_ms: u64, n: u32) {
        self.settle(shape, now_ms);
        if n > 0 {
            self.add_at(now_ms / shape.step_ms, n);
        }
    }

    fn add_at(&mut self, step: u64, n: u32) {
        match self.0.last_mut() {
            Some((last, count)) if *last == step => *count = count.saturating_add(n),
            _ => self.0.push((step, n)),
        }
    }

    /// When the oldest count leaves the window, Unix ms (for `mta user show`).
    pub fn frees_at(&self, shape: Shape) -> Option<u64> {
        self.0
            .first()
            .map(|&(step, _)| (step + shape.steps) * shape.step_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reference: every event with its time. An event later than now is moved to now
    /// for good; an event whose step is `steps` or more before now's is gone for good (a
    /// later step back of the clock does not bring it back).
    #[derive(Default)]
    struct Model(Vec<u64>);

    impl Model {
        fn settle(&mut self, shape: Shape, now: u64) {
            for t in &mut self.0 {
                if *t > now {
                    *t = now;
                }
            }
            let now_step = now / shape.step_ms;
            self.0
                .retain(|&t| t / shape.step_ms + shape.steps > now_step);
        }
        fn total(&self) -> u32 {
            self.0.len() as u32
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Move the clock by this many ms (may be negative: a step back).
        Tick(i64),
        /// Count one event now.
        Add,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (-7_200_000i64..7_200_000).prop_map(Op::Tick),
            2 => (0i64..200_000).prop_map(Op::Tick),
            4 => Just(Op::Add),
        ]
    }

    proptest! {
        #[test]
        fn window_matches_the_model(
            start in 10_000_000_000u64..20_000_000_000,
            ops in proptest::collection::vec(op(), 0..200),
            day in any::<bool>(),
        ) {
            let shape = if day { DAY } else { HOUR };
            let (mut w, mut m, mut now) = (Window::default(), Model::default(), start);
            for op in ops {
                match op {
                    Op::Tick(d) => now = now.saturating_add_signed(d),
                    Op::Add => {
                        w.add(shape, now, 1);
                        m.settle(shape, now);
                        m.0.push(now);
                    }
                }
                w.settle(shape, now);
                m.settle(shape, now);
                prop_assert_eq!(w.total(), m.total());
                // Bounded storage: never more entries than steps in the window.
                prop_assert!(w.0.len() as u64 <= shape.steps);
            }
        }
    }

    #[test]
    fn a_step_back_neither_resets_nor_blocks_for_ever() {
        let mut w = Window::default();
        let t = 100 * HOUR.step_ms * 60;
        w.add(HOUR, t, 5);
        // The clock goes back a day: the five still count.
        let back = t - 86_400_000;
        w.settle(HOUR, back);
        assert_eq!(w.total(), 5);
        // An hour after the new now they are gone.
        w.settle(HOUR, back + 3_600_000);
        assert_eq!(w.total(), 0);
    }
}
