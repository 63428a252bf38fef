//! The relay against direct TCP in the lab, in one run: 10 MB each way
//! between two nodes through coturn and directly, and the time to a
//! relayed connection when relay is asked for alone. Needs root and
//! network namespaces; says why and measures nothing without them.

#[path = "../tests/lab_peers/mod.rs"]
mod lab_peers;

use lab_peers::bulk::echo_through;
use lab_peers::lab_with_turn;
use p2pd_lab::{LabSpec, NatKind, Side, skip_reason};
use p2pd_node::config::Strategy;

/// Transfers per path; the median is printed.
const RUNS: usize = 3;
/// Relayed connects timed.
const CONNECTS: usize = 5;
/// The block, each way.
const BULK: usize = 10 << 20;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    if let Some(reason) = skip_reason() {
        println!("relay bench: not measured: {reason}");
        return;
    }
    let spec = LabSpec::default()
        .nat(Side::A, NatKind::PortRestrictedCone)
        .nat(Side::B, NatKind::None);
    let lab = lab_with_turn(spec, "udp");
    let throughput = |strategy| {
        median(
            (0..RUNS)
                .map(|_| echo_through(&lab, "a", "b", strategy, BULK).bytes_per_sec)
                .collect(),
        )
    };
    let direct = throughput(Strategy::Direct);
    let relay = throughput(Strategy::Relay);
    let connects = median(
        (0..CONNECTS)
            .map(|_| {
                let t = echo_through(&lab, "a", "b", Strategy::Relay, 1 << 10);
                t.connect.as_secs_f64() * 1e3
            })
            .collect(),
    );
    let mbit = |bps: f64| bps * 8.0 / 1e6;
    println!(
        "direct: {:.0} Mbit/s each way (10 MB, median of {RUNS})",
        mbit(direct)
    );
    println!(
        "relay:  {:.0} Mbit/s each way (10 MB, median of {RUNS})",
        mbit(relay)
    );
    println!("relay/direct throughput: {:.2}", relay / direct);
    println!("time to a relayed connection: {connects:.1} ms (median of {CONNECTS})");
}
