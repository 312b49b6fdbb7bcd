//! What bounds remote delivery over all attempts, and outlives a reload: the connection
//! slots ([`Limits`]: `outbound.max_connections` overall, `outbound.max_per_domain` per
//! destination domain, [`MAX_PER_ADDRESS`] per remote address, [`per_network`] per remote
//! network) and the destinations that stopped answering ([`Suspensions`]).
//!
//! Many domains can share one MX address, so per-domain slots alone let one hostile host
//! that greets and then stalls hold every overall slot, one domain each. The per-address
//! cap bounds what any one address holds to [`MAX_PER_ADDRESS`] slots; an attempt that
//! finds the address full moves on to the next one at once (it never waits holding an
//! overall slot), and is deferred when they are all full.
//!
//! Addresses are cheap for whoever holds a network: eight IPv4 addresses at four slots
//! each would hold all 32 default overall slots. So the addresses of one network (an IPv4
//! /24, an IPv6 /48: the smallest blocks commonly routed and handed out) share a second,
//! wider cap, [`per_network`], counted the same way. An MX record can name any address, so
//! a stranger can point its domains at addresses of someone else's network that never
//! answer and use up that network's share; a slot is therefore held only while its
//! connection is being opened or is open: a connect that is refused releases it at once,
//! and one that is never answered at most for `outbound.connect_timeout`.
//!
//! A reload builds a new relay while transactions of the old one still run; both count
//! against the same slots, so a storm of reloads never opens more connections than the
//! limits allow (the slot counts themselves need a restart to change).
//!
//! A destination (a domain, the smarthost, or one remote address) whose connections fail
//! [`FAILURES`] times in a row is suspended, as
//! Postfix does with a dead destination: its messages are deferred with the last reason
//! without connecting, except one probe attempt at a time, at most one per probe interval
//! (`queue.retry_first`). A connection fails when it does not open, or when it opens and
//! then stalls: a timeout in any phase (greeting, EHLO, MAIL, RCPT, DATA) counts, since a
//! host that greets and then never answers costs as much as one that never answers at all.
//! A probe whose transaction does not stall ends the suspension. So a dead destination
//! with many queued messages costs O(1) connection attempts per retry round, and the
//! attempts that would have waited on it for minutes end at once.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mta_core::address::Domain;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::client::ClientError;

/// Failed connections in a row that suspend a destination.
pub const FAILURES: u32 = 3;

/// Destinations remembered at once; beyond this, the one whose last failure is oldest is
/// forgotten for a new one, so a flood of dead domains costs bounded memory and the
/// destinations failing now are the ones remembered.
const MAX_DESTINATIONS: usize = 10_000;

/// Connections open at once to one remote address, over all domains. Four: the default
/// `outbound.max_per_domain`, so one domain on one address is not slowed by it, while a
/// host that stalls every connection holds at most 4 of the 32 default overall slots
/// however many domains point at it. Large providers publish several MX hosts and
/// addresses; an attempt that finds one address full tries the next.
pub const MAX_PER_ADDRESS: usize = 4;

/// Connections open at once to one remote network ([`network_of`]) over all its
/// addresses: a quarter of `outbound.max_connections` (8 of the default 32), never fewer
/// than [`MAX_PER_ADDRESS`]. A quarter, so that a hostile network holds at most a quarter of
/// the slots, while a provider whose MX hosts share a /24 still gets two addresses' worth at
/// once (large providers spread their MX hosts over several networks, and an attempt that
/// finds one full tries the next).
pub fn per_network(max_connections: usize) -> usize {
    (max_connections / 4).max(MAX_PER_ADDRESS)
}

/// The connection slots shared by every relay a reload builds.
pub struct Limits {
    all: Arc<Semaphore>,
    max_connections: usize,
    max_per_domain: usize,
    /// One semaphore per destination domain, in a map that drops unused ones.
    per_domain: super::slots::DomainSlots,
    /// One semaphore per remote address, likewise.
    per_address: super::slots::AddressSlots,
    /// One semaphore per remote network ([`network_of`]), likewise.
    per_network: super::slots::AddressSlots,
    max_per_network: usize,
}

/// Why [`Limits::acquire`] gave up: the slots stayed busy for its patience.
#[derive(Debug, thiserror::Error)]
pub enum Busy {
    /// The domain's own slots.
    #[error("4.4.5 all {max} connection slots for {domain} stayed busy (outbound.max_per_domain)")]
    Domain {
        /// The destination domain.
        domain: Domain,
        /// `outbound.max_per_domain`.
        max: usize,
    },
    /// The overall slots.
    #[error(
        "4.4.5 all {max} outbound connection slots stayed busy while {domain} waited \
         (outbound.max_connections)"
    )]
    All {
        /// The destination domain.
        domain: Domain,
        /// `outbound.max_connections`.
        max: usize,
    },
}

/// Why [`Limits::address`] found no slot free.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Full {
    /// The address's own slots.
    #[error("4.4.5 all {MAX_PER_ADDRESS} connection slots for the address are busy")]
    Address,
    /// The slots of the address's network.
    #[error("4.4.5 all {max} connection slots for the address's network ({network}) are busy")]
    Network {
        /// The network, `192.0.2.0/24` or `2001:db8:1::/48`.
        network: String,
        /// [`per_network`].
        max: usize,
    },
}

/// A slot of one remote address and one of its network, held while talking to it.
pub struct AddressSlot {
    _address: OwnedSemaphorePermit,
    _network: OwnedSemaphorePermit,
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
            max_connections,
            max_per_domain,
            per_domain: super::slots::DomainSlots::new(max_per_domain),
            per_address: super::slots::AddressSlots::new(MAX_PER_ADDRESS),
            per_network: super::slots::AddressSlots::new(per_network(max_connections)),
            max_per_network: per_network(max_connections),
        }
    }

    /// Waits for a slot for `domain`. The domain's own slot comes first, and only then one
    /// of the overall ones: a domain whose slots are all busy (a host that never answers)
    /// waits without holding an overall slot that other domains need. [`Busy`] when either
    /// stayed busy for `patience` (both waits together): the attempt is then deferred and
    /// gives way to the others the scheduler has waiting, instead of holding one of its
    /// attempts.
    ///
    /// # Errors
    /// [`Busy`], naming the slots that stayed busy.
    pub async fn acquire(&self, domain: &Domain, patience: Duration) -> Result<Slot, Busy> {
        let deadline = tokio::time::Instant::now() + patience;
        let slots = self.per_domain.of(domain);
        let own = tokio::time::timeout_at(deadline, slots.acquire_owned())
            .await
            .map_err(|_| Busy::Domain {
                domain: domain.clone(),
                max: self.max_per_domain,
            })?
            .expect("never closed");
        let all = tokio::time::timeout_at(deadline, self.all.clone().acquire_owned())
            .await
            .map_err(|_| Busy::All {
                domain: domain.clone(),
                max: self.max_connections,
            })?
            .expect("never closed");
        Ok(Slot {
            _domain: own,
            _all: all,
        })
    }

    /// One of the [`MAX_PER_ADDRESS`] connections to `ip` and one of the [`per_network`]
    /// connections to its network, held while talking to it; [`Full`] at once when either
    /// is all in use. Never waits: the caller holds an overall slot.
    ///
    /// # Errors
    /// [`Full`], naming the slots that are all in use.
    pub fn address(&self, ip: IpAddr) -> Result<AddressSlot, Full> {
        let address = self
            .per_address
            .of(&host_of(ip))
            .try_acquire_owned()
            .map_err(|_| Full::Address)?;
        let network = network_of(ip);
        let net = self
            .per_network
            .of(&network)
            .try_acquire_owned()
            .map_err(|_| Full::Network {
                network: match network {
                    IpAddr::V4(_) => format!("{network}/24"),
                    IpAddr::V6(_) => format!("{network}/48"),
                },
                max: self.max_per_network,
            })?;
        Ok(AddressSlot {
            _address: address,
            _network: net,
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

/// The destinations whose connections failed lately, at most a capacity of them.
pub struct Suspensions {
    map: Mutex<HashMap<String, Dead>>,
    capacity: usize,
    /// Counts failures, to find the destination whose last failure is oldest.
    clock: Mutex<u64>,
}

impl Default for Suspensions {
    fn default() -> Self {
        Suspensions::with_capacity(MAX_DESTINATIONS)
    }
}

struct Dead {
    failures: u32,
    reason: String,
    next_probe: Instant,
    probing: bool,
    /// When the last failure came, on [`Suspensions::clock`].
    last: u64,
}

/// What an attempt holds while it talks to one remote address: one of its
/// [`MAX_PER_ADDRESS`] slots, and its probe when the address is suspended.
pub struct AtAddress {
    _slot: Option<AddressSlot>,
    _probe: Option<Probe>,
    key: String,
}

impl AtAddress {
    /// The address's suspension key ([`address_destination`]).
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// Whether an attempt may connect to `ip` now: a slot of the address and of its network
/// (only when `capped`:
/// the smarthost, the operator's own, has none) that is free at once, and the address not
/// suspended (or this attempt its probe).
///
/// # Errors
/// Why not, for the deferral.
pub fn admit_address(
    limits: &Limits,
    dead: &Arc<Suspensions>,
    ip: IpAddr,
    capped: bool,
    interval: Duration,
) -> Result<AtAddress, String> {
    let slot = match capped {
        false => None,
        true => Some(limits.address(ip).map_err(|full| full.to_string())?),
    };
    let key = address_destination(ip);
    let probe = match dead.admit(&key, interval, Instant::now()) {
        Admit::Go => None,
        Admit::Probe(p) => Some(p),
        Admit::Skip(why) => return Err(why),
    };
    Ok(AtAddress {
        _slot: slot,
        _probe: probe,
        key,
    })
}

/// The suspension key of one remote address, `[192.0.2.1]`: a domain name never has
/// brackets, and the IPv4 address literal of the same host is the same key.
pub fn address_destination(ip: IpAddr) -> String {
    format!("[{}]", host_of(ip))
}

/// The remote host an address counts as, for its slots and its suspension: an IPv4 address
/// also when written as an IPv4-mapped IPv6 address (the connection is the same). Not a NAT64
/// form (`64:ff9b::/96`): where no translator routes it, connections to it fail, and a
/// stranger's MX record must not make another's IPv4 address look dead. Other IPv6
/// addresses count each on its own, not by their /64, for the same reason: a stranger could
/// fill the slots of a provider's /64 (and suspend it) with addresses of it that never
/// answer.
pub fn host_of(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The remote network an address counts in, for [`per_network`]: the first address of its
/// IPv4 /24 or IPv6 /48, an IPv4-mapped address as its IPv4 form ([`host_of`]).
pub fn network_of(ip: IpAddr) -> IpAddr {
    match host_of(ip) {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & !0xff)),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 48))),
    }
}

/// Whether `error`, ending a transaction on an open connection, shows a host that stopped
/// answering (a timeout in any phase) rather than one that answered.
pub fn stalled(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::Timeout { .. } | ClientError::Deadline | ClientError::AttemptDeadline
    )
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

    /// At most `capacity` destinations remembered at once.
    pub fn with_capacity(capacity: usize) -> Suspensions {
        Suspensions {
            map: Mutex::new(HashMap::new()),
            capacity,
            clock: Mutex::new(0),
        }
    }

    /// A connection to `destination` failed with `reason`.
    pub fn failed(&self, destination: &str, reason: &str, interval: Duration, now: Instant) {
        let mut map = self.map.lock().expect("suspension lock poisoned");
        let tick = {
            let mut clock = self.clock.lock().expect("suspension clock poisoned");
            *clock += 1;
            *clock
        };
        if !map.contains_key(destination) && map.len() >= self.capacity {
            // O(capacity), only when full: the table stays a plain map.
            let oldest = map
                .iter()
                .min_by_key(|(_, d)| d.last)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(key) => {
                    map.remove(&key);
                }
                None => return,
            }
        }
        let dead = map.entry(destination.to_string()).or_insert(Dead {
            failures: 0,
            reason: String::new(),
            next_probe: now,
            probing: false,
            last: tick,
        });
        dead.last = tick;
        dead.failures = dead.failures.saturating_add(1);
        dead.reason = reason.to_string();
        if dead.failures >= FAILURES {
            dead.next_probe = now + interval;
            dead.probing = false;
        }
    }

    /// A connection to `destination` opened and did not stall: it is alive.
    pub fn succeeded(&self, destination: &str) {
        let mut map = self.map.lock().expect("suspension lock poisoned");
        map.remove(destination);
    }

    /// Records how a connection for each of `destinations` ended: `Err(reason)` when it
    /// failed to open or stalled ([`stalled`]), `Ok` when the host answered.
    pub fn record(
        &self,
        destinations: &[&str],
        result: Result<(), &str>,
        interval: Duration,
        now: Instant,
    ) {
        for destination in destinations {
            match result {
                Ok(()) => self.succeeded(destination),
                Err(reason) => self.failed(destination, reason, interval, now),
            }
        }
    }

    /// Records how a transaction on a connection that opened ended: a stall ([`stalled`])
    /// is a failure of each of `destinations`, anything else shows them alive. `host` names
    /// the host in the reason (`name [ip]`).
    pub fn transaction_ended<T>(
        &self,
        destinations: &[&str],
        host: &str,
        result: &Result<T, ClientError>,
        interval: Duration,
    ) {
        let now = Instant::now();
        match result {
            Err(e) if stalled(e) => {
                let reason = format!("4.4.1 {host}: {e}");
                self.record(destinations, Err(&reason), interval, now);
            }
            _ => self.record(destinations, Ok(()), interval, now),
        }
    }

    /// How many destinations are remembered now.
    pub fn len(&self) -> usize {
        self.map.lock().expect("suspension lock poisoned").len()
    }

    /// True when no destination is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends every suspension (the operator asked for the queue to be tried now, as
    /// Postfix's `postqueue -f` marks its dead destinations alive): every destination is
    /// connected to on its next attempt, and three more failures in a row suspend it
    /// again. A probe in progress still records its result. Returns how many destinations
    /// were suspended.
    pub fn resume_all(&self) -> usize {
        let mut map = self.map.lock().expect("suspension lock poisoned");
        let before = map.len();
        map.retain(|_, dead| dead.failures < FAILURES);
        before - map.len()
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
    use proptest::prelude::*;

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
    fn resume_all_ends_every_suspension_and_a_probe_in_progress_still_records() {
        let s = Arc::new(Suspensions::default());
        let t0 = Instant::now();
        for _ in 0..FAILURES {
            s.failed("dead.test", "4.4.1 refused", I, t0);
            s.failed("[192.0.2.1]", "4.4.1 refused", I, t0);
        }
        s.failed("flaky.test", "4.4.1 refused", I, t0);
        let probe = match s.admit("dead.test", I, t0 + I) {
            Admit::Probe(p) => p,
            _ => panic!("a probe"),
        };
        assert_eq!(s.resume_all(), 2);
        // Before the probe interval is over, at once: every attempt connects.
        assert!(matches!(s.admit("dead.test", I, t0), Admit::Go));
        assert!(matches!(s.admit("[192.0.2.1]", I, t0), Admit::Go));
        // A destination not yet suspended keeps its count.
        s.failed("flaky.test", "4.4.1 refused", I, t0);
        s.failed("flaky.test", "4.4.1 refused", I, t0);
        assert!(s.is_suspended("flaky.test"));
        // The probe that was running ends without suspending anything again.
        drop(probe);
        assert!(matches!(s.admit("dead.test", I, t0), Admit::Go));
        // Three failures in a row suspend it again.
        for _ in 0..FAILURES {
            s.failed("dead.test", "4.4.1 refused", I, t0);
        }
        assert!(matches!(s.admit("dead.test", I, t0), Admit::Skip(_)));
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
        assert!(matches!(got, Ok(Ok(_))), "another domain was starved");
        // A domain whose slots stay busy gives up after its patience.
        let gave_up = limits.acquire(&slow, Duration::from_millis(10)).await;
        assert!(matches!(gave_up, Err(Busy::Domain { .. })));
        for w in waiting {
            w.abort();
        }
    }

    #[tokio::test]
    async fn waiting_for_an_overall_slot_has_patience_too() {
        let limits = Limits::new(1, 4);
        let a = Domain::parse("a.test").unwrap();
        let b = Domain::parse("b.test").unwrap();
        let _held = limits.acquire(&a, Duration::from_secs(1)).await.unwrap();
        let got = tokio::time::timeout(
            Duration::from_secs(60),
            limits.acquire(&b, Duration::from_millis(10)),
        )
        .await
        .expect("the wait for an overall slot ended");
        match got {
            Err(e @ Busy::All { .. }) => assert!(e.to_string().contains("max_connections"), "{e}"),
            _ => panic!("deferred for want of an overall slot"),
        }
    }

    #[test]
    fn an_address_holds_at_most_its_cap_over_all_domains() {
        let limits = Limits::new(32, 4);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let held: Vec<_> = (0..MAX_PER_ADDRESS).map(|_| limits.address(ip)).collect();
        assert!(held.iter().all(Result::is_ok));
        assert_eq!(limits.address(ip).err(), Some(Full::Address), "one more");
        assert!(limits.address("192.0.2.8".parse().unwrap()).is_ok());
        drop(held);
        assert!(limits.address(ip).is_ok());
    }

    #[test]
    fn the_mapped_form_of_an_address_shares_its_cap() {
        let limits = Limits::new(32, 4);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let held: Vec<_> = (0..MAX_PER_ADDRESS)
            .map(|_| limits.address(ip("192.0.2.7")))
            .collect();
        assert!(held.iter().all(Result::is_ok));
        assert!(limits.address(ip("::ffff:192.0.2.7")).is_err(), "mapped");
        // NAT64 may lead nowhere, so it is not the same host: failures there are its own.
        assert!(limits.address(ip("64:ff9b::c000:207")).is_ok(), "NAT64");
        assert_eq!(
            address_destination(ip("::ffff:192.0.2.7")),
            address_destination(ip("192.0.2.7"))
        );
    }

    #[test]
    fn the_addresses_of_one_network_share_a_wider_cap() {
        let limits = Limits::new(32, 4);
        assert_eq!(per_network(32), 8);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Two addresses of 192.0.2.0/24 at their own cap: the network's is full.
        let mut held: Vec<_> = (0..MAX_PER_ADDRESS)
            .map(|_| limits.address(ip("192.0.2.1")))
            .chain((0..MAX_PER_ADDRESS).map(|_| limits.address(ip("192.0.2.200"))))
            .collect();
        assert!(held.iter().all(Result::is_ok));
        let full = limits
            .address(ip("192.0.2.3"))
            .err()
            .expect("the network is full");
        assert!(full.to_string().contains("(192.0.2.0/24)"), "{full}");
        assert!(limits.address(ip("::ffff:192.0.2.4")).is_err(), "mapped");
        assert!(limits.address(ip("192.0.3.1")).is_ok(), "the next /24");
        // One connection ends: its network has a slot again.
        held.pop();
        assert!(limits.address(ip("192.0.2.3")).is_ok());
        // An address at its own cap does not take a slot of its network.
        held.pop();
        assert_eq!(limits.address(ip("192.0.2.1")).err(), Some(Full::Address));
        assert!(limits.address(ip("192.0.2.5")).is_ok());
    }

    #[test]
    fn a_network_never_has_fewer_slots_than_one_address() {
        assert_eq!(per_network(1), MAX_PER_ADDRESS);
        assert_eq!(per_network(16), MAX_PER_ADDRESS);
        assert_eq!(per_network(100), 25);
    }

    /// The reference model of [`network_of`]: two addresses are in one network when they
    /// agree on the first 3 octets of the IPv4 form, or on the first 6 octets of an IPv6
    /// address that is not IPv4-mapped.
    fn same_network_model(a: IpAddr, b: IpAddr) -> bool {
        fn form(ip: IpAddr) -> (bool, Vec<u8>) {
            match ip {
                IpAddr::V4(v4) => (true, v4.octets()[..3].to_vec()),
                IpAddr::V6(v6) => {
                    let o = v6.octets();
                    match o[..10].iter().all(|b| *b == 0) && o[10] == 0xff && o[11] == 0xff {
                        true => (true, o[12..15].to_vec()),
                        false => (false, o[..6].to_vec()),
                    }
                }
            }
        }
        form(a) == form(b)
    }

    /// Addresses near each other (so that many pairs share a network): a few octets vary.
    fn near_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (0u8..2, 0u8..3, any::<u8>())
                .prop_map(|(b, c, d)| IpAddr::V4(Ipv4Addr::new(192, b, c, d))),
            (0u8..2, 0u8..3, any::<u8>())
                .prop_map(|(b, c, d)| { IpAddr::V6(Ipv4Addr::new(192, b, c, d).to_ipv6_mapped()) }),
            (0u16..2, 0u16..3, any::<u16>(), any::<u16>()).prop_map(|(b, c, d, e)| {
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, b, c, d, 0, 0, e))
            }),
            any::<[u8; 16]>().prop_map(|o| IpAddr::V6(Ipv6Addr::from(o))),
            any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        ]
    }

    /// A step of the slot accounting model: take a slot of one of the addresses, or
    /// release one of the slots held.
    #[derive(Debug, Clone)]
    enum SlotOp {
        Take(IpAddr),
        Release(usize),
    }

    proptest! {
        #[test]
        fn network_of_matches_the_model(a in near_ip(), b in near_ip()) {
            prop_assert_eq!(network_of(a) == network_of(b), same_network_model(a, b));
            prop_assert!(same_network_model(a, network_of(a)));
        }

        #[test]
        fn slots_per_address_and_network_match_the_model(
            max_connections in 1usize..48,
            ops in prop::collection::vec(
                prop_oneof![
                    near_ip().prop_map(SlotOp::Take),
                    (0usize..64).prop_map(SlotOp::Release),
                ],
                0..300,
            ),
        ) {
            let limits = Limits::new(max_connections, 4);
            let mut held: Vec<(IpAddr, AddressSlot)> = Vec::new();
            for op in ops {
                match op {
                    SlotOp::Take(ip) => {
                        // The model: count the slots held of the same host, and of the
                        // same network, by the reference definitions.
                        let same_host = held
                            .iter()
                            .filter(|(h, _)| h.to_canonical() == ip.to_canonical())
                            .count();
                        let same_net = held
                            .iter()
                            .filter(|(h, _)| same_network_model(*h, ip))
                            .count();
                        let want = match (same_host < MAX_PER_ADDRESS, same_net < per_network(max_connections)) {
                            (false, _) => Err(Full::Address),
                            (true, false) => Err(Full::Network {
                                network: String::new(),
                                max: per_network(max_connections),
                            }),
                            (true, true) => Ok(()),
                        };
                        let got = limits.address(ip);
                        match (&got, &want) {
                            (Ok(_), Ok(())) | (Err(Full::Address), Err(Full::Address)) => {}
                            (Err(Full::Network { .. }), Err(Full::Network { .. })) => {}
                            _ => prop_assert!(false, "{ip}: got {:?}, want {want:?}", got.as_ref().err()),
                        }
                        if let Ok(slot) = got {
                            held.push((ip, slot));
                        }
                    }
                    SlotOp::Release(i) => {
                        if !held.is_empty() {
                            held.remove(i % held.len());
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_stall_counts_as_a_failure_and_an_answer_as_life() {
        let s = Arc::new(Suspensions::default());
        let t0 = Instant::now();
        let ip = address_destination("192.0.2.9".parse().unwrap());
        assert!(stalled(&ClientError::Deadline));
        assert!(stalled(&ClientError::AttemptDeadline));
        assert!(stalled(&ClientError::Timeout {
            phase: crate::client::Phase::Mail
        }));
        for _ in 0..FAILURES {
            s.record(&["d.test", &ip], Err("4.4.1 timed out in MAIL FROM"), I, t0);
        }
        assert!(s.is_suspended("d.test") && s.is_suspended(&ip));
        s.record(&[&ip], Ok(()), I, t0);
        assert!(!s.is_suspended(&ip));
    }

    /// Operations on the dead-destination map, for the reference model.
    #[derive(Debug, Clone)]
    enum Op {
        Failed(u8),
        Succeeded(u8),
        ResumeAll,
    }

    proptest! {
        #[test]
        fn the_map_stays_bounded_forgetting_the_oldest_failure(
            capacity in 1usize..6,
            ops in prop::collection::vec(
                prop_oneof![
                    (0u8..12).prop_map(Op::Failed),
                    (0u8..12).prop_map(Op::Succeeded),
                    Just(Op::ResumeAll),
                ],
                0..200,
            ),
        ) {
            let s = Suspensions::with_capacity(capacity);
            let t0 = Instant::now();
            // The model: (destination, failures) in order of last failure, oldest first.
            let mut model: Vec<(String, u32)> = Vec::new();
            for op in ops {
                match op {
                    Op::Failed(n) => {
                        let d = format!("d{n}.test");
                        s.failed(&d, "x", I, t0);
                        let failures = match model.iter().position(|(k, _)| *k == d) {
                            Some(i) => model.remove(i).1 + 1,
                            None => {
                                if model.len() == capacity {
                                    model.remove(0);
                                }
                                1
                            }
                        };
                        model.push((d, failures));
                    }
                    Op::Succeeded(n) => {
                        let d = format!("d{n}.test");
                        s.succeeded(&d);
                        model.retain(|(k, _)| *k != d);
                    }
                    Op::ResumeAll => {
                        let suspended = model.iter().filter(|(_, f)| *f >= FAILURES).count();
                        prop_assert_eq!(s.resume_all(), suspended);
                        model.retain(|(_, f)| *f < FAILURES);
                    }
                }
                prop_assert!(s.len() <= capacity);
                prop_assert_eq!(s.len(), model.len());
                for n in 0..12u8 {
                    let d = format!("d{n}.test");
                    let want = model.iter().any(|(k, f)| *k == d && *f >= FAILURES);
                    prop_assert_eq!(s.is_suspended(&d), want, "{}", d);
                }
            }
        }
    }
}
