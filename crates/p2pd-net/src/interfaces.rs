//! Network interface enumeration (manual 1.4.1): addresses, gateways and the
//! routes built from them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use p2pd_proto::route::{LinkLocal, RouteV4, RouteV6, routes_for_nic};
use serde::Serialize;

/// One network interface card as p2pd sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interface {
    /// Kernel name, e.g. `eth0`.
    pub name: String,
    /// Kernel interface index; IPv6 link-local sockets use it as scope id.
    pub index: u32,
    /// Whether the link is administratively up.
    pub up: bool,
    /// Whether this is a loopback device.
    pub loopback: bool,
    /// IPv4 addresses with their prefix length.
    pub ipv4: Vec<Ipv4Net>,
    /// IPv6 link-local addresses (`fe80::/10`) with their scope id.
    pub ipv6_link_local: Vec<LinkLocal>,
    /// Every other IPv6 address except loopback, with its prefix length.
    pub ipv6_global: Vec<Ipv6Net>,
    /// The IPv4 default gateway reached through this interface, if any.
    pub gateway_v4: Option<Ipv4Addr>,
    /// The IPv6 default gateway reached through this interface, if any.
    pub gateway_v6: Option<Ipv6Addr>,
    /// Whether IPv4 traffic to the internet leaves through this interface.
    pub default_v4: bool,
    /// Whether IPv6 traffic to the internet leaves through this interface.
    pub default_v6: bool,
}

impl Interface {
    /// Routes of this interface before any external address is known.
    pub fn routes(&self) -> (Vec<RouteV4>, Vec<RouteV6>) {
        routes_for_nic(&self.ipv4, &self.ipv6_link_local, &self.ipv6_global)
    }

    /// Whether p2pd can reach other hosts through it: up, not loopback, with
    /// at least one route.
    pub fn has_route(&self) -> bool {
        self.up && !self.loopback && (!self.ipv4.is_empty() || !self.ipv6_global.is_empty())
    }
}

/// Why interfaces could not be listed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InterfaceError {
    /// The OS gave no interface list (netlink and getifaddrs both failed).
    #[error("cannot list network interfaces")]
    Unavailable,
}

/// Lists the interfaces of the current network namespace, ordered by index.
///
/// The default interface per family is the one holding a default route for
/// that family; when several do, the one the OS picks for outbound traffic
/// wins, else the lowest index.
pub fn list() -> Result<Vec<Interface>, InterfaceError> {
    let raw = netdev::get_interfaces();
    if raw.is_empty() {
        return Err(InterfaceError::Unavailable);
    }
    let mut interfaces: Vec<Interface> = raw.iter().map(from_netdev).collect();
    interfaces.sort_by_key(|i| i.index);
    let os_default = raw.iter().find(|i| i.default).map(|i| i.index);
    mark_default(
        &mut interfaces,
        os_default,
        |i| i.gateway_v4.is_some(),
        |i| &mut i.default_v4,
    );
    mark_default(
        &mut interfaces,
        os_default,
        |i| i.gateway_v6.is_some(),
        |i| &mut i.default_v6,
    );
    Ok(interfaces)
}

fn from_netdev(raw: &netdev::Interface) -> Interface {
    let mut ipv6_link_local = Vec::new();
    let mut ipv6_global = Vec::new();
    for (n, net) in raw.ipv6.iter().enumerate() {
        let ip = net.addr();
        if is_link_local(ip) {
            ipv6_link_local.push(LinkLocal {
                ip,
                prefix: net.prefix_len(),
                // netdev reports one scope id per address; a link-local
                // address is always scoped to its own interface.
                scope_id: raw
                    .ipv6_scope_ids
                    .get(n)
                    .copied()
                    .filter(|s| *s != 0)
                    .unwrap_or(raw.index),
            });
        } else if !ip.is_loopback() && !ip.is_unspecified() {
            ipv6_global.push(*net);
        }
    }
    let gateway = raw.gateway.as_ref();
    Interface {
        name: raw.name.clone(),
        index: raw.index,
        up: raw.is_up(),
        loopback: raw.is_loopback(),
        ipv4: raw.ipv4.clone(),
        ipv6_link_local,
        ipv6_global,
        gateway_v4: gateway.and_then(|g| g.ipv4.first().copied()),
        gateway_v6: gateway.and_then(|g| g.ipv6.first().copied()),
        default_v4: false,
        default_v6: false,
    }
}

fn mark_default(
    interfaces: &mut [Interface],
    os_default: Option<u32>,
    has_gateway: impl Fn(&Interface) -> bool,
    flag: impl Fn(&mut Interface) -> &mut bool,
) {
    let chosen = interfaces
        .iter()
        .filter(|i| has_gateway(i))
        .find(|i| Some(i.index) == os_default)
        .or_else(|| interfaces.iter().find(|i| has_gateway(i)))
        .map(|i| i.index);
    for i in interfaces.iter_mut() {
        *flag(i) = Some(i.index) == chosen;
    }
}

/// Whether an address is IPv6 link-local (`fe80::/10`) and so needs a scope id.
pub fn is_link_local(ip: Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// Finds the interface holding `ip`.
pub fn owner_of(interfaces: &[Interface], ip: IpAddr) -> Option<&Interface> {
    interfaces.iter().find(|i| match ip {
        IpAddr::V4(v4) => i.ipv4.iter().any(|n| n.addr() == v4),
        IpAddr::V6(v6) => {
            i.ipv6_global.iter().any(|n| n.addr() == v6)
                || i.ipv6_link_local.iter().any(|l| l.ip == v6)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_is_fe80_slash_10() {
        assert!(is_link_local("fe80::1".parse().expect("lit")));
        assert!(is_link_local("febf::1".parse().expect("lit")));
        assert!(!is_link_local("fec0::1".parse().expect("lit")));
        assert!(!is_link_local("fd00::1".parse().expect("lit")));
    }

    #[test]
    fn loopback_is_listed_and_has_no_route() {
        let interfaces = list().expect("this host lists its interfaces");
        let lo = interfaces
            .iter()
            .find(|i| i.loopback)
            .expect("every Linux namespace has lo");
        assert!(lo.ipv4.iter().any(|n| n.addr() == Ipv4Addr::LOCALHOST) || !lo.up);
        assert!(!lo.has_route());
        assert!(lo.ipv6_global.iter().all(|n| !n.addr().is_loopback()));
    }

    #[test]
    fn at_most_one_default_per_family() {
        let interfaces = list().expect("this host lists its interfaces");
        assert!(interfaces.iter().filter(|i| i.default_v4).count() <= 1);
        assert!(interfaces.iter().filter(|i| i.default_v6).count() <= 1);
        assert!(
            interfaces
                .iter()
                .all(|i| !i.default_v4 || i.gateway_v4.is_some())
        );
    }

    #[test]
    fn owner_of_finds_the_interface_holding_an_address() {
        let interfaces = list().expect("this host lists its interfaces");
        let Some(with_v4) = interfaces.iter().find(|i| !i.ipv4.is_empty()) else {
            return;
        };
        let ip = IpAddr::V4(with_v4.ipv4[0].addr());
        assert_eq!(
            owner_of(&interfaces, ip).map(|i| i.index),
            Some(with_v4.index)
        );
        assert!(owner_of(&interfaces, "192.0.2.254".parse().expect("lit")).is_none());
    }
}
