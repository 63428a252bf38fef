//! The reverse token: the secret of one reverse request. The request
//! carries it to the peer (as 32 hex digits); the peer's dial-back carries
//! it in its connection handshake, which lets the asking node hand exactly
//! that connection to the waiting connect, and serve no ECHO on it.

use std::fmt;
use std::str::FromStr;

use super::error::BadToken;

/// Hex digits in a reverse token.
const TOKEN_DIGITS: usize = 32;

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

    /// The token's 128 bits, as the handshake carries them.
    pub fn to_bits(self) -> u128 {
        self.0
    }
}

impl fmt::Display for ReverseToken {
    /// 32 lowercase hex digits, as signaling messages carry it.
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

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn tokens_print_and_parse_back(bits: u128) {
            let token = ReverseToken::from_random(bits);
            let text = token.to_string();
            proptest::prop_assert_eq!(text.len(), TOKEN_DIGITS);
            proptest::prop_assert_eq!(text.parse::<ReverseToken>(), Ok(token));
            proptest::prop_assert_eq!(text.to_uppercase().parse::<ReverseToken>(), Ok(token));
            proptest::prop_assert_eq!(token.to_bits(), bits);
        }
    }

    #[test]
    fn anything_but_32_hex_digits_is_refused() {
        for bad in [
            "",
            "00112233445566778899aabbccddeef",
            "00112233445566778899aabbccddeefg",
            "00112233445566778899aabbccddeeff0",
        ] {
            assert_eq!(bad.parse::<ReverseToken>(), Err(BadToken), "{bad:?}");
        }
    }
}
