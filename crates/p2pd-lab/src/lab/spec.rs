//! What a lab is made of: the two private sides, their routers and the
//! services on the public hosts. [`super::Lab::up`] builds one from it.

use std::time::Duration;

use crate::nat::NatKind;
use crate::topology::Side;

/// What one private side looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SideSpec {
    /// The home router's kind.
    pub nat: NatKind,
    /// A carrier-grade NAT in front of the home router, and its kind.
    pub cgnat: Option<NatKind>,
    /// Hosts on the LAN (at least 1): `a`, `a2`, ...
    pub hosts: usize,
}

impl Default for SideSpec {
    fn default() -> Self {
        Self {
            nat: NatKind::None,
            cgnat: None,
            hosts: 1,
        }
    }
}

/// A service the lab starts on its public hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Service {
    /// coturn as an RFC 5780 STUN server on the stun host: both IPs, ports
    /// 3478 and 3479, UDP and TCP.
    CoturnStun,
    /// coturn as a TURN relay on the turn host, long-term credentials
    /// [`TURN_USER`](crate::topology::TURN_USER).
    Turn,
    /// Two mosquitto brokers on the broker host, one per address.
    Brokers,
    /// chrony serving time on the ntp host.
    Ntp,
}

/// The description a lab is built from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabSpec {
    /// Side A.
    pub a: SideSpec,
    /// Side B.
    pub b: SideSpec,
    /// Services to start.
    pub services: Vec<Service>,
    /// One-way delay added to every packet crossing the internet (netem).
    pub latency: Option<Duration>,
}

impl LabSpec {
    /// Sets a side's router kind.
    pub fn nat(mut self, side: Side, kind: NatKind) -> Self {
        self.side_mut(side).nat = kind;
        self
    }

    /// Puts a CGNAT of `kind` in front of a side's router.
    pub fn cgnat(mut self, side: Side, kind: NatKind) -> Self {
        self.side_mut(side).cgnat = Some(kind);
        self
    }

    /// Sets how many hosts a side's LAN has.
    pub fn hosts(mut self, side: Side, hosts: usize) -> Self {
        self.side_mut(side).hosts = hosts.max(1);
        self
    }

    /// Starts a service.
    pub fn service(mut self, service: Service) -> Self {
        if !self.services.contains(&service) {
            self.services.push(service);
        }
        self
    }

    /// Adds one-way latency on the internet (needs `tc netem`).
    pub fn latency(mut self, one_way: Duration) -> Self {
        self.latency = Some(one_way);
        self
    }

    /// The spec of one side.
    pub fn side(&self, side: Side) -> &SideSpec {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    fn side_mut(&mut self, side: Side) -> &mut SideSpec {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }
}
