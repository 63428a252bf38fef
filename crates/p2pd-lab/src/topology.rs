//! Addresses of the lab: one fake internet segment and two private sides.
//!
//! ```text
//!                       198.18.0.0/15, fd00:18::/64 (bridge in "inet")
//!   stun .2 +.12   broker .3 +.4   ntp .5   turn .6   peer .7
//!        |              |            |        |         |
//!   =====+==============+============+========+=========+======
//!        |                                              |
//!   [cgnat-a] 198.18.1.1          (optional)       [cgnat-b] 198.18.2.1
//!        | 100.64.1.0/24                                | 100.64.2.0/24
//!   [router-a] WAN 198.18.1.1 (or 100.64.1.2)      [router-b] WAN 198.18.2.1 (or 100.64.2.2)
//!        | LAN .1: 192.168.1.0/24, fd00:1::/64          | 192.168.2.0/24, fd00:2::/64
//!      a .2 (a2 .3, ...)                              b .2 (b2 .3, ...)
//! ```
//!
//! A router with port mapping ([`crate::LabSpec::portmap`]) runs miniupnpd
//! on its LAN address (192.168.1.1 / 192.168.2.1): UPnP IGD over HTTP on
//! [`UPNP_HTTP_PORT`] (SSDP on 239.255.255.250:1900), NAT-PMP and PCP on UDP
//! [`NATPMP_PORT`]. Mappings are on the router's WAN address.
//!
//! The internet uses the benchmark range 198.18.0.0/15 and ULA fd00::/8, so
//! nothing in the lab looks "global": p2pd must trust what STUN reports.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Prefix length of the internet segment (IPv4).
pub const INTERNET_V4_PREFIX: u8 = 15;
/// Prefix length of every IPv6 segment.
pub const V6_PREFIX: u8 = 64;

/// The STUN host's primary address.
pub const STUN_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The STUN host's second address, for RFC 5780 CHANGE-REQUEST.
pub const STUN_ALT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 12);
/// The broker host's first address.
pub const BROKER1_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
/// The broker host's second address (a second broker, for failover).
pub const BROKER2_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 4);
/// The NTP host.
pub const NTP_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 5);
/// The TURN host.
pub const TURN_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 6);
/// A peer with a public address and no NAT.
pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 7);

/// The STUN host's primary IPv6 address.
pub const STUN_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0x2);
/// The STUN host's second IPv6 address.
pub const STUN_ALT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0x12);
/// The public peer's IPv6 address.
pub const PEER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0x7);

/// The public hosts with their addresses on the internet segment.
pub fn public_hosts() -> [(&'static str, Vec<IpAddr>); 5] {
    let v6 = |n: u16| IpAddr::V6(Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, n));
    [
        (
            "stun",
            vec![
                STUN_V4.into(),
                STUN_ALT_V4.into(),
                STUN_V6.into(),
                STUN_ALT_V6.into(),
            ],
        ),
        (
            "broker",
            vec![BROKER1_V4.into(), BROKER2_V4.into(), v6(0x3), v6(0x4)],
        ),
        ("ntp", vec![NTP_V4.into(), v6(0x5)]),
        ("turn", vec![TURN_V4.into(), v6(0x6)]),
        ("peer", vec![PEER_V4.into(), PEER_V6.into()]),
    ]
}

/// Port of the STUN services (primary); the alternate port is one more.
pub const STUN_PORT: u16 = 3478;
/// Port of the MQTT brokers.
pub const MQTT_PORT: u16 = 1883;
/// Port of the TURN service.
pub const TURN_PORT: u16 = 3478;
/// TCP port of miniupnpd's UPnP IGD (HTTP: descriptions and SOAP) on a
/// port-mapping router's LAN address; the root description is
/// `http://<router>:5000/rootDesc.xml`.
pub const UPNP_HTTP_PORT: u16 = 5000;
/// UDP port of NAT-PMP and PCP on a port-mapping router's LAN address.
pub const NATPMP_PORT: u16 = 5351;
/// TURN long-term credential user, password and realm.
pub const TURN_USER: (&str, &str, &str) = ("test", "test", "lab");

/// One of the two private sides of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// Side A: 192.168.1.0/24 behind `router-a`.
    A,
    /// Side B: 192.168.2.0/24 behind `router-b`.
    B,
}

impl Side {
    /// Both sides.
    pub const BOTH: [Side; 2] = [Side::A, Side::B];

    fn n(self) -> u8 {
        match self {
            Side::A => 1,
            Side::B => 2,
        }
    }

    /// `a` or `b`: the prefix of this side's host names.
    pub fn letter(self) -> &'static str {
        match self {
            Side::A => "a",
            Side::B => "b",
        }
    }

    /// The address this side shows the internet: the WAN of its outermost
    /// router.
    pub fn internet_v4(self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.n(), 1)
    }

    /// The outermost router's IPv6 address on the internet segment.
    pub fn internet_v6(self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, u16::from(self.n()), 1)
    }

    /// The home router's WAN address when a CGNAT sits in front of it.
    pub fn cgnat_inside_v4(self, router: bool) -> Ipv4Addr {
        Ipv4Addr::new(100, 64, self.n(), if router { 2 } else { 1 })
    }

    /// IPv6 on the link between CGNAT and home router.
    pub fn cgnat_inside_v6(self, router: bool) -> Ipv6Addr {
        Ipv6Addr::new(
            0xfd00,
            0x64,
            u16::from(self.n()),
            0,
            0,
            0,
            0,
            if router { 2 } else { 1 },
        )
    }

    /// The CGNAT link's IPv4 network.
    pub fn cgnat_net_v4(self) -> Ipv4Addr {
        Ipv4Addr::new(100, 64, self.n(), 0)
    }

    /// The CGNAT link's IPv6 network.
    pub fn cgnat_net_v6(self) -> Ipv6Addr {
        self.cgnat_inside_v6(false) & Ipv6Addr::new(0xffff, 0xffff, 0xffff, 0xffff, 0, 0, 0, 0)
    }

    /// The LAN's IPv4 network (/24).
    pub fn lan_net_v4(self) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, self.n(), 0)
    }

    /// The LAN's IPv6 network (/64).
    pub fn lan_net_v6(self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, u16::from(self.n()), 0, 0, 0, 0, 0, 0)
    }

    /// LAN address number `i` (1 is the router, 2 the first host).
    pub fn lan_v4(self, i: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, self.n(), i)
    }

    /// LAN IPv6 address number `i` (1 is the router, 2 the first host).
    pub fn lan_v6(self, i: u8) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, u16::from(self.n()), 0, 0, 0, 0, 0, u16::from(i))
    }

    /// Name of LAN host `i` (0-based): `a`, `a2`, `a3`...
    pub fn host_name(self, i: usize) -> String {
        match i {
            0 => self.letter().to_owned(),
            _ => format!("{}{}", self.letter(), i + 1),
        }
    }

    /// Name of this side's home router.
    pub fn router_name(self) -> String {
        format!("router-{}", self.letter())
    }

    /// Name of this side's CGNAT router.
    pub fn cgnat_name(self) -> String {
        format!("cgnat-{}", self.letter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_do_not_overlap() {
        assert_ne!(Side::A.internet_v4(), Side::B.internet_v4());
        assert_ne!(Side::A.lan_net_v4(), Side::B.lan_net_v4());
        assert_eq!(Side::B.lan_v6(2).to_string(), "fd00:2::2");
        assert_eq!(Side::A.cgnat_net_v6().to_string(), "fd00:64:1::");
        assert_eq!(Side::A.internet_v6().to_string(), "fd00:18::1:1");
        assert_eq!(Side::B.host_name(1), "b2");
    }
}
