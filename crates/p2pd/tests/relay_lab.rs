//! The relay strategy through coturn in the lab: peers behind random-port
//! NATs on both sides (no direct path, no punch) connect through it, alone
//! and as the last of every strategy, over UDP and TCP to the server;
//! 10 MB each way arrive intact, at a throughput printed beside direct's in
//! the same lab. Both sides allocate behind NATs; a side that needs no
//! translation takes the relay without an allocation of its own.

mod lab_peers;

use lab_peers::bulk::echo_through;
use lab_peers::{connect, lab_with_turn, report, start_node};
use p2pd_lab::{LabSpec, NatKind, Side, require_lab};
use p2pd_node::config::Strategy;

/// Connects per measurement.
const TRIES: usize = 5;
/// The bulk block, each way.
const BULK: usize = 10 << 20;

fn both_random() -> LabSpec {
    LabSpec::default()
        .nat(Side::A, NatKind::SymmetricRandom)
        .nat(Side::B, NatKind::SymmetricRandom)
}

/// `TRIES` connects with relay alone, each answered by ECHO; the median
/// time.
fn relay_alone(transport: &str) -> f64 {
    let mut lab = lab_with_turn(both_random(), transport);
    let (addr, _) = start_node(&mut lab, "node-b", "b");
    let mut times = Vec::new();
    for n in 0..TRIES {
        let message = format!("ECHO relayed {n}");
        let outcome = connect(&lab, "a", &addr, "relay", message.as_bytes());
        assert!(outcome.success, "{}", outcome.info);
        assert_eq!(outcome.info["strategy"], "relay", "{}", outcome.info);
        assert_eq!(
            outcome.stdout,
            format!("relayed {n}"),
            "ECHO through the relay"
        );
        times.push(outcome.info["ms"].as_f64().expect("ms"));
    }
    // Behind NATs on both sides, each side allocates.
    assert_eq!(
        allocations(&lab),
        2 * TRIES,
        "allocations for {TRIES} relays"
    );
    times.sort_by(f64::total_cmp);
    times[TRIES / 2]
}

#[test]
fn two_random_nats_connect_through_the_relay_over_udp() {
    require_lab!();
    let median = relay_alone("udp");
    println!("relay alone, UDP to coturn: median {median:.1} ms of {TRIES}");
}

#[test]
fn two_random_nats_connect_through_the_relay_over_tcp() {
    require_lab!();
    let median = relay_alone("tcp");
    println!("relay alone, TCP to coturn: median {median:.1} ms of {TRIES}");
}

#[test]
fn every_strategy_ends_in_relay_within_the_budget() {
    require_lab!();
    let mut lab = lab_with_turn(both_random(), "udp");
    let (addr, _) = start_node(&mut lab, "node-b", "b");
    let outcome = connect(
        &lab,
        "a",
        &addr,
        "direct,reverse,punch,relay",
        b"ECHO last resort",
    );
    report("every strategy", &outcome);
    assert!(outcome.success, "{}", outcome.info);
    assert_eq!(outcome.info["strategy"], "relay", "{}", outcome.info);
    assert_eq!(outcome.stdout, "last resort");
    // Within the lab config's timeout_ms, after the head start the
    // others get.
    let ms = outcome.info["ms"].as_f64().expect("ms");
    assert!((1000.0..6000.0).contains(&ms), "took {ms} ms");
}

#[test]
fn ten_megabytes_each_way_through_the_relay_beside_direct() {
    require_lab!();
    // B is public, so direct reaches it; A's NAT makes the relay's path
    // the same shape as between two NATs.
    let spec = LabSpec::default()
        .nat(Side::A, NatKind::PortRestrictedCone)
        .nat(Side::B, NatKind::None);
    let lab = lab_with_turn(spec, "udp");
    let direct = echo_through(&lab, "a", "b", Strategy::Direct, BULK);
    let before = allocations(&lab);
    let relay = echo_through(&lab, "a", "b", Strategy::Relay, BULK);
    assert_eq!(direct.strategy, Strategy::Direct);
    assert_eq!(relay.strategy, Strategy::Relay);
    // B needs no translation: A's allocation relays straight to it.
    assert_eq!(allocations(&lab) - before, 1, "allocations for one relay");
    let mbit = |bps: f64| bps * 8.0 / 1e6;
    println!(
        "10 MB each way: direct {:.0} Mbit/s, relay {:.0} Mbit/s each way; relay/direct {:.2}",
        mbit(direct.bytes_per_sec),
        mbit(relay.bytes_per_sec),
        relay.bytes_per_sec / direct.bytes_per_sec
    );
}

/// Allocations coturn has granted so far.
fn allocations(lab: &p2pd_lab::Lab) -> usize {
    let log = std::fs::read_to_string(lab.dir().join("coturn-turn.log")).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("ALLOCATE processed, success"))
        .count()
}
