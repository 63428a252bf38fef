//! The relay against direct TCP in the lab, in one run: 40 MiB each way
//! between two nodes through coturn and directly, and the time to a
//! relayed connection when relay is asked for alone. And what each path
//! costs the processors per byte moved: the nodes, coturn and the lab's
//! routers all share the machine's cores, so when both paths keep every
//! core busy, throughput goes as the inverse of that cost. Run it on an
//! otherwise idle machine: the cost counts every process. Needs root and
//! network namespaces; says why and measures nothing without them.

#[path = "../tests/lab_peers/mod.rs"]
mod lab_peers;

use std::time::Duration;

use lab_peers::bulk::{Transfer, echo_through};
use lab_peers::lab_with_turn;
use nix::unistd::{SysconfVar, sysconf};
use p2pd_lab::{Lab, LabSpec, NatKind, Side, skip_reason};
use p2pd_node::config::Strategy;

/// Transfers per path; the median is printed.
const RUNS: usize = 3;
/// Relayed connects timed.
const CONNECTS: usize = 5;
/// The block, each way.
const BULK: usize = 40 << 20;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The processor time every core has spent busy since boot, kernel and
/// interrupts included (`/proc/stat`): the packets' way through the lab's
/// routers is charged to whichever process sent them.
fn busy_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let counts: Vec<u64> = stat
        .lines()
        .next()
        .expect("the cpu line")
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().expect("a tick count"))
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and
    // iowait.
    ticks([0, 1, 2, 5, 6, 7].iter().map(|&i| counts[i]).sum())
}

/// The processor time this process (both nodes) has used so far, user
/// and kernel (`/proc/self/stat`).
fn own_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // After the command name, in parentheses: field 3 onwards; utime and
    // stime are fields 14 and 15.
    let fields: Vec<u64> = stat[stat.rfind(')').expect("the command name") + 1..]
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|n| n.parse().expect("a tick count"))
        .collect();
    ticks(fields.iter().sum())
}

fn ticks(n: u64) -> Duration {
    let hz = sysconf(SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .expect("clock ticks per second");
    Duration::from_secs_f64(n as f64 / hz as f64)
}

/// Busy processor seconds during something: the machine's, and this
/// process's share of them.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    all: f64,
    nodes: f64,
}

impl Cpu {
    /// Each figure's median over `runs`.
    fn median(runs: impl Iterator<Item = Cpu> + Clone) -> Cpu {
        Cpu {
            all: median(runs.clone().map(|cpu| cpu.all).collect()),
            nodes: median(runs.map(|cpu| cpu.nodes).collect()),
        }
    }
}

/// One exchange, and the processor time it took.
fn measured(lab: &Lab, strategy: Strategy, size: usize) -> (Transfer, Cpu) {
    let (all, nodes) = (busy_cpu(), own_cpu());
    let transfer = echo_through(lab, "a", "b", strategy, size);
    let cpu = Cpu {
        all: (busy_cpu() - all).as_secs_f64(),
        nodes: (own_cpu() - nodes).as_secs_f64(),
    };
    (transfer, cpu)
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
    // Connections alone (1 KiB), per strategy: their time, and the
    // processor time of starting two nodes and connecting them, which the
    // bulk figures below leave out.
    let setup = |strategy| -> (f64, Cpu) {
        let runs: Vec<(Transfer, Cpu)> = (0..CONNECTS)
            .map(|_| measured(&lab, strategy, 1 << 10))
            .collect();
        (
            median(
                runs.iter()
                    .map(|(t, _)| t.connect.as_secs_f64() * 1e3)
                    .collect(),
            ),
            Cpu::median(runs.iter().map(|&(_, cpu)| cpu)),
        )
    };
    // Each way per second, and busy processor seconds per GB moved (both
    // ways counted).
    let bulk = |strategy, setup: Cpu| -> (f64, Cpu) {
        let runs: Vec<(Transfer, Cpu)> =
            (0..RUNS).map(|_| measured(&lab, strategy, BULK)).collect();
        let gb = 2.0 * BULK as f64 / 1e9;
        let per_gb = |cpu: Cpu| Cpu {
            all: (cpu.all - setup.all).max(0.0) / gb,
            nodes: (cpu.nodes - setup.nodes).max(0.0) / gb,
        };
        (
            median(runs.iter().map(|(t, _)| t.bytes_per_sec).collect()),
            Cpu::median(runs.iter().map(|&(_, cpu)| per_gb(cpu))),
        )
    };
    let (_, direct_setup) = setup(Strategy::Direct);
    let (connects, relay_setup) = setup(Strategy::Relay);
    let (direct, direct_cpu) = bulk(Strategy::Direct, direct_setup);
    let (relay, relay_cpu) = bulk(Strategy::Relay, relay_setup);
    let mbit = |bps: f64| bps * 8.0 / 1e6;
    println!(
        "direct: {:.0} Mbit/s each way ({} MiB, median of {RUNS})",
        mbit(direct),
        BULK >> 20
    );
    println!(
        "relay:  {:.0} Mbit/s each way ({} MiB, median of {RUNS})",
        mbit(relay),
        BULK >> 20
    );
    println!("relay/direct throughput: {:.2}", relay / direct);
    let others = |cpu: Cpu| (cpu.all - cpu.nodes).max(0.0);
    println!(
        "cpu per GB moved, set-up left out: direct {:.2} s (nodes {:.2}, the rest {:.2}), relay {:.2} s (nodes {:.2}, coturn and the rest {:.2})",
        direct_cpu.all,
        direct_cpu.nodes,
        others(direct_cpu),
        relay_cpu.all,
        relay_cpu.nodes,
        others(relay_cpu)
    );
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let busy = |cpu: Cpu, bytes_per_sec: f64| cpu.all * 2.0 * bytes_per_sec / 1e9;
    println!(
        "cores busy while moving: direct {:.1}, relay {:.1} (of {cores})",
        busy(direct_cpu, direct),
        busy(relay_cpu, relay)
    );
    println!(
        "relay/direct at most, were the nodes free: {:.2}",
        direct_cpu.all / others(relay_cpu)
    );
    println!("time to a relayed connection: {connects:.1} ms (median of {CONNECTS})");
}
