//! `p2pd ntp-server`: a small SNTP responder for labs and tests. It reads
//! the host clock (shifted by `--offset-ms`) and never sets it, so every
//! namespace of a lab can share the host clock and still see a server that
//! runs fast or slow.

use std::net::SocketAddr;

use anyhow::Context;
use p2pd_net::ntp::NtpServer;

use crate::output;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where to answer, IP:PORT (NTP's own port is 123).
    #[arg(long, value_name = "IP:PORT")]
    listen: SocketAddr,
    /// Answer with the host clock plus this many milliseconds (negative:
    /// behind).
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 0,
        allow_hyphen_values = true
    )]
    offset_ms: i64,
}

pub(crate) async fn run(args: &Args) -> anyhow::Result<()> {
    let shutdown = crate::signal::shutdown();
    let offset_ns = args.offset_ms.checked_mul(1_000_000).ok_or_else(|| {
        crate::cmd::Usage(format!("--offset-ms {} is out of range", args.offset_ms))
    })?;
    let server = NtpServer::start(args.listen, offset_ns)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    output::status(format_args!(
        "ntp server on {} (host clock {:+} ms)",
        server.local_addr(),
        args.offset_ms
    ));
    shutdown.await;
    output::status(format_args!(
        "stopped; {} requests answered",
        server.answered()
    ));
    server.stop().await;
    Ok(())
}
