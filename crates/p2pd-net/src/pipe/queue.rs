//! The bounded queue behind each subscription.
//!
//! Policy: when a queue is full, the oldest message is dropped to make room
//! and counted. A reader that falls behind keeps the freshest messages (what
//! request/response protocols over UDP want), the connection itself never
//! stalls because one queue is not read, and memory stays bounded whatever
//! a peer sends. Lossless consumers use callbacks or the byte stream, which
//! apply backpressure instead.

use std::collections::VecDeque;

/// A FIFO of at most `capacity` items that drops its oldest item when full.
#[derive(Debug)]
pub struct BoundedQueue<T> {
    items: VecDeque<T>,
    capacity: usize,
    dropped: u64,
}

impl<T> BoundedQueue<T> {
    /// An empty queue holding at most `capacity` items (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
        }
    }

    /// Appends an item, dropping the oldest when full.
    pub fn push(&mut self, item: T) {
        if self.items.len() >= self.capacity {
            self.items.pop_front();
            self.dropped += 1;
        }
        self.items.push_back(item);
    }

    /// Takes the oldest item.
    pub fn pop(&mut self) -> Option<T> {
        self.items.pop_front()
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// How many items were dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn keeps_order_below_capacity() {
        let mut q = BoundedQueue::new(3);
        q.push(1);
        q.push(2);
        assert_eq!((q.pop(), q.pop(), q.pop()), (Some(1), Some(2), None));
        assert_eq!(q.dropped(), 0);
    }

    #[test]
    fn drops_the_oldest_when_full() {
        let mut q = BoundedQueue::new(2);
        for i in 0..5 {
            q.push(i);
        }
        assert_eq!(q.dropped(), 3);
        assert_eq!((q.pop(), q.pop()), (Some(3), Some(4)));
    }

    proptest! {
        #[test]
        fn never_exceeds_capacity_and_keeps_the_newest(cap in 1usize..50, n in 0usize..500) {
            let mut q = BoundedQueue::new(cap);
            for i in 0..n {
                q.push(i);
                prop_assert!(q.len() <= cap);
            }
            let kept: Vec<usize> = std::iter::from_fn(|| q.pop()).collect();
            let expected: Vec<usize> = (n.saturating_sub(cap)..n).collect();
            prop_assert_eq!(kept, expected);
            prop_assert_eq!(q.dropped(), n.saturating_sub(cap) as u64);
        }
    }
}
