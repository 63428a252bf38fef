//! Duplicate suppression for datagrams (the manual's `enable_msg_ids`).
//!
//! UDP may deliver a datagram twice, and peers retransmit. A window remembers
//! a keyed hash of the last `capacity` messages (sender and bytes); a message
//! whose hash is in the window is a duplicate. The hasher is seeded at random
//! per window, so a peer cannot craft collisions to hide messages.

use std::collections::hash_map::RandomState;
use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher;
use std::net::SocketAddr;

/// The last `capacity` message hashes.
#[derive(Debug)]
pub struct DedupWindow {
    order: VecDeque<u64>,
    seen: HashSet<u64>,
    capacity: usize,
    hasher: RandomState,
}

impl DedupWindow {
    /// A window remembering `capacity` messages (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            order: VecDeque::new(),
            seen: HashSet::new(),
            capacity: capacity.max(1),
            hasher: RandomState::new(),
        }
    }

    /// Records a message; returns `false` when it is a duplicate of one in
    /// the window.
    pub fn insert(&mut self, from: SocketAddr, data: &[u8]) -> bool {
        let hash = self.hasher.hash_one((from, data));
        if !self.seen.insert(hash) {
            return false;
        }
        self.order.push_back(hash);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_repeat_is_a_duplicate_but_another_sender_is_not() {
        let mut w = DedupWindow::new(10);
        assert!(w.insert(addr(1), b"hello"));
        assert!(!w.insert(addr(1), b"hello"));
        assert!(w.insert(addr(2), b"hello"));
        assert!(w.insert(addr(1), b"hello!"));
    }

    #[test]
    fn forgets_beyond_its_capacity() {
        let mut w = DedupWindow::new(2);
        assert!(w.insert(addr(1), b"a"));
        assert!(w.insert(addr(1), b"b"));
        assert!(w.insert(addr(1), b"c"));
        assert!(w.insert(addr(1), b"a"), "a left the window");
        assert!(!w.insert(addr(1), b"c"));
    }
}
