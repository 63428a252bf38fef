//! `p2pd broker`: an embedded MQTT broker for LANs, offline use and tests.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Context;
use p2pd_node::broker::Broker;
use tokio_util::sync::CancellationToken;

use crate::output;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where to listen (IP:PORT).
    #[arg(long, value_name = "IP:PORT", default_value_t = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 1883))]
    listen: SocketAddr,
}

pub(crate) async fn run(args: &Args) -> anyhow::Result<()> {
    let shutdown = crate::signal::shutdown();
    let broker = Broker::bind(args.listen)
        .await
        .context("starting the broker")?;
    let listen = broker.local_addr().context("starting the broker")?;
    output::status(format_args!("mqtt broker on {listen}"));
    let stats = broker.stats();
    let stop = CancellationToken::new();
    let serving = tokio::spawn(broker.serve(stop.clone()));
    let result = tokio::select! {
        () = shutdown => {
            stop.cancel();
            Ok(())
        }
        result = serving => result.context("the broker task failed")?.context("the broker stopped"),
    };
    let stats = stats();
    output::status(format_args!(
        "stopped; {} clients served, {} refused (full), {} deliveries dropped (slow subscribers)",
        stats.accepted, stats.refused, stats.dropped
    ));
    result
}
