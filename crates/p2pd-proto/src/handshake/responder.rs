//! The side that answers the handshake: it learns who is calling.

use snow::HandshakeState;

use super::{
    HandshakeError, Hello, MAGIC, MAX_MESSAGE, ReplayGuard, Reply, Session, frame, keys, put_frame,
};
use crate::addr::NodeId;
use crate::signal::Identity;

/// A handshake that reached us, waiting for its first message.
pub struct Responder {
    state: Option<HandshakeState>,
    encrypt: bool,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("encrypt", &self.encrypt)
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

/// A first message that proved who sent it.
#[derive(Debug)]
pub struct Accepted {
    /// What the initiator asked for.
    pub hello: Hello,
    /// The session: the initiator's node ID and the record keys.
    pub session: Session,
    /// The answer to send back.
    pub reply: Vec<u8>,
    /// Bytes that followed the first message.
    pub leftover: Vec<u8>,
}

impl Responder {
    /// Answers handshakes as `me`; `encrypt` is our wish. `seed` makes the
    /// ephemeral key: random for every handshake.
    pub fn new(me: &Identity, encrypt: bool, seed: [u8; 32]) -> Result<Self, HandshakeError> {
        Ok(Self {
            state: Some(keys::responder(me, seed)?),
            encrypt,
            buf: Vec::new(),
        })
    }

    /// Feeds bytes from the initiator (from the magic on), received at
    /// `now_ms` (unix ms). Once the first message is whole and proven fresh
    /// by `guard`: what it says and the answer to send.
    pub fn read(
        &mut self,
        now_ms: u64,
        guard: &mut ReplayGuard,
        bytes: &[u8],
    ) -> Result<Option<Accepted>, HandshakeError> {
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
        let mut state = self.state.take().ok_or(HandshakeError::Malformed)?;
        let mut payload = [0u8; MAX_MESSAGE];
        let n = state
            .read_message(msg, &mut payload)
            .map_err(|_| HandshakeError::NotForUs)?;
        let hello = Hello::decode(&payload[..n])?;
        guard.admit(now_ms, hello.sent_ms, ephemeral)?;
        let peer = state
            .get_remote_static()
            .and_then(|key| <[u8; 32]>::try_from(key).ok())
            .map(NodeId)
            .ok_or(HandshakeError::Malformed)?;
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
        let transport = if hello.encrypt || self.encrypt {
            Some(state.into_stateless_transport_mode()?)
        } else {
            None
        };
        let leftover = self.buf[MAGIC.len() + used..].to_vec();
        self.buf = Vec::new();
        Ok(Some(Accepted {
            hello,
            session: Session::new(peer, transport),
            reply,
            leftover,
        }))
    }
}
