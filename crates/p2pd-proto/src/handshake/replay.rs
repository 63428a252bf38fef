//! Refusing a first handshake message that was seen before.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;

use super::{HandshakeError, WINDOW_MS};

/// First messages remembered at most: beyond it, handshakes are refused
/// until old ones expire (fail closed), so memory stays bounded (a few MB).
const CAPACITY: usize = 65_536;

/// How many of them one source (an IPv4 address, an IPv6 /64) may hold, so
/// that one host cannot fill the guard and shut everyone else out.
const PER_SOURCE: usize = 1024;

/// Remembers the initiator ephemeral keys of admitted first messages for
/// twice the window: a message sent within ±30 s of now and not seen
/// before is fresh.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: HashSet<[u8; 32]>,
    order: VecDeque<(u64, [u8; 32], Source)>,
    per_source: HashMap<Source, usize>,
}

/// Where first messages come from, as far as quotas go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4([u8; 4]),
    V6([u8; 8]),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4.octets()),
                None => {
                    let mut net = [0; 8];
                    net.copy_from_slice(&v6.octets()[..8]);
                    Self::V6(net)
                }
            },
        }
    }
}

impl ReplayGuard {
    /// An empty guard.
    pub fn new() -> Self {
        Self::default()
    }

    /// Admits a first message from `source` sent at `sent_ms` with
    /// ephemeral key `ephemeral`, received at `now_ms` (both unix ms).
    pub fn admit(
        &mut self,
        now_ms: u64,
        source: IpAddr,
        sent_ms: u64,
        ephemeral: [u8; 32],
    ) -> Result<(), HandshakeError> {
        if sent_ms.abs_diff(now_ms) > WINDOW_MS {
            return Err(HandshakeError::Stale);
        }
        let horizon = now_ms.saturating_sub(2 * WINDOW_MS);
        while let Some(&(at, key, from)) = self.order.front() {
            if at >= horizon {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&key);
            if let Some(count) = self.per_source.get_mut(&from) {
                *count -= 1;
                if *count == 0 {
                    self.per_source.remove(&from);
                }
            }
        }
        if self.seen.contains(&ephemeral) {
            return Err(HandshakeError::Replayed);
        }
        let source = Source::from(source);
        let held = self.per_source.get(&source).copied().unwrap_or(0);
        if self.seen.len() >= CAPACITY || held >= PER_SOURCE {
            return Err(HandshakeError::Overloaded);
        }
        self.seen.insert(ephemeral);
        self.order.push_back((now_ms, ephemeral, source));
        *self.per_source.entry(source).or_insert(0) += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;
    const HOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 7));

    fn key(n: usize) -> [u8; 32] {
        let mut key = [0; 32];
        key[..8].copy_from_slice(&(n as u64).to_be_bytes());
        key
    }

    #[test]
    fn a_key_is_admitted_once_within_the_window() {
        let mut guard = ReplayGuard::new();
        assert_eq!(guard.admit(NOW, HOST, NOW, [1; 32]), Ok(()));
        assert_eq!(
            guard.admit(NOW + 10, HOST, NOW, [1; 32]),
            Err(HandshakeError::Replayed)
        );
        assert_eq!(guard.admit(NOW, HOST, NOW - 29_000, [2; 32]), Ok(()));
    }

    #[test]
    fn old_and_early_messages_are_stale() {
        let mut guard = ReplayGuard::new();
        assert_eq!(
            guard.admit(NOW, HOST, NOW - 31_000, [1; 32]),
            Err(HandshakeError::Stale)
        );
        assert_eq!(
            guard.admit(NOW, HOST, NOW + 31_000, [1; 32]),
            Err(HandshakeError::Stale)
        );
    }

    #[test]
    fn one_source_cannot_shut_others_out_and_its_share_comes_back() {
        let mut guard = ReplayGuard::new();
        for n in 0..PER_SOURCE {
            assert_eq!(guard.admit(NOW, HOST, NOW, key(n)), Ok(()));
        }
        assert_eq!(
            guard.admit(NOW, HOST, NOW, key(PER_SOURCE)),
            Err(HandshakeError::Overloaded)
        );
        // Another address of the same IPv6 /64 is the same source; another
        // host is not.
        let v6: IpAddr = "2001:db8:1:2::5".parse().expect("literal");
        let v6_again: IpAddr = "2001:db8:1:2::99".parse().expect("literal");
        for n in 0..PER_SOURCE {
            assert_eq!(guard.admit(NOW, v6, NOW, key(10_000 + n)), Ok(()));
        }
        assert_eq!(
            guard.admit(NOW, v6_again, NOW, key(20_000)),
            Err(HandshakeError::Overloaded)
        );
        let other: IpAddr = "198.18.0.8".parse().expect("literal");
        assert_eq!(guard.admit(NOW, other, NOW, key(30_000)), Ok(()));
        let later = NOW + 2 * WINDOW_MS + 1;
        assert_eq!(guard.admit(later, HOST, later, key(40_000)), Ok(()));
        assert_eq!(guard.seen.len(), 1, "the old keys are gone");
        assert_eq!(guard.per_source.len(), 1, "and so are their counts");
    }

    #[test]
    fn the_guard_fails_closed_when_full() {
        let mut guard = ReplayGuard::new();
        for n in 0..CAPACITY {
            let source = IpAddr::V4(std::net::Ipv4Addr::from(
                u32::try_from(n / PER_SOURCE).expect("small"),
            ));
            assert_eq!(guard.admit(NOW, source, NOW, key(n)), Ok(()));
        }
        assert_eq!(
            guard.admit(NOW, HOST, NOW, key(CAPACITY)),
            Err(HandshakeError::Overloaded)
        );
    }
}
