//! `p2pd nat`: external address, NAT type and port delta of every interface.

use std::net::IpAddr;

use anyhow::Context;
use p2pd_net::interfaces::{self, Interface};
use p2pd_net::stun::discovery::{DeltaSeriesGate, DiscoveryOptions, NatReport, discover_gated};
use p2pd_node::config::{Config, HostPort};
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

/// One interface and address family to test.
struct Target {
    name: String,
    ip: IpAddr,
    scope_id: u32,
}

pub(crate) async fn run(args: &Args, config: &Config) -> anyhow::Result<()> {
    let names = if args.stun.is_empty() {
        &config.stun.servers
    } else {
        &args.stun
    };
    let servers = p2pd_node::node::resolve_stun(names).await;
    let all = interfaces::list().context("listing interfaces")?;
    let mut targets = targets(&all, &config.node.interfaces);
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
    // Every interface at once: each test mostly waits on its sockets.
    // Their delta series take turns: two interfaces may share a NAT.
    let gate = DeltaSeriesGate::default();
    let mut runs = tokio::task::JoinSet::new();
    for (n, target) in targets.iter().enumerate() {
        let (ip, scope_id, servers) = (target.ip, target.scope_id, servers.clone());
        let gate = gate.clone();
        runs.spawn(async move {
            let options = DiscoveryOptions::default();
            let report = discover_gated(ip, scope_id, &servers, &options, &gate).await;
            (n, report)
        });
    }
    let mut reports = Vec::new();
    while let Some(joined) = runs.join_next().await {
        reports.push(joined.context("a discovery task failed")?);
    }
    reports.sort_by_key(|(n, _)| *n);
    let mut entries = Vec::new();
    for (target, (_, report)) in targets.iter().zip(reports) {
        let report = report.with_context(|| format!("testing {}", target.name))?;
        entries.push((target, report));
    }
    if args.json {
        let interfaces: Vec<Value> = entries.iter().map(|(t, r)| to_json(t, r)).collect();
        output::line(json!({ "interfaces": interfaces }));
    } else if entries.is_empty() {
        output::line("no interface with a route to test");
    } else {
        for (target, report) in &entries {
            output::line(to_text(target, report));
        }
    }
    Ok(())
}

fn targets(all: &[Interface], only: &[String]) -> Vec<Target> {
    let mut targets = Vec::new();
    for i in all.iter().filter(|i| i.has_route()) {
        if !only.is_empty() && !only.contains(&i.name) {
            continue;
        }
        if let Some(v4) = i.ipv4.first() {
            targets.push(Target {
                name: i.name.clone(),
                ip: IpAddr::V4(v4.addr()),
                scope_id: 0,
            });
        }
        if let Some(v6) = i.ipv6_global.first() {
            targets.push(Target {
                name: i.name.clone(),
                ip: IpAddr::V6(v6.addr()),
                scope_id: 0,
            });
        }
    }
    targets
}

fn to_json(target: &Target, r: &NatReport) -> Value {
    json!({
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
    })
}

fn to_text(target: &Target, r: &NatReport) -> String {
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
    text
}
