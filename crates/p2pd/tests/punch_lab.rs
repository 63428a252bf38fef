//! TCP hole punching across the lab's NATs (`p2pd connect --strategies
//! punch`): every pair of router kinds, CGNAT on one side, and a peer whose
//! clock is off. Prints the matrix: successes over tries and the median
//! time per pair.

mod lab_peers;

use lab_peers::{connect, lab, start_node};
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
    let mut lab = lab(spec);
    let (addr, _) = start_node(&mut lab, "node-b", "b");
    let mut times = Vec::new();
    let mut failure = None;
    for n in 0..tries {
        let message = format!("ECHO punched {n}");
        let outcome = connect(&lab, "a", &addr, "punch", message.as_bytes());
        if outcome.success {
            assert_eq!(outcome.info["strategy"], "punch", "{}", outcome.info);
            assert_eq!(outcome.stdout, format!("punched {n}"), "ECHO over the punched connection");
            times.push(outcome.info["ms"].as_f64().expect("ms"));
        } else if failure.is_none() {
            failure = Some(outcome.info["tried"].to_string());
        }
    }
    times.sort_by(f64::total_cmp);
    Row {
        successes: times.len(),
        median_ms: times.get(times.len() / 2).copied(),
        failure,
    }
}

#[test]
fn two_sequential_nats_punch() {
    require_lab!();
    let spec = LabSpec::default()
        .nat(Side::A, NatKind::SymmetricSequential { delta: 1 })
        .nat(Side::B, NatKind::SymmetricSequential { delta: 2 });
    let row = punch_pair(spec, TRIES);
    println!("seq+1 / seq+2: {}/{TRIES}, median {:?} ms, {:?}", row.successes, row.median_ms, row.failure);
    assert_eq!(row.successes, TRIES, "{:?}", row.failure);
}
