//! `p2pd stun-server`: an RFC 5780 STUN server on UDP and TCP.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use p2pd_net::stun::StunServer;
use p2pd_proto::stun::server::ServerAddresses;

use crate::output;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The primary address, IP:PORT (IPv6 as [IP]:PORT).
    #[arg(long, value_name = "IP:PORT")]
    primary: SocketAddr,
    /// A second address whose IP and port both differ from the primary's:
    /// with it the server answers RFC 5780 CHANGE-REQUEST tests, listening
    /// on all four IP × port combinations.
    #[arg(long, value_name = "IP:PORT")]
    alternate: Option<SocketAddr>,
}

pub(crate) async fn run(args: &Args) -> anyhow::Result<()> {
    // The addresses are told to clients (OTHER-ADDRESS, RESPONSE-ORIGIN):
    // they must be real ones.
    for addr in std::iter::once(args.primary).chain(args.alternate) {
        if addr.ip().is_unspecified() || addr.port() == 0 {
            bail!("{addr}: give a concrete IP and port, not a wildcard");
        }
    }
    if let Some(alt) = args.alternate {
        if alt.ip() == args.primary.ip() || alt.port() == args.primary.port() {
            bail!("--alternate must differ from --primary in both IP and port");
        }
        if alt.is_ipv4() != args.primary.is_ipv4() {
            bail!("--alternate and --primary must be of one address family");
        }
    }
    let addrs = ServerAddresses {
        primary: args.primary,
        alternate: args.alternate,
    };
    let shutdown = crate::signal::shutdown();
    let server = StunServer::start(addrs)
        .await
        .context("starting the STUN server")?;
    let sockets: Vec<String> = addrs.sockets().iter().map(ToString::to_string).collect();
    output::status(format_args!(
        "stun server on {} (udp and tcp)",
        sockets.join(", ")
    ));
    shutdown.await;
    output::status(format_args!(
        "stopping: {} requests answered, {} inputs dropped",
        server.answered(),
        server.dropped()
    ));
    server.stop().await;
    Ok(())
}
