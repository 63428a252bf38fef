//! Types that the message codec and the attribute codec both need: the
//! transaction id (attributes XOR addresses with it) and the decode error.
//! They sit here, below both, so neither codec imports the other's types
//! back.

/// The 96-bit transaction id (in a classic RFC 3489 message, the last 12 of
/// its 16 id bytes; the first 4 sit where the magic cookie would).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId(pub [u8; 12]);

/// Why bytes are not a STUN message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the header or the length field announce.
    #[error("truncated: {0} bytes")]
    Truncated(usize),
    /// The first two bits are not zero: not STUN (maybe RTP or TLS).
    #[error("not a STUN message")]
    NotStun,
    /// The length field is wrong (not a multiple of 4, or past the end).
    #[error("bad length field")]
    BadLength,
    /// An attribute runs past the end of the message.
    #[error("attribute 0x{0:04x} runs past the message")]
    AttributeOverrun(u16),
    /// An attribute's value is malformed.
    #[error("attribute 0x{kind:04x}: {why}")]
    Attribute {
        /// The attribute type.
        kind: u16,
        /// What is wrong.
        why: &'static str,
    },
    /// FINGERPRINT does not match, or is not the last attribute.
    #[error("bad fingerprint")]
    BadFingerprint,
}
