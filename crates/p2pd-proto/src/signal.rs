//! Signaling messages between nodes: sealed to the recipient's key,
//! authenticated by the sender's, fresh and never replayed (DESIGN.md
//! "Identity and signaling").
//!
//! ```text
//! envelope = version (1) | sender key (32) | nonce (24) | XChaCha20-Poly1305(json body)
//! key      = HKDF-SHA256(X25519(my secret, their key), salt "p2pd-signal-v1",
//!                        info = sender key | recipient key)
//! ```
//!
//! Only the holder of the sender's or the recipient's secret can make an
//! envelope that opens, so a message that opens came from the key it names.
//! The body carries a random id and the sender's wall-clock time: the
//! [`Inbox`] drops (and counts) envelopes that fail to open, are malformed,
//! are older or newer than the window, or repeat an id seen in it. Wall time
//! and randomness come from the caller.

use std::collections::{HashMap, VecDeque};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::addr::NodeId;

/// Envelope format version.
const VERSION: u8 = 1;
const HEADER: usize = 1 + 32 + 24;
/// Messages this far from our clock, either way, are dropped.
pub const WINDOW_MS: u64 = 30_000;
/// Envelopes larger than this are dropped unopened.
pub const MAX_ENVELOPE: usize = 8 * 1024;
/// Ids remembered at most. When full (a flood within one window), new
/// envelopes are refused rather than forgetting ids, which would let a
/// captured message be replayed.
const MAX_SEEN: usize = 65_536;

/// A node's key pair; the public key is its id.
#[derive(Clone)]
pub struct Identity {
    secret: StaticSecret,
    id: NodeId,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The identity of a 32-byte secret (from a key file, or random bytes).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let secret = StaticSecret::from(secret);
        let id = NodeId(PublicKey::from(&secret).to_bytes());
        Self { secret, id }
    }

    /// The node id: the public key.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The secret, to store in a key file.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }

    /// Whether a key agreement with `peer` gives a secret only the two
    /// could know: `false` for a low-order key (such as all zeros), with
    /// which anyone can compute the result.
    pub fn agrees_with(&self, peer: &NodeId) -> bool {
        self.secret
            .diffie_hellman(&PublicKey::from(peer.0))
            .was_contributory()
    }

    fn key_with(
        &self,
        peer: &NodeId,
        sender: &NodeId,
        recipient: &NodeId,
    ) -> Option<XChaCha20Poly1305> {
        let shared = self.secret.diffie_hellman(&PublicKey::from(peer.0));
        // A low-order peer key gives a predictable secret: refuse it.
        if !shared.was_contributory() {
            return None;
        }
        let hk = Hkdf::<Sha256>::new(Some(b"p2pd-signal-v1"), shared.as_bytes());
        let mut info = [0u8; 64];
        info[..32].copy_from_slice(&sender.0);
        info[32..].copy_from_slice(&recipient.0);
        let mut key = [0u8; 32];
        hk.expand(&info, &mut key).ok()?;
        Some(XChaCha20Poly1305::new((&key).into()))
    }
}

/// What a signaling message asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Body {
    /// Reverse connect: connect to `addr` and present `token` first.
    Reverse {
        /// 32 hex digits the dialler sends first, so the asker knows the
        /// connection is the one it asked for.
        token: String,
        /// The asker's peer address.
        addr: String,
    },
    /// A liveness probe; no answer is due.
    Ping,
}

/// A signaling message as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signal {
    /// Random id, for duplicate and replay detection (hex).
    pub id: String,
    /// The sender's wall-clock time, unix milliseconds.
    pub sent_ms: u64,
    /// What it asks.
    pub body: Body,
}

/// Seals `signal` from `me` to `to`. `nonce` must be random.
pub fn seal(me: &Identity, to: &NodeId, signal: &Signal, nonce: [u8; 24]) -> Option<Vec<u8>> {
    let cipher = me.key_with(to, &me.id, to)?;
    let plaintext = serde_json::to_vec(signal).ok()?;
    let mut aad = [0u8; 1 + 64];
    aad[0] = VERSION;
    aad[1..33].copy_from_slice(&me.id.0);
    aad[33..].copy_from_slice(&to.0);
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &plaintext,
                aad: &aad,
            },
        )
        .ok()?;
    let mut out = Vec::with_capacity(HEADER + ciphertext.len());
    out.push(VERSION);
    out.extend_from_slice(&me.id.0);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    Some(out)
}

/// Why an envelope was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejected {
    /// Not an envelope (size, version) or not a valid body once opened.
    #[error("malformed")]
    Malformed,
    /// It does not open with our key: forged, corrupted, or for someone else.
    #[error("failed authentication")]
    Forged,
    /// Sent outside the acceptance window.
    #[error("stale or from the future")]
    Stale,
    /// Its id was seen within the window.
    #[error("replayed")]
    Replayed,
    /// Too many messages within one window to remember them all.
    #[error("overloaded")]
    Overloaded,
}

/// Counts of dropped envelopes, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboxStats {
    /// Opened and accepted.
    pub accepted: u64,
    /// Dropped as malformed.
    pub malformed: u64,
    /// Dropped as forged.
    pub forged: u64,
    /// Dropped as stale or early.
    pub stale: u64,
    /// Dropped as replays.
    pub replayed: u64,
    /// Dropped because the window was full.
    pub overloaded: u64,
}

/// Opens envelopes addressed to one identity.
#[derive(Debug)]
pub struct Inbox {
    identity: Identity,
    seen: HashMap<String, u64>,
    order: VecDeque<(u64, String)>,
    stats: InboxStats,
}

impl Inbox {
    /// An inbox for `identity`.
    pub fn new(identity: Identity) -> Self {
        Self {
            identity,
            seen: HashMap::new(),
            order: VecDeque::new(),
            stats: InboxStats::default(),
        }
    }

    /// Opens an envelope received at wall-clock `now_ms` (unix ms).
    pub fn open(&mut self, now_ms: u64, envelope: &[u8]) -> Result<(NodeId, Signal), Rejected> {
        let result = self.try_open(now_ms, envelope);
        match &result {
            Ok(_) => self.stats.accepted += 1,
            Err(Rejected::Malformed) => self.stats.malformed += 1,
            Err(Rejected::Forged) => self.stats.forged += 1,
            Err(Rejected::Stale) => self.stats.stale += 1,
            Err(Rejected::Replayed) => self.stats.replayed += 1,
            Err(Rejected::Overloaded) => self.stats.overloaded += 1,
        }
        result
    }

    /// Counts so far.
    pub fn stats(&self) -> InboxStats {
        self.stats
    }

    fn try_open(&mut self, now_ms: u64, envelope: &[u8]) -> Result<(NodeId, Signal), Rejected> {
        if envelope.len() <= HEADER || envelope.len() > MAX_ENVELOPE || envelope[0] != VERSION {
            return Err(Rejected::Malformed);
        }
        let mut sender = [0u8; 32];
        sender.copy_from_slice(&envelope[1..33]);
        let sender = NodeId(sender);
        let me = self.identity.id;
        let cipher = self
            .identity
            .key_with(&sender, &sender, &me)
            .ok_or(Rejected::Forged)?;
        let mut aad = [0u8; 1 + 64];
        aad[0] = VERSION;
        aad[1..33].copy_from_slice(&sender.0);
        aad[33..].copy_from_slice(&me.0);
        let plaintext = cipher
            .decrypt(
                XNonce::from_slice(&envelope[33..HEADER]),
                Payload {
                    msg: &envelope[HEADER..],
                    aad: &aad,
                },
            )
            .map_err(|_| Rejected::Forged)?;
        let signal: Signal = serde_json::from_slice(&plaintext).map_err(|_| Rejected::Malformed)?;
        if signal.id.is_empty() || signal.id.len() > 64 {
            return Err(Rejected::Malformed);
        }
        if signal.sent_ms.abs_diff(now_ms) > WINDOW_MS {
            return Err(Rejected::Stale);
        }
        self.forget_before(now_ms.saturating_sub(2 * WINDOW_MS));
        let key = format!("{sender}/{}", signal.id);
        if self.seen.contains_key(&key) {
            return Err(Rejected::Replayed);
        }
        if self.order.len() >= MAX_SEEN {
            return Err(Rejected::Overloaded);
        }
        self.seen.insert(key.clone(), now_ms);
        self.order.push_back((now_ms, key));
        Ok((sender, signal))
    }

    fn forget_before(&mut self, cutoff_ms: u64) {
        while let Some((at, _)) = self.order.front() {
            if *at >= cutoff_ms {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                self.seen.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn alice() -> Identity {
        Identity::from_secret([1; 32])
    }

    fn bob() -> Identity {
        Identity::from_secret([2; 32])
    }

    fn signal(id: &str, sent_ms: u64) -> Signal {
        Signal {
            id: id.into(),
            sent_ms,
            body: Body::Reverse {
                token: "00112233445566778899aabbccddeeff".into(),
                addr: "-0-0-00".into(),
            },
        }
    }

    #[test]
    fn sealed_for_bob_opens_for_bob_only() {
        let envelope = seal(&alice(), &bob().id(), &signal("a", NOW), [7; 24]).expect("seal");
        let (from, opened) = Inbox::new(bob()).open(NOW, &envelope).expect("opens");
        assert_eq!(from, alice().id());
        assert_eq!(opened, signal("a", NOW));
        let carol = Identity::from_secret([3; 32]);
        assert_eq!(
            Inbox::new(carol).open(NOW, &envelope),
            Err(Rejected::Forged)
        );
    }

    #[test]
    fn a_forged_sender_or_flipped_bit_fails_authentication() {
        let envelope = seal(&alice(), &bob().id(), &signal("a", NOW), [7; 24]).expect("seal");
        let mut inbox = Inbox::new(bob());
        let mut claims_carol = envelope.clone();
        claims_carol[1..33].copy_from_slice(&Identity::from_secret([3; 32]).id().0);
        assert_eq!(inbox.open(NOW, &claims_carol), Err(Rejected::Forged));
        for at in [40, envelope.len() - 1] {
            let mut flipped = envelope.clone();
            flipped[at] ^= 1;
            assert_eq!(
                inbox.open(NOW, &flipped),
                Err(Rejected::Forged),
                "byte {at}"
            );
        }
        assert_eq!(inbox.stats().forged, 3);
    }

    #[test]
    fn replays_within_the_window_are_dropped() {
        let envelope = seal(&alice(), &bob().id(), &signal("once", NOW), [7; 24]).expect("seal");
        let mut inbox = Inbox::new(bob());
        assert!(inbox.open(NOW, &envelope).is_ok());
        assert_eq!(inbox.open(NOW + 1000, &envelope), Err(Rejected::Replayed));
        let same_id_new_nonce =
            seal(&alice(), &bob().id(), &signal("once", NOW), [8; 24]).expect("seal");
        assert_eq!(
            inbox.open(NOW + 1000, &same_id_new_nonce),
            Err(Rejected::Replayed)
        );
        assert_eq!(inbox.stats().replayed, 2);
    }

    #[test]
    fn stale_and_future_messages_are_dropped_but_skew_within_30_s_is_fine() {
        let mut inbox = Inbox::new(bob());
        for (sent, ok) in [
            (NOW - 29_000, true),
            (NOW + 29_000, true),
            (NOW - 31_000, false),
            (NOW + 31_000, false),
        ] {
            let envelope = seal(
                &alice(),
                &bob().id(),
                &signal(&sent.to_string(), sent),
                [9; 24],
            )
            .expect("seal");
            assert_eq!(inbox.open(NOW, &envelope).is_ok(), ok, "sent at {sent}");
        }
        assert_eq!(inbox.stats().stale, 2);
    }

    #[test]
    fn malformed_envelopes_are_counted() {
        let mut inbox = Inbox::new(bob());
        assert_eq!(inbox.open(NOW, b""), Err(Rejected::Malformed));
        assert_eq!(
            inbox.open(NOW, &[9; 100]),
            Err(Rejected::Malformed),
            "wrong version"
        );
        assert_eq!(
            inbox.open(NOW, &vec![1; MAX_ENVELOPE + 1]),
            Err(Rejected::Malformed)
        );
        assert_eq!(inbox.stats().malformed, 3);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_envelopes_never_open(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            crate::fuzz::signal_envelope(&data);
        }

        #[test]
        fn sealed_messages_round_trip(id in "[0-9a-f]{1,32}", skew in 0u64..59_000, nonce in proptest::prelude::any::<[u8; 24]>()) {
            let sent = NOW - 29_500 + skew;
            let original = signal(&id, sent);
            let envelope = seal(&alice(), &bob().id(), &original, nonce).expect("seal");
            proptest::prop_assert_eq!(Inbox::new(bob()).open(NOW, &envelope), Ok((alice().id(), original)));
        }
    }

    #[test]
    fn a_low_order_key_is_refused() {
        let zero = NodeId([0; 32]);
        assert!(seal(&alice(), &zero, &signal("a", NOW), [1; 24]).is_none());
        let mut envelope = seal(&alice(), &bob().id(), &signal("a", NOW), [7; 24]).expect("seal");
        envelope[1..33].copy_from_slice(&[0; 32]);
        assert_eq!(
            Inbox::new(bob()).open(NOW, &envelope),
            Err(Rejected::Forged)
        );
    }
}
