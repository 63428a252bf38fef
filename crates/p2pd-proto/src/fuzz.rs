//! Bodies of the fuzz targets in `fuzz/`, here so the test suite replays the
//! committed corpus and property tests on stable Rust (cargo fuzz needs
//! nightly). Each panics on a bug and returns normally otherwise.

use crate::addr::PeerAddr;
use crate::connect::PreambleError;
use crate::connect::preamble::{
    REVERSE_MAGIC, REVERSE_PREAMBLE_LEN, decode_preamble, encode_preamble,
};
use crate::signal::{Identity, Inbox};
use crate::stun::Attribute;
use crate::stun::message::{Message, check_integrity, frame_len};
use crate::stun::server::{self, ServerAddresses, Transport};

/// STUN decoding: never panics; whatever decodes re-encodes to a message
/// that decodes to the same value (a FINGERPRINT is recomputed, since
/// padding bytes it covered need not survive).
pub fn stun_message(data: &[u8]) {
    let _ = frame_len(data);
    let _ = check_integrity(data, b"key");
    let Ok(mut message) = Message::decode(data) else {
        return;
    };
    message
        .attributes
        .retain(|a| !matches!(a, Attribute::Fingerprint(_)));
    let again = Message::decode(&message.encode()).expect("a decoded message re-encodes validly");
    assert_eq!(again, message);
}

/// The STUN server's answer to any bytes: never panics, and every answer
/// decodes.
pub fn stun_server(data: &[u8]) {
    let addrs = ServerAddresses {
        primary: "198.18.0.2:3478".parse().expect("literal"),
        alternate: Some("198.18.0.12:3479".parse().expect("literal")),
    };
    let client = "203.0.113.9:5000".parse().expect("literal");
    for transport in [Transport::Udp, Transport::Tcp] {
        if let Some(reply) = server::respond(&addrs, transport, addrs.primary, client, data) {
            Message::decode(&reply.payload).expect("the server's answers decode");
        }
    }
}

/// Peer address parsing: never panics; what parses prints back to text that
/// parses to the same address.
pub fn peer_addr(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(addr) = text.parse::<PeerAddr>() else {
        return;
    };
    addr.validate()
        .expect("a parsed address is within the limits");
    let again: PeerAddr = addr.to_string().parse().expect("a printed address parses");
    assert_eq!(again, addr);
}

/// Opening signaling envelopes: never panics, and arbitrary bytes never
/// open (they would have to forge the sender's key).
pub fn signal_envelope(data: &[u8]) {
    let mut inbox = Inbox::new(Identity::from_secret([2; 32]));
    assert!(
        inbox.open(1_800_000_000_000, data).is_err(),
        "random bytes opened"
    );
}

/// Reverse preamble decoding: never panics; a decoded token encodes back
/// to the same preamble but for the case of its hex digits, and bytes
/// reported incomplete are a preamble's beginning.
pub fn reverse_preamble(data: &[u8]) {
    match decode_preamble(data) {
        Ok(token) => {
            let again = encode_preamble(token);
            assert!(
                again.eq_ignore_ascii_case(&data[..REVERSE_PREAMBLE_LEN]),
                "a decoded preamble re-encodes to itself"
            );
            assert_eq!(decode_preamble(&again), Ok(token));
        }
        Err(PreambleError::Incomplete { needed }) => {
            assert_eq!(data.len() + needed, REVERSE_PREAMBLE_LEN);
            let magic = data.len().min(REVERSE_MAGIC.len());
            assert_eq!(data[..magic], REVERSE_MAGIC[..magic]);
        }
        Err(PreambleError::NotPreamble | PreambleError::BadToken) => {}
    }
}
