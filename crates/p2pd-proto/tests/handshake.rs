//! The connection handshake end to end, on bytes: both roles, every
//! encryption wish, fragmentation, wrong keys, replays and records.

use p2pd_proto::addr::NodeId;
use p2pd_proto::connect::ReverseToken;
use p2pd_proto::handshake::record::{MAX_PLAINTEXT, Opener, RecordError, Sealer};
use p2pd_proto::handshake::{
    Accepted, Finished, Greeting, HandshakeError, Hello, Initiator, ReplayGuard, Responder,
    classify,
};
use p2pd_proto::signal::Identity;

const NOW: u64 = 1_800_000_000_000;

fn alice() -> Identity {
    Identity::from_secret([1; 32])
}

fn bob() -> Identity {
    Identity::from_secret([2; 32])
}

fn hello(encrypt: bool) -> Hello {
    Hello {
        encrypt,
        sent_ms: NOW,
        token: None,
    }
}

const SOURCE: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 7));

/// The responder's first two steps as a node server runs them: reads the
/// first message, admits it, answers; `None` while it is incomplete.
fn respond(
    responder: &mut Responder,
    now: u64,
    guard: &mut ReplayGuard,
    bytes: &[u8],
) -> Result<Option<Vec<u8>>, HandshakeError> {
    let Some(heard) = responder.read_first(bytes)? else {
        return Ok(None);
    };
    guard.admit(now, SOURCE, heard.hello.sent_ms, heard.ephemeral)?;
    responder.answer().map(Some)
}

/// Runs a whole handshake, feeding each side `chunk` bytes at a time.
fn handshake(
    hello: Hello,
    responder_encrypts: bool,
    chunk: usize,
    guard: &mut ReplayGuard,
) -> Result<(Finished, Accepted), HandshakeError> {
    let (mut initiator, first) = Initiator::start(&alice(), &bob().id(), hello, [3; 32])?;
    let mut responder = Responder::new(&bob(), responder_encrypts, [4; 32])?;
    let mut reply = None;
    for piece in first.chunks(chunk) {
        assert!(reply.is_none(), "answered before the whole message");
        reply = respond(&mut responder, NOW, guard, piece)?;
    }
    let reply = reply.expect("the first message is whole");
    let mut done = None;
    for piece in reply.chunks(chunk) {
        assert!(done.is_none());
        done = initiator.read(piece)?;
    }
    let finished = done.expect("the answer is whole");
    let mut accepted = None;
    for piece in finished.confirm.chunks(chunk) {
        assert!(accepted.is_none());
        accepted = responder.confirm(piece)?;
    }
    Ok((finished, accepted.expect("the confirmation is whole")))
}

#[test]
fn both_sides_learn_each_other_and_encrypt_when_either_asks() {
    for (mine, theirs) in [(true, true), (true, false), (false, true), (false, false)] {
        let (
            Finished {
                session, leftover, ..
            },
            accepted,
        ) = handshake(hello(mine), theirs, usize::MAX, &mut ReplayGuard::new()).expect("handshake");
        assert_eq!(session.peer, bob().id());
        assert_eq!(accepted.session.peer, alice().id());
        assert_eq!(session.encrypted(), mine || theirs);
        assert_eq!(accepted.session.encrypted(), mine || theirs);
        assert!(leftover.is_empty() && accepted.leftover.is_empty());
    }
}

#[test]
fn one_byte_at_a_time_is_the_same_handshake() {
    let (Finished { session, .. }, accepted) =
        handshake(hello(true), true, 1, &mut ReplayGuard::new()).expect("handshake");
    assert_eq!(session.peer, bob().id());
    assert_eq!(accepted.session.peer, alice().id());
}

#[test]
fn the_reverse_token_travels_in_the_first_message() {
    let token = ReverseToken::from_random(0x1234_5678_9abc_def0_1122_3344_5566_7788);
    let hello = Hello {
        token: Some(token),
        ..hello(false)
    };
    let (_, accepted) = handshake(hello, false, 7, &mut ReplayGuard::new()).expect("handshake");
    assert_eq!(accepted.hello.token, Some(token));
}

#[test]
fn a_node_without_the_key_cannot_answer() {
    let carol = Identity::from_secret([9; 32]);
    let (mut initiator, first) =
        Initiator::start(&alice(), &bob().id(), hello(true), [3; 32]).expect("start");
    // Carol sits at Bob's address: she cannot open what was sealed to Bob.
    let mut responder = Responder::new(&carol, true, [4; 32]).expect("responder");
    assert_eq!(
        respond(&mut responder, NOW, &mut ReplayGuard::new(), &first).expect_err("refused"),
        HandshakeError::NotForUs
    );
    // Nor can she make an answer that Alice accepts: her own handshake's
    // answer, or any bytes, prove nothing.
    let (_, carols_first) =
        Initiator::start(&carol, &alice().id(), hello(true), [5; 32]).expect("carol");
    let mut alices_responder = Responder::new(&alice(), true, [6; 32]).expect("responder");
    let carols_answer = respond(
        &mut alices_responder,
        NOW,
        &mut ReplayGuard::new(),
        &carols_first,
    )
    .expect("read")
    .expect("whole");
    assert_eq!(
        initiator.read(&carols_answer).expect_err("refused"),
        HandshakeError::NotThePeer
    );
}

#[test]
fn a_low_order_node_id_is_refused_on_both_sides() {
    let zero = NodeId([0; 32]);
    assert_eq!(
        Initiator::start(&alice(), &zero, hello(true), [3; 32]).expect_err("refused"),
        HandshakeError::WeakKey
    );
    assert!(alice().agrees_with(&bob().id()));
    assert!(!alice().agrees_with(&zero));
}

#[test]
fn anything_but_an_answer_is_not_the_peer() {
    for answer in [
        &b"\x00\x05hello"[..],
        b"HTTP/1.1 400 Bad Request\r\n",
        b"\xff\xff",
    ] {
        let (mut initiator, _) =
            Initiator::start(&alice(), &bob().id(), hello(true), [3; 32]).expect("start");
        assert_eq!(
            initiator.read(answer).expect_err("refused"),
            HandshakeError::NotThePeer,
            "{answer:?}"
        );
    }
}

#[test]
fn a_first_message_is_accepted_once_and_only_while_fresh() {
    let (_, first) = Initiator::start(&alice(), &bob().id(), hello(true), [3; 32]).expect("start");
    let mut guard = ReplayGuard::new();
    let mut responder = Responder::new(&bob(), true, [4; 32]).expect("responder");
    assert!(
        respond(&mut responder, NOW, &mut guard, &first)
            .expect("first")
            .is_some()
    );
    let mut again = Responder::new(&bob(), true, [5; 32]).expect("responder");
    assert_eq!(
        respond(&mut again, NOW + 1000, &mut guard, &first).expect_err("refused"),
        HandshakeError::Replayed
    );
    let mut late = Responder::new(&bob(), true, [6; 32]).expect("responder");
    assert_eq!(
        respond(&mut late, NOW + 31_000, &mut ReplayGuard::new(), &first).expect_err("refused"),
        HandshakeError::Stale
    );
}

#[test]
fn a_first_message_seen_elsewhere_cannot_be_confirmed() {
    // Eve saw Alice's first message and plays it to Bob on her own
    // connection, before Alice's arrives: Bob answers, but only the holder
    // of Alice's ephemeral key can confirm.
    let (_, first) = Initiator::start(&alice(), &bob().id(), hello(false), [3; 32]).expect("start");
    let mut responder = Responder::new(&bob(), false, [4; 32]).expect("responder");
    let reply = respond(&mut responder, NOW, &mut ReplayGuard::new(), &first).expect("answered");
    assert!(reply.is_some());
    let (mut eves, _) = Initiator::start(
        &Identity::from_secret([9; 32]),
        &bob().id(),
        hello(false),
        [8; 32],
    )
    .expect("eve");
    assert!(
        eves.read(&reply.expect("reply")).is_err(),
        "Eve cannot read Bob's answer"
    );
    let forged = [
        0u8, 16, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
    ];
    assert_eq!(
        responder.confirm(&forged).expect_err("refused"),
        HandshakeError::Unconfirmed
    );
    let mut longer = Responder::new(&bob(), false, [4; 32]).expect("responder");
    respond(&mut longer, NOW, &mut ReplayGuard::new(), &first).expect("answered");
    assert_eq!(
        longer.confirm(b"\x00\x05hello").expect_err("refused"),
        HandshakeError::Unconfirmed,
        "anything but one empty record"
    );
}

#[test]
fn garbage_after_the_magic_and_truncation_fail_cleanly() {
    let (_, first) = Initiator::start(&alice(), &bob().id(), hello(true), [3; 32]).expect("start");
    assert_eq!(classify(&first), Greeting::Handshake);
    for cut in 0..first.len() {
        let mut responder = Responder::new(&bob(), true, [4; 32]).expect("responder");
        assert!(
            matches!(
                respond(&mut responder, NOW, &mut ReplayGuard::new(), &first[..cut]),
                Ok(None)
            ),
            "a truncated first message waits for more ({cut} bytes)"
        );
    }
    let mut flipped = first.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let mut responder = Responder::new(&bob(), true, [4; 32]).expect("responder");
    assert_eq!(
        respond(&mut responder, NOW, &mut ReplayGuard::new(), &flipped).expect_err("refused"),
        HandshakeError::NotForUs
    );
    let mut huge = first[..8].to_vec();
    huge.extend_from_slice(&[0xff, 0xff]);
    let mut responder = Responder::new(&bob(), true, [4; 32]).expect("responder");
    assert_eq!(
        respond(&mut responder, NOW, &mut ReplayGuard::new(), &huge).expect_err("refused"),
        HandshakeError::Malformed
    );
}

fn record_keys() -> ((Sealer, Opener), (Sealer, Opener)) {
    let (Finished { session, .. }, accepted) =
        handshake(hello(true), false, usize::MAX, &mut ReplayGuard::new()).expect("handshake");
    (
        session.into_keys().expect("encrypted"),
        accepted.session.into_keys().expect("encrypted"),
    )
}

#[test]
fn records_carry_bytes_both_ways_in_any_fragmentation() {
    let ((mut a_seal, mut a_open), (mut b_seal, mut b_open)) = record_keys();
    let big: Vec<u8> = (0..200_000u32).map(|n| n as u8).collect();
    let mut wire = Vec::new();
    a_seal.seal(b"hello", &mut wire).expect("seal");
    a_seal.seal(&big, &mut wire).expect("seal");
    assert_eq!(
        wire.len(),
        Sealer::sealed_len(5) + Sealer::sealed_len(big.len())
    );
    let mut got = Vec::new();
    for piece in wire.chunks(999) {
        b_open.open(piece, &mut got).expect("open");
    }
    assert_eq!(&got[..5], b"hello");
    assert_eq!(&got[5..], &big[..]);
    assert_eq!(b_open.pending(), 0);
    let mut back = Vec::new();
    b_seal.seal(b"ok", &mut back).expect("seal");
    let mut got = Vec::new();
    a_open.open(&back, &mut got).expect("open");
    assert_eq!(got, b"ok");
    assert!(big.len() > 3 * MAX_PLAINTEXT);
}

#[test]
fn altered_repeated_or_reordered_records_fail() {
    let ((mut seal, _), (_, mut open)) = record_keys();
    let (mut one, mut two) = (Vec::new(), Vec::new());
    seal.seal(b"one", &mut one).expect("seal");
    seal.seal(b"two", &mut two).expect("seal");
    let mut out = Vec::new();
    let mut altered = one.clone();
    altered[4] ^= 0x40;
    let ((_, _), (_, mut fresh)) = record_keys();
    assert_eq!(fresh.open(&altered, &mut out), Err(RecordError::Forged));
    let ((_, _), (_, mut fresh)) = record_keys();
    assert_eq!(
        fresh.open(&two, &mut out),
        Err(RecordError::Forged),
        "reordered"
    );
    open.open(&one, &mut out).expect("in order");
    assert_eq!(
        open.open(&one, &mut out),
        Err(RecordError::Forged),
        "repeated"
    );
    assert_eq!(out, b"one");
    // The keys are the same in every run of `record_keys` (fixed seeds).
    let ((_, _), (_, mut fresh)) = record_keys();
    let mut short = Vec::new();
    assert_eq!(
        fresh.open(&[0, 3, 1, 2, 3], &mut short),
        Err(RecordError::Malformed)
    );
}

#[test]
fn a_peer_id_is_what_the_address_names() {
    let (Finished { session, .. }, _) =
        handshake(hello(false), false, usize::MAX, &mut ReplayGuard::new()).expect("handshake");
    assert_eq!(session.peer, NodeId(bob().id().0));
}

proptest::proptest! {
    #[test]
    fn any_fragmentation_gives_the_same_stream(cuts in proptest::collection::vec(1usize..300, 1..40), data in proptest::collection::vec(proptest::num::u8::ANY, 0..3000)) {
        let ((mut seal, _), (_, mut open)) = record_keys();
        let mut wire = Vec::new();
        seal.seal(&data, &mut wire).expect("seal");
        let mut got = Vec::new();
        let mut rest = &wire[..];
        for cut in cuts.iter().cycle() {
            if rest.is_empty() { break; }
            let (piece, tail) = rest.split_at((*cut).min(rest.len()));
            open.open(piece, &mut got).expect("open");
            rest = tail;
        }
        proptest::prop_assert_eq!(got, data);
    }

    /// Opening in place as a TCP reader does (each read after the kept
    /// tail, the tail kept again): the stream comes out whole and in order;
    /// with one byte flipped anywhere, what comes out is still a prefix of
    /// what was sent, and the flip ends in an error or an incomplete record.
    #[test]
    fn opening_in_place_read_by_read_gives_the_stream_or_a_prefix(
        sizes in proptest::collection::vec(0usize..40_000, 1..6),
        cuts in proptest::collection::vec(1usize..20_000, 1..12),
        flip in proptest::option::of(proptest::num::usize::ANY),
    ) {
        let ((mut seal, _), (_, mut open)) = record_keys();
        let data: Vec<u8> = (0..sizes.iter().sum::<usize>()).map(|n| (n % 253) as u8).collect();
        let mut wire = Vec::new();
        let mut at = 0;
        for size in &sizes {
            seal.seal(&data[at..at + size], &mut wire).expect("seal");
            at += size;
        }
        if let Some(flip) = flip {
            let at = flip % wire.len().max(1);
            if let Some(byte) = wire.get_mut(at) {
                *byte ^= 0x01;
            }
        }
        let (mut got, mut tail, mut failed) = (Vec::new(), Vec::new(), false);
        let mut rest = &wire[..];
        for cut in cuts.iter().cycle() {
            if rest.is_empty() || failed {
                break;
            }
            let (piece, later) = rest.split_at((*cut).min(rest.len()));
            rest = later;
            let mut buf = std::mem::take(&mut tail);
            buf.extend_from_slice(piece);
            match open.open_in_place(&mut buf) {
                Ok(opened) => {
                    proptest::prop_assert!(opened.plain <= opened.used && opened.used <= buf.len());
                    got.extend_from_slice(&buf[..opened.plain]);
                    tail = buf[opened.used..].to_vec();
                }
                Err(_) => failed = true,
            }
        }
        proptest::prop_assert!(data.starts_with(&got), "bytes that were not sent came out");
        if flip.is_none() {
            proptest::prop_assert!(!failed);
            proptest::prop_assert_eq!(&got, &data);
            proptest::prop_assert!(tail.is_empty());
        } else if !wire.is_empty() {
            proptest::prop_assert!(failed || !tail.is_empty() || got.len() < data.len(), "a flipped byte went unnoticed");
        }
    }

    #[test]
    fn any_bytes_to_either_side_fail_cleanly(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
        let mut responder = Responder::new(&bob(), true, [4; 32]).expect("responder");
        let _ = respond(&mut responder, NOW, &mut ReplayGuard::new(), &bytes);
        let (mut initiator, _) = Initiator::start(&alice(), &bob().id(), hello(true), [3; 32]).expect("start");
        let _ = initiator.read(&bytes);
        let ((_, _), (_, mut open)) = record_keys();
        let _ = open.open(&bytes, &mut Vec::new());
    }
}

#[test]
fn the_fuzz_body_holds_on_the_committed_corpus_and_real_handshakes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/handshake");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus dir") {
        let entry = entry.expect("corpus entry");
        p2pd_proto::fuzz::handshake(&std::fs::read(entry.path()).expect("corpus file"));
        seen += 1;
    }
    assert!(seen > 0, "the corpus is empty");
    let (_, first) = Initiator::start(&alice(), &bob().id(), hello(true), [3; 32]).expect("start");
    for cut in 0..=first.len() {
        p2pd_proto::fuzz::handshake(&first[..cut]);
    }
}

proptest::proptest! {
    #[test]
    fn the_fuzz_body_holds_on_any_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
        p2pd_proto::fuzz::handshake(&bytes);
    }
}
