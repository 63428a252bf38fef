//! The reverse preamble codec: exact recognition, round trips, and the fuzz
//! body over arbitrary bytes and the committed corpus on stable.

use p2pd_proto::connect::PreambleError;
use p2pd_proto::connect::ReverseToken;
use p2pd_proto::connect::preamble::{REVERSE_PREAMBLE_LEN, decode_preamble, encode_preamble};
use proptest::prelude::*;

const TOKEN: &str = "00112233445566778899aabbccddeeff";

#[test]
fn a_preamble_is_recognised_exactly_and_its_token_lowercased() {
    let preamble = format!("P2PD-REVERSE {TOKEN}\n");
    assert_eq!(preamble.len(), REVERSE_PREAMBLE_LEN);
    let token = decode_preamble(preamble.as_bytes()).expect("a preamble");
    assert_eq!(token.to_string(), TOKEN);
    let upper = format!("P2PD-REVERSE {}\n", TOKEN.to_uppercase());
    assert_eq!(decode_preamble(upper.as_bytes()), Ok(token));
    assert_eq!(encode_preamble(token).as_slice(), preamble.as_bytes());
}

#[test]
fn bytes_after_the_preamble_are_the_streams_own() {
    let data = format!("P2PD-REVERSE {TOKEN}\nECHO hi");
    assert_eq!(
        decode_preamble(data.as_bytes()).map(|t| t.to_string()),
        Ok(TOKEN.to_owned())
    );
}

#[test]
fn other_bytes_are_refused_by_kind() {
    assert_eq!(decode_preamble(b"ECHO hi"), Err(PreambleError::NotPreamble));
    assert_eq!(
        decode_preamble(b"P2PD-REVERSE short\n"),
        Err(PreambleError::BadToken)
    );
    let crlf = format!("P2PD-REVERSE {TOKEN}\r\n");
    assert_eq!(
        decode_preamble(crlf.as_bytes()),
        Err(PreambleError::BadToken)
    );
    let not_hex = format!("P2PD-REVERSE {}g\n", &TOKEN[..31]);
    assert_eq!(
        decode_preamble(not_hex.as_bytes()),
        Err(PreambleError::BadToken)
    );
    assert_eq!(
        decode_preamble(b"P2PD-REV"),
        Err(PreambleError::Incomplete {
            needed: REVERSE_PREAMBLE_LEN - 8
        })
    );
    assert_eq!(
        decode_preamble(b""),
        Err(PreambleError::Incomplete {
            needed: REVERSE_PREAMBLE_LEN
        })
    );
}

#[test]
fn tokens_parse_from_32_hex_digits_only() {
    let token: ReverseToken = TOKEN.parse().expect("32 hex digits");
    assert_eq!(
        token,
        ReverseToken::from_random(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff)
    );
    assert!("abc".parse::<ReverseToken>().is_err());
    assert!(format!("{TOKEN}0").parse::<ReverseToken>().is_err());
    assert!(format!("+{}", &TOKEN[1..]).parse::<ReverseToken>().is_err());
    assert_eq!(
        format!("{token:?}"),
        "ReverseToken(..)",
        "tokens stay out of logs"
    );
}

proptest! {
    #[test]
    fn every_token_round_trips(bits in any::<u128>(), tail in proptest::collection::vec(any::<u8>(), 0..20)) {
        let token = ReverseToken::from_random(bits);
        let mut data = encode_preamble(token).to_vec();
        data.extend_from_slice(&tail);
        prop_assert_eq!(decode_preamble(&data), Ok(token));
        prop_assert_eq!(token.to_string().parse::<ReverseToken>(), Ok(token));
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..80)) {
        p2pd_proto::fuzz::reverse_preamble(&data);
    }

    #[test]
    fn near_preambles_never_panic(bits in any::<u128>(), at in 0usize..REVERSE_PREAMBLE_LEN, byte in any::<u8>(), cut in 0usize..=REVERSE_PREAMBLE_LEN) {
        let mut data = encode_preamble(ReverseToken::from_random(bits)).to_vec();
        data[at] = byte;
        data.truncate(cut.max(at));
        p2pd_proto::fuzz::reverse_preamble(&data);
    }
}

#[test]
fn committed_fuzz_corpus_replays_cleanly() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/reverse_preamble");
    let mut replayed = 0;
    for entry in std::fs::read_dir(dir)
        .expect("the corpus directory exists")
        .flatten()
    {
        p2pd_proto::fuzz::reverse_preamble(&std::fs::read(entry.path()).expect("corpus file"));
        replayed += 1;
    }
    assert!(replayed > 0, "empty corpus");
}
