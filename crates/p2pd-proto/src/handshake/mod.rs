//! The connection handshake (DESIGN.md "Connections"): every connection
//! between two p2pd nodes starts with it, whichever strategy made it.
//!
//! It is the Noise protocol's IK pattern (`Noise_IK_25519_AESGCM_BLAKE2s`,
//! through the snow crate) with the node keys that peer addresses already
//! carry:
//!
//! ```text
//! initiator                                      responder
//!   MAGIC, len, [e, es, s, ss, Hello]   ─────▶   proves the initiator's key
//!                                                (and its freshness)
//!   proves the responder's key   ◀─────  len, [e, ee, se, Reply]
//!   confirmation (an empty record) ─────▶   proves the initiator is live
//!   then records (encrypted) or raw bytes (plain), both ways
//! ```
//!
//! One round trip on top of TCP's for the initiator, which sends the
//! confirmation and its data at once; the responder waits half a round trip
//! more before it trusts the connection. The initiator knows whom it wants (the
//! node ID of the address it dialled, or of the node that asked it to dial
//! back); a responder that does not hold that key cannot read the first
//! message nor write the second, so the initiator finds out at once that
//! this is "not the peer". The responder learns the initiator's key from the
//! first message; a [`ReplayGuard`] refuses a first message seen before or
//! sent outside a ±30 s window, and the key confirmation, which only the
//! holder of the first message's ephemeral key can make, keeps someone who
//! saw a first message from answering it on a connection of their own.
//!
//! The connection is encrypted when either side's [`Hello`]/[`Reply`] asks
//! for it; then each direction is a series of [`record`]s. Without it the
//! bytes after the handshake are the application's, unchanged.
//!
//! Everything here is sans-IO: bytes in, bytes out; the caller supplies the
//! wall clock (unix ms) and the randomness (a seed for the ephemeral keys).

mod greeting;
mod hello;
mod initiator;
mod keys;
pub mod record;
mod replay;
mod responder;

pub use greeting::{Greeting, LEGACY_PREFIX, classify};
pub use hello::{Hello, Reply};
pub use initiator::{Finished, Initiator};
pub use replay::ReplayGuard;
pub use responder::{Accepted, Heard, Responder};

use crate::addr::NodeId;
use record::{Opener, Sealer};

/// The first bytes of a handshake: a NUL first, which no text protocol
/// sends, so a plain client is told apart from the first byte on.
pub const MAGIC: &[u8; 8] = b"\0p2pd-hs";

/// The handshake's version, in both payloads.
pub const VERSION: u8 = 1;

/// The Noise protocol name. AES-GCM rather than ChaCha20-Poly1305: on the
/// machines measured (x86-64 with AES-NI) it seals a 64-byte record in
/// 0.2 µs where the poly1305 crate's AVX2 code takes 1.3 µs (it prepares
/// each key for long messages), and large records as fast (docs/handshake.md).
const PATTERN: &str = "Noise_IK_25519_AESGCM_BLAKE2s";

/// A handshake message never needs more (IK's first message with our
/// payload is 122 bytes); a larger length prefix is garbage.
const MAX_MESSAGE: usize = 512;

/// How far the two clocks may differ, and how long a first message is
/// remembered.
pub const WINDOW_MS: u64 = 30_000;

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The bytes are not a handshake message (length, version, layout).
    #[error("malformed handshake message")]
    Malformed,
    /// The answer does not open with the keys of the node we asked for: the
    /// other end does not hold that node's key.
    #[error("not the peer: the answer does not prove the node's key")]
    NotThePeer,
    /// The first message does not open with our key: it was meant for
    /// another node (or forged).
    #[error("the handshake was meant for another node")]
    NotForUs,
    /// The node ID is a low-order key: anyone could answer or call as it.
    #[error("a node ID that is no usable key (low order)")]
    WeakKey,
    /// The first message was sent outside the acceptance window.
    #[error("the handshake is stale or from the future (clocks more than 30 s apart?)")]
    Stale,
    /// The first message was seen before.
    #[error("the handshake is a replay")]
    Replayed,
    /// Too many handshakes within one window to remember them all.
    #[error("too many handshakes at once")]
    Overloaded,
    /// The initiator did not confirm the keys: its first message may be a
    /// replay of one seen elsewhere.
    #[error("the initiator did not confirm the handshake keys")]
    Unconfirmed,
    /// The Noise library refused its input (a bug or a bad key).
    #[error("noise: {0}")]
    Noise(String),
}

impl From<snow::Error> for HandshakeError {
    fn from(err: snow::Error) -> Self {
        Self::Noise(err.to_string())
    }
}

/// A finished handshake: who the other end is, and the record keys when
/// the connection is encrypted.
pub struct Session {
    /// The other end's node ID, proven by the handshake.
    pub peer: NodeId,
    /// The record keys when the stream is encrypted (either side asked).
    keys: Option<(Sealer, Opener)>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("peer", &self.peer)
            .field("encrypted", &self.encrypted())
            .finish_non_exhaustive()
    }
}

impl Session {
    fn new(peer: NodeId, encrypted: bool, keys: (Sealer, Opener)) -> Self {
        Self {
            peer,
            keys: encrypted.then_some(keys),
        }
    }

    /// Whether the stream is encrypted (either side asked for it).
    pub fn encrypted(&self) -> bool {
        self.keys.is_some()
    }

    /// The sealer for what we send and the opener for what we receive;
    /// `None` on a plain connection.
    pub fn into_keys(self) -> Option<(Sealer, Opener)> {
        self.keys
    }
}

/// Reads one `u16` length-prefixed message from the front of `buf`: the
/// message, and how many bytes it took; `None` while incomplete.
fn frame(buf: &[u8]) -> Result<Option<(&[u8], usize)>, HandshakeError> {
    let Some(len) = buf.get(..2) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    if len == 0 || len > MAX_MESSAGE {
        return Err(HandshakeError::Malformed);
    }
    Ok(buf.get(2..2 + len).map(|msg| (msg, 2 + len)))
}

/// Appends `msg` with its `u16` length prefix.
fn put_frame(out: &mut Vec<u8>, msg: &[u8]) {
    let len = u16::try_from(msg.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
}
