//! `p2pd broker`: an embedded MQTT broker for LANs, offline use and tests.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Context;

use crate::output;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where to listen (IP:PORT).
    #[arg(long, value_name = "IP:PORT", default_value_t = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 1883))]
    listen: SocketAddr,
}

pub(crate) async fn run(args: &Args) -> anyhow::Result<()> {
    let listen = args.listen;
    tokio::task::spawn_blocking(move || p2pd_node::broker::start(listen))
        .await
        .context("the broker thread failed")?
        .context("starting the broker")?;
    output::status(format_args!("mqtt broker on {listen}"));
    crate::signal::shutdown().await;
    Ok(())
}
