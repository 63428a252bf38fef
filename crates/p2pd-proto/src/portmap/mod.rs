//! Asking the home gateway to forward a port, sans-IO: NAT-PMP (RFC 6886)
//! and PCP (RFC 6887, the MAP opcode), so peers can dial us directly
//! instead of punching or relaying.
//!
//! * [`natpmp`] and [`pcp`]: the codecs, requests and responses both ways
//!   (a fake gateway in tests speaks with the same code);
//! * [`client`]: one mapping on one gateway, asked for, renewed at half its
//!   lifetime, re-asked when the gateway restarts, deleted on close;
//! * [`check_external`]: what an external address must look like to be
//!   worth advertising, for every protocol (UPnP answers included).
//!
//! ```text
//!   we (192.168.1.20:4433) ──MAP udp 4433, 7200 s──► gateway 192.168.1.1:5351
//!                          ◄──198.18.0.7:4433, 7200 s, epoch 1234──
//!   peers ──► 198.18.0.7:4433 ──(gateway forwards)──► 192.168.1.20:4433
//! ```

pub mod client;
pub mod natpmp;
pub mod pcp;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

pub use client::{Client, ClientConfig, Event, MapError, Refusal};

/// The port both protocols' servers listen on.
pub const GATEWAY_PORT: u16 = 5351;

/// Whether `bytes`, in another version than `asked`'s, are a gateway's
/// "unsupported version" answer: it speaks only the other protocol (or
/// another version), a clear "no" rather than garbage.
fn speaks_only_the_other(asked: Protocol, bytes: &[u8]) -> bool {
    match asked {
        Protocol::Pcp => natpmp::is_unsupported_reply(bytes) || pcp::is_unsupported_reply(bytes),
        Protocol::NatPmp => pcp::is_unsupported_reply(bytes),
    }
}

/// Which protocol a [`Client`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// PCP (RFC 6887): one request carries it all; newer gateways.
    Pcp,
    /// NAT-PMP (RFC 6886): older Apple-style gateways, and most PCP ones.
    NatPmp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Pcp => "PCP",
            Protocol::NatPmp => "NAT-PMP",
        })
    }
}

/// Which transport's port to forward: a mapping is for one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17): QUIC.
    Udp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "TCP",
            Transport::Udp => "UDP",
        })
    }
}

/// Why a gateway's external address is not worth advertising: peers could
/// not reach it, or it shows that the gateway sits behind another NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadExternal {
    /// 0.0.0.0 or `::`: RFC 6886 section 3.2's "no external address yet".
    #[error("{0} is unspecified: the gateway has no external address")]
    Unspecified(IpAddr),
    /// 127.0.0.0/8 or `::1`.
    #[error("{0} is loopback")]
    Loopback(IpAddr),
    /// 224.0.0.0/4 or ff00::/8.
    #[error("{0} is multicast")]
    Multicast(IpAddr),
    /// 255.255.255.255.
    #[error("{0} is the broadcast address")]
    Broadcast(IpAddr),
    /// 169.254.0.0/16: the gateway got no address on its uplink.
    #[error("{0} is link-local: the gateway has no address on its uplink")]
    LinkLocal(IpAddr),
    /// RFC 1918 space.
    #[error("{0} is private: the gateway is behind another NAT")]
    Private(IpAddr),
    /// 100.64.0.0/10 (RFC 6598), the carriers' NAT space.
    #[error("{0} is carrier-grade NAT space: the gateway is behind the provider's NAT")]
    Shared(IpAddr),
    /// An IPv6 address: only IPv4 is mapped, and an IPv6 external in an
    /// IPv4 entry would make the whole peer address unreadable.
    #[error("{0} is IPv6: only IPv4 ports are mapped")]
    NotIpv4(IpAddr),
}

/// The IPv4 address `ip` is, if it may be advertised as an external
/// address. One policy for every protocol; IPv4-mapped IPv6 is taken as
/// the IPv4 address it is. Benchmarking space (198.18.0.0/15) passes: the
/// NAT lab's internet lives there. Other IPv6 fails: only IPv4 is mapped.
pub fn check_external(ip: IpAddr) -> Result<Ipv4Addr, BadExternal> {
    let ip = ip.to_canonical();
    match ip {
        IpAddr::V4(v4) => check_v4(ip, v4).map(|()| v4),
        IpAddr::V6(v6) if v6.is_unspecified() => Err(BadExternal::Unspecified(ip)),
        IpAddr::V6(v6) if v6.is_loopback() => Err(BadExternal::Loopback(ip)),
        IpAddr::V6(v6) if v6.is_multicast() => Err(BadExternal::Multicast(ip)),
        IpAddr::V6(_) => Err(BadExternal::NotIpv4(ip)),
    }
}

fn check_v4(ip: IpAddr, v4: Ipv4Addr) -> Result<(), BadExternal> {
    let [a, b, ..] = v4.octets();
    if v4.is_unspecified() {
        Err(BadExternal::Unspecified(ip))
    } else if v4.is_loopback() {
        Err(BadExternal::Loopback(ip))
    } else if v4.is_multicast() {
        Err(BadExternal::Multicast(ip))
    } else if v4.is_broadcast() {
        Err(BadExternal::Broadcast(ip))
    } else if v4.is_link_local() {
        Err(BadExternal::LinkLocal(ip))
    } else if v4.is_private() {
        Err(BadExternal::Private(ip))
    } else if a == 100 && b & 0xc0 == 64 {
        Err(BadExternal::Shared(ip))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &str) -> Result<(), BadExternal> {
        check_external(s.parse().expect("literal")).map(|_| ())
    }

    #[test]
    fn public_and_lab_addresses_pass() {
        for ok in [
            "198.18.0.1",
            "198.19.255.254",
            "203.0.113.9",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.0.1",
            "172.32.0.1",
            "::ffff:198.18.0.9",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    /// A kind of unusable address.
    type Kind = fn(IpAddr) -> BadExternal;

    #[test]
    fn each_unusable_kind_is_named() {
        let cases: [(&str, Kind); 17] = [
            ("fd00:18::7", BadExternal::NotIpv4),
            ("2001:db8::1", BadExternal::NotIpv4),
            ("fe80::1", BadExternal::NotIpv4),
            ("0.0.0.0", BadExternal::Unspecified),
            ("::", BadExternal::Unspecified),
            ("127.0.0.1", BadExternal::Loopback),
            ("::1", BadExternal::Loopback),
            ("224.0.0.1", BadExternal::Multicast),
            ("ff02::1", BadExternal::Multicast),
            ("255.255.255.255", BadExternal::Broadcast),
            ("169.254.3.4", BadExternal::LinkLocal),
            ("10.0.0.1", BadExternal::Private),
            ("172.16.0.1", BadExternal::Private),
            ("172.31.255.1", BadExternal::Private),
            ("192.168.1.1", BadExternal::Private),
            ("100.64.0.1", BadExternal::Shared),
            ("100.127.255.255", BadExternal::Shared),
        ];
        for (text, kind) in cases {
            let ip: IpAddr = text.parse().expect("literal");
            assert_eq!(check_external(ip), Err(kind(ip)), "{text}");
        }
    }

    #[test]
    fn mapped_ipv6_is_judged_as_ipv4() {
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().expect("literal");
        let v4: IpAddr = "10.1.2.3".parse().expect("literal");
        assert_eq!(check_external(mapped), Err(BadExternal::Private(v4)));
        let lab: IpAddr = "::ffff:198.18.0.9".parse().expect("literal");
        assert_eq!(check_external(lab), Ok(Ipv4Addr::new(198, 18, 0, 9)));
        assert_eq!(
            check("::ffff:0.0.0.0"),
            Err(BadExternal::Unspecified(IpAddr::from([0, 0, 0, 0])))
        );
    }

    #[test]
    fn messages_say_why() {
        let ip: IpAddr = "10.0.0.1".parse().expect("literal");
        assert_eq!(
            BadExternal::Private(ip).to_string(),
            "10.0.0.1 is private: the gateway is behind another NAT"
        );
        assert_eq!(Protocol::NatPmp.to_string(), "NAT-PMP");
        assert_eq!(Transport::Udp.to_string(), "UDP");
    }
}
