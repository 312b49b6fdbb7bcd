//! Limits shared by all sessions: connections per client address, and failed AUTH attempts
//! per client address and per account (a password-guessing client is cut off for a while,
//! whichever address it comes from). Both tables are bounded, so a flood of addresses
//! cannot grow them without limit.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Sessions one client address may have open at once.
pub const MAX_SESSIONS_PER_IP: usize = 20;
/// How long one session may last in all (a client that trickles bytes cannot hold a slot).
pub const MAX_SESSION_TIME: Duration = Duration::from_secs(30 * 60);
/// Failed AUTH attempts per address or account within [`AUTH_WINDOW`] before a cool-off.
pub const AUTH_FAILURES: usize = 5;
/// The window for [`AUTH_FAILURES`]; the cool-off lasts until the oldest failure leaves it.
pub const AUTH_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Entries kept in each table at most.
const MAX_TRACKED: usize = 10_000;

/// The shared tables, as the server keeps them.
#[derive(Default)]
pub struct Guards {
    /// Open sessions per client address.
    pub per_ip: Arc<PerIp>,
    /// Recent AUTH failures.
    pub auth: AuthFailures,
}

/// Open sessions per client address.
#[derive(Default)]
pub struct PerIp {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One session's place in [`PerIp`]; dropping it frees the place.
pub struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    /// Takes a place for `ip`, or `None` when it has [`MAX_SESSIONS_PER_IP`] already.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut open = self.open.lock().expect("per-ip lock poisoned");
        let n = open.entry(ip).or_insert(0);
        if *n >= MAX_SESSIONS_PER_IP {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().expect("per-ip lock poisoned");
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Recent AUTH failures by key (`ip:…` or `user:…`).
#[derive(Default)]
pub struct AuthFailures {
    recent: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl AuthFailures {
    /// True when `ip` or `login` has had [`AUTH_FAILURES`] failures within the window.
    pub fn locked(&self, ip: IpAddr, login: &str, now: Instant) -> bool {
        let mut recent = self.recent.lock().expect("auth lock poisoned");
        [ip_key(ip), user_key(login)].iter().any(|k| {
            recent.get_mut(k).is_some_and(|times| {
                prune(times, now);
                times.len() >= AUTH_FAILURES
            })
        })
    }

    /// Records one failure for `ip` and for `login`.
    pub fn failed(&self, ip: IpAddr, login: &str, now: Instant) {
        let mut recent = self.recent.lock().expect("auth lock poisoned");
        if recent.len() >= MAX_TRACKED {
            recent.retain(|_, times| {
                prune(times, now);
                !times.is_empty()
            });
            if recent.len() >= MAX_TRACKED {
                // Still full of fresh failures: forget the table rather than grow it; the
                // argon2 cost of every attempt still limits guessing.
                recent.clear();
            }
        }
        for key in [ip_key(ip), user_key(login)] {
            let times = recent.entry(key).or_default();
            prune(times, now);
            if times.len() < AUTH_FAILURES * 2 {
                times.push_back(now);
            }
        }
    }
}

fn ip_key(ip: IpAddr) -> String {
    format!("ip:{ip}")
}

fn user_key(login: &str) -> String {
    format!("user:{}", login.to_lowercase())
}

fn prune(times: &mut VecDeque<Instant>, now: Instant) {
    while times
        .front()
        .is_some_and(|t| now.duration_since(*t) >= AUTH_WINDOW)
    {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_per_ip() {
        let table = Arc::new(PerIp::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let slots: Vec<IpSlot> = (0..MAX_SESSIONS_PER_IP)
            .map(|_| table.enter(ip).unwrap())
            .collect();
        assert!(table.enter(ip).is_none());
        assert!(
            table.enter("192.0.2.2".parse().unwrap()).is_some(),
            "other addresses unaffected"
        );
        drop(slots);
        assert!(table.enter(ip).is_some());
        assert_eq!(
            table.open.lock().unwrap().len(),
            0,
            "freed places leave no entry"
        );
    }

    #[test]
    fn auth_lockout_by_ip_and_by_account_then_cool_off() {
        let t = AuthFailures::default();
        let now = Instant::now();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for i in 0..AUTH_FAILURES {
            assert!(!t.locked(a, "x@example.org", now), "after {i} failures");
            t.failed(a, &format!("user{i}@example.org"), now);
        }
        assert!(
            t.locked(a, "anyone@example.org", now),
            "the address is locked"
        );
        assert!(!t.locked(b, "anyone@example.org", now));
        for _ in 0..AUTH_FAILURES {
            t.failed(b, "Alice@Example.org", now);
        }
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        assert!(
            t.locked(c, "alice@example.org", now),
            "the account is locked from any address"
        );
        assert!(
            !t.locked(a, "x@example.org", now + AUTH_WINDOW),
            "cool-off over"
        );
    }
}
