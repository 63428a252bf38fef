//! The STUN codec against RFC 5769's test vectors, round-trip properties,
//! and the fuzz corpus replayed on stable.

use std::net::SocketAddr;

use p2pd_proto::stun::attribute::code;
use p2pd_proto::stun::message::{Integrity, check_integrity, frame_len};
use p2pd_proto::stun::{Attribute, BINDING, Class, MAGIC_COOKIE, Message, TransactionId};
use proptest::prelude::*;

/// RFC 5769 section 2.1: a request with SOFTWARE, PRIORITY, ICE-CONTROLLED,
/// USERNAME "evtj:h6vY", MESSAGE-INTEGRITY (password
/// "VOkJxbRl1RmTxUk/WvJxBt") and FINGERPRINT.
const RFC5769_REQUEST: [u8; 108] = [
    0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73,
    0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff,
    0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09,
    0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14,
    0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49,
    0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
];

/// RFC 5769 section 2.2: the IPv4 response, XOR-MAPPED-ADDRESS
/// 192.0.2.1:32853, SOFTWARE "test vector", MESSAGE-INTEGRITY, FINGERPRINT.
const RFC5769_RESPONSE: [u8; 80] = [
    0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
    0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3, 0x8c, 0x74, 0x89, 0xf9,
    0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96,
];

const PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

#[test]
fn rfc5769_request_decodes_and_its_integrity_checks() {
    let msg = Message::decode(&RFC5769_REQUEST).expect("valid vector");
    assert_eq!(msg.class, Class::Request);
    assert_eq!(msg.method, BINDING);
    assert_eq!(msg.cookie, MAGIC_COOKIE);
    assert_eq!(
        msg.get(code::USERNAME),
        Some(&Attribute::Username("evtj:h6vY".into()))
    );
    assert_eq!(
        msg.get(code::SOFTWARE),
        Some(&Attribute::Software("STUN test client".into()))
    );
    assert!(check_integrity(&RFC5769_REQUEST, PASSWORD));
    assert!(!check_integrity(&RFC5769_REQUEST, b"wrong password"));
}

#[test]
fn rfc5769_response_gives_the_mapped_address() {
    let msg = Message::decode(&RFC5769_RESPONSE).expect("valid vector");
    assert_eq!(msg.class, Class::Success);
    assert_eq!(
        msg.mapped_address(),
        Some("192.0.2.1:32853".parse().expect("lit"))
    );
    assert!(check_integrity(&RFC5769_RESPONSE, PASSWORD));
}

#[test]
fn re_signing_the_vector_gives_the_same_bytes() {
    let msg = Message::decode(&RFC5769_RESPONSE).expect("valid vector");
    let mut unsigned = msg.clone();
    unsigned.attributes.retain(|a| {
        !matches!(
            a,
            Attribute::MessageIntegrity(_) | Attribute::Fingerprint(_)
        )
    });
    let signed = unsigned.encode_signed(Some(Integrity::Sha1(PASSWORD)), true);
    // Only the SOFTWARE padding differs: the vector pads with a space.
    let mut expected = RFC5769_RESPONSE.to_vec();
    expected[35] = 0;
    let mut signed_fixed = signed.clone();
    signed_fixed[35] = 0;
    assert_eq!(signed_fixed[..48], expected[..48]);
    assert!(check_integrity(&signed, PASSWORD));
    Message::decode(&signed).expect("fingerprint valid");
}

#[test]
fn attributes_after_message_integrity_are_ignored() {
    let msg = Message::new(Class::Request, BINDING, TransactionId([3; 12]))
        .with(Attribute::Username("u".into()))
        .with(Attribute::MessageIntegrity([0; 20]))
        .with(Attribute::Software("unauthenticated".into()));
    let decoded = Message::decode(&msg.encode()).expect("valid");
    assert_eq!(decoded.attributes.len(), 2);
    assert!(decoded.get(code::SOFTWARE).is_none());
}

#[test]
fn corrupted_fingerprint_or_misplaced_one_is_refused() {
    let mut bad = RFC5769_RESPONSE;
    bad[79] ^= 1;
    assert!(Message::decode(&bad).is_err());
    let mut moved = RFC5769_RESPONSE.to_vec();
    moved.extend_from_slice(&[0x80, 0x22, 0x00, 0x00]);
    moved[3] += 4;
    assert!(
        Message::decode(&moved).is_err(),
        "nothing may follow FINGERPRINT"
    );
}

#[test]
fn sha256_integrity_round_trips() {
    let msg = Message::new(Class::Request, BINDING, TransactionId([7; 12]))
        .with(Attribute::Username("u".into()));
    let bytes = msg.encode_signed(Some(Integrity::Sha256(b"k")), true);
    assert!(check_integrity(&bytes, b"k"));
    assert!(!check_integrity(&bytes, b"x"));
    let decoded = Message::decode(&bytes).expect("valid");
    assert!(decoded.get(code::MESSAGE_INTEGRITY_SHA256).is_some());
}

#[test]
fn framing_reads_the_length_from_the_header() {
    assert_eq!(frame_len(&RFC5769_REQUEST[..10]), Ok(None));
    assert_eq!(frame_len(&RFC5769_REQUEST[..20]), Ok(Some(108)));
    assert!(frame_len(&[0xff; 20]).is_err());
}

#[test]
fn truncations_of_a_valid_message_never_panic_and_fail() {
    for n in 0..RFC5769_REQUEST.len() {
        assert!(
            Message::decode(&RFC5769_REQUEST[..n]).is_err(),
            "prefix of {n} bytes"
        );
    }
}

#[test]
fn committed_fuzz_corpus_replays_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut replayed = 0;
    for target in ["stun_message", "stun_server"] {
        let Ok(entries) = std::fs::read_dir(dir.join(target)) else {
            continue;
        };
        for entry in entries.flatten() {
            let data = std::fs::read(entry.path()).expect("corpus file");
            match target {
                "stun_message" => p2pd_proto::fuzz::stun_message(&data),
                _ => p2pd_proto::fuzz::stun_server(&data),
            }
            replayed += 1;
        }
    }
    assert!(replayed > 0, "the corpus in fuzz/corpus is missing");
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    ]
}

fn attribute() -> impl Strategy<Value = Attribute> {
    let text = "[a-zA-Z0-9 é:]{0,40}";
    prop_oneof![
        socket_addr().prop_map(Attribute::MappedAddress),
        socket_addr().prop_map(Attribute::XorMappedAddress),
        socket_addr().prop_map(Attribute::OtherAddress),
        socket_addr().prop_map(Attribute::ResponseOrigin),
        socket_addr().prop_map(Attribute::ChangedAddress),
        socket_addr().prop_map(Attribute::SourceAddress),
        (any::<bool>(), any::<bool>()).prop_map(|(ip, port)| Attribute::ChangeRequest { ip, port }),
        any::<u16>().prop_map(Attribute::ResponsePort),
        text.prop_map(Attribute::Software),
        text.prop_map(Attribute::Username),
        text.prop_map(Attribute::Realm),
        text.prop_map(Attribute::Nonce),
        (300u16..700, text).prop_map(|(code, reason)| Attribute::ErrorCode { code, reason }),
        prop::collection::vec(any::<u16>(), 0..8).prop_map(Attribute::UnknownAttributes),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Attribute::Padding),
        (0x0030u16..0x7fff, prop::collection::vec(any::<u8>(), 0..40))
            .prop_filter("unknown types only", |(k, _)| !Attribute::is_known(*k))
            .prop_map(|(kind, value)| Attribute::Unknown { kind, value }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (
        prop_oneof![
            Just(Class::Request),
            Just(Class::Indication),
            Just(Class::Success),
            Just(Class::Error)
        ],
        0u16..0x1000,
        prop_oneof![Just(MAGIC_COOKIE), any::<u32>()],
        any::<[u8; 12]>(),
        prop::collection::vec(attribute(), 0..8),
        // MESSAGE-INTEGRITY ends the attributes that count (RFC 8489
        // section 14.5), so it is only ever generated last.
        prop::option::of(any::<[u8; 20]>()),
    )
        .prop_map(|(class, method, cookie, tid, mut attributes, integrity)| {
            attributes.extend(integrity.map(Attribute::MessageIntegrity));
            Message {
                class,
                method,
                cookie,
                transaction: TransactionId(tid),
                attributes,
            }
        })
}

proptest! {
    #[test]
    fn decode_inverts_encode(msg in message()) {
        prop_assert_eq!(Message::decode(&msg.encode()), Ok(msg));
    }

    #[test]
    fn encode_inverts_decode_for_canonical_bytes(msg in message(), fingerprint in any::<bool>()) {
        let bytes = msg.encode_signed(None, fingerprint);
        let decoded = Message::decode(&bytes).expect("valid");
        prop_assert_eq!(decoded.encode(), bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..200)) {
        p2pd_proto::fuzz::stun_message(&data);
        p2pd_proto::fuzz::stun_server(&data);
    }

    #[test]
    fn mutated_valid_messages_never_panic(msg in message(), flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let mut bytes = msg.encode_signed(Some(Integrity::Sha1(b"k")), true);
        for (at, x) in flips {
            let n = bytes.len();
            bytes[at % n] ^= x;
        }
        p2pd_proto::fuzz::stun_message(&bytes);
        p2pd_proto::fuzz::stun_server(&bytes);
    }
}
