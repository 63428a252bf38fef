//! Routes: which local addresses of a NIC sit behind which external address.
//!
//! The manual (section 1.4.1) groups a NIC's addresses by the external address
//! they reach the internet through. IPv4 routes list NIC networks (usually
//! private, behind NAT); the external address is only known once STUN has
//! answered, so it starts as `None`. IPv6 has no NAT: every global address (or
//! block) is its own route, reached from the NIC's link-local addresses.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::Serialize;

/// An IPv6 link-local address with the interface scope it is only valid on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct LinkLocal {
    /// The address, inside `fe80::/10`.
    pub ip: Ipv6Addr,
    /// Prefix length assigned with it.
    pub prefix: u8,
    /// Interface index; sockets must carry it to bind or connect.
    pub scope_id: u32,
}

/// IPv4 NIC networks that share one external address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteV4 {
    /// The NIC's own addresses with their prefixes.
    pub nic: Vec<Ipv4Net>,
    /// The external address or block, `None` until STUN has reported it.
    pub external: Option<Ipv4Net>,
}

/// One IPv6 global address or block, reached from the NIC's link-local addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteV6 {
    /// The NIC's link-local addresses, shared by all its IPv6 routes.
    pub link_local: Vec<LinkLocal>,
    /// The global address or block this route serves.
    pub external: Ipv6Net,
}

/// Builds the routes of one NIC before any external address is known: all
/// IPv4 networks in one route, one IPv6 route per global address.
///
/// A NIC with IPv4 addresses always has exactly one IPv4 route; one without
/// has none. IPv6 link-local addresses alone make no route (they cannot reach
/// the internet).
pub fn routes_for_nic(
    ipv4: &[Ipv4Net],
    link_local: &[LinkLocal],
    ipv6_global: &[Ipv6Net],
) -> (Vec<RouteV4>, Vec<RouteV6>) {
    let v4 = if ipv4.is_empty() {
        Vec::new()
    } else {
        vec![RouteV4 {
            nic: ipv4.to_vec(),
            external: None,
        }]
    };
    let v6 = ipv6_global
        .iter()
        .map(|global| RouteV6 {
            link_local: link_local.to_vec(),
            external: *global,
        })
        .collect();
    (v4, v6)
}

/// Regroups IPv4 NIC networks once STUN has told, for each, the external
/// address seen when sending from it (`None`: no answer).
///
/// Networks with the same external address share a route. A network whose
/// external address is its own address is assigned publicly as a whole, so its
/// route's external side is the whole block (manual 1.4.1, example 1). Networks
/// that got no answer form one route with an unknown external address. Routes
/// come out ordered by external address, the unknown one last.
pub fn group_v4_by_external(
    probes: impl IntoIterator<Item = (Ipv4Net, Option<Ipv4Addr>)>,
) -> Vec<RouteV4> {
    let mut by_external: BTreeMap<Ipv4Net, Vec<Ipv4Net>> = BTreeMap::new();
    let mut unknown = Vec::new();
    for (nic, external) in probes {
        match external {
            Some(ext) if ext == nic.addr() => {
                by_external.entry(nic.trunc()).or_default().push(nic);
            }
            Some(ext) => by_external.entry(Ipv4Net::from(ext)).or_default().push(nic),
            None => unknown.push(nic),
        }
    }
    let mut routes: Vec<RouteV4> = by_external
        .into_iter()
        .map(|(external, nic)| RouteV4 {
            nic,
            external: Some(external),
        })
        .collect();
    if !unknown.is_empty() {
        routes.push(RouteV4 {
            nic: unknown,
            external: None,
        });
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Ipv4Net {
        s.parse().expect("test literal")
    }

    fn v6(s: &str) -> Ipv6Net {
        s.parse().expect("test literal")
    }

    #[test]
    fn nic_without_addresses_has_no_routes() {
        let (r4, r6) = routes_for_nic(&[], &[], &[]);
        assert!(r4.is_empty());
        assert!(r6.is_empty());
    }

    #[test]
    fn ipv4_networks_share_one_route_until_stun_answers() {
        let nics = [v4("192.168.0.20/24"), v4("7.7.7.7/32")];
        let (r4, _) = routes_for_nic(&nics, &[], &[]);
        assert_eq!(
            r4,
            vec![RouteV4 {
                nic: nics.to_vec(),
                external: None
            }]
        );
    }

    #[test]
    fn each_ipv6_global_address_is_a_route_with_all_link_locals() {
        let ll = LinkLocal {
            ip: "fe80::1".parse().expect("test literal"),
            prefix: 64,
            scope_id: 3,
        };
        let globals = [v6("2020:deed:beef::/128"), v6("2020:deed:deed::/64")];
        let (r4, r6) = routes_for_nic(&[], &[ll], &globals);
        assert!(r4.is_empty());
        assert_eq!(r6.len(), 2);
        assert!(r6.iter().all(|r| r.link_local == vec![ll]));
        assert_eq!(r6[1].external, globals[1]);
    }

    #[test]
    fn regroups_ipv4_like_the_manual_example() {
        // Manual 1.4.1, example 1: three NIC addresses behind 1.3.3.7, one
        // block assigned publicly as a whole.
        let routes = group_v4_by_external([
            (v4("192.168.0.20/32"), Some("1.3.3.7".parse().expect("lit"))),
            (v4("193.168.0.0/16"), Some("1.3.3.7".parse().expect("lit"))),
            (v4("7.7.7.7/32"), Some("1.3.3.7".parse().expect("lit"))),
            (v4("8.8.0.0/16"), Some("8.8.0.0".parse().expect("lit"))),
        ]);
        assert_eq!(
            routes,
            vec![
                RouteV4 {
                    nic: vec![
                        v4("192.168.0.20/32"),
                        v4("193.168.0.0/16"),
                        v4("7.7.7.7/32")
                    ],
                    external: Some(v4("1.3.3.7/32")),
                },
                RouteV4 {
                    nic: vec![v4("8.8.0.0/16")],
                    external: Some(v4("8.8.0.0/16")),
                },
            ]
        );
    }

    #[test]
    fn unanswered_networks_keep_an_unknown_external_address() {
        let routes = group_v4_by_external([
            (v4("10.0.0.2/24"), None),
            (v4("10.0.1.2/24"), Some("198.18.0.9".parse().expect("lit"))),
            (v4("10.0.2.2/24"), None),
        ]);
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].external, Some(v4("198.18.0.9/32")));
        assert_eq!(routes[1].nic, vec![v4("10.0.0.2/24"), v4("10.0.2.2/24")]);
        assert_eq!(routes[1].external, None);
    }
}
