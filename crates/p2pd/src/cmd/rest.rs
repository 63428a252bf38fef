//! `p2pd rest`: a node and the REST API over it (docs/rest.md).

use std::net::SocketAddr;

use anyhow::Context;
use p2pd_node::Node;
use p2pd_rest::{Server, token};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::output;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where the API listens, IP:PORT (default: [rest] listen, else
    /// 127.0.0.1:12333). Requests must still name a loopback Host.
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<SocketAddr>,
}

pub(crate) async fn run(args: &Args, settings: Settings) -> anyhow::Result<()> {
    let shutdown = crate::signal::shutdown();
    tokio::pin!(shutdown);
    let Settings { node, mut rest } = settings;
    if let Some(listen) = args.listen {
        rest.listen = listen;
    }
    let secret = token::generate();
    let dir = node.data_dir.clone().unwrap_or_else(token::default_dir);
    // Discovery and brokers come up in the background: the API serves
    // at once and reports what is known so far.
    let node = Node::start(node).await.context("starting the node")?;
    let server = Server::bind(node.clone(), &rest, secret.clone())
        .await
        .with_context(|| format!("cannot listen on {}", rest.listen))?;
    // Only once the port is ours: a second daemon that cannot listen
    // leaves the running one's token alone.
    let token_path = token::store(&dir, &secret).context("keeping the API token")?;
    let listen = server.local_addr().context("the REST listener")?;
    output::status(format_args!(
        "REST API on http://{listen}/ (node {}); browser token in {}",
        node.id(),
        token_path.display()
    ));
    if rest.allow_null_origin {
        tracing::warn!(
            "[rest] allow_null_origin = true: any web page in a sandboxed iframe can use this API"
        );
    }
    if !listen.ip().is_loopback() {
        tracing::warn!(%listen, "the API listens beyond loopback");
    }
    let stop = CancellationToken::new();
    let serving = tokio::spawn(server.serve(stop.clone()));
    shutdown.await;
    stop.cancel();
    serving.await.context("the REST server task failed")?;
    node.close().await;
    // The token dies with the daemon (unless another has replaced it).
    if std::fs::read_to_string(&token_path).is_ok_and(|t| t.trim() == secret) {
        let _ = std::fs::remove_file(&token_path);
    }
    output::status(format_args!("stopped"));
    Ok(())
}
