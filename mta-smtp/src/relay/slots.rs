//! The per-destination connection limits (`outbound.max_per_domain` for each domain,
//! [`super::limits::MAX_PER_ADDRESS`] for each remote address, and
//! [`super::limits::per_network`] for each remote network): one semaphore per key, in a
//! map that cannot grow without bound. A semaphore nobody holds or waits for carries no
//! state (all its permits are free), so once the map holds more than [`MAX_DOMAINS`]
//! entries those are dropped; the ones in use stay, and there are at most as many of them
//! as attempts running or waiting.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use mta_core::address::Domain;
use tokio::sync::Semaphore;

/// How many keys the map holds before the unused ones are dropped.
pub const MAX_DOMAINS: usize = 1024;

/// One semaphore of `per_key` permits per key.
#[derive(Debug)]
pub struct Slots<K> {
    per_key: usize,
    map: Mutex<HashMap<K, Arc<Semaphore>>>,
}

/// One semaphore per destination domain.
pub type DomainSlots = Slots<Domain>;
/// One semaphore per remote address, or per remote network (keyed by its first address).
pub type AddressSlots = Slots<IpAddr>;

impl<K: Hash + Eq + Clone> Slots<K> {
    /// Slots of `per_key` permits each.
    pub fn new(per_key: usize) -> Slots<K> {
        Slots {
            per_key,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The semaphore of `key`; hold it (and a permit) for the attempt.
    pub fn of(&self, key: &K) -> Arc<Semaphore> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let slots = map
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_key)))
            .clone();
        if map.len() > MAX_DOMAINS {
            // Only the map holds an unused one: nobody has or awaits a permit from it.
            map.retain(|_, s| Arc::strong_count(s) > 1);
        }
        slots
    }

    /// How many keys are in the map now.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no key is in the map.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unused_slots_go_and_used_ones_stay() {
        let slots = DomainSlots::new(2);
        let busy = Domain::parse("busy.test").unwrap();
        let held = slots.of(&busy);
        let permit = held.clone().try_acquire_owned().unwrap();
        for i in 0..MAX_DOMAINS * 3 {
            let d = Domain::parse(&format!("d{i}.test")).unwrap();
            let _ = slots.of(&d);
            assert!(slots.len() <= MAX_DOMAINS + 1, "{} domains", slots.len());
        }
        // The busy domain kept its semaphore: the permit taken still counts.
        assert!(Arc::ptr_eq(&slots.of(&busy), &held));
        assert_eq!(held.available_permits(), 1);
        drop(permit);
    }
}
