//! Telling, from a connection's first bytes, what the client is: a p2pd
//! node starting the handshake, an original P2PD 3.x node, or a plain
//! client (netcat, a user's program).

use super::MAGIC;

/// What an original P2PD 3.x node sends first: `P2P_CON_ID_EQ <id>\n`.
pub const LEGACY_PREFIX: &[u8] = b"P2P_CON_ID_EQ ";

/// A legacy line longer than this is no legacy line.
const LEGACY_LINE_MAX: usize = 128;

/// What the first bytes of a connection say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Greeting {
    /// Too few bytes to tell: they could still become a handshake or a
    /// legacy line. The caller waits a little, then treats them as plain.
    NeedMore,
    /// A p2pd handshake starts here.
    Handshake,
    /// An original node's `P2P_CON_ID_EQ` line, `line_len` bytes with its
    /// newline: to be consumed, the rest is the application's.
    Legacy {
        /// The line's length, newline included.
        line_len: usize,
    },
    /// Anything else: an anonymous plain client; every byte is its data.
    Plain,
}

/// Classifies the first bytes of an accepted connection.
pub fn classify(first: &[u8]) -> Greeting {
    if first.is_empty() {
        return Greeting::NeedMore;
    }
    if let Some(greeting) = match_prefix(first, MAGIC, Greeting::Handshake) {
        return greeting;
    }
    if let Some(greeting) = match_prefix(first, LEGACY_PREFIX, Greeting::NeedMore) {
        if greeting == Greeting::NeedMore {
            return match first.iter().take(LEGACY_LINE_MAX).position(|&b| b == b'\n') {
                Some(end) => Greeting::Legacy { line_len: end + 1 },
                None if first.len() >= LEGACY_LINE_MAX => Greeting::Plain,
                None => Greeting::NeedMore,
            };
        }
        return greeting;
    }
    Greeting::Plain
}

/// `whole` when `first` starts with `prefix`, `NeedMore` when it is a
/// shorter part of it, `None` when it is not that prefix.
fn match_prefix(first: &[u8], prefix: &[u8], whole: Greeting) -> Option<Greeting> {
    let n = first.len().min(prefix.len());
    if first[..n] != prefix[..n] {
        return None;
    }
    Some(if first.len() >= prefix.len() {
        whole
    } else {
        Greeting::NeedMore
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_magic_is_told_apart_byte_by_byte() {
        for n in 1..MAGIC.len() {
            assert_eq!(classify(&MAGIC[..n]), Greeting::NeedMore, "{n} bytes");
        }
        assert_eq!(classify(MAGIC), Greeting::Handshake);
        assert_eq!(classify(b"\0p2pd-hs and more"), Greeting::Handshake);
        assert_eq!(classify(b"\0p2px"), Greeting::Plain);
    }

    #[test]
    fn plain_clients_are_plain_from_their_first_byte() {
        for first in [
            &b"ECHO hi"[..],
            b"GET / HTTP/1.1\r\n",
            b"\x10\x0c\0\x04MQTT",
            b"x",
        ] {
            assert_eq!(classify(first), Greeting::Plain, "{first:?}");
        }
    }

    #[test]
    fn an_original_nodes_line_is_found_whole() {
        assert_eq!(classify(b"P2P_CON"), Greeting::NeedMore);
        assert_eq!(classify(b"P2P_CON_ID_EQ 12"), Greeting::NeedMore);
        assert_eq!(
            classify(b"P2P_CON_ID_EQ 1234\nECHO hi"),
            Greeting::Legacy { line_len: 19 }
        );
        let endless = [b"P2P_CON_ID_EQ ".as_slice(), &[b'1'; 200]].concat();
        assert_eq!(classify(&endless), Greeting::Plain);
        assert_eq!(classify(b"P2P_CONNECT"), Greeting::Plain);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_classify(bytes: Vec<u8>) {
            let greeting = classify(&bytes);
            if let Greeting::Legacy { line_len } = greeting {
                proptest::prop_assert!(line_len <= bytes.len());
                proptest::prop_assert_eq!(bytes[line_len - 1], b'\n');
            }
        }
    }
}
