//! The side that starts the handshake: it knows whom it wants.

use snow::HandshakeState;

use super::{
    HandshakeError, Hello, MAGIC, MAX_MESSAGE, Reply, Session, frame, keys, put_frame, record,
};
use crate::addr::NodeId;
use crate::signal::Identity;

/// A handshake we started, waiting for the answer.
pub struct Initiator {
    state: Option<HandshakeState>,
    peer: NodeId,
    hello: Hello,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initiator")
            .field("peer", &self.peer)
            .field("hello", &self.hello)
            .finish_non_exhaustive()
    }
}

/// A handshake the answer has proven.
#[derive(Debug)]
pub struct Finished {
    /// The session: the peer's node ID and the record keys.
    pub session: Session,
    /// The key confirmation to send before anything else: the responder
    /// hands the connection on only once it has opened it.
    pub confirm: Vec<u8>,
    /// Bytes that followed the answer.
    pub leftover: Vec<u8>,
}

impl Initiator {
    /// Starts a handshake with the node `peer` as `me`; returns the bytes
    /// to send first (the magic and the first message). `seed` makes the
    /// ephemeral key: random for every handshake.
    pub fn start(
        me: &Identity,
        peer: &NodeId,
        hello: Hello,
        seed: [u8; 32],
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        if !me.agrees_with(peer) {
            return Err(HandshakeError::WeakKey);
        }
        let mut state = keys::initiator(me, peer, seed)?;
        let mut msg = [0u8; MAX_MESSAGE];
        let n = state.write_message(&hello.encode(), &mut msg)?;
        let mut out = MAGIC.to_vec();
        put_frame(&mut out, &msg[..n]);
        let initiator = Self {
            state: Some(state),
            peer: *peer,
            hello,
            buf: Vec::new(),
        };
        Ok((initiator, out))
    }

    /// Feeds bytes from the other end. Once its answer is whole and proves
    /// the peer's key: the session and the confirmation to send.
    pub fn read(&mut self, bytes: &[u8]) -> Result<Option<Finished>, HandshakeError> {
        self.buf.extend_from_slice(bytes);
        let Some((msg, used)) = frame(&self.buf).map_err(|_| HandshakeError::NotThePeer)? else {
            return Ok(None);
        };
        let mut state = self.state.take().ok_or(HandshakeError::Malformed)?;
        let mut payload = [0u8; MAX_MESSAGE];
        let n = state
            .read_message(msg, &mut payload)
            .map_err(|_| HandshakeError::NotThePeer)?;
        let reply = Reply::decode(&payload[..n])?;
        let (mut sealer, opener) = record::keys(state, true)?;
        let mut confirm = Vec::new();
        sealer
            .seal_record(&[], &mut confirm)
            .map_err(|_| HandshakeError::Malformed)?;
        let leftover = self.buf[used..].to_vec();
        self.buf = Vec::new();
        let encrypted = self.hello.encrypt || reply.encrypt;
        Ok(Some(Finished {
            session: Session::new(self.peer, encrypted, (sealer, opener)),
            confirm,
            leftover,
        }))
    }
}
