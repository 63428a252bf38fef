//! Which external ports a NAT will give the next connections (from its
//! measured delta and the last mapping seen), and which pairs of NATs can
//! be punched at all, decided before any packet is sent.

use crate::addr::Endpoint;
use crate::stun::behavior::{Delta, DeltaType, NatType};

/// A mapping the NAT made: a local port and the external port it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// The local port.
    pub local: u16,
    /// The external port.
    pub mapped: u16,
}

/// What a side's NAT does, as discovery measured it (over TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Behaviour {
    /// The NAT type (mapping and filtering).
    pub nat: NatType,
    /// Its port allocation.
    pub delta: Delta,
}

impl From<&Endpoint> for Behaviour {
    /// What a peer address says of one interface's NAT.
    fn from(endpoint: &Endpoint) -> Self {
        Self {
            nat: endpoint.nat,
            delta: endpoint.delta,
        }
    }
}

/// The NAT gives ports no rule can foresee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the NAT maps ports at random: they cannot be predicted")]
pub struct Unpredictable;

/// Why a pair of NATs cannot be punched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// A side's NAT answered nothing: no mapping to predict from.
    #[error("the {0} side is blocked: nothing answered its NAT tests")]
    Blocked(&'static str),
    /// One side's ports are unpredictable and the other only lets in the
    /// exact address and port it sent to.
    #[error(
        "the {random} side maps ports at random and the {filtering} side filters by port: \
         no port to aim at"
    )]
    RandomAgainstPortFilter {
        /// The side with random mapping.
        random: &'static str,
        /// The side with a port-dependent filter.
        filtering: &'static str,
    },
}

/// The external ports the next connections will get: for each local port
/// in `locals` (in the order they will connect), `spread` candidates. A
/// NAT-wide counter is shared with other hosts behind it, so its later
/// candidates allow for mappings made in between.
pub fn predict(
    behaviour: &Behaviour,
    last: Observed,
    locals: &[u16],
    spread: usize,
) -> Result<Vec<Vec<u16>>, Unpredictable> {
    let step = i64::from(behaviour.delta.value);
    let distance = |local: u16| i64::from(local) - i64::from(last.local);
    let base = i64::from(last.mapped);
    let per_local = |n: usize, local: u16| -> Result<Vec<u16>, Unpredictable> {
        let first = match behaviour.delta.kind {
            DeltaType::NotApplicable | DeltaType::Equal => return Ok(vec![local]),
            DeltaType::Preserving => base + distance(local),
            DeltaType::Dependent => base + step * distance(local),
            DeltaType::Independent => base + step * (n as i64 + 1),
            DeltaType::Random => return Err(Unpredictable),
        };
        let stride = match behaviour.delta.kind {
            DeltaType::Independent => step,
            _ => 1,
        };
        Ok((0..spread.max(1) as i64)
            .map(|k| wrap(first + stride * k))
            .collect())
    };
    locals
        .iter()
        .enumerate()
        .map(|(n, &local)| per_local(n, local))
        .collect()
}

/// A port number counted past either end comes back in 1..=65535.
fn wrap(port: i64) -> u16 {
    u16::try_from((port - 1).rem_euclid(65535) + 1).unwrap_or(u16::MAX)
}

/// Whether `a` (the initiator) and `b` can be punched, before any packet.
pub fn feasible(a: &Behaviour, b: &Behaviour) -> Result<(), Refusal> {
    let sides = [("initiator", a), ("responder", b)];
    for (name, side) in sides {
        if side.nat == NatType::Blocked {
            return Err(Refusal::Blocked(name));
        }
    }
    for (i, (random, side)) in sides.iter().enumerate() {
        let (filtering, other) = sides[1 - i];
        if side.delta.kind == DeltaType::Random && filters_by_port(other.nat) {
            return Err(Refusal::RandomAgainstPortFilter { random, filtering });
        }
    }
    Ok(())
}

/// NATs (and firewalls) that let in only the exact address and port a
/// mapping has sent to; a firewall's filter is not measured, so it counts
/// as the strictest.
fn filters_by_port(nat: NatType) -> bool {
    matches!(
        nat,
        NatType::PortRestricted | NatType::Symmetric | NatType::UdpFirewall
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn behaviour(nat: NatType, kind: DeltaType, value: i32) -> Behaviour {
        Behaviour {
            nat,
            delta: Delta { kind, value },
        }
    }

    const LAST: Observed = Observed {
        local: 40_000,
        mapped: 20_010,
    };

    #[test]
    fn each_rule_predicts_as_it_says() {
        let equal = behaviour(NatType::FullCone, DeltaType::Equal, 0);
        assert_eq!(predict(&equal, LAST, &[50_000], 3), Ok(vec![vec![50_000]]));
        let preserving = behaviour(NatType::Symmetric, DeltaType::Preserving, 0);
        assert_eq!(
            predict(&preserving, LAST, &[40_005], 2),
            Ok(vec![vec![20_015, 20_016]])
        );
        // A NAT-wide counter: the n-th new connection gets last + step × n,
        // whatever its local port; later candidates allow for others.
        let counter = behaviour(NatType::Symmetric, DeltaType::Independent, 2);
        assert_eq!(
            predict(&counter, LAST, &[1234, 999], 3),
            Ok(vec![
                vec![20_012, 20_014, 20_016],
                vec![20_014, 20_016, 20_018]
            ])
        );
        let dependent = behaviour(NatType::Symmetric, DeltaType::Dependent, 3);
        assert_eq!(
            predict(&dependent, LAST, &[40_002], 1),
            Ok(vec![vec![20_016]])
        );
        let random = behaviour(NatType::Symmetric, DeltaType::Random, 0);
        assert_eq!(predict(&random, LAST, &[1], 1), Err(Unpredictable));
    }

    #[test]
    fn ports_wrap_around_and_never_are_zero() {
        let counter = behaviour(NatType::Symmetric, DeltaType::Independent, 1);
        let top = Observed {
            local: 1,
            mapped: 65_535,
        };
        assert_eq!(predict(&counter, top, &[2], 2), Ok(vec![vec![1, 2]]));
        let down = behaviour(NatType::Symmetric, DeltaType::Independent, -1);
        let bottom = Observed {
            local: 1,
            mapped: 1,
        };
        assert_eq!(predict(&down, bottom, &[2], 1), Ok(vec![vec![65_535]]));
    }

    #[test]
    fn impossible_pairs_are_refused_with_the_reason() {
        let random = behaviour(NatType::Symmetric, DeltaType::Random, 0);
        let port_filter = behaviour(NatType::PortRestricted, DeltaType::Equal, 0);
        let full_cone = behaviour(NatType::FullCone, DeltaType::Equal, 0);
        let restricted = behaviour(NatType::Restricted, DeltaType::Equal, 0);
        let sequential = behaviour(NatType::Symmetric, DeltaType::Independent, 1);
        assert_eq!(
            feasible(&random, &port_filter),
            Err(Refusal::RandomAgainstPortFilter {
                random: "initiator",
                filtering: "responder"
            })
        );
        assert_eq!(
            feasible(&sequential, &random),
            Err(Refusal::RandomAgainstPortFilter {
                random: "responder",
                filtering: "initiator"
            })
        );
        assert!(feasible(&random, &random).is_err());
        // A full cone, or a filter by address only, lets the random side in.
        assert_eq!(feasible(&random, &full_cone), Ok(()));
        assert_eq!(feasible(&restricted, &random), Ok(()));
        assert_eq!(feasible(&sequential, &sequential), Ok(()));
        let blocked = behaviour(NatType::Blocked, DeltaType::NotApplicable, 0);
        assert_eq!(
            feasible(&full_cone, &blocked),
            Err(Refusal::Blocked("responder"))
        );
    }

    proptest! {
        #[test]
        fn predictions_are_ports(
            kind in 0u8..6,
            value in -1000i32..1000,
            local in any::<u16>(),
            mapped in any::<u16>(),
            locals in proptest::collection::vec(any::<u16>(), 0..8),
            spread in 0usize..6,
        ) {
            let kind = DeltaType::from_code(kind + 1).expect("codes 1..=6");
            let b = behaviour(NatType::Symmetric, kind, value);
            let last = Observed { local, mapped };
            match predict(&b, last, &locals, spread) {
                Ok(ports) => {
                    prop_assert_eq!(ports.len(), locals.len());
                    for set in &ports {
                        prop_assert!(!set.is_empty());
                        prop_assert!(set.iter().all(|p| *p != 0));
                    }
                }
                Err(Unpredictable) => prop_assert_eq!(kind, DeltaType::Random),
            }
        }
    }
}
