//! `p2pd node`: a node without REST; prints its address (again on each
//! change), runs until told to stop.

use anyhow::Context;
use p2pd_node::Node;
use p2pd_node::config::NodeConfig;

use crate::output;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) async fn run(_args: &Args, config: NodeConfig) -> anyhow::Result<()> {
    // One listener for the whole run, from before the start: a stop
    // request at any moment is seen.
    let shutdown = crate::signal::shutdown();
    tokio::pin!(shutdown);
    let node = Node::start(config).await.context("starting the node")?;
    // A stop request during discovery stops the node cleanly too.
    tokio::select! {
        () = node.discovered() => {}
        () = &mut shutdown => {
            node.close().await;
            return Ok(());
        }
    }
    let mut addr = node.watch_addr();
    let mut printed = addr.borrow_and_update().to_string();
    output::line(&printed);
    output::status(format_args!(
        "node {} up; SIGINT or SIGTERM stops it",
        node.id()
    ));
    // A later change (an address that finished DAD, ...) is printed on a
    // line of its own, as the first one.
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            changed = addr.changed() => {
                if changed.is_err() {
                    break;
                }
                let now = addr.borrow_and_update().to_string();
                if now != printed {
                    output::line(&now);
                    printed = now;
                }
            }
        }
    }
    node.close().await;
    let stats = node.signal_stats();
    let (links, inbox) = (stats.links, stats.inbox);
    output::status(format_args!(
        "stopped; signaling: {} received, {} accepted; dropped: {} busy, {} retained, {} oversized, \
         {} forged, {} replayed, {} stale, {} malformed, {} overloaded",
        links.received,
        inbox.accepted,
        links.busy,
        links.retained,
        links.oversized,
        inbox.forged,
        inbox.replayed,
        inbox.stale,
        inbox.malformed,
        inbox.overloaded
    ));
    Ok(())
}
