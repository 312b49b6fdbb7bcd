//! What all sessions share to hold off one hostile client: how many sessions each client
//! has open (`limits.max_sessions_per_ip`), and recent failed AUTH attempts per client and
//! per account (`limits.auth_failures` within `limits.auth_failure_window`), so a password
//! guesser is cut off whichever account it tries and whichever address it comes from.
//!
//! A client is its IP address, IPv4-mapped IPv6 addresses as IPv4, and IPv6 addresses by
//! their /64 network: one host is usually given a whole /64 and could otherwise take a new
//! address for every attempt. Both tables are bounded: the session table by the number of
//! open sessions, the failure table by [`MAX_TRACKED`] entries (a flood forgets the entries
//! that have been quiet longest first).
//!
//! Time is an argument (`now`), so the tests need no clock.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mta_core::address::Address;

/// Entries the failure table keeps at most (clients and accounts together).
pub const MAX_TRACKED: usize = 10_000;
/// Longer logins are tracked by their first this many octets: no real account name is
/// longer, and a key must not let one client fill memory with 12 KB logins.
const MAX_LOGIN_KEY: usize = 256;

/// The shared tables, one per server (`Default` for a new one).
#[derive(Default)]
pub struct Guards {
    /// Open sessions per client.
    pub sessions: Arc<SessionsPerClient>,
    /// Recent AUTH failures per client and per account.
    pub auth: AuthFailures,
    /// Message bytes held in memory by sessions receiving DATA.
    pub memory: super::budget::MessageMemory,
}

/// The client a peer address counts as: IPv4 as it is (also when mapped into IPv6), IPv6
/// by its /64 network.
pub fn client_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

/// Open sessions per client.
#[derive(Default)]
pub struct SessionsPerClient {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One session's place in [`SessionsPerClient`]; dropping it frees the place.
pub struct ClientSlot {
    table: Arc<SessionsPerClient>,
    client: IpAddr,
}

impl SessionsPerClient {
    /// Takes a place for the client of `ip`, or `None` when it has `max` open already.
    pub fn enter(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        let client = client_of(ip);
        let mut open = lock(&self.open);
        let n = open.entry(client).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            table: self.clone(),
            client,
        })
    }

    /// How many clients have sessions open (for tests and the bound on memory).
    pub fn clients(&self) -> usize {
        lock(&self.open).len()
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.table.open);
        if let Some(n) = open.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.client);
            }
        }
    }
}

/// What a failure is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Client(IpAddr),
    Account(String),
}

/// Why AUTH is refused for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// Too many failures from this client.
    Client,
    /// Too many failures for this account, from anywhere.
    Account,
}

impl Lock {
    /// For the log.
    pub fn name(self) -> &'static str {
        match self {
            Lock::Client => "client address",
            Lock::Account => "account",
        }
    }
}

/// How many failures within which window lock a client or an account
/// (`limits.auth_failures`, `limits.auth_failure_window`).
#[derive(Debug, Clone, Copy)]
pub struct AuthPolicy {
    /// Failures that lock.
    pub failures: u32,
    /// The window they are counted in.
    pub window: Duration,
}

/// Recent AUTH failures: for each key, the times of its last `failures` failures.
#[derive(Default)]
pub struct AuthFailures {
    recent: Mutex<HashMap<Key, VecDeque<Instant>>>,
}

impl AuthFailures {
    /// `Some` when the client of `ip`, or the account `login`, has had `policy.failures`
    /// failures within the window before `now`.
    pub fn locked(
        &self,
        ip: IpAddr,
        login: &str,
        policy: AuthPolicy,
        now: Instant,
    ) -> Option<Lock> {
        let mut recent = lock(&self.recent);
        let mut full = |key: Key| {
            recent.get_mut(&key).is_some_and(|times| {
                prune(times, policy.window, now);
                times.len() >= policy.failures as usize
            })
        };
        if full(Key::Client(client_of(ip))) {
            Some(Lock::Client)
        } else if full(Key::Account(account_key(login))) {
            Some(Lock::Account)
        } else {
            None
        }
    }

    /// Records one failure for the client of `ip` and for the account `login`.
    pub fn failed(&self, ip: IpAddr, login: &str, policy: AuthPolicy, now: Instant) {
        let mut recent = lock(&self.recent);
        for key in [Key::Client(client_of(ip)), Key::Account(account_key(login))] {
            if !recent.contains_key(&key) && recent.len() >= MAX_TRACKED {
                make_room(&mut recent, policy.window, now);
            }
            let times = recent.entry(key).or_default();
            prune(times, policy.window, now);
            times.push_back(now);
            // Only the last `failures` times matter: older ones cannot lock anything longer.
            while times.len() > policy.failures as usize {
                times.pop_front();
            }
        }
    }

    /// Entries tracked (for tests and the bound on memory).
    pub fn tracked(&self) -> usize {
        lock(&self.recent).len()
    }
}

/// Drops expired entries; if the table is still full, the one whose last failure is oldest.
fn make_room(recent: &mut HashMap<Key, VecDeque<Instant>>, window: Duration, now: Instant) {
    recent.retain(|_, times| {
        prune(times, window, now);
        !times.is_empty()
    });
    if recent.len() < MAX_TRACKED {
        return;
    }
    let quietest = recent
        .iter()
        .min_by_key(|(_, times)| times.back().copied())
        .map(|(key, _)| key.clone());
    if let Some(key) = quietest {
        recent.remove(&key);
    }
}

/// The account a login names: the mailbox key when it is an address (so case and IDNA
/// spellings of one account count together), else the login in lower case.
fn account_key(login: &str) -> String {
    let mut key = match Address::parse(login) {
        Ok(address) => address.key(),
        Err(_) => login.to_lowercase(),
    };
    if key.len() > MAX_LOGIN_KEY {
        let mut end = MAX_LOGIN_KEY;
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        key.truncate(end);
    }
    key
}

fn prune(times: &mut VecDeque<Instant>, window: Duration, now: Instant) {
    while times
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= window)
    {
        times.pop_front();
    }
}

/// The tables hold plain counters and times; a panic elsewhere cannot leave them
/// inconsistent, so a poisoned lock is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    const POLICY: AuthPolicy = AuthPolicy {
        failures: 5,
        window: Duration::from_secs(600),
    };

    #[test]
    fn clients_are_addresses_or_ipv6_networks() {
        let table = [
            ("192.0.2.1", "192.0.2.1"),
            ("::ffff:192.0.2.1", "192.0.2.1"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::"),
            ("2001:db8:1:2:ffff::1", "2001:db8:1:2::"),
            ("::1", "::"),
        ];
        for (peer, client) in table {
            assert_eq!(client_of(ip(peer)), ip(client), "{peer}");
        }
    }

    #[test]
    fn sessions_per_client() {
        let table = Arc::new(SessionsPerClient::default());
        let slots: Vec<ClientSlot> = (0..3)
            .map(|_| table.enter(ip("192.0.2.1"), 3).unwrap())
            .collect();
        assert!(table.enter(ip("192.0.2.1"), 3).is_none());
        assert!(
            table.enter(ip("::ffff:192.0.2.1"), 3).is_none(),
            "the same client over IPv6"
        );
        assert!(
            table.enter(ip("192.0.2.2"), 3).is_some(),
            "other clients unaffected"
        );
        let v6: Vec<ClientSlot> = (1..=3)
            .map(|i| table.enter(ip(&format!("2001:db8::{i}")), 3).unwrap())
            .collect();
        assert!(
            table.enter(ip("2001:db8::ffff"), 3).is_none(),
            "one /64 is one client"
        );
        drop((slots, v6));
        assert!(table.enter(ip("192.0.2.1"), 3).is_some());
        assert_eq!(table.clients(), 0, "freed places leave no entry");
    }

    #[test]
    fn lockout_by_client_and_by_account_then_cool_off() {
        let t = AuthFailures::default();
        let now = Instant::now();
        let (a, b, c) = (ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3"));
        for i in 0..5 {
            assert_eq!(t.locked(a, "x@example.org", POLICY, now), None, "after {i}");
            t.failed(a, &format!("user{i}@example.org"), POLICY, now);
        }
        assert_eq!(
            t.locked(a, "anyone@example.org", POLICY, now),
            Some(Lock::Client)
        );
        assert_eq!(t.locked(b, "anyone@example.org", POLICY, now), None);
        // One account from many addresses, in different spellings.
        for (i, login) in [
            "Alice@Example.org",
            "aLiCe@EXAMPLE.ORG",
            "ALICE@example.org",
        ]
        .iter()
        .enumerate()
        {
            t.failed(ip(&format!("198.51.100.{i}")), login, POLICY, now);
        }
        t.failed(b, "alice@example.org", POLICY, now);
        assert_eq!(t.locked(c, "alice@example.org", POLICY, now), None);
        t.failed(b, "alice@example.org", POLICY, now);
        assert_eq!(
            t.locked(c, "alice@example.org", POLICY, now),
            Some(Lock::Account),
            "the account is locked from any address"
        );
        let later = now + POLICY.window;
        assert_eq!(
            t.locked(a, "x@example.org", POLICY, later),
            None,
            "cool-off over"
        );
        assert_eq!(t.locked(c, "alice@example.org", POLICY, later), None);
    }

    #[test]
    fn the_window_slides() {
        let t = AuthFailures::default();
        let start = Instant::now();
        let a = ip("192.0.2.1");
        for i in 0..5 {
            t.failed(a, "x", POLICY, start + Duration::from_secs(60 * i));
        }
        // Locked until the first failure (at 0) is ten minutes old.
        let at = |secs| start + Duration::from_secs(secs);
        assert!(t.locked(a, "y", POLICY, at(599)).is_some());
        assert!(t.locked(a, "y", POLICY, at(600)).is_none());
        // One more failure locks again at once: four are still in the window.
        t.failed(a, "y", POLICY, at(600));
        assert!(t.locked(a, "z", POLICY, at(600)).is_some());
    }

    #[test]
    fn the_table_is_bounded() {
        let t = AuthFailures::default();
        let now = Instant::now();
        let peer = |i: u32| IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        let ms = |i: u32| now + Duration::from_millis(i.into());
        for i in 0..(MAX_TRACKED as u32 - 1) {
            t.failed(peer(i), "x", POLICY, ms(i));
        }
        assert_eq!(t.tracked(), MAX_TRACKED);
        // Expired entries go first.
        let late = now + Duration::from_secs(3600);
        t.failed(ip("192.0.2.1"), "alice@example.org", POLICY, late);
        assert_eq!(t.tracked(), 2);
        // Then the quietest: the account that keeps failing stays tracked.
        let t = AuthFailures::default();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            t.failed(peer(i), "alice@example.org", POLICY, ms(i));
        }
        assert_eq!(t.tracked(), MAX_TRACKED);
        let end = ms(MAX_TRACKED as u32 + 10);
        assert_eq!(
            t.locked(ip("192.0.2.9"), "alice@example.org", POLICY, end),
            Some(Lock::Account)
        );
        let long = "x".repeat(20_000);
        t.failed(ip("192.0.2.1"), &long, POLICY, end);
        assert_eq!(
            t.locked(ip("192.0.2.2"), &"x".repeat(300), POLICY, end),
            None
        );
    }
}
