//! What bounds remote delivery over all attempts, and outlives a reload: the connection
//! slots ([`Limits`]: `outbound.max_connections` overall, `outbound.max_per_domain` per
//! destination) and the destinations that stopped answering ([`Suspensions`]).
//!
//! A reload builds a new relay while transactions of the old one still run; both count
//! against the same slots, so a storm of reloads never opens more connections than the
//! limits allow (the slot counts themselves need a restart to change).
//!
//! A destination whose connections fail [`FAILURES`] times in a row is suspended, as
//! Postfix does with a dead destination: its messages are deferred with the last reason
//! without connecting, except one probe attempt at a time, at most one per probe interval
//! (`queue.retry_first`). A probe that connects ends the suspension. So a dead destination
//! with many queued messages costs O(1) connection attempts per retry round, and the
//! attempts that would have waited on it for minutes end at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mta_core::address::Domain;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Failed connections in a row that suspend a destination.
pub const FAILURES: u32 = 3;

/// Destinations remembered at once; beyond this, a new destination's failures are not
/// counted (it is then simply not suspended), so a flood of dead domains costs bounded
/// memory.
const MAX_DESTINATIONS: usize = 10_000;

/// The connection slots shared by every relay a reload builds.
pub struct Limits {
    all: Arc<Semaphore>,
    /// One semaphore per destination domain, in a map that drops unused ones.
    per_domain: super::slots::DomainSlots,
}

/// A connection slot held for one attempt: one for its domain and one of the overall ones.
pub struct Slot {
    _domain: OwnedSemaphorePermit,
    _all: OwnedSemaphorePermit,
}

impl Limits {
    /// `max_connections` overall, `max_per_domain` for each destination domain.
    pub fn new(max_connections: usize, max_per_domain: usize) -> Limits {
        Limits {
            all: Arc::new(Semaphore::new(max_connections)),
            per_domain: super::slots::DomainSlots::new(max_per_domain),
        }
    }

    /// Waits for a slot for `domain`. The domain's own slot comes first, and only then one
    /// of the overall ones: a domain whose slots are all busy (a host that never answers)
    /// waits without holding an overall slot that other domains need. `None` when the
    /// domain's slots stayed busy for `patience`: the attempt then gives way to the others
    /// the scheduler has waiting, instead of holding one of its attempts.
    pub async fn acquire(&self, domain: &Domain, patience: Duration) -> Option<Slot> {
        let slots = self.per_domain.of(domain);
        let domain = tokio::time::timeout(patience, slots.acquire_owned())
            .await
            .ok()?
            .expect("never closed");
        let all = self
            .all
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        Some(Slot {
            _domain: domain,
            _all: all,
        })
    }

    /// Overall slots free now.
    pub fn available(&self) -> usize {
        self.all.available_permits()
    }
}

/// What [`Suspensions::admit`] says about an attempt.
pub enum Admit {
    /// Not suspended: connect as usual.
    Go,
    /// Suspended, and this attempt is the probe; dropping the guard ends the probe.
    Probe(Probe),
    /// Suspended: defer without connecting, with this reason.
    Skip(String),
}

/// The destinations whose connections failed lately.
#[derive(Default)]
pub struct Suspensions {
    map: Mutex<HashMap<String, Dead>>,
}

struct Dead {
    failures: u32,
    reason: String,
    next_probe: Instant,
    probing: bool,
}

/// The one probe of a suspended destination; when it ends without a connection result
/// (the attempt was cancelled or timed out), the next one waits a probe interval.
pub struct Probe {
    map: Arc<Suspensions>,
    destination: String,
    interval: Duration,
}

impl Drop for Probe {
    fn drop(&mut self) {
        let mut map = self.map.map.lock().expect("suspension lock poisoned");
        if let Some(dead) = map.get_mut(&self.destination)
            && dead.probing
        {
            dead.probing = false;
            dead.next_probe = Instant::now() + self.interval;
        }
    }
}

impl Suspensions {
    /// Whether an attempt for `destination` may connect now.
    pub fn admit(self: &Arc<Self>, destination: &str, interval: Duration, now: Instant) -> Admit {
        let mut map = self.map.lock().expect("suspension lock poisoned");
        let Some(dead) = map.get_mut(destination) else {
            return Admit::Go;
        };
        if dead.failures < FAILURES {
            return Admit::Go;
        }
        if dead.probing || now < dead.next_probe {
            return Admit::Skip(format!(
                "{} (not tried: {destination} is suspended after {} failed connections in \
                 a row; one attempt probes it every {})",
                dead.reason,
                dead.failures,
                human(interval)
            ));
        }
        dead.probing = true;
        Admit::Probe(Probe {
            map: self.clone(),
            destination: destination.to_string(),
            interval,
        })
    }

    /// A connection to `destination` failed with `reason`.
    pub fn failed(&self, destination: &str, reason: &str, interval: Duration, now: Instant) {
        let mut map = self.map.lock().expect("suspension lock poisoned");
        if !map.contains_key(destination) && map.len() >= MAX_DESTINATIONS {
            map.retain(|_, d| d.failures >= FAILURES);
            if map.len() >= MAX_DESTINATIONS {
                return;
            }
        }
        let dead = map.entry(destination.to_string()).or_insert(Dead {
            failures: 0,
            reason: String::new(),
            next_probe: now,
            probing: false,
        });
        dead.failures = dead.failures.saturating_add(1);
        dead.reason = reason.to_string();
        if dead.failures >= FAILURES {
            dead.next_probe = now + interval;
            dead.probing = false;
        }
    }

    /// A connection to `destination` opened: it is alive.
    pub fn succeeded(&self, destination: &str) {
        let mut map = self.map.lock().expect("suspension lock poisoned");
        map.remove(destination);
    }

    /// Whether `destination` is suspended now.
    pub fn is_suspended(&self, destination: &str) -> bool {
        let map = self.map.lock().expect("suspension lock poisoned");
        map.get(destination).is_some_and(|d| d.failures >= FAILURES)
    }
}

fn human(d: Duration) -> String {
    match d.as_secs() {
        s if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: Duration = Duration::from_secs(60);

    #[test]
    fn suspended_after_failures_in_a_row_then_one_probe_at_a_time() {
        let s = Arc::new(Suspensions::default());
        let t0 = Instant::now();
        for _ in 0..FAILURES - 1 {
            s.failed("dead.test", "4.4.1 refused", I, t0);
            assert!(matches!(s.admit("dead.test", I, t0), Admit::Go));
        }
        s.failed("dead.test", "4.4.1 refused", I, t0);
        match s.admit("dead.test", I, t0) {
            Admit::Skip(why) => assert!(why.starts_with("4.4.1 refused (not tried"), "{why}"),
            _ => panic!("suspended"),
        }
        // After the interval, one probe; others skip while it runs.
        let later = t0 + I;
        let probe = match s.admit("dead.test", I, later) {
            Admit::Probe(p) => p,
            _ => panic!("a probe"),
        };
        assert!(matches!(s.admit("dead.test", I, later), Admit::Skip(_)));
        // A failed probe renews the suspension.
        s.failed("dead.test", "4.4.1 still refused", I, later);
        drop(probe);
        assert!(matches!(s.admit("dead.test", I, later), Admit::Skip(_)));
        // A probe that connects ends it.
        let probe = match s.admit("dead.test", I, later + I + I) {
            Admit::Probe(p) => p,
            _ => panic!("a probe"),
        };
        s.succeeded("dead.test");
        drop(probe);
        assert!(matches!(s.admit("dead.test", I, later), Admit::Go));
        assert!(matches!(s.admit("other.test", I, later), Admit::Go));
    }

    #[test]
    fn a_success_between_failures_resets_the_count() {
        let s = Arc::new(Suspensions::default());
        let t0 = Instant::now();
        for _ in 0..10 {
            s.failed("flaky.test", "x", I, t0);
            s.failed("flaky.test", "x", I, t0);
            s.succeeded("flaky.test");
        }
        assert!(!s.is_suspended("flaky.test"));
    }

    #[test]
    fn a_probe_dropped_unfinished_frees_the_next_one_after_an_interval() {
        let s = Arc::new(Suspensions::default());
        let t0 = Instant::now();
        for _ in 0..FAILURES {
            s.failed("d.test", "x", I, t0);
        }
        let Admit::Probe(p) = s.admit("d.test", I, t0 + I) else {
            panic!("probe")
        };
        drop(p);
        assert!(matches!(s.admit("d.test", I, t0 + I), Admit::Skip(_)));
        assert!(matches!(
            s.admit("d.test", I, Instant::now() + I + I),
            Admit::Probe(_)
        ));
    }

    #[tokio::test]
    async fn a_busy_domain_waits_without_holding_an_overall_slot() {
        let limits = Arc::new(Limits::new(2, 1));
        let slow = Domain::parse("slow.test").unwrap();
        let long = Duration::from_secs(3600);
        let _held = limits.acquire(&slow, long).await;
        // Many attempts queue for the busy domain...
        let mut waiting = Vec::new();
        for _ in 0..10 {
            let (l, d) = (limits.clone(), slow.clone());
            waiting.push(tokio::spawn(async move { l.acquire(&d, long).await }));
        }
        tokio::task::yield_now().await;
        // ...and another domain still gets the overall slot that is left.
        assert_eq!(limits.available(), 1);
        let other = Domain::parse("other.test").unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), limits.acquire(&other, long)).await;
        assert!(matches!(got, Ok(Some(_))), "another domain was starved");
        // A domain whose slots stay busy gives up after its patience.
        let gave_up = limits.acquire(&slow, Duration::from_millis(10)).await;
        assert!(gave_up.is_none());
        for w in waiting {
            w.abort();
        }
    }
}
