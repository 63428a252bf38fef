//! `p2pd interfaces`: what the OS says about each NIC, and the routes p2pd
//! builds from it.

use anyhow::Context;
use p2pd_net::interfaces::{self, Interface};
use p2pd_proto::route::{RouteV4, RouteV6};
use serde::Serialize;

use crate::output;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Listing<'a> {
    interfaces: Vec<Entry<'a>>,
}

#[derive(Serialize)]
struct Entry<'a> {
    #[serde(flatten)]
    interface: &'a Interface,
    routes: Routes,
}

#[derive(Serialize)]
struct Routes {
    ipv4: Vec<RouteV4>,
    ipv6: Vec<RouteV6>,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let all = interfaces::list().context("listing interfaces")?;
    if args.json {
        let listing = Listing {
            interfaces: all
                .iter()
                .map(|interface| {
                    let (ipv4, ipv6) = interface.routes();
                    Entry {
                        interface,
                        routes: Routes { ipv4, ipv6 },
                    }
                })
                .collect(),
        };
        output::line(serde_json::to_string(&listing).context("encoding JSON")?);
    } else {
        for interface in &all {
            print_text(interface);
        }
    }
    Ok(())
}

fn print_text(i: &Interface) {
    let mut flags = vec![if i.up { "up" } else { "down" }];
    if i.loopback {
        flags.push("loopback");
    }
    if i.default_v4 {
        flags.push("default-ipv4");
    }
    if i.default_v6 {
        flags.push("default-ipv6");
    }
    output::line(format_args!(
        "{}: {} ({})",
        i.index,
        i.name,
        flags.join(", ")
    ));
    for net in &i.ipv4 {
        output::line(format_args!("    ipv4 {net}"));
    }
    for ll in &i.ipv6_link_local {
        output::line(format_args!(
            "    ipv6 {}/{} link-local, scope {}",
            ll.ip, ll.prefix, ll.scope_id
        ));
    }
    for net in &i.ipv6_global {
        output::line(format_args!("    ipv6 {net}"));
    }
    if let Some(gw) = i.gateway_v4 {
        output::line(format_args!("    gateway ipv4 {gw}"));
    }
    if let Some(gw) = i.gateway_v6 {
        output::line(format_args!("    gateway ipv6 {gw}"));
    }
}
