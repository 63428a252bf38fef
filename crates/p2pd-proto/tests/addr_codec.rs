//! Peer address round trips and the fuzz corpus replayed on stable.

use std::net::IpAddr;

use p2pd_proto::addr::{Endpoint, MAX_DELTA, NodeId, PeerAddr};
use p2pd_proto::stun::behavior::{Delta, DeltaType, NatType};
use proptest::prelude::*;

fn endpoint(v4: bool) -> impl Strategy<Value = Endpoint> {
    let ip = move || -> BoxedStrategy<IpAddr> {
        if v4 {
            any::<[u8; 4]>().prop_map(IpAddr::from).boxed()
        } else {
            any::<[u8; 16]>().prop_map(IpAddr::from).boxed()
        }
    };
    (
        any::<u8>(),
        ip(),
        ip(),
        1u16..,
        1u8..=7,
        1u8..=6,
        -MAX_DELTA..=MAX_DELTA,
    )
        .prop_map(
            |(if_index, external, internal, port, nat, delta, value)| Endpoint {
                if_index,
                external,
                internal,
                port,
                nat: NatType::from_code(nat).expect("1..=7"),
                delta: Delta {
                    kind: DeltaType::from_code(delta).expect("1..=6"),
                    value,
                },
            },
        )
}

fn peer_addr() -> impl Strategy<Value = PeerAddr> {
    (
        prop::collection::btree_set(any::<u8>(), 0..5),
        prop::collection::vec(endpoint(true), 0..=3),
        prop::collection::vec(endpoint(false), 0..=3),
        any::<[u8; 32]>(),
    )
        .prop_map(|(brokers, ipv4, ipv6, id)| PeerAddr {
            brokers: brokers.into_iter().collect(),
            ipv4,
            ipv6,
            node_id: NodeId(id),
        })
}

proptest! {
    #[test]
    fn parse_inverts_display(addr in peer_addr()) {
        let text = addr.to_string();
        prop_assert!(!text.contains(' '));
        prop_assert_eq!(text.parse::<PeerAddr>(), Ok(addr));
    }

    #[test]
    fn display_inverts_parse_for_canonical_text(addr in peer_addr()) {
        let text = addr.to_string();
        let parsed: PeerAddr = text.parse().expect("valid");
        prop_assert_eq!(parsed.to_string(), text);
    }

    #[test]
    fn any_text_parses_or_errs(text in "\\PC{0,120}") {
        p2pd_proto::fuzz::peer_addr(text.as_bytes());
    }

    #[test]
    fn mutated_addresses_never_panic(addr in peer_addr(), at in any::<usize>(), c in any::<char>()) {
        let mut text: Vec<char> = addr.to_string().chars().collect();
        let n = text.len();
        text[at % n] = c;
        let text: String = text.into_iter().collect();
        p2pd_proto::fuzz::peer_addr(text.as_bytes());
    }
}

/// A fuzz target's body.
type FuzzBody = fn(&[u8]);

#[test]
fn committed_fuzz_corpus_replays_cleanly() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let targets: [(&str, FuzzBody); 4] = [
        ("peer_addr", p2pd_proto::fuzz::peer_addr),
        ("signal_envelope", p2pd_proto::fuzz::signal_envelope),
        ("ntp_packet", p2pd_proto::fuzz::ntp_packet),
        ("turn_input", p2pd_proto::fuzz::turn_input),
    ];
    for (target, body) in targets {
        let entries = std::fs::read_dir(corpus.join(target)).expect("the corpus directory exists");
        let mut replayed = 0;
        for entry in entries.flatten() {
            body(&std::fs::read(entry.path()).expect("corpus file"));
            replayed += 1;
        }
        assert!(replayed > 0, "{target}: empty corpus");
    }
}
