//! What each side of a punch tells the other, and the connections the two
//! offers imply.
//!
//! A side's connections all leave from one local port when its NAT maps
//! endpoint-independently (or it has none): they all present the same
//! external port, so it connects once to each port the peer offers. A side
//! whose NAT maps per destination with a predictable delta makes
//! [`PAIRS`] connections from as many local ports, in order, each taking
//! the next port of the NAT's sequence: connection `j` of each side aims at
//! port `j` of the other. A side whose NAT maps at random offers no port;
//! its peer aims at the port its probe saw, which opens an address filter
//! on the way, and listens for what comes.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::predict::{Behaviour, Observed, Unpredictable, predict};
use crate::stun::behavior::{Delta, DeltaType, NatType};

/// Connections a side whose NAT maps per destination makes: the pairs
/// after the first only help when another mapping slips in mid-burst.
pub const PAIRS: usize = 2;

/// Ports an offer may list; more is garbage.
pub const MAX_PORTS: usize = 8;

/// How a side learns its external port before it offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// No NAT translates: the external port is the local one.
    None,
    /// Ask STUN over TCP from the reserved port itself: its mapping holds
    /// for every destination.
    FromReserved,
    /// Ask STUN over TCP from a fresh port: the last mapping of the NAT's
    /// sequence, which the connections continue.
    Fresh,
}

/// The local ports to reserve and how to probe, for a NAT that behaves
/// as `behaviour`.
pub fn preparation(behaviour: &Behaviour) -> (usize, Probe) {
    match behaviour.nat {
        NatType::Open | NatType::UdpFirewall => (1, Probe::None),
        NatType::Symmetric if behaviour.delta.kind != DeltaType::Random => (PAIRS, Probe::Fresh),
        NatType::FullCone
        | NatType::Restricted
        | NatType::PortRestricted
        | NatType::Symmetric
        | NatType::Blocked => (1, Probe::FromReserved),
    }
}

/// A side's offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    /// The external IP its connections come from.
    pub ip: IpAddr,
    /// The external ports its connections will come from, in the order
    /// it makes them: one when they all share it, none when its NAT maps
    /// at random.
    pub ports: Vec<u16>,
    /// Where to aim when `ports` is empty: the external port its probe got.
    pub fallback: u16,
    /// Its NAT type code (1..=7).
    pub nat: u8,
    /// Its delta type code (1..=6).
    pub delta: u8,
    /// Its delta's step.
    pub step: i32,
}

/// An offer that breaks its own rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a malformed punch offer")]
pub struct BadOffer;

impl Offer {
    /// The offer of a side whose NAT behaves as `behaviour`, having
    /// reserved `locals` and probed `probed` (the external address its
    /// probe saw, absent for [`Probe::None`]); `local_ip` is where the
    /// reserved ports are bound.
    pub fn new(
        behaviour: &Behaviour,
        local_ip: IpAddr,
        locals: &[u16],
        probed: Option<(IpAddr, Observed)>,
    ) -> Offer {
        let (ip, ports, fallback) = match (preparation(behaviour).1, probed) {
            (Probe::None, _) | (_, None) => {
                let first = locals.first().copied().unwrap_or(0);
                (local_ip, locals.iter().take(1).copied().collect(), first)
            }
            (Probe::FromReserved, Some((ip, seen))) => {
                let ports = if behaviour.nat == NatType::Symmetric {
                    Vec::new()
                } else {
                    vec![seen.mapped]
                };
                (ip, ports, seen.mapped)
            }
            (Probe::Fresh, Some((ip, last))) => {
                let ports = match predict(behaviour, last, locals, 1) {
                    Ok(sets) => sets
                        .into_iter()
                        .filter_map(|s| s.first().copied())
                        .collect(),
                    Err(Unpredictable) => Vec::new(),
                };
                (ip, ports, last.mapped)
            }
        };
        Offer {
            ip,
            ports,
            fallback,
            nat: behaviour.nat.code(),
            delta: behaviour.delta.kind.code(),
            step: behaviour.delta.value,
        }
    }

    /// The behaviour the offer says its side's NAT has.
    pub fn behaviour(&self) -> Result<Behaviour, BadOffer> {
        let nat = NatType::from_code(self.nat).ok_or(BadOffer)?;
        let kind = DeltaType::from_code(self.delta).ok_or(BadOffer)?;
        let valid = self.ports.len() <= MAX_PORTS
            && !self.ports.contains(&0)
            && self.fallback != 0
            && !self.ip.is_unspecified()
            && !self.ip.is_multicast();
        valid
            .then_some(Behaviour {
                nat,
                delta: Delta {
                    kind,
                    value: self.step,
                },
            })
            .ok_or(BadOffer)
    }
}

/// Where each of our connections goes, in the order to make them: from
/// which of our reserved `locals` to which address of the peer's.
pub fn connections(ours: &Offer, locals: &[u16], theirs: &Offer) -> Vec<(u16, SocketAddr)> {
    let targets: Vec<u16> = if theirs.ports.is_empty() {
        vec![theirs.fallback]
    } else {
        theirs.ports.clone()
    };
    let to = |port: u16| SocketAddr::new(theirs.ip, port);
    if ours.ports.len() > 1 {
        // One local port per connection; aim at the peer's port of the
        // same rank (or its one port).
        locals
            .iter()
            .zip(&ours.ports)
            .enumerate()
            .map(|(j, (&local, _))| (local, to(targets[j % targets.len()])))
            .collect()
    } else {
        let Some(&local) = locals.first() else {
            return Vec::new();
        };
        targets.into_iter().map(|port| (local, to(port))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn behaviour(nat: NatType, kind: DeltaType, value: i32) -> Behaviour {
        Behaviour {
            nat,
            delta: Delta { kind, value },
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    const SEEN: Observed = Observed {
        local: 40_000,
        mapped: 20_010,
    };

    #[test]
    fn each_nat_prepares_as_it_maps() {
        let open = behaviour(NatType::Open, DeltaType::NotApplicable, 0);
        assert_eq!(preparation(&open), (1, Probe::None));
        let cone = behaviour(NatType::PortRestricted, DeltaType::Random, 0);
        assert_eq!(preparation(&cone), (1, Probe::FromReserved));
        let sequential = behaviour(NatType::Symmetric, DeltaType::Independent, 2);
        assert_eq!(preparation(&sequential), (PAIRS, Probe::Fresh));
        let random = behaviour(NatType::Symmetric, DeltaType::Random, 0);
        assert_eq!(preparation(&random), (1, Probe::FromReserved));
    }

    #[test]
    fn offers_say_where_connections_will_come_from() {
        let open = behaviour(NatType::Open, DeltaType::NotApplicable, 0);
        let offer = Offer::new(&open, ip("198.18.0.7"), &[5000], None);
        assert_eq!(
            (offer.ip, offer.ports.clone(), offer.fallback),
            (ip("198.18.0.7"), vec![5000], 5000)
        );
        let cone = behaviour(NatType::FullCone, DeltaType::Equal, 0);
        let offer = Offer::new(
            &cone,
            ip("192.168.1.2"),
            &[5000],
            Some((
                ip("198.18.1.1"),
                Observed {
                    local: 5000,
                    mapped: 5000,
                },
            )),
        );
        assert_eq!((offer.ip, offer.ports), (ip("198.18.1.1"), vec![5000]));
        let sequential = behaviour(NatType::Symmetric, DeltaType::Independent, 2);
        let offer = Offer::new(
            &sequential,
            ip("192.168.1.2"),
            &[6000, 6001],
            Some((ip("198.18.1.1"), SEEN)),
        );
        assert_eq!(offer.ports, vec![20_012, 20_014]);
        assert_eq!(offer.behaviour(), Ok(sequential));
        let random = behaviour(NatType::Symmetric, DeltaType::Random, 0);
        let offer = Offer::new(
            &random,
            ip("192.168.1.2"),
            &[6000],
            Some((ip("198.18.1.1"), SEEN)),
        );
        assert_eq!((offer.ports.clone(), offer.fallback), (vec![], 20_010));
    }

    #[test]
    fn connections_pair_ports_by_rank_or_fan_out_from_one() {
        let offer = |ports: Vec<u16>| Offer {
            ip: ip("198.18.2.1"),
            ports,
            fallback: 999,
            nat: 6,
            delta: 4,
            step: 1,
        };
        let to = |port| SocketAddr::new(ip("198.18.2.1"), port);
        // Both sequential: connection j to port j.
        assert_eq!(
            connections(&offer(vec![1, 2]), &[10, 11], &offer(vec![7, 8])),
            vec![(10, to(7)), (11, to(8))]
        );
        // Sequential against a cone's single port: every connection to it.
        assert_eq!(
            connections(&offer(vec![1, 2]), &[10, 11], &offer(vec![7])),
            vec![(10, to(7)), (11, to(7))]
        );
        // A cone against a sequential side: one local port to each.
        assert_eq!(
            connections(&offer(vec![1]), &[10], &offer(vec![7, 8])),
            vec![(10, to(7)), (10, to(8))]
        );
        // Against a random side: its probe's port, to open our filter.
        assert_eq!(
            connections(&offer(vec![]), &[10], &offer(vec![])),
            vec![(10, to(999))]
        );
        assert!(connections(&offer(vec![1]), &[], &offer(vec![7])).is_empty());
    }

    #[test]
    fn malformed_offers_are_refused() {
        let good = Offer::new(
            &behaviour(NatType::FullCone, DeltaType::Equal, 0),
            ip("198.18.1.1"),
            &[5],
            None,
        );
        assert!(good.behaviour().is_ok());
        for bad in [
            Offer {
                nat: 0,
                ..good.clone()
            },
            Offer {
                delta: 9,
                ..good.clone()
            },
            Offer {
                ports: vec![0],
                ..good.clone()
            },
            Offer {
                ports: vec![1; MAX_PORTS + 1],
                ..good.clone()
            },
            Offer {
                fallback: 0,
                ..good.clone()
            },
            Offer {
                ip: ip("0.0.0.0"),
                ..good.clone()
            },
        ] {
            assert_eq!(bad.behaviour(), Err(BadOffer), "{bad:?}");
        }
    }
}
