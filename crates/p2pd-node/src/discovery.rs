//! What STUN says about each local address: resolving the configured
//! server names, then NAT discovery on every local address at once. The
//! node turns the reports into server-reflexive candidates; `p2pd nat`
//! prints them.

use std::net::SocketAddr;
use std::time::Duration;

use p2pd_net::stun::client::StunError;
use p2pd_net::stun::discovery::{DeltaSeriesGate, DiscoveryOptions, NatReport, discover_gated};

use crate::locals::Local;
use crate::servers::HostPort;

/// How long resolving one STUN server name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// The usual STUN port, for servers given without one.
pub const STUN_PORT: u16 = 3478;

/// Resolves STUN servers, all at once (an unanswered name costs one
/// timeout, not one each); a name that does not resolve in time is logged
/// and skipped. Keeps the configured order.
///
/// Cancel-safe.
pub async fn resolve_stun(servers: &[HostPort]) -> Vec<SocketAddr> {
    let mut lookups = tokio::task::JoinSet::new();
    for (n, server) in servers.iter().enumerate() {
        let host = if server.host.contains(':') {
            format!("[{}]", server.host)
        } else {
            server.host.clone()
        };
        let name = format!("{host}:{}", server.port_or(STUN_PORT));
        lookups.spawn(async move {
            let found =
                tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(name.clone())).await;
            (n, name, found)
        });
    }
    let mut found = Vec::new();
    while let Some(joined) = lookups.join_next().await {
        let Ok((n, name, result)) = joined else {
            continue;
        };
        match result {
            Ok(Ok(addrs)) => found.push((n, addrs.collect::<Vec<_>>())),
            Ok(Err(err)) => tracing::warn!(server = %name, %err, "STUN server skipped"),
            Err(_) => tracing::warn!(server = %name, "STUN server skipped: no DNS answer"),
        }
    }
    found.sort_by_key(|(n, _)| *n);
    let mut out: Vec<SocketAddr> = found.into_iter().flat_map(|(_, addrs)| addrs).collect();
    out.dedup();
    out
}

/// Runs NAT discovery on every local address at once (each test mostly
/// waits on its sockets); returns each report with the index of its local
/// address in `locals`, in that order. Their delta series take turns at
/// `gate` (two interfaces may share a NAT, and rounds may overlap).
///
/// Cancel-safe: dropping the future stops every discovery.
pub async fn discover_each(
    locals: &[Local],
    servers: &[SocketAddr],
    options: &DiscoveryOptions,
    gate: &DeltaSeriesGate,
) -> Vec<(usize, Result<NatReport, StunError>)> {
    let mut runs = tokio::task::JoinSet::new();
    for (n, local) in locals.iter().enumerate() {
        let (ip, servers, options, gate) = (local.ip, servers.to_vec(), *options, gate.clone());
        runs.spawn(async move { (n, discover_gated(ip, 0, &servers, &options, &gate).await) });
    }
    let mut reports = Vec::with_capacity(locals.len());
    while let Some(joined) = runs.join_next().await {
        match joined {
            Ok(done) => reports.push(done),
            // A bug in discovery is not to be hidden as "no answer".
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(err) => tracing::debug!(%err, "a discovery task was cancelled"),
        }
    }
    reports.sort_by_key(|(n, _)| *n);
    reports
}
