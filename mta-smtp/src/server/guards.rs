//! What all sessions share to hold off one hostile client: how many sessions each client
//! has open (`limits.max_sessions_per_ip`), and the login blocks, delays and the bound on
//! password checks of [`super::logins`].
//!
//! A client is its IP address, IPv4-mapped IPv6 addresses as IPv4, and IPv6 addresses by
//! their /64 network ([`client_of`]). The session table is bounded by the number of open
//! sessions.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use super::logins::{Logins, PasswordChecks};

/// The shared tables, one per server (`Default` for a new one).
#[derive(Default)]
pub struct Guards {
    /// Open sessions per client.
    pub sessions: Arc<SessionsPerClient>,
    /// Login blocks and delays ([`super::logins`]).
    pub logins: Logins,
    /// The bound on argon2 checks running at once.
    pub password_checks: PasswordChecks,
    /// Message bytes held in memory by sessions receiving DATA.
    pub memory: super::budget::MessageMemory,
}

pub use super::logins::client_of;

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
}
