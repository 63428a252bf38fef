//! What STUN says about each local address: resolving the configured
//! server names, then NAT discovery on every local address at once. The
//! node turns the reports into server-reflexive candidates; `p2pd nat`
//! prints them.

use std::net::SocketAddr;

use p2pd_net::stun::client::StunError;
use p2pd_net::stun::discovery::{DeltaSeriesGate, DiscoveryOptions, NatReport, discover_gated};

use crate::locals::Local;
use crate::servers::HostPort;

/// The usual STUN port, for servers given without one.
pub const STUN_PORT: u16 = 3478;

/// Resolves STUN servers, all at once (see [`servers::resolve`]).
///
/// Cancel-safe.
pub async fn resolve_stun(servers: &[HostPort]) -> Vec<SocketAddr> {
    crate::servers::resolve(servers, STUN_PORT, "STUN").await
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
