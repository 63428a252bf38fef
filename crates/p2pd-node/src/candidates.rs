//! Where this node can be reached, as it learns it, and the peer address
//! built from that.
//!
//! ```text
//! binds (host candidates) ──┐
//! STUN discovery (reflexive)├─► Candidates ─► PeerAddr (one entry per served local address)
//! port mapping (mapped)    ┘
//! ```
//!
//! A host candidate is a local address the node server listens on; a
//! server-reflexive one is what a STUN server saw of that address from
//! outside. Until discovery has answered, an entry's external IP is the
//! local IP itself. A port the gateway forwards to us (port mapping) gives
//! the entry its external IP until STUN has answered, and an entry of its
//! own when the gateway picked another port than ours.

use std::net::{IpAddr, SocketAddr};

use p2pd_proto::addr::{Endpoint, MAX_ENTRIES, NodeId, PeerAddr};
use p2pd_proto::stun::behavior::{Delta, NatType};

use crate::locals::Local;

/// What STUN saw of one local address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reflexive {
    /// The external IP.
    pub(crate) external: IpAddr,
    /// The NAT in front of it.
    pub(crate) nat: NatType,
    /// Its port allocation.
    pub(crate) delta: Delta,
}

/// Which sockets of a local address the node server has bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Served {
    ip: bool,
    link_local: bool,
}

/// Every candidate of the node, by local address.
#[derive(Debug, Clone)]
pub(crate) struct Candidates {
    locals: Vec<Local>,
    served: Vec<Served>,
    reflexive: Vec<Option<Reflexive>>,
    mapped: Vec<Option<SocketAddr>>,
    port: u16,
}

impl Candidates {
    /// No candidate yet for any of `locals`.
    pub(crate) fn new(locals: Vec<Local>) -> Self {
        let n = locals.len();
        Self {
            locals,
            served: vec![Served::default(); n],
            reflexive: vec![None; n],
            mapped: vec![None; n],
            port: 0,
        }
    }

    /// The local addresses, in the order their indexes refer to.
    pub(crate) fn locals(&self) -> &[Local] {
        &self.locals
    }

    /// Records a link-local address the kernel made after start.
    pub(crate) fn set_link_local(&mut self, local: usize, link_local: (IpAddr, u32)) {
        if let Some(l) = self.locals.get_mut(local) {
            l.link_local = Some(link_local);
        }
    }

    /// Records that the node server listens on `locals[local]`'s own IP, or
    /// on its link-local address, on `port`.
    pub(crate) fn serve(&mut self, local: usize, link_local: bool, port: u16) {
        self.port = port;
        if let Some(served) = self.served.get_mut(local) {
            if link_local {
                served.link_local = true;
            } else {
                served.ip = true;
            }
        }
    }

    /// Whether `locals[local]`'s own IP is served.
    pub(crate) fn is_served(&self, local: usize) -> bool {
        self.served.get(local).is_some_and(|s| s.ip)
    }

    /// Records what STUN saw of `locals[local]`.
    pub(crate) fn set_reflexive(&mut self, local: usize, reflexive: Reflexive) {
        if let Some(slot) = self.reflexive.get_mut(local) {
            *slot = Some(reflexive);
        }
    }

    /// Records the external address the gateway forwards to
    /// `locals[local]`'s port, or that it forwards none (any more).
    pub(crate) fn set_mapped(&mut self, local: usize, external: Option<SocketAddr>) {
        if let Some(slot) = self.mapped.get_mut(local) {
            *slot = external;
        }
    }

    /// The external IPs of served local addresses that STUN found with no
    /// translation in front of them: a peer's TURN allocation can relay to
    /// them as they are. An address STUN has not measured is left out,
    /// though the address shows it as open until then.
    pub(crate) fn untranslated(&self) -> Vec<IpAddr> {
        (0..self.locals.len())
            .filter(|&n| self.is_served(n))
            .filter_map(|n| self.reflexive[n])
            .filter(|r| r.nat.is_open())
            .map(|r| r.external)
            .collect()
    }

    /// The address: an entry per served local address (at most
    /// [`MAX_ENTRIES`] per family), its external IP and NAT as discovered.
    pub(crate) fn address(&self, brokers: &[u8], id: NodeId) -> PeerAddr {
        let mut addr = PeerAddr {
            brokers: brokers.to_vec(),
            ipv4: Vec::new(),
            ipv6: Vec::new(),
            node_id: id,
        };
        // DESIGN.md's "Peer address": a mapped port other than ours gets an
        // entry of its own, after every interface's entry (an interface
        // is never pushed out by one).
        let mut mapped_entries = Vec::new();
        for (n, local) in self.locals.iter().enumerate() {
            let served = self.served[n];
            if !served.ip {
                continue;
            }
            let family = family_of(&mut addr, local.ip);
            if family.len() >= MAX_ENTRIES {
                continue;
            }
            let internal = match local.link_local {
                Some((ll, _)) if served.link_local => ll,
                _ => local.ip,
            };
            let reflexive = self.reflexive[n];
            let mapped = self.mapped[n].filter(|m| m.is_ipv4() == local.ip.is_ipv4());
            let entry = Endpoint {
                if_index: local.if_index,
                external: reflexive
                    .map(|r| r.external)
                    .or(mapped.map(|m| m.ip()))
                    .unwrap_or(local.ip),
                internal,
                port: self.port,
                nat: reflexive.map_or(NatType::Open, |r| r.nat),
                delta: reflexive.map_or(Delta::NOT_APPLICABLE, |r| r.delta),
            };
            family.push(entry);
            if let Some(mapped) = mapped
                && (mapped.ip(), mapped.port()) != (entry.external, entry.port)
            {
                mapped_entries.push(Endpoint {
                    external: mapped.ip(),
                    port: mapped.port(),
                    ..entry
                });
            }
        }
        for entry in mapped_entries {
            let family = family_of(&mut addr, entry.external);
            if family.len() < MAX_ENTRIES {
                family.push(entry);
            }
        }
        addr
    }
}

/// The entries of `addr` in `ip`'s family.
fn family_of(addr: &mut PeerAddr, ip: IpAddr) -> &mut Vec<Endpoint> {
    if ip.is_ipv4() {
        &mut addr.ipv4
    } else {
        &mut addr.ipv6
    }
}

#[cfg(test)]
mod tests {
    use p2pd_proto::stun::behavior::DeltaType;

    use super::*;

    fn local(if_index: u8, ip: &str, link_local: Option<&str>) -> Local {
        Local {
            name: format!("eth{if_index}"),
            if_index,
            os_index: u32::from(if_index) + 2,
            ip: ip.parse().expect("ip"),
            link_local: link_local.map(|ll| (ll.parse().expect("ll"), 2)),
            gateway_v4: None,
        }
    }

    const ID: NodeId = NodeId([7; 32]);

    #[test]
    fn only_served_addresses_are_in_the_address() {
        let mut c = Candidates::new(vec![
            local(0, "192.168.1.2", None),
            local(0, "2001:db8::2", Some("fe80::2")),
        ]);
        c.serve(0, false, 4000);
        let addr = c.address(&[0], ID);
        assert_eq!(addr.ipv4.len(), 1);
        assert!(addr.ipv6.is_empty(), "the IPv6 address is not served yet");

        c.serve(1, false, 4000);
        let v6 = c.address(&[0], ID).ipv6[0];
        assert_eq!(v6.internal, "2001:db8::2".parse::<IpAddr>().expect("ip"));
        c.serve(1, true, 4000);
        let v6 = c.address(&[0], ID).ipv6[0];
        assert_eq!(v6.internal, "fe80::2".parse::<IpAddr>().expect("ip"));
        assert_eq!(v6.port, 4000);
    }

    #[test]
    fn reflexive_candidates_give_the_external_ip_and_nat() {
        let mut c = Candidates::new(vec![local(0, "192.168.1.2", None)]);
        c.serve(0, false, 4000);
        let before = c.address(&[], ID).ipv4[0];
        assert_eq!(before.external, before.internal);
        assert_eq!(before.nat, NatType::Open);
        assert!(c.untranslated().is_empty(), "not measured yet");

        let delta = Delta {
            kind: DeltaType::Independent,
            value: 2,
        };
        c.set_reflexive(
            0,
            Reflexive {
                external: "198.18.0.9".parse().expect("ip"),
                nat: NatType::Symmetric,
                delta,
            },
        );
        let after = c.address(&[], ID).ipv4[0];
        assert_eq!(after.external, "198.18.0.9".parse::<IpAddr>().expect("ip"));
        assert_eq!(after.internal, before.internal);
        assert_eq!((after.nat, after.delta), (NatType::Symmetric, delta));
    }

    #[test]
    fn a_mapped_port_gives_the_external_ip_and_an_entry_of_its_own_when_it_differs() {
        let mut c = Candidates::new(vec![local(0, "192.168.1.2", None)]);
        c.serve(0, false, 4000);
        c.set_mapped(0, Some("198.18.1.1:4000".parse().expect("addr")));
        let same = c.address(&[], ID).ipv4;
        assert_eq!(same.len(), 1, "the listen port itself is forwarded");
        assert_eq!(
            same[0].external,
            "198.18.1.1".parse::<IpAddr>().expect("ip")
        );

        c.set_reflexive(
            0,
            Reflexive {
                external: "198.18.1.1".parse().expect("ip"),
                nat: NatType::PortRestricted,
                delta: Delta::NOT_APPLICABLE,
            },
        );
        c.set_mapped(0, Some("198.18.1.1:31000".parse().expect("addr")));
        let other = c.address(&[], ID).ipv4;
        assert_eq!(other.len(), 2);
        assert_eq!((other[0].port, other[1].port), (4000, 31000));
        assert_eq!(other[1].internal, other[0].internal);
        assert_eq!(other[1].nat, NatType::PortRestricted);

        c.set_mapped(0, None);
        assert_eq!(c.address(&[], ID).ipv4.len(), 1, "a lost mapping goes");
    }

    #[test]
    fn a_mapped_entry_never_pushes_an_interface_out() {
        let locals: Vec<Local> = (0..MAX_ENTRIES as u8)
            .map(|n| local(n, &format!("10.0.{n}.2"), None))
            .collect();
        let mut c = Candidates::new(locals);
        for n in 0..MAX_ENTRIES {
            c.serve(n, false, 4000);
        }
        c.set_mapped(0, Some("198.18.1.1:31000".parse().expect("addr")));
        let full = c.address(&[], ID).ipv4;
        assert_eq!(full.len(), MAX_ENTRIES);
        assert!(full.iter().all(|e| e.port == 4000), "{full:?}");

        let mut c = Candidates::new(vec![local(0, "10.0.0.2", None), local(1, "10.0.1.2", None)]);
        c.serve(0, false, 4000);
        c.serve(1, false, 4000);
        c.set_mapped(0, Some("198.18.1.1:31000".parse().expect("addr")));
        let ports: Vec<u16> = c.address(&[], ID).ipv4.iter().map(|e| e.port).collect();
        assert_eq!(ports, [4000, 4000, 31000], "the mapped entry comes last");
    }

    #[test]
    fn each_family_keeps_at_most_the_address_formats_entries() {
        let locals: Vec<Local> = (0..=MAX_ENTRIES as u8)
            .map(|n| local(n, &format!("10.0.{n}.2"), None))
            .collect();
        let mut c = Candidates::new(locals);
        for n in 0..=MAX_ENTRIES {
            c.serve(n, false, 1);
        }
        assert_eq!(c.address(&[], ID).ipv4.len(), MAX_ENTRIES);
    }
}
