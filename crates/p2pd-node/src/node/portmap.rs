//! Port mapping as a node does it: for each served IPv4 address behind a
//! gateway, every configured protocol asks at once; every mapping granted
//! is kept and renewed until the node stops, and the first granted is the
//! one in the address (another held one takes over should it be lost).
//! What is mapped reaches the actor as [`Command::Mapped`] and becomes
//! part of the address; nothing waits for it.
//!
//! ```text
//!  served 192.168.1.2:4000, gateway 192.168.1.1
//!    ├─ pcp ──────┐
//!    ├─ nat-pmp ──┼─ first Mapped ─▶ Command::Mapped{local, 198.18.1.1:4000}
//!    └─ upnp ─────┘   (later grants: kept, renewed, deleted at the end)
//! ```

use std::future::poll_fn;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::task::Poll;
use std::time::Duration;

use p2pd_net::portmap::{DELETE_LIMIT, MapEvent, Mapper, Protocol, Target};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::command::Command;

/// The lifetime asked for (RFC 6886's recommendation); mappings are renewed
/// at half of what is granted.
const LIFETIME: Duration = Duration::from_secs(7200);
/// Shutdown waits this long for the deletes: each mapper's own limit
/// ([`DELETE_LIMIT`], all at once), and a little for the tasks.
const CLOSED_LIMIT: Duration = DELETE_LIMIT.saturating_add(Duration::from_millis(500));
/// A gateway where every protocol failed is asked again after this.
const REASK: Duration = Duration::from_secs(300);

/// The node's port mappings, one task per mapped address.
#[derive(Debug, Default)]
pub(crate) struct PortMaps {
    tasks: JoinSet<()>,
}

impl PortMaps {
    /// Maps `port` on `ip` (local address `local`) through `gateway`, with
    /// each of `protocols`, until `stop`.
    pub(crate) fn map(
        &mut self,
        protocols: &[Protocol],
        (local, ip, gateway): (usize, Ipv4Addr, Ipv4Addr),
        port: u16,
        me: mpsc::WeakSender<Command>,
        stop: CancellationToken,
    ) {
        if protocols.is_empty() || port == 0 {
            return;
        }
        let protocols = protocols.to_vec();
        let start = move || {
            protocols
                .iter()
                .map(|&protocol| {
                    let target = Target {
                        gateway: SocketAddr::new(IpAddr::V4(gateway), protocol.gateway_port()),
                        internal: SocketAddr::new(IpAddr::V4(ip), port),
                        lifetime: LIFETIME,
                    };
                    Mapper::start(protocol, target)
                })
                .collect()
        };
        self.tasks.spawn(keep(local, start, me, stop));
    }

    /// Waits (at most [`CLOSED_LIMIT`]) for every mapping to be deleted,
    /// once the node's stop token has been cancelled.
    pub(crate) async fn closed(&mut self) {
        let _ = tokio::time::timeout(CLOSED_LIMIT, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
    }
}

/// Keeps the mappings the mappers `start` makes are granted for local
/// address `local`, and tells the actor the one in the address: the first
/// granted, then, should it be lost, another still held. Every grant is
/// kept and renewed until the node stops, none deleted before: a gateway
/// keeps one mapping per port whichever protocol asked, and NAT-PMP
/// deletes by our port, so deleting one protocol's could delete
/// another's. When every protocol has failed, they all ask again after
/// [`REASK`]: a gateway may come up, or switch mapping on, later.
async fn keep(
    local: usize,
    start: impl Fn() -> Vec<Mapper>,
    me: mpsc::WeakSender<Command>,
    stop: CancellationToken,
) {
    let started = tokio::time::Instant::now();
    let mut mappers = start();
    let mut grants: Vec<(Protocol, SocketAddr)> = Vec::new();
    let mut shown: Option<(Protocol, SocketAddr)> = None;
    loop {
        if mappers.is_empty() && grants.is_empty() {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(REASK) => mappers = start(),
            }
            continue;
        }
        let (i, event) = tokio::select! {
            () = stop.cancelled() => break,
            next = next_of(&mut mappers) => next,
        };
        let protocol = mappers[i].protocol();
        match event {
            None => {
                mappers.swap_remove(i);
            }
            Some(MapEvent::Mapped { external, lifetime }) => {
                grants.retain(|(p, _)| *p != protocol);
                grants.push((protocol, external));
                let ms = started.elapsed().as_millis();
                tracing::info!(%protocol, %external, lifetime_s = lifetime.as_secs(), ms, "port mapped");
            }
            Some(MapEvent::Failed(why)) => tracing::info!(%why, "no port mapping"),
            Some(MapEvent::Lost(why)) => {
                tracing::info!(%why, "port mapping lost");
                grants.retain(|(p, _)| *p != protocol);
            }
        }
        // The mapping shown stays while it is held; else the first held.
        let now = shown
            .filter(|s| grants.contains(s))
            .or_else(|| grants.first().copied());
        if now.map(|(_, e)| e) != shown.map(|(_, e)| e) {
            let external = now.map(|(_, e)| e);
            let told = async {
                if let Some(me) = me.upgrade() {
                    let _ = me.send(Command::Mapped { local, external }).await;
                }
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = told => {}
            }
        }
        shown = now;
    }
    let closing: JoinSet<()> = mappers
        .into_iter()
        .map(|mapper| mapper.close(DELETE_LIMIT))
        .collect();
    closing.join_all().await;
}

/// The next event of any mapper, with its index; pending while there is
/// none (or no mapper).
async fn next_of(mappers: &mut [Mapper]) -> (usize, Option<MapEvent>) {
    poll_fn(|cx| {
        for (i, mapper) in mappers.iter_mut().enumerate() {
            if let Poll::Ready(event) = mapper.poll_next(cx) {
                return Poll::Ready((i, event));
            }
        }
        Poll::Pending
    })
    .await
}
