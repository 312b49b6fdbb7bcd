//! What all sessions share to hold off one hostile client: how many sessions each client
//! and each network has open (`limits.max_sessions_per_ip`, `limits.max_sessions_per_network`),
//! and the login blocks, delays and the bound on password checks of [`super::logins`].
//!
//! A client is its IP address, IPv4-mapped IPv6 addresses as IPv4, and IPv6 addresses by
//! their /64 network ([`client_of`]): one host is usually given a whole /64 and could
//! otherwise take a new address for every session. A network is an IPv4 /24 or an IPv6 /48
//! (what one site is usually given), so a hostile network cannot take every session with
//! many addresses. A block is an IPv4 /16 or an IPv6 /32 (what one provider is usually
//! given: a /32 holds 65,536 /48s, so without it 20 /48s of one holder fill 1,000 sessions);
//! its cap is wider ([`SessionCaps::per_block`]). The session table is bounded by the number
//! of open sessions.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
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

/// The network a peer address counts in: IPv4 (also when mapped into IPv6) by its /24,
/// IPv6 by its /48.
pub fn network_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & !0xff)),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 80) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

/// The block a peer address counts in: IPv4 (also when mapped into IPv6) by its /16, IPv6 by
/// its /32.
pub fn block_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & !0xffff)),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 96) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

/// How many sessions one client, one network and one block may have open at once.
#[derive(Debug, Clone, Copy)]
pub struct SessionCaps {
    /// Per client ([`client_of`]).
    pub per_client: usize,
    /// Per network ([`network_of`]).
    pub per_network: usize,
    /// Per block ([`block_of`]).
    pub per_block: usize,
}

impl SessionCaps {
    /// The caps the limits give: `per_client` and `per_network` as configured, and a block
    /// gets a fifth of `max_sessions` (200 of the default 1,000), but never less than one
    /// network: one provider's /32 or /16 can then hold at most a fifth of all sessions, and
    /// still ten times a network's 50 is room for a large sender's many servers.
    pub fn from_limits(max_sessions: usize, per_client: usize, per_network: usize) -> SessionCaps {
        SessionCaps {
            per_client,
            per_network,
            per_block: (max_sessions / 5).max(per_network),
        }
    }
}

/// Why a session was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crowded {
    /// Its client has [`SessionCaps::per_client`] open.
    Client,
    /// Its network has [`SessionCaps::per_network`] open.
    Network,
    /// Its block has [`SessionCaps::per_block`] open.
    Block,
}

/// Open sessions per client and per network.
#[derive(Default)]
pub struct SessionsPerClient {
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    clients: HashMap<IpAddr, usize>,
    networks: HashMap<IpAddr, usize>,
    blocks: HashMap<IpAddr, usize>,
}

/// One session's place in [`SessionsPerClient`]; dropping it frees the place.
pub struct ClientSlot {
    table: Arc<SessionsPerClient>,
    client: IpAddr,
    network: IpAddr,
    block: IpAddr,
}

impl SessionsPerClient {
    /// Takes a place for `ip` in its client, its network and its block, or says which one is
    /// full (the narrowest first).
    ///
    /// # Errors
    /// [`Crowded`] when the client, the network or the block has its cap open already
    /// (nothing taken).
    pub fn enter(self: &Arc<Self>, ip: IpAddr, caps: SessionCaps) -> Result<ClientSlot, Crowded> {
        let (client, network, block) = (client_of(ip), network_of(ip), block_of(ip));
        let mut open = lock(&self.open);
        if open.clients.get(&client).copied().unwrap_or(0) >= caps.per_client {
            return Err(Crowded::Client);
        }
        if open.networks.get(&network).copied().unwrap_or(0) >= caps.per_network {
            return Err(Crowded::Network);
        }
        if open.blocks.get(&block).copied().unwrap_or(0) >= caps.per_block {
            return Err(Crowded::Block);
        }
        *open.clients.entry(client).or_insert(0) += 1;
        *open.networks.entry(network).or_insert(0) += 1;
        *open.blocks.entry(block).or_insert(0) += 1;
        Ok(ClientSlot {
            table: self.clone(),
            client,
            network,
            block,
        })
    }

    /// How many clients have sessions open (for tests and the bound on memory).
    pub fn clients(&self) -> usize {
        lock(&self.open).clients.len()
    }

    /// How many networks have sessions open (for tests and the bound on memory).
    pub fn networks(&self) -> usize {
        lock(&self.open).networks.len()
    }

    /// How many blocks have sessions open (for tests and the bound on memory).
    pub fn blocks(&self) -> usize {
        lock(&self.open).blocks.len()
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.table.open);
        release(&mut open.clients, self.client);
        release(&mut open.networks, self.network);
        release(&mut open.blocks, self.block);
    }
}

fn release(counts: &mut HashMap<IpAddr, usize>, key: IpAddr) {
    if let Some(n) = counts.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(&key);
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

    const THREE: SessionCaps = SessionCaps {
        per_client: 3,
        per_network: 1000,
        per_block: 1000,
    };

    #[test]
    fn sessions_per_client() {
        let table = Arc::new(SessionsPerClient::default());
        let slots: Vec<ClientSlot> = (0..3)
            .map(|_| table.enter(ip("192.0.2.1"), THREE).unwrap())
            .collect();
        assert_eq!(
            table.enter(ip("192.0.2.1"), THREE).err(),
            Some(Crowded::Client)
        );
        assert!(
            table.enter(ip("::ffff:192.0.2.1"), THREE).is_err(),
            "the same client over IPv6"
        );
        assert!(
            table.enter(ip("192.0.2.2"), THREE).is_ok(),
            "other clients unaffected"
        );
        let v6: Vec<ClientSlot> = (1..=3)
            .map(|i| table.enter(ip(&format!("2001:db8::{i}")), THREE).unwrap())
            .collect();
        assert!(
            table.enter(ip("2001:db8::ffff"), THREE).is_err(),
            "one /64 is one client"
        );
        drop((slots, v6));
        assert!(table.enter(ip("192.0.2.1"), THREE).is_ok());
        assert_eq!(table.clients(), 0, "freed places leave no entry");
        assert_eq!(table.networks(), 0, "freed places leave no entry");
    }

    #[test]
    fn networks_are_ipv4_24_and_ipv6_48() {
        let table = [
            ("192.0.2.1", "192.0.2.0"),
            ("192.0.2.255", "192.0.2.0"),
            ("::ffff:198.51.100.7", "198.51.100.0"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1::"),
            ("2001:db8:1:ffff::1", "2001:db8:1::"),
            ("::1", "::"),
        ];
        for (peer, network) in table {
            assert_eq!(network_of(ip(peer)), ip(network), "{peer}");
        }
    }

    #[test]
    fn blocks_are_ipv4_16_and_ipv6_32() {
        let table = [
            ("192.0.2.1", "192.0.0.0"),
            ("192.0.255.255", "192.0.0.0"),
            ("::ffff:198.51.100.7", "198.51.0.0"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8::"),
            ("2001:db8:ffff:ffff::1", "2001:db8::"),
            ("::1", "::"),
        ];
        for (peer, block) in table {
            assert_eq!(block_of(ip(peer)), ip(block), "{peer}");
        }
    }

    /// One holder of an IPv6 /32 has 65,536 /48s: the block cap stops it short of every
    /// session, while another block still gets in.
    #[test]
    fn many_networks_of_one_block_meet_the_block_cap() {
        let caps = SessionCaps::from_limits(1000, 20, 50);
        assert_eq!(caps.per_block, 200);
        let table = Arc::new(SessionsPerClient::default());
        let mut slots = Vec::new();
        for site in 0..1000u16 {
            let a = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, site, 0, 0, 0, 0, 1));
            match table.enter(a, caps) {
                Ok(slot) => slots.push(slot),
                Err(c) => {
                    assert_eq!(c, Crowded::Block, "{a}");
                    break;
                }
            }
        }
        assert_eq!(slots.len(), 200);
        assert!(table.enter(ip("2001:db9::1"), caps).is_ok(), "another /32");
        let v4: Vec<ClientSlot> = (0..=255u8)
            .flat_map(|n| (1..=5u8).map(move |h| Ipv4Addr::new(198, 51, n, h)))
            .map_while(|a| table.enter(IpAddr::V4(a), caps).ok())
            .collect();
        assert_eq!(v4.len(), 200, "one IPv4 /16");
        assert_eq!(
            table.enter(ip("198.51.200.1"), caps).err(),
            Some(Crowded::Block)
        );
        assert!(table.enter(ip("198.52.0.1"), caps).is_ok(), "another /16");
        // Small limits: a block never gets less than a network.
        assert_eq!(SessionCaps::from_limits(50, 2, 30).per_block, 30);
        drop((slots, v4));
        assert_eq!(table.blocks(), 0, "freed places leave no entry");
    }

    #[test]
    fn sessions_per_network() {
        let caps = SessionCaps {
            per_client: 2,
            per_network: 3,
            per_block: 1000,
        };
        let table = Arc::new(SessionsPerClient::default());
        let a1 = table.enter(ip("192.0.2.1"), caps).unwrap();
        let a2 = table.enter(ip("192.0.2.1"), caps).unwrap();
        assert_eq!(
            table.enter(ip("192.0.2.1"), caps).err(),
            Some(Crowded::Client)
        );
        let b1 = table.enter(ip("192.0.2.200"), caps).unwrap();
        assert_eq!(
            table.enter(ip("192.0.2.3"), caps).err(),
            Some(Crowded::Network),
            "a fourth address in the /24"
        );
        assert!(table.enter(ip("192.0.3.1"), caps).is_ok(), "the next /24");
        let v6: Vec<ClientSlot> = ["2001:db8:1:1::1", "2001:db8:1:2::1", "2001:db8:1:3::1"]
            .iter()
            .map(|a| table.enter(ip(a), caps).unwrap())
            .collect();
        assert_eq!(
            table.enter(ip("2001:db8:1:4::1"), caps).err(),
            Some(Crowded::Network),
            "a fourth /64 in the /48"
        );
        drop(a1);
        assert!(
            table.enter(ip("192.0.2.3"), caps).is_ok(),
            "a place is free again"
        );
        drop((a2, b1, v6));
        assert_eq!((table.clients(), table.networks()), (0, 0));
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        /// Enter (an address from a small set, so that clients and networks collide) or
        /// leave (the n-th open session).
        #[derive(Debug, Clone)]
        enum Op {
            Enter(IpAddr),
            Leave(usize),
        }

        fn op() -> impl Strategy<Value = Op> {
            let v4 = (0u8..2, 0u8..3, 0u8..4).prop_map(|(block, net, host)| {
                IpAddr::V4(Ipv4Addr::new(192, block, 2 + net, 1 + host))
            });
            let mapped = (0u8..2, 0u8..3, 0u8..4).prop_map(|(block, net, host)| {
                IpAddr::V6(Ipv4Addr::new(192, block, 2 + net, 1 + host).to_ipv6_mapped())
            });
            let v6 =
                (0u16..2, 0u16..3, 0u16..3, 0u16..3).prop_map(|(block, site, subnet, host)| {
                    IpAddr::V6(Ipv6Addr::new(
                        0x2001,
                        0xdb8 + block,
                        site,
                        subnet,
                        0,
                        0,
                        0,
                        host,
                    ))
                });
            prop_oneof![
                3 => prop_oneof![v4, mapped, v6].prop_map(Op::Enter),
                2 => any::<usize>().prop_map(Op::Leave),
            ]
        }

        /// The model's idea of a client, a network and a block, written from the
        /// definitions: the first 32 bits of an IPv4 address or 64 of an IPv6 one; 24 or 48;
        /// 16 or 32.
        fn prefix(ip: IpAddr, v4_bits: u32, v6_bits: u32) -> (bool, u128) {
            match ip {
                IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                    (true, u128::from(v6) >> (128 - v6_bits))
                }
                IpAddr::V6(v6) => {
                    let v4 = v6.to_ipv4_mapped().expect("checked above");
                    (false, u128::from(u32::from(v4) >> (32 - v4_bits)))
                }
                IpAddr::V4(v4) => (false, u128::from(u32::from(v4) >> (32 - v4_bits))),
            }
        }

        proptest! {
            /// The table lets a session in exactly when the model (a list of the open
            /// sessions' addresses, counted by prefix) has room for it, and says which cap
            /// was met first; leaving frees exactly one place. After every step no prefix
            /// holds more than its cap, and an address of an unrelated block gets a place.
            #[test]
            fn admission_as_the_model_says(
                ops in prop::collection::vec(op(), 0..200),
                per_client in 1usize..4,
                per_network in 1usize..6,
                per_block in 1usize..10,
            ) {
                let caps = SessionCaps { per_client, per_network, per_block };
                let unrelated = [ip("203.0.113.9"), ip("2001:db80::9")];
                let table = Arc::new(SessionsPerClient::default());
                let mut open: Vec<(IpAddr, ClientSlot)> = Vec::new();
                for op in ops {
                    match op {
                        Op::Enter(ip) => {
                            let same = |bits: (u32, u32)| {
                                let me = prefix(ip, bits.0, bits.1);
                                open.iter().filter(|(o, _)| prefix(*o, bits.0, bits.1) == me).count()
                            };
                            let want = if same((32, 64)) >= per_client {
                                Err(Crowded::Client)
                            } else if same((24, 48)) >= per_network {
                                Err(Crowded::Network)
                            } else if same((16, 32)) >= per_block {
                                Err(Crowded::Block)
                            } else {
                                Ok(())
                            };
                            let got = table.enter(ip, caps);
                            prop_assert_eq!(got.as_ref().map(|_| ()).map_err(|c| *c), want, "{}", ip);
                            if let Ok(slot) = got {
                                open.push((ip, slot));
                            }
                        }
                        Op::Leave(n) if !open.is_empty() => {
                            let i = n % open.len();
                            open.swap_remove(i);
                        }
                        Op::Leave(_) => {}
                    }
                    for (bits, cap) in [((32, 64), per_client), ((24, 48), per_network), ((16, 32), per_block)] {
                        for (o, _) in &open {
                            let me = prefix(*o, bits.0, bits.1);
                            let n = open.iter().filter(|(p, _)| prefix(*p, bits.0, bits.1) == me).count();
                            prop_assert!(n <= cap, "{} sessions in the /{:?} of {}", n, bits, o);
                        }
                    }
                    for a in unrelated {
                        prop_assert!(table.enter(a, caps).is_ok(), "{} refused", a);
                    }
                }
                drop(open);
                prop_assert_eq!((table.clients(), table.networks(), table.blocks()), (0, 0, 0));
            }
        }
    }
}
