//! The payloads the two handshake messages carry.

use super::{HandshakeError, VERSION};
use crate::connect::ReverseToken;

/// Flag: the sender wants the stream encrypted.
const ENCRYPT: u8 = 1;
/// Flag: a reverse token follows.
const TOKEN: u8 = 2;

/// What the initiator says in the first message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Whether the initiator wants the stream encrypted.
    pub encrypt: bool,
    /// When the initiator sent it (unix ms): the responder refuses a first
    /// message from outside its window.
    pub sent_ms: u64,
    /// Set when this connection answers the responder's reverse request.
    pub token: Option<ReverseToken>,
}

/// What the responder says in the second message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Whether the responder wants the stream encrypted.
    pub encrypt: bool,
}

impl Hello {
    /// `version, flags, sent_ms (8 bytes), [token (16 bytes)]`.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut flags = 0;
        if self.encrypt {
            flags |= ENCRYPT;
        }
        if self.token.is_some() {
            flags |= TOKEN;
        }
        let mut out = vec![VERSION, flags];
        out.extend_from_slice(&self.sent_ms.to_be_bytes());
        if let Some(token) = self.token {
            out.extend_from_slice(&token.to_bits().to_be_bytes());
        }
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Self, HandshakeError> {
        let [version, flags, rest @ ..] = bytes else {
            return Err(HandshakeError::Malformed);
        };
        if *version != VERSION || flags & !(ENCRYPT | TOKEN) != 0 {
            return Err(HandshakeError::Malformed);
        }
        let (sent, rest) = rest
            .split_first_chunk::<8>()
            .ok_or(HandshakeError::Malformed)?;
        let (token, rest) = if flags & TOKEN != 0 {
            let (token, rest) = rest
                .split_first_chunk::<16>()
                .ok_or(HandshakeError::Malformed)?;
            let bits = u128::from_be_bytes(*token);
            (Some(ReverseToken::from_random(bits)), rest)
        } else {
            (None, rest)
        };
        if !rest.is_empty() {
            return Err(HandshakeError::Malformed);
        }
        Ok(Self {
            encrypt: flags & ENCRYPT != 0,
            sent_ms: u64::from_be_bytes(*sent),
            token,
        })
    }
}

impl Reply {
    /// `version, flags`.
    pub(super) fn encode(self) -> [u8; 2] {
        [VERSION, if self.encrypt { ENCRYPT } else { 0 }]
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Self, HandshakeError> {
        match bytes {
            [VERSION, flags] if flags & !ENCRYPT == 0 => Ok(Self {
                encrypt: flags & ENCRYPT != 0,
            }),
            _ => Err(HandshakeError::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn hellos_round_trip(encrypt: bool, sent_ms: u64, token: Option<u128>) {
            let hello = Hello { encrypt, sent_ms, token: token.map(ReverseToken::from_random) };
            proptest::prop_assert_eq!(Hello::decode(&hello.encode()), Ok(hello));
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes: Vec<u8>) {
            let _ = Hello::decode(&bytes);
            let _ = Reply::decode(&bytes);
        }
    }

    #[test]
    fn unknown_flags_versions_and_trailing_bytes_are_refused() {
        let good = Hello {
            encrypt: true,
            sent_ms: 7,
            token: None,
        }
        .encode();
        let mut flags = good.clone();
        flags[1] |= 0x80;
        let mut version = good.clone();
        version[0] = 2;
        let mut longer = good.clone();
        longer.push(0);
        for bad in [flags, version, longer, good[..5].to_vec()] {
            assert_eq!(Hello::decode(&bad), Err(HandshakeError::Malformed));
        }
        assert_eq!(Reply::decode(&[VERSION, 1]), Ok(Reply { encrypt: true }));
        assert_eq!(Reply::decode(&[VERSION, 3]), Err(HandshakeError::Malformed));
    }
}
