//! The side that answers the handshake: it learns who is calling.

use snow::HandshakeState;

use super::record::{Opener, Sealer, TAG};
use super::{
    HandshakeError, Hello, MAGIC, MAX_MESSAGE, Reply, Session, frame, keys, put_frame, record,
};
use crate::addr::NodeId;
use crate::signal::Identity;

/// A handshake that reached us.
///
/// 1. [`Responder::read_first`] until the first message is whole: who
///    claims to call, and the ephemeral key the caller admits with a
///    [`ReplayGuard`](super::ReplayGuard);
/// 2. [`Responder::answer`]: the bytes to send back;
/// 3. [`Responder::confirm`] until the initiator's key confirmation (an
///    empty record under the new keys) is whole: only then is the caller
///    proven to be live on this connection, not replaying a first message
///    it saw elsewhere.
pub struct Responder {
    me: Identity,
    encrypt: bool,
    stage: Stage,
    buf: Vec<u8>,
}

enum Stage {
    First(HandshakeState),
    Heard(HandshakeState, Hello, NodeId),
    Answered {
        hello: Hello,
        peer: NodeId,
        sealer: Sealer,
        opener: Opener,
    },
    Done,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("encrypt", &self.encrypt)
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

/// A first message that opened with our key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heard {
    /// What the initiator asked for.
    pub hello: Hello,
    /// The node ID it proved to hold (pending its key confirmation).
    pub peer: NodeId,
    /// Its ephemeral key: what a replay guard remembers.
    pub ephemeral: [u8; 32],
}

/// A confirmed handshake.
#[derive(Debug)]
pub struct Accepted {
    /// What the initiator asked for.
    pub hello: Hello,
    /// The session: the initiator's node ID and the record keys.
    pub session: Session,
    /// Bytes that followed the confirmation: the application's (records on
    /// an encrypted connection).
    pub leftover: Vec<u8>,
}

impl Responder {
    /// Answers a handshake as `me`; `encrypt` is our wish. `seed` makes
    /// the ephemeral key: random for every handshake.
    pub fn new(me: &Identity, encrypt: bool, seed: [u8; 32]) -> Result<Self, HandshakeError> {
        Ok(Self {
            me: me.clone(),
            encrypt,
            stage: Stage::First(keys::responder(me, seed)?),
            buf: Vec::new(),
        })
    }

    /// Feeds bytes from the initiator, from the magic on. Once the first
    /// message is whole and opens with our key: what it says.
    pub fn read_first(&mut self, bytes: &[u8]) -> Result<Option<Heard>, HandshakeError> {
        self.buf.extend_from_slice(bytes);
        let n = self.buf.len().min(MAGIC.len());
        if self.buf[..n] != MAGIC[..n] {
            return Err(HandshakeError::Malformed);
        }
        let Some(after_magic) = self.buf.get(MAGIC.len()..) else {
            return Ok(None);
        };
        let Some((msg, used)) = frame(after_magic)? else {
            return Ok(None);
        };
        let ephemeral: [u8; 32] = msg
            .get(..32)
            .and_then(|e| e.try_into().ok())
            .ok_or(HandshakeError::Malformed)?;
        let Stage::First(mut state) = std::mem::replace(&mut self.stage, Stage::Done) else {
            return Err(HandshakeError::Malformed);
        };
        let mut payload = [0u8; MAX_MESSAGE];
        let n = state
            .read_message(msg, &mut payload)
            .map_err(|_| HandshakeError::NotForUs)?;
        let hello = Hello::decode(&payload[..n])?;
        let peer = state
            .get_remote_static()
            .and_then(|key| <[u8; 32]>::try_from(key).ok())
            .map(NodeId)
            .ok_or(HandshakeError::Malformed)?;
        if !self.me.agrees_with(&peer) {
            return Err(HandshakeError::WeakKey);
        }
        self.buf.drain(..MAGIC.len() + used);
        self.stage = Stage::Heard(state, hello, peer);
        Ok(Some(Heard {
            hello,
            peer,
            ephemeral,
        }))
    }

    /// The answer to a first message the caller has admitted as fresh.
    pub fn answer(&mut self) -> Result<Vec<u8>, HandshakeError> {
        let Stage::Heard(mut state, hello, peer) = std::mem::replace(&mut self.stage, Stage::Done)
        else {
            return Err(HandshakeError::Malformed);
        };
        let mut answer = [0u8; MAX_MESSAGE];
        let m = state.write_message(
            &Reply {
                encrypt: self.encrypt,
            }
            .encode(),
            &mut answer,
        )?;
        let mut reply = Vec::with_capacity(2 + m);
        put_frame(&mut reply, &answer[..m]);
        let (sealer, opener) = record::keys(state, false)?;
        self.stage = Stage::Answered {
            hello,
            peer,
            sealer,
            opener,
        };
        Ok(reply)
    }

    /// Feeds bytes after the answer (the first call may pass none: bytes
    /// that came with the first message are kept). Once the initiator's
    /// key confirmation is whole and opens: the accepted connection.
    pub fn confirm(&mut self, bytes: &[u8]) -> Result<Option<Accepted>, HandshakeError> {
        self.buf.extend_from_slice(bytes);
        let Some(head) = self.buf.get(..2) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([head[0], head[1]]));
        if len != TAG {
            return Err(HandshakeError::Unconfirmed);
        }
        if self.buf.len() < 2 + len {
            return Ok(None);
        }
        let Stage::Answered {
            hello,
            peer,
            sealer,
            mut opener,
        } = std::mem::replace(&mut self.stage, Stage::Done)
        else {
            return Err(HandshakeError::Malformed);
        };
        let mut plain = Vec::new();
        opener
            .open(&self.buf[..2 + len], &mut plain)
            .map_err(|_| HandshakeError::Unconfirmed)?;
        if opener.opened() != 1 || !plain.is_empty() {
            return Err(HandshakeError::Unconfirmed);
        }
        let leftover = self.buf.split_off(2 + len);
        self.buf = Vec::new();
        let encrypted = hello.encrypt || self.encrypt;
        Ok(Some(Accepted {
            hello,
            session: Session::new(peer, encrypted, (sealer, opener)),
            leftover,
        }))
    }
}
