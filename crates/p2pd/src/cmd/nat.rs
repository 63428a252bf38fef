//! `p2pd nat`: external address, NAT type and port delta of every interface.

use anyhow::Context;
use p2pd_net::interfaces;
use p2pd_net::stun::discovery::{DeltaSeriesGate, DiscoveryOptions, NatReport};
use p2pd_node::config::NodeConfig;
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
    let reports = discovery::discover_each(
        &targets,
        &servers,
        &DiscoveryOptions::default(),
        &DeltaSeriesGate::default(),
    )
    .await;
    let mut entries = Vec::new();
    for (n, report) in reports {
        let target = &targets[n];
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

fn to_json(target: &Local, r: &NatReport) -> Value {
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

fn to_text(target: &Local, r: &NatReport) -> String {
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
