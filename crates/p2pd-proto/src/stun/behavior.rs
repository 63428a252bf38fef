//! NAT type and port-allocation delta from test results (DESIGN.md "NAT
//! type from RFC 5780 results", RFC 4787 terms, the original's codes).

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// How a NAT maps an internal address to external ones (RFC 4787).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mapping {
    /// One mapping for every destination.
    EndpointIndependent,
    /// A new mapping per destination IP.
    AddressDependent,
    /// A new mapping per destination IP and port.
    AddressAndPortDependent,
}

impl Mapping {
    /// The RFC 4787 term.
    pub fn name(self) -> &'static str {
        match self {
            Mapping::EndpointIndependent => "endpoint-independent",
            Mapping::AddressDependent => "address-dependent",
            Mapping::AddressAndPortDependent => "address-and-port-dependent",
        }
    }
}

/// Which inbound packets a NAT (or firewall) lets through to a mapping
/// (RFC 4787 section 5). Its own type, though the names match
/// [`Mapping`]'s, so one test's result cannot be passed as the other's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Filtering {
    /// Any external host may send to the mapping.
    EndpointIndependent,
    /// Only IPs the mapping has sent to.
    AddressDependent,
    /// Only IP and port pairs the mapping has sent to.
    AddressAndPortDependent,
}

impl Filtering {
    /// The RFC 4787 term.
    pub fn name(self) -> &'static str {
        match self {
            Filtering::EndpointIndependent => "endpoint-independent",
            Filtering::AddressDependent => "address-dependent",
            Filtering::AddressAndPortDependent => "address-and-port-dependent",
        }
    }
}

/// The NAT types, with the original project's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatType {
    /// No NAT, no filter.
    Open,
    /// No NAT, a stateful filter.
    UdpFirewall,
    /// Endpoint-independent mapping and filtering.
    FullCone,
    /// Endpoint-independent mapping, address-dependent filtering.
    Restricted,
    /// Endpoint-independent mapping, address-and-port-dependent filtering.
    PortRestricted,
    /// Mapping depends on the destination.
    Symmetric,
    /// Nothing answered.
    Blocked,
}

impl NatType {
    /// The code in peer addresses and JSON.
    pub fn code(self) -> u8 {
        match self {
            NatType::Open => 1,
            NatType::UdpFirewall => 2,
            NatType::FullCone => 3,
            NatType::Restricted => 4,
            NatType::PortRestricted => 5,
            NatType::Symmetric => 6,
            NatType::Blocked => 7,
        }
    }

    /// The type of a code.
    pub fn from_code(code: u8) -> Option<Self> {
        [
            NatType::Open,
            NatType::UdpFirewall,
            NatType::FullCone,
            NatType::Restricted,
            NatType::PortRestricted,
            NatType::Symmetric,
            NatType::Blocked,
        ]
        .into_iter()
        .find(|t| t.code() == code)
    }

    /// The name in JSON and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            NatType::Open => "open",
            NatType::UdpFirewall => "udp-firewall",
            NatType::FullCone => "full-cone",
            NatType::Restricted => "restricted",
            NatType::PortRestricted => "port-restricted",
            NatType::Symmetric => "symmetric",
            NatType::Blocked => "blocked",
        }
    }

    /// Whether there is no translation.
    pub fn is_open(self) -> bool {
        matches!(self, NatType::Open | NatType::UdpFirewall)
    }
}

impl fmt::Display for NatType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The NAT type by DESIGN.md's table. `translated`: whether the external
/// IP differs from the local one; `None` when nothing answered.
pub fn classify(translated: Option<bool>, mapping: Mapping, filtering: Filtering) -> NatType {
    match (translated, mapping, filtering) {
        (None, _, _) => NatType::Blocked,
        (Some(false), _, Filtering::EndpointIndependent) => NatType::Open,
        (Some(false), _, Filtering::AddressDependent | Filtering::AddressAndPortDependent) => {
            NatType::UdpFirewall
        }
        (Some(true), Mapping::EndpointIndependent, Filtering::EndpointIndependent) => {
            NatType::FullCone
        }
        (Some(true), Mapping::EndpointIndependent, Filtering::AddressDependent) => {
            NatType::Restricted
        }
        (Some(true), Mapping::EndpointIndependent, Filtering::AddressAndPortDependent) => {
            NatType::PortRestricted
        }
        (Some(true), Mapping::AddressDependent | Mapping::AddressAndPortDependent, _) => {
            NatType::Symmetric
        }
    }
}

/// How a NAT picks external ports, with the original project's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeltaType {
    /// No NAT.
    NotApplicable,
    /// Mapped port = local port.
    Equal,
    /// Mapped distance = local distance.
    Preserving,
    /// A NAT-wide counter: next mapping = last + value, whatever the local port.
    Independent,
    /// Next mapping = last + value when the local port goes up by one.
    Dependent,
    /// No pattern.
    Random,
}

impl DeltaType {
    /// The code in peer addresses and JSON.
    pub fn code(self) -> u8 {
        match self {
            DeltaType::NotApplicable => 1,
            DeltaType::Equal => 2,
            DeltaType::Preserving => 3,
            DeltaType::Independent => 4,
            DeltaType::Dependent => 5,
            DeltaType::Random => 6,
        }
    }

    /// The type of a code.
    pub fn from_code(code: u8) -> Option<Self> {
        [
            DeltaType::NotApplicable,
            DeltaType::Equal,
            DeltaType::Preserving,
            DeltaType::Independent,
            DeltaType::Dependent,
            DeltaType::Random,
        ]
        .into_iter()
        .find(|t| t.code() == code)
    }

    /// The name in JSON.
    pub fn name(self) -> &'static str {
        match self {
            DeltaType::NotApplicable => "not-applicable",
            DeltaType::Equal => "equal",
            DeltaType::Preserving => "preserving",
            DeltaType::Independent => "independent",
            DeltaType::Dependent => "dependent",
            DeltaType::Random => "random",
        }
    }
}

/// A delta type and its value (the step of independent and dependent NATs,
/// else 0). The value may be negative: ports can count down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delta {
    /// The type.
    pub kind: DeltaType,
    /// The step.
    pub value: i32,
}

impl Delta {
    /// No NAT.
    pub const NOT_APPLICABLE: Delta = Delta {
        kind: DeltaType::NotApplicable,
        value: 0,
    };

    fn of(kind: DeltaType) -> Self {
        Self { kind, value: 0 }
    }
}

/// One observation: a local port and the external port the NAT mapped it to.
pub type PortPair = (u16, u16);

/// Classifies a NAT's port allocation. `spread` are mappings of fresh
/// sockets on unrelated local ports, in the order they were made;
/// `consecutive`, mappings of local ports one apart (may be empty when
/// `spread` already decides). The first rule that holds wins: equal,
/// preserving, independent, dependent, random. A step must show in a
/// majority of the consecutive pairs, so one mapping made by another host
/// in between does not hide it.
pub fn classify_delta(spread: &[PortPair], consecutive: &[PortPair]) -> Delta {
    if spread.is_empty() {
        return Delta::of(DeltaType::Random);
    }
    if spread.iter().all(|(local, mapped)| local == mapped) {
        return Delta::of(DeltaType::Equal);
    }
    let steps = |series: &[PortPair]| -> Vec<(i32, i32)> {
        series
            .windows(2)
            .map(|w| {
                (
                    i32::from(w[1].0) - i32::from(w[0].0),
                    i32::from(w[1].1) - i32::from(w[0].1),
                )
            })
            .collect()
    };
    let spread_steps = steps(spread);
    if !spread_steps.is_empty() && spread_steps.iter().all(|(local, mapped)| local == mapped) {
        return Delta::of(DeltaType::Preserving);
    }
    if let Some(value) = majority_step(spread_steps.iter().map(|(_, mapped)| *mapped)) {
        return Delta {
            kind: DeltaType::Independent,
            value,
        };
    }
    let consecutive_steps = steps(consecutive);
    if let Some(value) = majority_step(
        consecutive_steps
            .iter()
            .filter(|(local, _)| *local == 1)
            .map(|(_, mapped)| *mapped),
    ) {
        return Delta {
            kind: DeltaType::Dependent,
            value,
        };
    }
    Delta::of(DeltaType::Random)
}

/// The non-zero step shared by more than half of `steps`, if any; at least
/// three steps are needed (one or two show no pattern yet).
fn majority_step(steps: impl Iterator<Item = i32>) -> Option<i32> {
    let mut counts: BTreeMap<i32, usize> = BTreeMap::new();
    let mut total = 0;
    for step in steps {
        total += 1;
        *counts.entry(step).or_default() += 1;
    }
    let (step, count) = counts.into_iter().max_by_key(|(_, c)| *c)?;
    (total >= 3 && count >= 2 && step != 0 && count * 2 > total).then_some(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_design_table() {
        assert_eq!(
            classify(
                None,
                Mapping::EndpointIndependent,
                Filtering::EndpointIndependent
            ),
            NatType::Blocked
        );
        assert_eq!(
            classify(
                Some(false),
                Mapping::EndpointIndependent,
                Filtering::EndpointIndependent
            ),
            NatType::Open
        );
        assert_eq!(
            classify(
                Some(false),
                Mapping::EndpointIndependent,
                Filtering::AddressDependent
            ),
            NatType::UdpFirewall
        );
        assert_eq!(
            classify(
                Some(true),
                Mapping::EndpointIndependent,
                Filtering::EndpointIndependent
            ),
            NatType::FullCone
        );
        assert_eq!(
            classify(
                Some(true),
                Mapping::EndpointIndependent,
                Filtering::AddressDependent
            ),
            NatType::Restricted
        );
        assert_eq!(
            classify(
                Some(true),
                Mapping::EndpointIndependent,
                Filtering::AddressAndPortDependent
            ),
            NatType::PortRestricted
        );
        assert_eq!(
            classify(
                Some(true),
                Mapping::AddressDependent,
                Filtering::EndpointIndependent
            ),
            NatType::Symmetric
        );
        assert_eq!(
            classify(
                Some(true),
                Mapping::AddressAndPortDependent,
                Filtering::AddressAndPortDependent
            ),
            NatType::Symmetric
        );
    }

    #[test]
    fn codes_round_trip_and_match_the_original() {
        for code in 1..=7 {
            assert_eq!(NatType::from_code(code).map(NatType::code), Some(code));
        }
        for code in 1..=6 {
            assert_eq!(DeltaType::from_code(code).map(DeltaType::code), Some(code));
        }
        assert_eq!(NatType::from_code(0), None);
        assert_eq!(NatType::PortRestricted.code(), 5);
        assert_eq!(DeltaType::Independent.code(), 4);
    }

    #[test]
    fn equal_when_ports_are_kept() {
        let spread = [(40000, 40000), (51234, 51234), (33000, 33000)];
        assert_eq!(classify_delta(&spread, &[]).kind, DeltaType::Equal);
    }

    #[test]
    fn preserving_when_distances_are_kept() {
        let spread = [(40000, 10000), (40100, 10100), (39000, 9000)];
        assert_eq!(classify_delta(&spread, &[]).kind, DeltaType::Preserving);
    }

    #[test]
    fn independent_counter_whatever_the_local_port() {
        let spread = [
            (40000, 20000),
            (51234, 20002),
            (33000, 20004),
            (45000, 20006),
            (41000, 20008),
        ];
        assert_eq!(
            classify_delta(&spread, &[]),
            Delta {
                kind: DeltaType::Independent,
                value: 2
            }
        );
        let down = [
            (40000, 20000),
            (51234, 19999),
            (33000, 19998),
            (45000, 19997),
        ];
        assert_eq!(
            classify_delta(&down, &[]),
            Delta {
                kind: DeltaType::Independent,
                value: -1
            }
        );
    }

    #[test]
    fn one_foreign_mapping_does_not_hide_the_step() {
        let spread = [
            (40000, 20000),
            (51234, 20001),
            (33000, 20003),
            (45000, 20004),
            (41000, 20005),
        ];
        assert_eq!(
            classify_delta(&spread, &[]),
            Delta {
                kind: DeltaType::Independent,
                value: 1
            }
        );
    }

    #[test]
    fn dependent_only_for_consecutive_local_ports() {
        let spread = [(40000, 1000), (51234, 7777), (33000, 3000), (45000, 100)];
        let consecutive = [
            (5000, 8000),
            (5001, 8003),
            (5002, 8006),
            (5003, 8009),
            (5004, 8012),
        ];
        assert_eq!(
            classify_delta(&spread, &consecutive),
            Delta {
                kind: DeltaType::Dependent,
                value: 3
            }
        );
        assert_eq!(classify_delta(&spread, &[]).kind, DeltaType::Random);
    }

    #[test]
    fn two_samples_are_not_a_pattern() {
        let spread = [(40000, 1000), (51234, 7777)];
        assert_eq!(classify_delta(&spread, &[]).kind, DeltaType::Random);
    }

    #[test]
    fn random_without_a_pattern() {
        let spread = [(40000, 1000), (51234, 7777), (33000, 3000), (45000, 100)];
        let consecutive = [(5000, 9000), (5001, 1200), (5002, 33333)];
        assert_eq!(
            classify_delta(&spread, &consecutive).kind,
            DeltaType::Random
        );
        assert_eq!(classify_delta(&[], &[]).kind, DeltaType::Random);
    }
}
