//! Where the direct strategy dials a peer.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::addr::PeerAddr;

/// Where to dial `peer`: its external addresses, and its internal ones when
/// it shares an external address with us (`our_external`: behind the same
/// NAT, or the same machine) or its internal address is on one of
/// `our_nets` (same LAN). An internal address comes before the external
/// one of its entry, since inside a NAT the external one needs hairpinning.
/// Link-local IPv6 internals are left out: they need a scope id the address
/// does not carry.
pub fn candidates_for(
    our_external: &[IpAddr],
    our_nets: &[IpNet],
    peer: &PeerAddr,
) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for e in peer.endpoints() {
        let reachable = !(e.internal.is_ipv6() && is_link_local(e.internal));
        let near =
            our_external.contains(&e.external) || our_nets.iter().any(|n| n.contains(&e.internal));
        if reachable && near {
            out.push(SocketAddr::new(e.internal, e.port));
        }
        out.push(SocketAddr::new(e.external, e.port));
    }
    let mut seen = HashSet::new();
    out.retain(|a| seen.insert(*a));
    out
}

fn is_link_local(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(text: &str) -> PeerAddr {
        text.parse().expect("valid address")
    }

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_peer_elsewhere_is_dialled_on_its_external_address_only() {
        let p = peer(&format!("-[0,198.18.2.1,192.168.2.2,4000,5,2,0]-0-{ID}"));
        let ours = ["198.18.1.1".parse().expect("ip")];
        let nets = ["192.168.1.0/24".parse().expect("net")];
        assert_eq!(
            candidates_for(&ours, &nets, &p),
            vec!["198.18.2.1:4000".parse().expect("addr")]
        );
    }

    #[test]
    fn a_peer_on_our_lan_is_dialled_on_its_lan_address_first() {
        let p = peer(&format!("-[0,198.18.1.1,192.168.1.3,4000,5,2,0]-0-{ID}"));
        let before_discovery = ["192.168.1.2".parse().expect("ip")];
        let nets = ["192.168.1.0/24".parse().expect("net")];
        let got = candidates_for(&before_discovery, &nets, &p);
        assert_eq!(got[0], "192.168.1.3:4000".parse().expect("addr"));
        let behind_same_nat = ["198.18.1.1".parse().expect("ip")];
        assert_eq!(
            candidates_for(&behind_same_nat, &[], &p)[0],
            "192.168.1.3:4000".parse().expect("addr")
        );
    }

    #[test]
    fn link_local_internals_are_not_dialled() {
        let p = peer(&format!("-0-[0,fd00:2::2,fe80::1,4000,2,1,0]-{ID}"));
        let nets = ["fe80::/10".parse().expect("net")];
        assert_eq!(
            candidates_for(&[], &nets, &p),
            vec!["[fd00:2::2]:4000".parse().expect("addr")]
        );
    }
}
