//! The reverse preamble: the first bytes of a connection dialled back for a
//! reverse request, `P2PD-REVERSE <32 hex digits>\n` (DESIGN.md
//! "Strategies"). The token in it is what lets the asking node hand exactly
//! that connection to the waiting connect, and serve no ECHO on it.

use std::fmt;
use std::str::FromStr;

use super::error::{BadToken, PreambleError};

/// What a node dialling back for a reverse request sends first.
pub const REVERSE_MAGIC: &[u8] = b"P2PD-REVERSE ";

/// Hex digits in a reverse token.
const TOKEN_DIGITS: usize = 32;

/// Length of a reverse preamble: magic, 32 hex digits, newline.
pub const REVERSE_PREAMBLE_LEN: usize = REVERSE_MAGIC.len() + TOKEN_DIGITS + 1;

/// The secret of one reverse request, known only to the two nodes.
///
/// The caller makes it from a random `u128` (proto has no RNG of its own),
/// so it cannot be guessed by a third party racing the dial-back.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReverseToken(u128);

impl ReverseToken {
    /// A token from 128 random bits.
    pub fn from_random(bits: u128) -> Self {
        Self(bits)
    }
}

impl fmt::Display for ReverseToken {
    /// 32 lowercase hex digits, as signaling messages and preambles carry it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for ReverseToken {
    /// Hidden: a token in a log could be replayed by whoever reads the log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReverseToken(..)")
    }
}

impl FromStr for ReverseToken {
    type Err = BadToken;

    /// Exactly 32 hex digits of either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex(s.as_bytes()).ok_or(BadToken)
    }
}

/// The preamble that announces a dial-back for `token`.
pub fn encode_preamble(token: ReverseToken) -> [u8; REVERSE_PREAMBLE_LEN] {
    let mut out = [0u8; REVERSE_PREAMBLE_LEN];
    let (magic, rest) = out.split_at_mut(REVERSE_MAGIC.len());
    magic.copy_from_slice(REVERSE_MAGIC);
    rest[..TOKEN_DIGITS].copy_from_slice(token.to_string().as_bytes());
    rest[TOKEN_DIGITS] = b'\n';
    out
}

/// The token of the preamble `data` begins with. The preamble is the first
/// [`REVERSE_PREAMBLE_LEN`] bytes; what follows is the stream's own data.
/// Hex digits of either case are taken, since the token's case carries no
/// meaning.
pub fn decode_preamble(data: &[u8]) -> Result<ReverseToken, PreambleError> {
    let magic_seen = data.len().min(REVERSE_MAGIC.len());
    if data[..magic_seen] != REVERSE_MAGIC[..magic_seen] {
        return Err(PreambleError::NotPreamble);
    }
    let Some(preamble) = data.get(..REVERSE_PREAMBLE_LEN) else {
        let digits = &data[magic_seen..];
        return if digits.iter().all(u8::is_ascii_hexdigit) {
            Err(PreambleError::Incomplete {
                needed: REVERSE_PREAMBLE_LEN - data.len(),
            })
        } else {
            Err(PreambleError::BadToken)
        };
    };
    let (digits, newline) = preamble[REVERSE_MAGIC.len()..].split_at(TOKEN_DIGITS);
    if newline != b"\n" {
        return Err(PreambleError::BadToken);
    }
    parse_hex(digits).ok_or(PreambleError::BadToken)
}

fn parse_hex(digits: &[u8]) -> Option<ReverseToken> {
    if digits.len() != TOKEN_DIGITS {
        return None;
    }
    let mut bits = 0u128;
    for &d in digits {
        let nibble = char::from(d).to_digit(16)?;
        bits = bits << 4 | u128::from(nibble);
    }
    Some(ReverseToken(bits))
}
