//! `p2pd connect ADDR`: a P2P connection bridged to stdin and stdout, like
//! netcat.

use std::time::Duration;

use anyhow::Context;
use p2pd_node::Node;
use p2pd_node::config::{NodeConfig, Role, Strategy};
use p2pd_proto::addr::PeerAddr;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::output;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The peer's address (it may begin with `-`).
    #[arg(allow_hyphen_values = true)]
    addr: String,
    /// Strategies to use, in order of preference (direct, reverse, punch,
    /// relay); default: the configured ones.
    #[arg(long, value_delimiter = ',')]
    strategies: Vec<Strategy>,
    /// Print connection information as one JSON line on stderr.
    #[arg(long)]
    json: bool,
    /// After stdin ends, keep printing what the peer sends for this long.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    linger: f64,
}

pub(crate) async fn run(args: &Args, mut config: NodeConfig) -> anyhow::Result<bool> {
    let peer: PeerAddr = args
        .addr
        .parse()
        .map_err(|err| super::Usage(format!("bad peer address: {err}")))?;
    if !(0.0..=86_400.0).contains(&args.linger) {
        return Err(super::Usage("--linger must be between 0 and 86400 seconds".into()).into());
    }
    // A node that only opens this one connection (see `Role::Client`).
    config.role = Role::Client;
    if !args.strategies.is_empty() {
        config.connect.strategies.clone_from(&args.strategies);
    }
    let strategies = config.connect.strategies.clone();
    let reverse_budget = config.connect.budgets.reverse;
    let node = Node::start(config).await.context("starting the node")?;
    // The node is up once it can signal: `ms` measures the connect alone.
    if strategies.iter().any(|s| s.signals()) {
        node.signaling_ready(reverse_budget).await;
    }
    // A punch predicts from the NAT discovery measured and meets the peer
    // on the measured clock: when it goes first, both are part of the node
    // being up (later, it waits for them itself while others race).
    if strategies.first() == Some(&Strategy::Punch) {
        node.discovered().await;
        node.clock_measured().await;
    }
    let connection = match node.connect(&peer, &strategies).await {
        Ok(connection) => connection,
        Err(err) => {
            let tried: Vec<_> = err
                .tried
                .iter()
                .map(|(s, e)| json!({"strategy": s.name(), "error": e.to_string()}))
                .collect();
            if args.json {
                output::status(json!({"error": err.to_string(), "tried": tried}));
            } else {
                output::status(format_args!("error: {err}"));
                for (strategy, error) in &err.tried {
                    output::status(format_args!("  {strategy}: {error}"));
                }
            }
            node.close().await;
            return Ok(false);
        }
    };
    let info = json!({
        "strategy": connection.strategy.name(),
        "laddr": [connection.local.ip().to_string(), connection.local.port()],
        "raddr": [connection.remote.ip().to_string(), connection.remote.port()],
        // Whole microseconds, so the number prints as 0.546, not
        // 0.5463020000000001.
        "ms": connection.elapsed.as_micros() as f64 / 1000.0,
        "encrypted": connection.pipe.authenticated().is_some_and(|peer| peer.encrypted),
    });
    if args.json {
        output::status(info);
    } else {
        output::status(format_args!(
            "connected by {} from {} to {} in {:.1} ms",
            connection.strategy,
            connection.local,
            connection.remote,
            connection.elapsed.as_secs_f64() * 1000.0
        ));
    }
    bridge(&connection.pipe, Duration::from_secs_f64(args.linger)).await?;
    connection.pipe.close().await;
    node.close().await;
    Ok(true)
}

/// Copies stdin to the peer and the peer to stdout; after stdin ends, keeps
/// copying the peer's bytes for `linger`.
async fn bridge(pipe: &p2pd_net::pipe::Pipe, linger: Duration) -> anyhow::Result<()> {
    let stream = pipe.stream().context("connection")?;
    let (mut from_peer, mut to_peer) = tokio::io::split(stream);
    let upload = async {
        tokio::io::copy(&mut tokio::io::stdin(), &mut to_peer).await?;
        to_peer.flush().await
    };
    // Flushed after every chunk: netcat users expect to see answers at once.
    let download = async {
        let mut stdout = tokio::io::stdout();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = from_peer.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            stdout.write_all(&buf[..n]).await?;
            stdout.flush().await?;
        }
    };
    tokio::pin!(download);
    tokio::select! {
        uploaded = upload => {
            uploaded.context("reading stdin")?;
            // The peer may still be answering what we sent.
            let _ = tokio::time::timeout(linger, &mut download).await;
        }
        downloaded = &mut download => {
            downloaded.context("writing stdout")?;
        }
    }
    Ok(())
}
