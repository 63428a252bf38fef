//! Signaling messages between nodes: sealed to the recipient's key,
//! authenticated by the sender's, fresh and never replayed (DESIGN.md
//! "Identity and signaling"). Nobody but the recipient learns who sent one.
//!
//! ```text
//! envelope = version (2) | E (32) | AEAD(k_hide, S) (48) | AEAD(k_body, json body)
//! es       = X25519(e, R)      ss = X25519(s, R)      (the recipient: r with E and S)
//! k_hide   = HKDF-SHA256(es,      salt "p2pd-signal-v2", info "hide" | E | R)
//! k_body   = HKDF-SHA256(es | ss, salt "p2pd-signal-v2", info "body" | E | R | S)
//! ```
//!
//! `e`/`E` is a key pair made for the one envelope, `s`/`S` the sender's
//! static pair (its node id), `R` the recipient's. The sender's id travels
//! encrypted under `es`, as in Noise IK's first message, so someone who
//! watches a public broker sees only random keys; a later leak of the
//! sender's secret does not open its past envelopes (a leak of the
//! recipient's does). Each key seals one message, so the AEAD nonce is
//! fixed. Only the holder of `s` (or of `r`) can make a body that opens
//! under `k_body`, so a message that opens came from the key it names.
//!
//! The body carries a random id and the sender's wall-clock time: the
//! [`Inbox`] drops (and counts) envelopes that fail to open, are malformed,
//! are older or newer than the window, were sent before the inbox existed
//! (a restart forgets the ids it saw), or repeat an id seen in it. What it
//! remembers is bounded per sender and per broker, so one flooding key or
//! broker cannot lock the others out. Wall time and randomness come from
//! the caller.

use std::collections::{HashMap, VecDeque};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::addr::NodeId;

/// Envelope format version.
const VERSION: u8 = 2;
/// The sender's key, sealed: 32 bytes and the AEAD tag.
const HIDDEN_SENDER: usize = 32 + 16;
const HEADER: usize = 1 + 32 + HIDDEN_SENDER;
const SALT: &[u8] = b"p2pd-signal-v2";
/// Every key seals one message only.
const NONCE: [u8; 24] = [0; 24];
/// Messages this far from our clock, either way, are dropped.
pub const WINDOW_MS: u64 = 30_000;
/// Envelopes larger than this are dropped unopened.
pub const MAX_ENVELOPE: usize = 8 * 1024;
/// How many ids an [`Inbox`] remembers within a window.
///
/// When a share is full (a flood), new envelopes of that share are refused
/// rather than ids forgotten, which would let a captured message be
/// replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Per sender: a node sends a few per connect, so a key over this is
    /// flooding, and only it is refused.
    pub per_sender: usize,
    /// Per broker: copies of a message through other brokers still get in
    /// while one broker is flooded (by many keys).
    pub per_broker: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_sender: 256,
            per_broker: 65_536,
        }
    }
}

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
        self.agree(&peer.0).is_some()
    }

    /// X25519 with `peer`, refusing a low-order key (such as all zeros),
    /// which gives a secret anyone can compute.
    fn agree(&self, peer: &[u8; 32]) -> Option<[u8; 32]> {
        agree(&self.secret, peer)
    }
}

fn agree(secret: &StaticSecret, peer: &[u8; 32]) -> Option<[u8; 32]> {
    // X25519 ignores a key's top bit: two ids would name one key.
    if peer[31] & 0x80 != 0 {
        return None;
    }
    let shared = secret.diffie_hellman(&PublicKey::from(*peer));
    shared.was_contributory().then(|| shared.to_bytes())
}

/// A one-message key from shared secrets, bound to the parties' keys.
fn derive(secrets: &[&[u8; 32]], label: &[u8], parties: &[&[u8; 32]]) -> Option<XChaCha20Poly1305> {
    let ikm: Vec<u8> = secrets.iter().flat_map(|s| s.iter().copied()).collect();
    let info: Vec<u8> = label
        .iter()
        .copied()
        .chain(parties.iter().flat_map(|p| p.iter().copied()))
        .collect();
    let mut key = [0u8; 32];
    Hkdf::<Sha256>::new(Some(SALT), &ikm)
        .expand(&info, &mut key)
        .ok()?;
    Some(XChaCha20Poly1305::new((&key).into()))
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
    /// Punch: the asker's offer (`crate::punch`); answered by
    /// [`Body::PunchAnswer`] or [`Body::PunchRefused`] with the same token.
    Punch {
        /// 32 hex digits naming this punch; its handshakes carry it.
        token: String,
        /// The asker's peer address.
        addr: String,
        /// Where the asker's connections will come from.
        offer: crate::punch::Offer,
        /// When it was sent, on the asker's synchronised clock (unix ms).
        sent_ms: u64,
        /// How far that clock may be off (ms).
        error_ms: u64,
    },
    /// Punch: the answerer's offer and the meet time.
    PunchAnswer {
        /// The punch's token.
        token: String,
        /// Where the answerer's connections will come from.
        offer: crate::punch::Offer,
        /// When both connect, on the synchronised clock (unix ms).
        meet_ms: u64,
    },
    /// Punch: the answerer will not punch, and why.
    PunchRefused {
        /// The punch's token.
        token: String,
        /// Why.
        reason: String,
    },
    /// Relay: the asker's relayed address on its TURN server
    /// (`crate::turn`); answered by [`Body::RelayAnswer`] or
    /// [`Body::RelayRefused`] with the same token.
    Relay {
        /// 32 hex digits naming this relay; its handshake carries it.
        token: String,
        /// The asker's peer address.
        addr: String,
        /// Where the asker's allocation relays from.
        relayed: std::net::SocketAddr,
    },
    /// Relay: the answerer's relayed address, permitted to the asker's.
    RelayAnswer {
        /// The relay's token.
        token: String,
        /// Where the answerer's allocation relays from.
        relayed: std::net::SocketAddr,
    },
    /// Relay: the answerer will not relay, and why.
    RelayRefused {
        /// The relay's token.
        token: String,
        /// Why.
        reason: String,
    },
    /// A liveness probe; no answer is due. (A struct variant, so that
    /// unknown fields are refused: serde ignores them on unit variants.)
    Ping {},
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

/// Seals `signal` from `me` to `to`. `ephemeral` must be random, and
/// fresh for every envelope.
pub fn seal(me: &Identity, to: &NodeId, signal: &Signal, ephemeral: [u8; 32]) -> Option<Vec<u8>> {
    seal_bytes(me, to, &serde_json::to_vec(signal).ok()?, ephemeral)
}

fn seal_bytes(
    me: &Identity,
    to: &NodeId,
    plaintext: &[u8],
    ephemeral: [u8; 32],
) -> Option<Vec<u8>> {
    let e = StaticSecret::from(ephemeral);
    let e_pub = PublicKey::from(&e).to_bytes();
    let es = agree(&e, &to.0)?;
    let ss = me.agree(&to.0)?;
    let hide = derive(&[&es], b"hide", &[&e_pub, &to.0])?;
    let body = derive(&[&es, &ss], b"body", &[&e_pub, &to.0, &me.id.0])?;
    let mut out = Vec::with_capacity(HEADER + plaintext.len() + 16);
    out.push(VERSION);
    out.extend_from_slice(&e_pub);
    let hidden = hide
        .encrypt(
            XNonce::from_slice(&NONCE),
            Payload {
                msg: &me.id.0,
                aad: &out,
            },
        )
        .ok()?;
    out.extend_from_slice(&hidden);
    let sealed = body
        .encrypt(
            XNonce::from_slice(&NONCE),
            Payload {
                msg: plaintext,
                aad: &out,
            },
        )
        .ok()?;
    out.extend_from_slice(&sealed);
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
    /// Its sender, or the broker it came through, sent too many within
    /// one window to remember them all.
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
    /// Dropped because its sender's or broker's share of the window was
    /// full.
    pub overloaded: u64,
}

impl InboxStats {
    /// Every envelope counted, whatever became of it.
    pub fn total(&self) -> u64 {
        self.accepted + self.malformed + self.forged + self.stale + self.replayed + self.overloaded
    }
}

/// One remembered message: who sent it and its id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Seen {
    sender: NodeId,
    id: String,
}

/// Opens envelopes addressed to one identity.
#[derive(Debug)]
pub struct Inbox {
    identity: Identity,
    not_before_ms: u64,
    limits: Limits,
    seen: HashMap<Seen, u64>,
    order: VecDeque<(u64, Seen, u8)>,
    per_sender: HashMap<NodeId, usize>,
    per_broker: HashMap<u8, usize>,
    stats: InboxStats,
}

impl Inbox {
    /// An inbox for `identity` that exists since wall-clock `start_ms`.
    /// Envelopes sent before it are refused as stale: they may have been
    /// seen by an earlier process with the same identity, whose memory of
    /// ids is gone. (A sender whose clock is behind ours by s seconds is
    /// refused for the first s seconds.)
    pub fn new(identity: Identity, start_ms: u64) -> Self {
        Self {
            identity,
            not_before_ms: start_ms,
            limits: Limits::default(),
            seen: HashMap::new(),
            order: VecDeque::new(),
            per_sender: HashMap::new(),
            per_broker: HashMap::new(),
            stats: InboxStats::default(),
        }
    }

    /// The same inbox with other limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Opens an envelope received at wall-clock `now_ms` (unix ms) through
    /// broker `via` (an index into the node's broker list).
    pub fn open(
        &mut self,
        now_ms: u64,
        via: u8,
        envelope: &[u8],
    ) -> Result<(NodeId, Signal), Rejected> {
        let result = self.try_open(now_ms, via, envelope);
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

    fn try_open(
        &mut self,
        now_ms: u64,
        via: u8,
        envelope: &[u8],
    ) -> Result<(NodeId, Signal), Rejected> {
        if envelope.len() <= HEADER || envelope.len() > MAX_ENVELOPE || envelope[0] != VERSION {
            return Err(Rejected::Malformed);
        }
        let (header, sealed) = envelope.split_at(HEADER);
        let mut e_pub = [0u8; 32];
        e_pub.copy_from_slice(&header[1..33]);
        let me = self.identity.id;
        let es = self.identity.agree(&e_pub).ok_or(Rejected::Forged)?;
        let hide = derive(&[&es], b"hide", &[&e_pub, &me.0]).ok_or(Rejected::Forged)?;
        let hidden = hide
            .decrypt(
                XNonce::from_slice(&NONCE),
                Payload {
                    msg: &header[33..],
                    aad: &header[..33],
                },
            )
            .map_err(|_| Rejected::Forged)?;
        let sender = NodeId(hidden.try_into().map_err(|_| Rejected::Forged)?);
        let ss = self.identity.agree(&sender.0).ok_or(Rejected::Forged)?;
        let body =
            derive(&[&es, &ss], b"body", &[&e_pub, &me.0, &sender.0]).ok_or(Rejected::Forged)?;
        let plaintext = body
            .decrypt(
                XNonce::from_slice(&NONCE),
                Payload {
                    msg: sealed,
                    aad: header,
                },
            )
            .map_err(|_| Rejected::Forged)?;
        let signal: Signal = serde_json::from_slice(&plaintext).map_err(|_| Rejected::Malformed)?;
        if signal.id.is_empty() || signal.id.len() > 64 {
            return Err(Rejected::Malformed);
        }
        if signal.sent_ms.abs_diff(now_ms) > WINDOW_MS || signal.sent_ms < self.not_before_ms {
            return Err(Rejected::Stale);
        }
        self.forget_before(now_ms.saturating_sub(2 * WINDOW_MS));
        let key = Seen {
            sender,
            id: signal.id.clone(),
        };
        if self.seen.contains_key(&key) {
            return Err(Rejected::Replayed);
        }
        let from_sender = self.per_sender.get(&sender).copied().unwrap_or(0);
        let from_broker = self.per_broker.get(&via).copied().unwrap_or(0);
        if from_sender >= self.limits.per_sender || from_broker >= self.limits.per_broker {
            return Err(Rejected::Overloaded);
        }
        *self.per_sender.entry(sender).or_default() += 1;
        *self.per_broker.entry(via).or_default() += 1;
        self.seen.insert(key.clone(), now_ms);
        self.order.push_back((now_ms, key, via));
        Ok((sender, signal))
    }

    fn forget_before(&mut self, cutoff_ms: u64) {
        while let Some((at, _, _)) = self.order.front() {
            if *at >= cutoff_ms {
                break;
            }
            let Some((_, key, via)) = self.order.pop_front() else {
                break;
            };
            decrement(&mut self.per_sender, key.sender);
            decrement(&mut self.per_broker, via);
            self.seen.remove(&key);
        }
    }
}

/// Lowers a count, forgetting it at zero so the map holds only senders
/// (or brokers) still in the window.
fn decrement<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: K) {
    if let std::collections::hash_map::Entry::Occupied(mut count) = counts.entry(key) {
        *count.get_mut() -= 1;
        if *count.get() == 0 {
            count.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;
    /// When the inboxes under test started: a minute before `NOW`.
    const START: u64 = NOW - 60_000;

    fn alice() -> Identity {
        Identity::from_secret([1; 32])
    }

    fn bob() -> Identity {
        Identity::from_secret([2; 32])
    }

    fn seal_json(me: &Identity, to: &NodeId, json: &[u8], nonce: [u8; 32]) -> Vec<u8> {
        seal_bytes(me, to, json, nonce).expect("seal")
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
        let envelope = seal(&alice(), &bob().id(), &signal("a", NOW), [7; 32]).expect("seal");
        let (from, opened) = Inbox::new(bob(), START)
            .open(NOW, 0, &envelope)
            .expect("opens");
        assert_eq!(from, alice().id());
        assert_eq!(opened, signal("a", NOW));
        let carol = Identity::from_secret([3; 32]);
        assert_eq!(
            Inbox::new(carol, START).open(NOW, 0, &envelope),
            Err(Rejected::Forged)
        );
    }

    #[test]
    fn the_sender_is_hidden_from_everyone_but_the_recipient() {
        let a = seal(&alice(), &bob().id(), &signal("a", NOW), [7; 32]).expect("seal");
        let b = seal(&alice(), &bob().id(), &signal("a", NOW), [8; 32]).expect("seal");
        let id = alice().id().0;
        for envelope in [&a, &b] {
            assert!(
                !envelope.windows(32).any(|w| w == id),
                "the sender's key is not in the envelope"
            );
        }
        assert_ne!(a[..HEADER], b[..HEADER], "nothing links two envelopes");
        // Not even the sender can open what it sealed: its secret alone
        // does not give the body key.
        assert_eq!(
            Inbox::new(alice(), START).open(NOW, 0, &a),
            Err(Rejected::Forged)
        );
    }

    #[test]
    fn a_forged_sender_or_flipped_bit_fails_authentication() {
        let envelope = seal(&alice(), &bob().id(), &signal("a", NOW), [7; 32]).expect("seal");
        let mut inbox = Inbox::new(bob(), START);
        let mut claims_carol = envelope.clone();
        claims_carol[1..33].copy_from_slice(&Identity::from_secret([3; 32]).id().0);
        assert_eq!(inbox.open(NOW, 0, &claims_carol), Err(Rejected::Forged));
        for at in [40, envelope.len() - 1] {
            let mut flipped = envelope.clone();
            flipped[at] ^= 1;
            assert_eq!(
                inbox.open(NOW, 0, &flipped),
                Err(Rejected::Forged),
                "byte {at}"
            );
        }
        assert_eq!(inbox.stats().forged, 3);
    }

    #[test]
    fn replays_within_the_window_are_dropped() {
        let envelope = seal(&alice(), &bob().id(), &signal("once", NOW), [7; 32]).expect("seal");
        let mut inbox = Inbox::new(bob(), START);
        assert!(inbox.open(NOW, 0, &envelope).is_ok());
        assert_eq!(
            inbox.open(NOW + 1000, 0, &envelope),
            Err(Rejected::Replayed)
        );
        let same_id_new_nonce =
            seal(&alice(), &bob().id(), &signal("once", NOW), [8; 32]).expect("seal");
        assert_eq!(
            inbox.open(NOW + 1000, 0, &same_id_new_nonce),
            Err(Rejected::Replayed)
        );
        assert_eq!(inbox.stats().replayed, 2);
    }

    #[test]
    fn stale_and_future_messages_are_dropped_but_skew_within_30_s_is_fine() {
        let mut inbox = Inbox::new(bob(), START);
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
                [9; 32],
            )
            .expect("seal");
            assert_eq!(inbox.open(NOW, 0, &envelope).is_ok(), ok, "sent at {sent}");
        }
        assert_eq!(inbox.stats().stale, 2);
    }

    #[test]
    fn messages_sent_before_the_inbox_started_are_stale() {
        // A message captured just before a restart with the same identity:
        // the new process has not seen its id, but refuses it by its time.
        let mut inbox = Inbox::new(bob(), NOW);
        let before = seal(&alice(), &bob().id(), &signal("old", NOW - 1), [1; 32]).expect("seal");
        assert_eq!(inbox.open(NOW + 6_000, 0, &before), Err(Rejected::Stale));
        let after = seal(&alice(), &bob().id(), &signal("new", NOW), [2; 32]).expect("seal");
        assert!(inbox.open(NOW + 6_000, 0, &after).is_ok());
    }

    #[test]
    fn a_flooding_sender_is_refused_alone_and_only_until_its_messages_expire() {
        let limits = Limits {
            per_sender: 3,
            per_broker: 100,
        };
        let mut inbox = Inbox::new(bob(), START).with_limits(limits);
        for n in 0..5 {
            let envelope = seal(
                &alice(),
                &bob().id(),
                &signal(&format!("f{n}"), NOW),
                [n; 32],
            )
            .expect("seal");
            let expected = if n < 3 {
                Ok(())
            } else {
                Err(Rejected::Overloaded)
            };
            assert_eq!(inbox.open(NOW, 0, &envelope).map(|_| ()), expected, "{n}");
        }
        let carol = Identity::from_secret([3; 32]);
        let other = seal(&carol, &bob().id(), &signal("c", NOW), [9; 32]).expect("seal");
        assert!(inbox.open(NOW, 0, &other).is_ok(), "another sender gets in");
        let later = NOW + 2 * WINDOW_MS + 1;
        let again = seal(&alice(), &bob().id(), &signal("f9", later), [8; 32]).expect("seal");
        assert!(inbox.open(later, 0, &again).is_ok(), "the share frees up");
        assert_eq!(inbox.stats().overloaded, 2);
    }

    #[test]
    fn a_flooded_broker_does_not_block_copies_through_another() {
        let limits = Limits {
            per_sender: 100,
            per_broker: 4,
        };
        let mut inbox = Inbox::new(bob(), START).with_limits(limits);
        for n in 0..4u8 {
            let flooder = Identity::from_secret([10 + n; 32]);
            let envelope = seal(&flooder, &bob().id(), &signal("x", NOW), [n; 32]).expect("seal");
            assert!(inbox.open(NOW, 0, &envelope).is_ok());
        }
        let genuine = seal(&alice(), &bob().id(), &signal("g", NOW), [7; 32]).expect("seal");
        assert_eq!(inbox.open(NOW, 0, &genuine), Err(Rejected::Overloaded));
        assert!(
            inbox.open(NOW, 1, &genuine).is_ok(),
            "the copy via broker 1"
        );
        assert_eq!(inbox.stats().total(), 6);
    }

    #[test]
    fn bodies_with_unknown_fields_are_malformed() {
        let mut inbox = Inbox::new(bob(), START);
        for (n, body) in [
            r#"{"type":"ping","extra":1}"#,
            r#"{"type":"reverse","token":"00","addr":"a","extra":1}"#,
            r#"{"type":"ping"}"#,
        ]
        .into_iter()
        .enumerate()
        {
            let json = format!(r#"{{"id":"u{n}","sent_ms":{NOW},"body":{body}}}"#);
            let envelope = seal_json(&alice(), &bob().id(), json.as_bytes(), [n as u8; 32]);
            let expected = if n == 2 {
                Ok(())
            } else {
                Err(Rejected::Malformed)
            };
            assert_eq!(
                inbox.open(NOW, 0, &envelope).map(|_| ()),
                expected,
                "{body}"
            );
        }
    }

    #[test]
    fn malformed_envelopes_are_counted() {
        let mut inbox = Inbox::new(bob(), START);
        assert_eq!(inbox.open(NOW, 0, b""), Err(Rejected::Malformed));
        assert_eq!(
            inbox.open(NOW, 0, &[9; 100]),
            Err(Rejected::Malformed),
            "wrong version"
        );
        assert_eq!(
            inbox.open(NOW, 0, &vec![1; MAX_ENVELOPE + 1]),
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
        fn sealed_messages_round_trip(id in "[0-9a-f]{1,32}", skew in 0u64..59_000, nonce in proptest::prelude::any::<[u8; 32]>()) {
            let sent = NOW - 29_500 + skew;
            let original = signal(&id, sent);
            let envelope = seal(&alice(), &bob().id(), &original, nonce).expect("seal");
            proptest::prop_assert_eq!(Inbox::new(bob(), START).open(NOW, 0, &envelope), Ok((alice().id(), original)));
        }
    }

    #[test]
    fn relay_bodies_carry_relayed_addresses_as_text() {
        let body = Body::Relay {
            token: "ab".repeat(16),
            addr: "p2pd://x".into(),
            relayed: "198.18.0.6:50000".parse().expect("literal"),
        };
        let json = serde_json::to_string(&body).expect("serialises");
        assert!(
            json.contains(r#""type":"relay""#) && json.contains(r#""relayed":"198.18.0.6:50000""#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Body>(&json).expect("parses"), body);
        let answer = r#"{"type":"relay-answer","token":"t","relayed":"[2001:db8::6]:3"}"#;
        assert!(matches!(
            serde_json::from_str::<Body>(answer),
            Ok(Body::RelayAnswer { .. })
        ));
        let extra = r#"{"type":"relay-refused","token":"t","reason":"r","x":1}"#;
        assert!(
            serde_json::from_str::<Body>(extra).is_err(),
            "unknown fields are refused"
        );
        let bad = r#"{"type":"relay-answer","token":"t","relayed":"not an address"}"#;
        assert!(serde_json::from_str::<Body>(bad).is_err());
    }

    #[test]
    fn a_key_with_its_top_bit_set_is_not_a_second_id() {
        let mut twin = alice().id();
        twin.0[31] |= 0x80;
        assert!(!bob().agrees_with(&twin));
        assert!(seal(&bob(), &twin, &signal("a", NOW), [1; 32]).is_none());
    }

    #[test]
    fn a_low_order_key_is_refused() {
        let zero = NodeId([0; 32]);
        assert!(seal(&alice(), &zero, &signal("a", NOW), [1; 32]).is_none());
        let mut envelope = seal(&alice(), &bob().id(), &signal("a", NOW), [7; 32]).expect("seal");
        envelope[1..33].copy_from_slice(&[0; 32]);
        assert_eq!(
            Inbox::new(bob(), START).open(NOW, 0, &envelope),
            Err(Rejected::Forged)
        );
    }
}
