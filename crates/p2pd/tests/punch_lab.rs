//! TCP hole punching across the lab's NATs (`p2pd connect --strategies
//! punch`): every pair of router kinds, CGNAT on one side, and a peer whose
//! clock is off. Prints the matrix: successes over tries and the median
//! time per pair.

mod lab_peers;

use std::time::{Duration, Instant};

use lab_peers::{connect, lab, start_node_via};
use p2pd_lab::{LabSpec, NatKind, Side, require_lab};

/// Tries per pair.
const TRIES: usize = 5;

/// What `TRIES` connects from `a` to a node in `b` gave.
struct Row {
    successes: usize,
    median_ms: Option<f64>,
    /// The first failure's reasons.
    failure: Option<String>,
}

fn punch_pair(spec: LabSpec, tries: usize) -> Row {
    punch_pair_via(spec, tries, &[], Duration::ZERO)
}

/// [`punch_pair`] with the answering node started under `wrapper`. Every
/// punch leaves the answering node with the sockets it had before.
fn punch_pair_via(spec: LabSpec, tries: usize, wrapper: &[&str], settle: Duration) -> Row {
    let mut lab = lab(spec);
    let (addr, pid) = start_node_via(&mut lab, "node-b", "b", wrapper);
    std::thread::sleep(settle);
    let before = sockets(pid);
    let mut times = Vec::new();
    let mut failure = None;
    for n in 0..tries {
        let message = format!("ECHO punched {n}");
        let outcome = connect(&lab, "a", &addr, "punch", message.as_bytes());
        if outcome.success {
            assert_eq!(outcome.info["strategy"], "punch", "{}", outcome.info);
            assert_eq!(
                outcome.stdout,
                format!("punched {n}"),
                "ECHO over the punched connection"
            );
            times.push(outcome.info["ms"].as_f64().expect("ms"));
        } else if failure.is_none() {
            failure = Some(outcome.info["tried"].to_string());
        }
    }
    // The punched connections end with `p2pd connect`'s linger.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sockets(pid) != before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sockets(pid), before, "the answering node leaked sockets");
    times.sort_by(f64::total_cmp);
    Row {
        successes: times.len(),
        median_ms: times.get(times.len() / 2).copied(),
        failure,
    }
}

/// The sockets a process holds.
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn two_sequential_nats_punch() {
    require_lab!();
    let spec = LabSpec::default()
        .nat(Side::A, NatKind::SymmetricSequential { delta: 1 })
        .nat(Side::B, NatKind::SymmetricSequential { delta: 2 });
    let row = punch_pair(spec, TRIES);
    println!(
        "seq+1 / seq+2: {}/{TRIES}, median {:?} ms, {:?}",
        row.successes, row.median_ms, row.failure
    );
    assert_eq!(row.successes, TRIES, "{:?}", row.failure);
}

/// The kinds of the matrix: each pair of them, side A asking.
const KINDS: [NatKind; 7] = [
    NatKind::None,
    NatKind::FullCone,
    NatKind::RestrictedCone,
    NatKind::PortRestrictedCone,
    NatKind::SymmetricSequential { delta: 1 },
    NatKind::SymmetricSequential { delta: 2 },
    NatKind::SymmetricRandom,
];

/// A side whose ports are random cannot be aimed at: it connects only to a
/// peer that lets in any port of its IP.
fn punchable(a: NatKind, b: NatKind) -> bool {
    let filters_by_port = |k: NatKind| {
        matches!(
            k,
            NatKind::PortRestrictedCone
                | NatKind::SymmetricSequential { .. }
                | NatKind::SymmetricRandom
        )
    };
    let random = |k: NatKind| k == NatKind::SymmetricRandom;
    !(random(a) && filters_by_port(b) || random(b) && filters_by_port(a))
}

#[test]
fn every_pair_of_router_kinds_punches_or_is_refused_up_front() {
    require_lab!();
    let mut pairs = Vec::new();
    for (i, &a) in KINDS.iter().enumerate() {
        for &b in &KINDS[i..] {
            pairs.push((a, b));
        }
    }
    // The random side asking too, towards the peers it can reach.
    for b in [NatKind::None, NatKind::FullCone, NatKind::RestrictedCone] {
        pairs.push((NatKind::SymmetricRandom, b));
    }
    let mut lines = Vec::new();
    let mut wrong = Vec::new();
    for (a, b) in pairs {
        let spec = LabSpec::default().nat(Side::A, a).nat(Side::B, b);
        let row = punch_pair(spec, TRIES);
        let expected = punchable(a, b);
        let median = row.median_ms.map_or("-".into(), |ms| format!("{ms:.1} ms"));
        let line = format!("{a:>24} -> {b:<24} {}/{TRIES}  {median}", row.successes);
        println!("{line}");
        lines.push(line);
        if expected && row.successes != TRIES {
            wrong.push(format!(
                "{a} -> {b}: {}/{TRIES}, {:?}",
                row.successes, row.failure
            ));
        }
        if !expected {
            let reason = row.failure.clone().unwrap_or_default();
            if row.successes != 0 || !reason.contains("filters by port") {
                wrong.push(format!("{a} -> {b} should be refused up front: {reason}"));
            }
        }
    }
    println!(
        "punch matrix (A asks, B answers; successes/tries, median ms):\n{}",
        lines.join("\n")
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn cgnat_in_front_of_a_home_router_punches() {
    require_lab!();
    let spec = LabSpec::default()
        .cgnat(Side::A, NatKind::PortRestrictedCone)
        .nat(Side::A, NatKind::PortRestrictedCone)
        .nat(Side::B, NatKind::SymmetricSequential { delta: 1 });
    let row = punch_pair(spec, TRIES);
    println!(
        "CGNAT + port-restricted -> seq+1: {}/{TRIES}, median {:?} ms",
        row.successes, row.median_ms
    );
    assert_eq!(row.successes, TRIES, "{:?}", row.failure);
}

#[test]
fn a_peer_whose_clock_is_half_a_second_off_meets_on_the_ntp_clock() {
    require_lab!();
    let spec = LabSpec::default()
        .nat(Side::A, NatKind::PortRestrictedCone)
        .nat(Side::B, NatKind::SymmetricSequential { delta: 1 });
    // The answering node's wall clock runs 500 ms ahead; the lab's NTP
    // server has the true time.
    let skewed = [
        "env",
        "FAKETIME_DONT_FAKE_MONOTONIC=1",
        "faketime",
        "-f",
        "+0.5",
    ];
    // A node refuses signals sent, on its clock, before it started (they
    // may be replays of what an earlier process saw: signal.rs), so for
    // the first 500 ms the asker's requests are refused. That is not what
    // this test is about: it starts asking after them.
    let row = punch_pair_via(spec, TRIES, &skewed, Duration::from_secs(1));
    println!(
        "clock 500 ms off: {}/{TRIES}, median {:?} ms",
        row.successes, row.median_ms
    );
    assert_eq!(row.successes, TRIES, "{:?}", row.failure);
    // Not a speed threshold: on the skewed clock the asker would wait for
    // a meet time 500 ms late, so a median under that shows the meet time
    // was on the corrected clock.
    let median = row.median_ms.expect("a median");
    assert!(
        median < 500.0,
        "the meet waited for the skewed clock: {median} ms"
    );
}
