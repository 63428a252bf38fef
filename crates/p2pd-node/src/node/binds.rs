//! Binding the node server on every local address, on one port.
//! Addresses the kernel does not let us use yet are bound when it does:
//! an IPv6 address is tentative for a second or so after its link comes
//! up (duplicate address detection), and the link-local one may not exist
//! yet at all.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use p2pd_net::daemon::Daemon;
use p2pd_net::interfaces;
use p2pd_net::pipe::{PipeError, Protocol};
use tokio::time::Instant;

use super::NodeError;
use crate::candidates::Candidates;
use crate::locals::link_local_of;

/// How often addresses that were not usable are tried again, and for how
/// long: DAD takes about a second (one probe, one second's wait), longer
/// where more probes are configured.
pub(super) const RETRY_EVERY: Duration = Duration::from_millis(200);
const RETRY_LIMIT: Duration = Duration::from_secs(60);
/// How often the interfaces are listed while a link-local address is
/// missing: listing costs a netlink dump, binding a tentative address
/// costs one syscall, so the first is done less often.
const LIST_EVERY: Duration = Duration::from_secs(1);

/// A socket not bound yet: the own IP of local address `local`, or its
/// link-local address (`addr` is `None` while the kernel has not made
/// one).
#[derive(Debug, Clone, Copy)]
struct Waiting {
    local: usize,
    link_local: bool,
    addr: Option<SocketAddr>,
}

/// The sockets still to bind.
#[derive(Debug)]
pub(crate) struct Binds {
    waiting: Vec<Waiting>,
    give_up: Instant,
    /// When the interfaces may be listed again to look for missing
    /// link-local addresses.
    next_listing: Instant,
    /// The port every socket shares: the configured one, or the first
    /// one the OS picked (0 until then).
    port: u16,
}

/// Listens on every local address (and IPv6 link-local) on one port;
/// port 0 takes the first free one. What the kernel does not let us use
/// yet is returned to be bound later; any other failure stops the node.
pub(crate) async fn listen(
    daemon: &mut Daemon,
    candidates: &mut Candidates,
    port: u16,
) -> Result<Binds, NodeError> {
    let mut port = match port {
        0 => free_everywhere(&own_addrs(candidates)),
        fixed => fixed,
    };
    let mut waiting = Vec::new();
    for (n, local) in candidates.locals().to_vec().into_iter().enumerate() {
        let mut addrs = vec![(scoped(local.ip, 0, 0), false)];
        match local.link_local {
            Some((ll, scope)) => addrs.push((scoped(ll, 0, scope), true)),
            None if local.ip.is_ipv6() => waiting.push(Waiting {
                local: n,
                link_local: true,
                addr: None,
            }),
            None => {}
        }
        for (mut addr, link_local) in addrs {
            addr.set_port(port);
            match bind(daemon, addr).await {
                Ok(bound) => {
                    port = bound;
                    candidates.serve(n, link_local, port);
                }
                Err(PipeError::Bind(err)) if err.is_not_ready() => {
                    tracing::info!(%addr, "address not usable yet (duplicate address detection); served once it is");
                    waiting.push(Waiting {
                        local: n,
                        link_local,
                        addr: Some(addr),
                    });
                }
                Err(err) => return Err(err.into()),
            }
        }
    }
    Ok(Binds {
        waiting,
        give_up: Instant::now() + RETRY_LIMIT,
        next_listing: Instant::now(),
        port,
    })
}

impl Binds {
    /// The port the node server listens on (0 while nothing is bound).
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Whether every socket is bound (or given up on).
    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Tries the waiting sockets again; returns the local addresses whose
    /// own IP is newly served.
    pub(crate) async fn retry(
        &mut self,
        daemon: &mut Daemon,
        candidates: &mut Candidates,
    ) -> Vec<usize> {
        let now = Instant::now();
        if now >= self.give_up {
            for w in self.waiting.drain(..) {
                match w.addr {
                    Some(addr) => tracing::warn!(%addr, "address never became usable; not served"),
                    // Legitimate: links can be set to make none.
                    None => tracing::debug!(local = w.local, "interface has no link-local address"),
                }
            }
            return Vec::new();
        }
        let listed = if now >= self.next_listing && self.waiting.iter().any(|w| w.addr.is_none()) {
            self.next_listing = now + LIST_EVERY;
            interfaces::list().unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut newly = Vec::new();
        let mut still = Vec::new();
        for mut w in std::mem::take(&mut self.waiting) {
            if w.addr.is_none() {
                let os_index = candidates.locals()[w.local].os_index;
                let found = listed
                    .iter()
                    .find(|i| i.index == os_index)
                    .and_then(link_local_of);
                if let Some(ll) = found {
                    candidates.set_link_local(w.local, ll);
                    w.addr = Some(scoped(ll.0, 0, ll.1));
                }
            }
            let Some(mut addr) = w.addr else {
                still.push(w);
                continue;
            };
            addr.set_port(self.port);
            match bind(daemon, addr).await {
                Ok(port) => {
                    self.port = port;
                    tracing::info!(%addr, port, "address usable; now served");
                    candidates.serve(w.local, w.link_local, port);
                    if !w.link_local {
                        newly.push(w.local);
                    }
                }
                Err(PipeError::Bind(err)) if err.is_not_ready() => still.push(w),
                Err(err) => tracing::warn!(%addr, %err, "address not served"),
            }
        }
        self.waiting = still;
        newly
    }
}

/// Listens on `addr`; returns the port it got.
/// How many ports the OS picks before [`free_everywhere`] gives up.
const PORT_TRIES: usize = 8;

/// Every local address's own IP and link-local one, port 0, in the order
/// [`listen`] binds them.
fn own_addrs(candidates: &Candidates) -> Vec<SocketAddr> {
    let mut addrs = Vec::new();
    for local in candidates.locals() {
        addrs.push(scoped(local.ip, 0, 0));
        if let Some((ll, scope)) = local.link_local {
            addrs.push(scoped(ll, 0, scope));
        }
    }
    addrs
}

/// A port, picked by the OS for the first of `addrs`, that no other of
/// them has in use: the port the OS picks for one address may be taken on
/// another (seen in a test run: "cannot bind [fd00::2]:40225: Address
/// already in use"), and every address shares the port. An address that
/// cannot be probed for another reason (not usable yet) does not count.
/// 0 when no such port turns up in [`PORT_TRIES`]: the binds then take
/// what the OS picks and fail as before.
fn free_everywhere(addrs: &[SocketAddr]) -> u16 {
    let Some((first, others)) = addrs.split_first() else {
        return 0;
    };
    // A port found in use elsewhere stays held here, so the OS picks
    // another the next try.
    let mut held = Vec::new();
    for _ in 0..PORT_TRIES {
        let Ok(probe) = std::net::TcpListener::bind(first) else {
            return 0;
        };
        let Ok(port) = probe.local_addr().map(|a| a.port()) else {
            return 0;
        };
        let in_use = others.iter().any(|addr| {
            let mut addr = *addr;
            addr.set_port(port);
            matches!(std::net::TcpListener::bind(addr),
                Err(err) if err.kind() == std::io::ErrorKind::AddrInUse)
        });
        if !in_use {
            return port;
        }
        held.push(probe);
    }
    0
}

async fn bind(daemon: &mut Daemon, addr: SocketAddr) -> Result<u16, PipeError> {
    let pipes = daemon.listen_specific(&[(addr, Protocol::Tcp)]).await?;
    Ok(pipes.first().map_or(addr.port(), |p| p.local_addr().port()))
}

/// `ip` on `port`, with the scope id when it is IPv6.
fn scoped(ip: IpAddr, port: u16, scope: u32) -> SocketAddr {
    match ip {
        IpAddr::V6(v6) => SocketAddr::V6(std::net::SocketAddrV6::new(v6, port, 0, scope)),
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V4(v4), port),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, TcpListener};

    use super::free_everywhere;

    #[test]
    fn the_port_found_is_free_on_every_address() {
        let addrs: Vec<SocketAddr> = ["127.0.0.1:0", "127.0.0.2:0", "127.0.0.3:0"]
            .iter()
            .map(|a| a.parse().expect("literal"))
            .collect();
        let port = free_everywhere(&addrs);
        assert_ne!(port, 0);
        let bound: Vec<TcpListener> = addrs
            .iter()
            .map(|addr| {
                let mut addr = *addr;
                addr.set_port(port);
                TcpListener::bind(addr).expect("free on every address")
            })
            .collect();
        assert_eq!(bound.len(), 3);
        assert_eq!(free_everywhere(&[]), 0, "nothing to bind");
    }
}
