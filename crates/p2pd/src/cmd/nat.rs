//! `p2pd nat`: external address, NAT type and port delta of every interface.

use anyhow::Context;
use std::collections::HashMap;

use p2pd_net::interfaces;
use p2pd_net::portmap::{self, Probed};
use p2pd_net::stun::discovery::{DeltaSeriesGate, DiscoveryOptions, NatReport};
use p2pd_net::stun::tcp_behaviour::{TcpReport, discover_tcp};
use p2pd_node::config::{NodeConfig, PortmapProtocol};
use p2pd_node::discovery;
use p2pd_node::locals::{self, Local};
use p2pd_node::servers::HostPort;
use serde_json::{Value, json};

use crate::output;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// A STUN server, HOST:PORT; repeat for several. Replaces the
    /// configured servers.
    #[arg(long = "stun", value_name = "HOST:PORT")]
    stun: Vec<HostPort>,
}

pub(crate) async fn run(args: &Args, config: &NodeConfig) -> anyhow::Result<()> {
    let names = if args.stun.is_empty() {
        &config.stun_servers
    } else {
        &args.stun
    };
    let servers = discovery::resolve_stun(names).await;
    let all = interfaces::list().context("listing interfaces")?;
    let mut targets = locals::select(&all, &config.interfaces);
    // A family with no server cannot be tested; say so instead of calling
    // it blocked.
    targets.retain(|t| {
        let served = servers.iter().any(|s| s.is_ipv4() == t.ip.is_ipv4());
        if !served {
            let family = if t.ip.is_ipv4() { "IPv4" } else { "IPv6" };
            output::status(format_args!(
                "{} {}: no {family} STUN server, not tested",
                t.name, t.ip
            ));
        }
        served
    });
    let options = DiscoveryOptions::default();
    let gate = DeltaSeriesGate::default();
    let (reports, mut portmaps) = tokio::join!(
        discovery::discover_each(&targets, &servers, &options, &gate),
        probe_gateways(&config.portmap, &targets),
    );
    let mut entries = Vec::new();
    for (n, report) in reports {
        let target = &targets[n];
        let report = report.with_context(|| format!("testing {}", target.name))?;
        // TCP too (hole punching predicts TCP ports), against the first
        // server of the family, after UDP so the two series never mix.
        let tcp = match servers.iter().find(|s| s.is_ipv4() == target.ip.is_ipv4()) {
            Some(server) => discover_tcp(target.ip, *server)
                .await
                .map_err(|err| err.to_string()),
            None => Err("no server".to_owned()),
        };
        let portmap = portmaps.remove(&n).unwrap_or_default();
        entries.push(Entry {
            target,
            report,
            tcp,
            portmap,
        });
    }
    if args.json {
        let interfaces: Vec<Value> = entries.iter().map(to_json).collect();
        output::line(json!({ "interfaces": interfaces }));
    } else if entries.is_empty() {
        output::line("no interface with a route to test");
    } else {
        for entry in &entries {
            output::line(to_text(entry));
        }
    }
    Ok(())
}

/// What was found of one local address.
struct Entry<'a> {
    target: &'a Local,
    report: NatReport,
    tcp: Result<TcpReport, String>,
    /// What each port-mapping protocol did (IPv4 behind a gateway only).
    portmap: Vec<Probed>,
}

/// Probes the gateway of each IPv4 target (by index) with `protocols`, all
/// at once, each for a port held open meanwhile.
async fn probe_gateways(
    protocols: &[PortmapProtocol],
    targets: &[Local],
) -> HashMap<usize, Vec<Probed>> {
    let mut probes = tokio::task::JoinSet::new();
    for (n, t) in targets.iter().enumerate() {
        let Some(gateway) = t.gateway_v4.filter(|_| !protocols.is_empty()) else {
            continue;
        };
        let Ok(listener) = std::net::TcpListener::bind((t.ip, 0)) else {
            continue;
        };
        let Ok(internal) = listener.local_addr() else {
            continue;
        };
        let protocols = protocols.to_vec();
        probes.spawn(async move {
            let probed = portmap::probe(&protocols, gateway.into(), internal).await;
            drop(listener);
            (n, probed)
        });
    }
    probes.join_all().await.into_iter().collect()
}

fn to_json(entry: &Entry<'_>) -> Value {
    let (target, r, tcp) = (entry.target, &entry.report, &entry.tcp);
    let tcp = match tcp {
        Ok(t) => json!({
            "external_ip": t.external.ip().to_string(),
            "mapping": t.mapping.map(|m| m.name()),
            "delta": {
                "type": t.delta.kind.name(),
                "value": t.delta.value,
                "code": t.delta.kind.code(),
            },
            "series": t.series.iter().map(|(l, m)| json!([l, m])).collect::<Vec<_>>(),
            "ms": t.elapsed.as_millis() as u64,
        }),
        Err(err) => json!({ "error": err }),
    };
    json!({
        "tcp": tcp,
        "name": target.name,
        "af": if target.ip.is_ipv4() { "ipv4" } else { "ipv6" },
        "internal_ip": target.ip.to_string(),
        "external_ip": r.external.map(|a| a.ip().to_string()),
        "external_port": r.external.map(|a| a.port()),
        "nat": {
            "type": r.nat.name(),
            "code": r.nat.code(),
            "mapping": r.mapping.map(|m| m.name()),
            "filtering": r.filtering.map(|f| f.name()),
        },
        "delta": {
            "type": r.delta.kind.name(),
            "value": r.delta.value,
            "code": r.delta.kind.code(),
        },
        "ms": r.elapsed.as_millis() as u64,
        "requests": r.requests,
        "disagreements": r.disagreements.iter().map(|(server, seen)| json!({
            "server": server.to_string(),
            "external": seen.to_string(),
        })).collect::<Vec<_>>(),
        "unreachable": r.unreachable.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "portmap": entry.portmap.iter().map(|p| match &p.mapped {
            Ok(external) => json!({ "protocol": p.protocol.name(), "mapped": external.to_string(), "error": null }),
            Err(why) => json!({ "protocol": p.protocol.name(), "mapped": null, "error": why }),
        }).collect::<Vec<_>>(),
    })
}

fn to_text(entry: &Entry<'_>) -> String {
    let (target, r, tcp) = (entry.target, &entry.report, &entry.tcp);
    let external = r.external.map_or("no answer".to_owned(), |a| a.to_string());
    let mut text = format!(
        "{} {} -> {external}: {} (code {}), delta {} {} (code {}), {} ms, {} requests",
        target.name,
        target.ip,
        r.nat,
        r.nat.code(),
        r.delta.kind.name(),
        r.delta.value,
        r.delta.kind.code(),
        r.elapsed.as_millis(),
        r.requests,
    );
    if let (Some(m), Some(f)) = (r.mapping, r.filtering) {
        text.push_str(&format!("; mapping {}, filtering {}", m.name(), f.name()));
    }
    for (server, seen) in &r.disagreements {
        text.push_str(&format!("; {server} saw {seen} instead"));
    }
    match tcp {
        Ok(t) => text.push_str(&format!(
            "; tcp: mapping {}, delta {} {}",
            t.mapping.map_or("untested", |m| m.name()),
            t.delta.kind.name(),
            t.delta.value
        )),
        Err(err) => text.push_str(&format!("; tcp: {err}")),
    }
    for p in &entry.portmap {
        match &p.mapped {
            Ok(external) => text.push_str(&format!("; {} maps to {external}", p.protocol)),
            Err(why) => text.push_str(&format!("; {}: {why}", p.protocol)),
        }
    }
    text
}
