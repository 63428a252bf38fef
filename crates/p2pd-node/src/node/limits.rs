//! Counting what one key holds: a semaphore per key (a peer, a network),
//! for limits that must stop one source from taking what others need.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One semaphore per key. Keys none of whose permits are out are forgotten
/// now and then, so the map stays about as small as the number of keys
/// holding something.
#[derive(Debug)]
pub(crate) struct Keyed<K> {
    limit: usize,
    map: HashMap<K, Arc<Semaphore>>,
    prune_at: usize,
}

/// The map is swept when it reaches this size, and then at twice what the
/// sweep left: the cost is amortised over the acquisitions.
const FIRST_PRUNE: usize = 64;

impl<K: std::hash::Hash + Eq + Copy> Keyed<K> {
    /// At most `limit` permits out per key.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            map: HashMap::new(),
            prune_at: FIRST_PRUNE,
        }
    }

    /// A permit for `key`, if it has one left.
    pub(crate) fn acquire(&mut self, key: K) -> Option<OwnedSemaphorePermit> {
        if self.map.len() >= self.prune_at {
            let limit = self.limit;
            self.map.retain(|_, s| s.available_permits() < limit);
            self.prune_at = (2 * self.map.len()).max(FIRST_PRUNE);
        }
        self.map
            .entry(key)
            .or_insert_with(|| Arc::new(Semaphore::new(self.limit)))
            .clone()
            .try_acquire_owned()
            .ok()
    }

    /// Keys remembered now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// The unit a per-address limit counts: an IPv4 address, or an IPv6 /64
/// (one host's share of a subnet); IPv4-mapped addresses as IPv4.
pub(crate) fn network(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_its_limit_and_idle_keys_are_swept() {
        let mut keyed = Keyed::new(2);
        let held: Vec<_> = (0..3).filter_map(|_| keyed.acquire(1u32)).collect();
        assert_eq!(held.len(), 2);
        assert!(keyed.acquire(2).is_some(), "another key has its own");
        for key in 3..1000 {
            drop(keyed.acquire(key));
        }
        assert!(keyed.len() < 200, "idle keys were swept: {}", keyed.len());
        assert!(keyed.acquire(1).is_none(), "a key still holding is kept");
    }

    #[test]
    fn a_v6_64_and_a_mapped_v4_are_one_network() {
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        assert_eq!(network(a), network(b));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        assert_eq!(network(mapped), "192.0.2.1".parse::<IpAddr>().expect("ip"));
    }
}
