//! The reverse connect preamble: what a node dialling back for a reverse
//! request sends first, so the asker can tell which request the
//! connection answers.
//!
//! ```text
//! "P2PD-REVERSE " <32 hex digits: the request's token> "\n"
//! ```
//!
//! The token is random per request and travels to the peer sealed in the
//! signaling message, so only the peer the request was for can answer it.

use std::fmt;

/// The bytes a preamble starts with.
pub const MAGIC: &[u8] = b"P2PD-REVERSE ";
/// Length of a whole preamble: magic, 32 hex digits, newline.
pub const PREAMBLE_LEN: usize = MAGIC.len() + 32 + 1;

/// A reverse request's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token(pub u128);

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Why bytes are not a preamble.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PreambleError {
    /// Fewer bytes than a preamble.
    #[error("shorter than a reverse preamble")]
    Short,
    /// The bytes do not start with [`MAGIC`] and a newline-ended token.
    #[error("not a reverse preamble")]
    NotPreamble,
}

impl std::str::FromStr for Token {
    type Err = PreambleError;

    /// Parses 32 hex digits, either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PreambleError::NotPreamble);
        }
        u128::from_str_radix(s, 16)
            .map(Token)
            .map_err(|_| PreambleError::NotPreamble)
    }
}

/// The preamble for `token`.
pub fn encode(token: Token) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREAMBLE_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(token.to_string().as_bytes());
    out.push(b'\n');
    out
}

/// The token of the preamble `data` starts with.
pub fn decode(data: &[u8]) -> Result<Token, PreambleError> {
    let preamble = data.get(..PREAMBLE_LEN).ok_or(PreambleError::Short)?;
    let digits = preamble
        .strip_prefix(MAGIC)
        .and_then(|rest| rest.strip_suffix(b"\n"))
        .ok_or(PreambleError::NotPreamble)?;
    std::str::from_utf8(digits)
        .map_err(|_| PreambleError::NotPreamble)?
        .parse()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn preambles_are_recognised_exactly() {
        let token: Token = "00112233445566778899aabbccddeeff".parse().expect("token");
        let preamble = encode(token);
        assert_eq!(preamble, b"P2PD-REVERSE 00112233445566778899aabbccddeeff\n");
        assert_eq!(decode(&preamble), Ok(token));
        assert_eq!(
            decode(b"P2PD-REVERSE 00112233445566778899AABBCCDDEEFF\nECHO x"),
            Ok(token)
        );
        assert_eq!(decode(b"P2PD-REVERSE short\n"), Err(PreambleError::Short));
        assert_eq!(decode(b"ECHO hi"), Err(PreambleError::Short));
        let mut bad = preamble.clone();
        bad[20] = b'g';
        assert_eq!(decode(&bad), Err(PreambleError::NotPreamble));
        bad = preamble;
        bad[PREAMBLE_LEN - 1] = b' ';
        assert_eq!(decode(&bad), Err(PreambleError::NotPreamble));
    }

    proptest! {
        #[test]
        fn tokens_round_trip(n: u128, tail in proptest::collection::vec(any::<u8>(), 0..16)) {
            let mut bytes = encode(Token(n));
            bytes.extend_from_slice(&tail);
            prop_assert_eq!(decode(&bytes), Ok(Token(n)));
        }

        #[test]
        fn decoding_is_total(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = decode(&data);
        }
    }
}
