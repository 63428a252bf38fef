//! `p2pd node`: a node without REST; prints its address, runs until told
//! to stop.

use anyhow::Context;
use p2pd_node::Node;
use p2pd_node::config::Config;

use crate::output;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) async fn run(_args: &Args, config: Config) -> anyhow::Result<()> {
    let node = Node::start(config).await.context("starting the node")?;
    // A stop request during discovery stops the node cleanly too.
    tokio::select! {
        () = node.discovered() => {}
        () = crate::signal::shutdown() => {
            node.close().await;
            return Ok(());
        }
    }
    output::line(node.addr());
    output::status(format_args!(
        "node {} up; SIGINT or SIGTERM stops it",
        node.id()
    ));
    crate::signal::shutdown().await;
    node.close().await;
    let stats = node.signal_stats();
    output::status(format_args!(
        "stopped; signaling: {} accepted, {} forged, {} replayed, {} stale, {} malformed, {} overloaded",
        stats.accepted,
        stats.forged,
        stats.replayed,
        stats.stale,
        stats.malformed,
        stats.overloaded
    ));
    Ok(())
}
