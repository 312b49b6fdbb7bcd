//! The budget for message bytes held in memory while sessions receive DATA
//! (`limits.message_memory`): one counter for the whole server, kept over a reload. Each
//! message takes a [`Reservation`] that grows as lines arrive and gives everything back when
//! dropped (queued, refused or the connection lost), so many clients sending large messages
//! at once cannot make the server hold more than the budget.

use std::sync::atomic::{AtomicU64, Ordering};

use mta_core::metrics::METRICS;

/// Message bytes all sessions hold now.
#[derive(Debug, Default)]
pub struct MessageMemory {
    held: AtomicU64,
}

impl MessageMemory {
    /// Bytes reserved now, over all sessions.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// True when nothing more fits under `limit`.
    pub fn is_spent(&self, limit: u64) -> bool {
        self.held() >= limit
    }

    /// An empty reservation against `limit` bytes in all.
    pub fn reserve(&self, limit: u64) -> Reservation<'_> {
        Reservation {
            budget: self,
            limit,
            bytes: 0,
        }
    }

    fn sub(&self, n: u64) {
        let before = self.held.fetch_sub(n, Ordering::Relaxed);
        METRICS.set_message_memory(before - n);
    }
}

/// The bytes one message holds; given back when dropped.
#[derive(Debug)]
pub struct Reservation<'a> {
    budget: &'a MessageMemory,
    limit: u64,
    bytes: u64,
}

impl Reservation<'_> {
    /// Takes `n` more bytes; false (and nothing taken) when they would pass the limit.
    pub fn grow(&mut self, n: u64) -> bool {
        let budget = self.budget;
        let mut held = budget.held.load(Ordering::Relaxed);
        loop {
            match held.checked_add(n) {
                Some(next) if next <= self.limit => {
                    match budget.held.compare_exchange_weak(
                        held,
                        next,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => {
                            METRICS.set_message_memory(next);
                            self.bytes += n;
                            return true;
                        }
                        Err(now) => held = now,
                    }
                }
                _ => return false,
            }
        }
    }

    /// Takes `n` more bytes even past the limit: for the few octets of our own header
    /// fields, so that a message that fitted is never refused for them. Counted all the same.
    pub fn take(&mut self, n: u64) {
        let now = self.budget.held.fetch_add(n, Ordering::Relaxed) + n;
        METRICS.set_message_memory(now);
        self.bytes += n;
    }

    /// Gives back everything taken so far.
    pub fn release(&mut self) {
        if self.bytes > 0 {
            self.budget.sub(self.bytes);
            self.bytes = 0;
        }
    }

    /// Bytes this reservation holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reserves_up_to_the_limit_and_gives_back_on_drop() {
        let budget = MessageMemory::default();
        let mut a = budget.reserve(100);
        assert!(a.grow(60));
        let mut b = budget.reserve(100);
        assert!(!b.grow(41), "60 + 41 passes the limit");
        assert_eq!((b.bytes(), budget.held()), (0, 60));
        assert!(b.grow(40));
        assert!(budget.is_spent(100));
        drop(a);
        assert_eq!(budget.held(), 40);
        b.release();
        assert_eq!((b.bytes(), budget.held()), (0, 0));
        assert!(b.grow(100));
        // Our own header fields are counted even past the limit, and given back too.
        b.take(7);
        assert_eq!((b.bytes(), budget.held()), (107, 107));
        drop(b);
        assert_eq!(budget.held(), 0);
    }

    proptest! {
        /// Against a model that adds up what each reservation holds: a grow succeeds
        /// exactly when the total stays within the limit, and the counter always equals
        /// the sum.
        #[test]
        fn matches_a_sum_of_holdings(
            limit in 0u64..1000,
            ops in proptest::collection::vec((0usize..4, 0u64..400, any::<bool>()), 0..60),
        ) {
            let budget = MessageMemory::default();
            let mut held = vec![budget.reserve(limit), budget.reserve(limit),
                budget.reserve(limit), budget.reserve(limit)];
            let mut model = [0u64; 4];
            for (k, n, release) in ops {
                if release {
                    held[k].release();
                    model[k] = 0;
                } else {
                    let fits = model.iter().sum::<u64>() + n <= limit;
                    prop_assert_eq!(held[k].grow(n), fits);
                    if fits {
                        model[k] += n;
                    }
                }
                prop_assert_eq!(budget.held(), model.iter().sum::<u64>());
                prop_assert_eq!(held[k].bytes(), model[k]);
            }
            drop(held);
            prop_assert_eq!(budget.held(), 0);
        }
    }
}
