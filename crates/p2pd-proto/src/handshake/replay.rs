//! Refusing a first handshake message that was seen before.

use std::collections::{HashSet, VecDeque};

use super::{HandshakeError, WINDOW_MS};

/// First messages remembered at most: beyond it, handshakes are refused
/// until old ones expire (fail closed), so memory stays bounded.
const CAPACITY: usize = 4096;

/// Remembers the initiator ephemeral keys of accepted first messages for
/// twice the window: a message sent within ±30 s of now and not seen
/// before is fresh.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: HashSet<[u8; 32]>,
    order: VecDeque<(u64, [u8; 32])>,
}

impl ReplayGuard {
    /// An empty guard.
    pub fn new() -> Self {
        Self::default()
    }

    /// Admits a first message sent at `sent_ms` with ephemeral key
    /// `ephemeral`, received at `now_ms` (both unix ms).
    pub fn admit(
        &mut self,
        now_ms: u64,
        sent_ms: u64,
        ephemeral: [u8; 32],
    ) -> Result<(), HandshakeError> {
        if sent_ms.abs_diff(now_ms) > WINDOW_MS {
            return Err(HandshakeError::Stale);
        }
        let horizon = now_ms.saturating_sub(2 * WINDOW_MS);
        while let Some(&(at, key)) = self.order.front() {
            if at >= horizon {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&key);
        }
        if self.seen.contains(&ephemeral) {
            return Err(HandshakeError::Replayed);
        }
        if self.seen.len() >= CAPACITY {
            return Err(HandshakeError::Overloaded);
        }
        self.seen.insert(ephemeral);
        self.order.push_back((now_ms, ephemeral));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn a_key_is_admitted_once_within_the_window() {
        let mut guard = ReplayGuard::new();
        assert_eq!(guard.admit(NOW, NOW, [1; 32]), Ok(()));
        assert_eq!(
            guard.admit(NOW + 10, NOW, [1; 32]),
            Err(HandshakeError::Replayed)
        );
        assert_eq!(guard.admit(NOW, NOW - 29_000, [2; 32]), Ok(()));
    }

    #[test]
    fn old_and_early_messages_are_stale() {
        let mut guard = ReplayGuard::new();
        assert_eq!(
            guard.admit(NOW, NOW - 31_000, [1; 32]),
            Err(HandshakeError::Stale)
        );
        assert_eq!(
            guard.admit(NOW, NOW + 31_000, [1; 32]),
            Err(HandshakeError::Stale)
        );
    }

    #[test]
    fn keys_are_forgotten_after_two_windows_and_the_guard_fails_closed_when_full() {
        let mut guard = ReplayGuard::new();
        for n in 0..CAPACITY {
            let mut key = [0; 32];
            key[..8].copy_from_slice(&(n as u64).to_be_bytes());
            assert_eq!(guard.admit(NOW, NOW, key), Ok(()));
        }
        assert_eq!(
            guard.admit(NOW, NOW, [0xff; 32]),
            Err(HandshakeError::Overloaded)
        );
        let later = NOW + 2 * WINDOW_MS + 1;
        assert_eq!(guard.admit(later, later, [0xff; 32]), Ok(()));
        assert_eq!(guard.seen.len(), 1, "the old keys are gone");
    }
}
