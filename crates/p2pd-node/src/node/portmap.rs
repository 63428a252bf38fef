//! Port mapping as a node does it: for each served IPv4 address behind a
//! gateway, every configured protocol asks at once; the first mapping
//! granted is kept (its mapper renews it). A later grant of the same
//! address is the same mapping on the gateway, kept too; a grant of
//! another address is deleted. What
//! is mapped reaches the actor as [`Command::Mapped`] and becomes part of
//! the address; nothing waits for it.
//!
//! ```text
//!  served 192.168.1.2:4000, gateway 192.168.1.1
//!    ├─ pcp ──────┐
//!    ├─ nat-pmp ──┼─ first Mapped ─▶ Command::Mapped{local, 198.18.1.1:4000}
//!    └─ upnp ─────┘   (a later grant of the same: kept too;
//!                      of another: deleted)
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
/// A gateway where every protocol failed is asked again after this.
const REASK: Duration = Duration::from_secs(300);

/// The node's port mappings, one task per mapped address.
#[derive(Debug, Default)]
pub(crate) struct PortMaps {
    tasks: JoinSet<()>,
}

impl PortMaps {
    /// Maps `port` on `ip` (local address `local`) through its interface's
    /// IPv4 gateway, if it has one, with each of `protocols`, until `stop`.
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

    /// Waits (at most `limit`) for every mapping to be deleted, once the
    /// node's stop token has been cancelled.
    pub(crate) async fn closed(&mut self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
    }
}

/// Keeps the first mapping any of the mappers `start` makes is granted for
/// local address `local`, and tells the actor what it is. When every
/// protocol has failed, they all ask again after [`REASK`]: a gateway may
/// come up, or switch mapping on, later.
async fn keep(
    local: usize,
    start: impl Fn() -> Vec<Mapper>,
    me: mpsc::WeakSender<Command>,
    stop: CancellationToken,
) {
    let mut mappers = start();
    let started = tokio::time::Instant::now();
    let mut kept: Option<(Protocol, SocketAddr)> = None;
    let tell = |external: Option<SocketAddr>| {
        let me = me.clone();
        async move {
            if let Some(me) = me.upgrade() {
                let _ = me.send(Command::Mapped { local, external }).await;
            }
        }
    };
    loop {
        if mappers.is_empty() && kept.is_none() {
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
            Some(MapEvent::Mapped { external, lifetime }) => match kept {
                // A gateway keeps one mapping per port whichever protocol
                // asked: deleting this one would delete the kept one. It
                // is renewed by both, and deleted by both at the end (the
                // gateway may let only the last asker delete it).
                Some((first, same)) if first != protocol && same == external => {
                    tracing::info!(%protocol, %external, "the same mapping as {first}'s");
                }
                Some((first, _)) if first != protocol => {
                    tracing::info!(%protocol, %external, "a second mapping, deleted; {first}'s is kept");
                    mappers.swap_remove(i).close(DELETE_LIMIT).await;
                }
                _ => {
                    let ms = started.elapsed().as_millis();
                    tracing::info!(%protocol, %external, lifetime_s = lifetime.as_secs(), ms, "port mapped");
                    kept = Some((protocol, external));
                    tell(Some(external)).await;
                }
            },
            Some(MapEvent::Failed(why)) => tracing::info!(%why, "no port mapping"),
            Some(MapEvent::Lost(why)) => {
                tracing::info!(%why, "port mapping lost");
                if kept.is_some_and(|(p, _)| p == protocol) {
                    tell(None).await;
                }
            }
        }
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
