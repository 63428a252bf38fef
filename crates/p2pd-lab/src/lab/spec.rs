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
    /// The home router runs miniupnpd (UPnP IGD, NAT-PMP and PCP), so LAN
    /// hosts can ask it for port mappings; see [`LabSpec::portmap`].
    pub portmap: bool,
}

impl Default for SideSpec {
    fn default() -> Self {
        Self {
            nat: NatKind::None,
            cgnat: None,
            hosts: 1,
            portmap: false,
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

    /// Runs miniupnpd on a side's home router, with UPnP IGD (HTTP on
    /// [`UPNP_HTTP_PORT`](crate::topology::UPNP_HTTP_PORT), SSDP on 1900),
    /// NAT-PMP and PCP (UDP [`NATPMP_PORT`](crate::topology::NATPMP_PORT))
    /// on the LAN address [`Side::lan_v4`]`(1)`. A mapping DNATs the router's
    /// WAN address and external port to the requesting LAN host (secure
    /// mode: a host maps only to itself; ports 1024-65535; PCP lifetimes
    /// from 1 s). IPv4 only: no IPv6 pinholes. It runs as the lab process
    /// `miniupnpd-a` (or `-b`; [`Lab::stop`](super::Lab::stop) crashes it),
    /// with its config and log in [`Lab::dir`](super::Lab::dir).
    ///
    /// The router must translate (every kind but [`NatKind::None`] and
    /// [`NatKind::UdpFirewall`]; [`NatKind::supports_portmap`]), else
    /// [`Lab::up`](super::Lab::up) fails. Its WAN address is reserved
    /// (198.18.0.0/15, 100.64.0.0/10) for miniupnpd, which therefore learns
    /// its external address by a STUN test against the lab's STUN server:
    /// this starts [`Service::CoturnStun`] too. Behind a filtering CGNAT the
    /// test fails, as on real double NAT: miniupnpd reports the CGNAT's
    /// address and refuses every mapping (UPnP error 501, NAT-PMP result 3),
    /// after a STUN wait of about 9 s at start.
    pub fn portmap(mut self, side: Side) -> Self {
        self.side_mut(side).portmap = true;
        self.service(Service::CoturnStun)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portmap_implies_the_stun_service_once() {
        let spec = LabSpec::default()
            .service(Service::CoturnStun)
            .portmap(Side::B)
            .portmap(Side::A);
        assert!(spec.a.portmap && spec.b.portmap);
        assert_eq!(spec.services, vec![Service::CoturnStun]);
        assert!(!LabSpec::default().side(Side::A).portmap);
    }
}
