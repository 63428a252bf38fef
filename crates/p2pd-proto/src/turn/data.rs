//! The data connection of a TCP allocation (RFC 6062 section 4.3): a fresh
//! TCP connection to the server, one signed ConnectionBind naming a peer
//! connection, and after its success the peer's bytes as they are, in
//! both directions. Sans-IO: the request to write, and a check of what
//! the server wrote back, which says where the peer's bytes begin.

use std::net::SocketAddr;

use super::CONNECTION_BIND;
use super::error::TurnError;
use crate::stun::message::{Integrity, check_integrity};
use crate::stun::{Attribute, Class, Message, TransactionId};

/// A STUN header: type, length, cookie, transaction id.
const HEADER: usize = 20;

/// One ConnectionBind, made by [`super::Client::data_bind`].
#[derive(Debug, Clone)]
pub struct DataBind {
    server: SocketAddr,
    id: TransactionId,
    key: [u8; 16],
    request: Vec<u8>,
}

/// How far the server's answer has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindAnswer {
    /// Not all of it yet: read more and call again with everything read.
    NeedMore,
    /// Bound: the first `consumed` bytes were the answer; what follows is
    /// the peer's.
    Bound {
        /// The answer's length.
        consumed: usize,
    },
}

impl DataBind {
    pub(crate) fn new(
        server: SocketAddr,
        id: TransactionId,
        connection_id: u32,
        (username, realm, nonce): (&str, &str, &str),
        key: [u8; 16],
    ) -> Self {
        let mut message = Message::new(Class::Request, CONNECTION_BIND, id);
        message.attributes = vec![
            Attribute::ConnectionId(connection_id),
            Attribute::Username(username.to_owned()),
            Attribute::Realm(realm.to_owned()),
            Attribute::Nonce(nonce.to_owned()),
        ];
        let request = message.encode_signed(Some(Integrity::Sha1(&key)), false);
        Self {
            server,
            id,
            key,
            request,
        }
    }

    /// What to write on the new connection first.
    pub fn request(&self) -> &[u8] {
        &self.request
    }

    /// Checks `read`, everything the server has written on the data
    /// connection so far. A failure means the connection is useless: the
    /// server closes it.
    pub fn handle_answer(&self, read: &[u8]) -> Result<BindAnswer, TurnError> {
        let server = self.server;
        let malformed = |why| TurnError::Malformed { server, why };
        if read.first().is_some_and(|b| b & 0xc0 != 0) {
            return Err(malformed("a ConnectionBind answer that is not STUN"));
        }
        let Some(length) = read.get(2..4) else {
            return Ok(BindAnswer::NeedMore);
        };
        let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
        let total = HEADER + length;
        if read.len() < total {
            return Ok(BindAnswer::NeedMore);
        }
        let bytes = &read[..total];
        let message = Message::decode(bytes)
            .map_err(|_| malformed("an undecodable ConnectionBind answer"))?;
        if message.transaction != self.id || message.method != CONNECTION_BIND {
            return Err(malformed("an answer to another request"));
        }
        match message.class {
            Class::Success if check_integrity(bytes, &self.key) => {
                Ok(BindAnswer::Bound { consumed: total })
            }
            Class::Success => Err(malformed(
                "a ConnectionBind success not signed with our key",
            )),
            Class::Error => {
                let (code, reason) = match message.get(crate::stun::attribute::code::ERROR_CODE) {
                    Some(Attribute::ErrorCode { code, reason }) => (*code, reason.clone()),
                    _ => (0, String::from("no ERROR-CODE")),
                };
                Err(if code == 401 {
                    TurnError::Unauthorized { server, reason }
                } else {
                    TurnError::Refused {
                        server,
                        code,
                        reason,
                    }
                })
            }
            _ => Err(malformed("a ConnectionBind answer that is no response")),
        }
    }
}
