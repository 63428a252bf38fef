//! UPnP IGD through igd-next: discovery by a unicast SSDP search to the
//! gateway alone (any other device on the LAN is not asked), then
//! GetExternalIPAddress and AddPortMapping (AddAnyPortMapping when the port
//! is taken), renewed at half the lease, DeletePortMapping at the end.

use std::net::SocketAddr;
use std::time::Duration;

use igd_next::aio::Gateway;
use igd_next::aio::tokio::Tokio;
use igd_next::{AddAnyPortError, AddPortError, PortMappingProtocol, SearchOptions};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use super::{DELETE_LIMIT, MapEvent, Target};

/// Discovery gives up after this: a gateway answers in milliseconds, and
/// one without UPnP must not hold anything up for long.
const SEARCH_LIMIT: Duration = Duration::from_secs(2);
/// Each SOAP request gives up after this.
const REQUEST_LIMIT: Duration = Duration::from_secs(2);
/// A failed renewal is tried again after this.
const RETRY: Duration = Duration::from_secs(5);
/// What the mappings are called in the gateway's table.
const DESCRIPTION: &str = "p2pd";
/// Leases the protocol can carry: a u32 of seconds, 0 meaning forever.
const MAX_LEASE_S: u32 = u32::MAX;

pub(super) async fn run(target: Target, events: mpsc::Sender<MapEvent>, stop: CancellationToken) {
    let fail = |why: String| MapEvent::Failed(format!("UPnP at {}: {why}", target.gateway));
    let found = tokio::select! {
        () = stop.cancelled() => return,
        found = search(target) => found,
    };
    let mut gateway = match found {
        Ok(gateway) => gateway,
        Err(why) => {
            let _ = events.send(fail(why)).await;
            return;
        }
    };
    let mut lease = lease_s(target.lifetime);
    // The port an add may have left on the gateway, should it not answer.
    let mut pending = None;
    let granted = tokio::select! {
        () = stop.cancelled() => Err(Failure::from("stopped")),
        granted = map(&gateway, target, None, &mut lease, &mut pending) => granted,
    };
    let mut current = match granted {
        Ok(external) => external,
        Err(failure) => {
            if let Some(port) = pending {
                delete(&gateway, target, port).await;
            }
            if !stop.is_cancelled() {
                let _ = events.send(fail(failure.0)).await;
            }
            return;
        }
    };
    let lifetime = lifetime_of(lease);
    let _ = events
        .send(MapEvent::Mapped {
            external: current,
            lifetime,
        })
        .await;
    let mut expires = Instant::now() + lifetime;
    let mut renew_at = Instant::now() + lifetime / 2;
    let mut lost = false;
    let mut failed = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = sleep_until(renew_at) => {}
        }
        if failed {
            // A gateway that restarted may serve its IGD elsewhere now (a
            // new HTTP port): found again, it is asked there.
            let found = tokio::select! {
                () = stop.cancelled() => break,
                found = search(target) => found,
            };
            if let Ok(found) = found {
                gateway = found;
            }
        }
        let granted = tokio::select! {
            () = stop.cancelled() => break,
            granted = map(&gateway, target, Some(current.port()), &mut lease, &mut pending) => granted,
        };
        let now = Instant::now();
        match granted {
            Ok(external) => {
                let lifetime = lifetime_of(lease);
                if external != current || lost {
                    current = external;
                    lost = false;
                    let _ = events.send(MapEvent::Mapped { external, lifetime }).await;
                }
                failed = false;
                expires = now + lifetime;
                renew_at = now + lifetime / 2;
            }
            Err(Failure(why)) => {
                tracing::debug!(gateway = %target.gateway, %why, "UPnP renewal failed");
                failed = true;
                if now >= expires && !lost {
                    lost = true;
                    let why = format!("UPnP at {}: the mapping ran out: {why}", target.gateway);
                    let _ = events.send(MapEvent::Lost(why)).await;
                }
                // Tried again soon, and at the latest when it runs out, so
                // a loss is reported when it happens.
                renew_at = if now < expires {
                    (now + RETRY).min(expires)
                } else {
                    now + RETRY
                };
            }
        }
    }
    delete(&gateway, target, current.port()).await;
}

/// Why a mapping was not made.
struct Failure(String);

impl From<&str> for Failure {
    fn from(why: &str) -> Self {
        Failure(why.to_owned())
    }
}

/// Deletes our mapping of `port`, best effort, within [`DELETE_LIMIT`].
async fn delete(gateway: &Gateway<Tokio>, target: Target, port: u16) {
    let delete = gateway.remove_port(PortMappingProtocol::TCP, port);
    if let Ok(Err(err)) = timeout(DELETE_LIMIT, delete).await {
        tracing::debug!(gateway = %target.gateway, %err, "UPnP delete failed");
    }
}

/// The gateway's IGD, found by asking it alone.
async fn search(target: Target) -> Result<Gateway<Tokio>, String> {
    let mut options = SearchOptions::default();
    options.bind_addr = SocketAddr::new(target.internal.ip(), 0);
    options.broadcast_address = target.gateway;
    options.timeout = Some(SEARCH_LIMIT);
    options.single_search_timeout = Some(SEARCH_LIMIT);
    // Its description and control URLs must name the gateway asked, which
    // igd-next then trusts whatever the address (a stand-in on loopback).
    options.allowed_gateway_ips = vec![target.gateway.ip()];
    let found = timeout(SEARCH_LIMIT, igd_next::aio::tokio::search_gateway(options)).await;
    match found {
        // Any host on the LAN could answer the search, naming itself.
        Ok(Ok(gateway)) if gateway.addr.ip() != target.gateway.ip() => {
            Err(format!("the IGD at {} is not the gateway", gateway.addr))
        }
        Ok(Ok(gateway)) => Ok(gateway),
        Ok(Err(err)) => Err(format!("no gateway found: {err}")),
        Err(_) => Err(format!(
            "no gateway answered within {} ms",
            SEARCH_LIMIT.as_millis()
        )),
    }
}

/// Maps our port: the same external port (or `port`, on a renewal), else
/// any; a gateway that takes only permanent leases gets one (deleted at
/// the end like any). The external IP is checked as every protocol's is.
/// `pending` names the port an unanswered AddPortMapping may have mapped
/// (a taken port is someone else's, and is not).
async fn map(
    gateway: &Gateway<Tokio>,
    target: Target,
    port: Option<u16>,
    lease: &mut u32,
    pending: &mut Option<u16>,
) -> Result<SocketAddr, Failure> {
    let ip = timeout(REQUEST_LIMIT, gateway.get_external_ip())
        .await
        .map_err(|_| Failure::from("GetExternalIPAddress timed out"))?
        .map_err(|e| Failure(format!("GetExternalIPAddress: {e}")))?;
    let ip = p2pd_proto::portmap::check_external(ip).map_err(|e| Failure(e.to_string()))?;
    let wanted = port.unwrap_or(target.internal.port());
    let tcp = PortMappingProtocol::TCP;
    let add = |lease| gateway.add_port(tcp, wanted, target.internal, lease, DESCRIPTION);
    let timed_out = |_| Failure::from("AddPortMapping timed out");
    *pending = Some(wanted);
    let mut added = timeout(REQUEST_LIMIT, add(*lease))
        .await
        .map_err(timed_out)?;
    if let Err(AddPortError::OnlyPermanentLeasesSupported) = added {
        *lease = 0;
        added = timeout(REQUEST_LIMIT, add(0)).await.map_err(timed_out)?;
    }
    let port = match added {
        Ok(()) => wanted,
        Err(AddPortError::PortInUse | AddPortError::SamePortValuesRequired) => {
            *pending = None;
            let any = gateway.add_any_port(tcp, target.internal, *lease, DESCRIPTION);
            match timeout(REQUEST_LIMIT, any).await {
                Ok(Ok(port)) => port,
                Ok(Err(AddAnyPortError::ExternalPortInUse)) => {
                    return Err(Failure(format!(
                        "port {wanted} is taken and no other is offered"
                    )));
                }
                Ok(Err(err)) => return Err(Failure(format!("AddAnyPortMapping: {err}"))),
                Err(_) => return Err(Failure::from("AddAnyPortMapping timed out")),
            }
        }
        Err(err) => {
            *pending = None;
            return Err(Failure(format!("AddPortMapping: {err}")));
        }
    };
    *pending = None;
    if port == 0 {
        return Err(Failure::from("the gateway mapped port 0"));
    }
    Ok(SocketAddr::new(ip.into(), port))
}

fn lease_s(lifetime: Duration) -> u32 {
    u32::try_from(lifetime.as_secs())
        .unwrap_or(MAX_LEASE_S)
        .max(1)
}

/// How long a lease keeps: a permanent one is renewed as if it lasted an
/// hour, so a gateway that restarted gets it back.
fn lifetime_of(lease: u32) -> Duration {
    if lease == 0 {
        Duration::from_secs(3600)
    } else {
        Duration::from_secs(u64::from(lease))
    }
}
