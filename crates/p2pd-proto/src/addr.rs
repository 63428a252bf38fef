//! The peer address (DESIGN.md "Peer address", manual 1.2.1).
//!
//! ```text
//! 0,1-[0,198.18.1.1,192.168.1.2,40123,5,2,0]|[1,...]-[0,fd00:1::2,fe80::1,40123,2,1,0]-<node id>
//! │    │ IPv4 entries (up to 3, or 0)                │ IPv6 entries (or 0)              │ 64 hex digits:
//! │    [if index,external IP,internal IP,port,NAT code,delta code,delta value]          the public key
//! broker indexes into the configured broker list (may be empty)
//! ```
//!
//! Sections are split on the `-` that are outside brackets, so a negative
//! delta value (`[...,4,-2]`, a NAT counting down) is written plainly; the
//! original split on every `-` and broke on it. Parsing is strict and total:
//! any text gives an address or an error naming what is wrong.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::stun::behavior::{Delta, DeltaType, NatType};

/// Interfaces an address lists per family at most.
pub const MAX_ENTRIES: usize = 3;
/// Broker indexes an address lists at most.
pub const MAX_BROKERS: usize = 16;
/// Longest address text accepted.
pub const MAX_LEN: usize = 1024;
/// Largest delta step magnitude (a port distance).
pub const MAX_DELTA: i32 = 65535;

/// A node's public key, which is also its id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub [u8; 32]);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl FromStr for NodeId {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AddrError::NodeId);
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| AddrError::NodeId)?;
        }
        Ok(NodeId(out))
    }
}

/// One interface of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The peer's own index for the interface (referenced in signaling).
    pub if_index: u8,
    /// The external IP (what STUN reported; the interface's own IP before).
    pub external: IpAddr,
    /// The internal IP: the NIC's IPv4 address, or the IPv6 link-local one.
    pub internal: IpAddr,
    /// The node server's listen port (1..=65535).
    pub port: u16,
    /// The NAT in front of the interface.
    pub nat: NatType,
    /// Its port allocation.
    pub delta: Delta,
}

/// A peer's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerAddr {
    /// Indexes into the broker list both peers share.
    pub brokers: Vec<u8>,
    /// IPv4 interfaces (at most [`MAX_ENTRIES`]).
    pub ipv4: Vec<Endpoint>,
    /// IPv6 interfaces (at most [`MAX_ENTRIES`]).
    pub ipv6: Vec<Endpoint>,
    /// The node's public key.
    pub node_id: NodeId,
}

/// Why text is not a peer address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddrError {
    /// Longer than [`MAX_LEN`].
    #[error("address longer than {MAX_LEN} characters")]
    TooLong,
    /// Not four sections.
    #[error("expected BROKERS-IPV4-IPV6-NODEID, found {0} sections")]
    Sections(usize),
    /// A bad broker index list.
    #[error(
        "bad broker list `{0}`: comma-separated indexes 0-255, no repeats, at most {MAX_BROKERS}"
    )]
    Brokers(String),
    /// A bad interface section.
    #[error("bad {family} section: {why}")]
    Section {
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// What is wrong.
        why: String,
    },
    /// The node id is not 64 hex digits.
    #[error("node id must be 64 hex digits")]
    NodeId,
    /// An address to encode breaks the limits.
    #[error("address out of range: {0}")]
    OutOfRange(String),
}

impl PeerAddr {
    /// Checks the limits a parsed address also meets.
    pub fn validate(&self) -> Result<(), AddrError> {
        if self.brokers.len() > MAX_BROKERS || has_repeats(&self.brokers) {
            return Err(AddrError::OutOfRange("broker list".into()));
        }
        for (family, entries, v4) in [("IPv4", &self.ipv4, true), ("IPv6", &self.ipv6, false)] {
            if entries.len() > MAX_ENTRIES {
                return Err(AddrError::OutOfRange(format!(
                    "more than {MAX_ENTRIES} {family} entries"
                )));
            }
            for e in entries {
                check_entry(e, v4)
                    .map_err(|why| AddrError::OutOfRange(format!("{family}: {why}")))?;
            }
        }
        Ok(())
    }

    /// All endpoints, IPv4 first.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.ipv4.iter().chain(self.ipv6.iter())
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let brokers: Vec<String> = self.brokers.iter().map(u8::to_string).collect();
        write!(
            f,
            "{}-{}-{}-{}",
            brokers.join(","),
            Section(&self.ipv4),
            Section(&self.ipv6),
            self.node_id
        )
    }
}

struct Section<'a>(&'a [Endpoint]);

impl fmt::Display for Section<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("0");
        }
        for (n, e) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str("|")?;
            }
            write!(
                f,
                "[{},{},{},{},{},{},{}]",
                e.if_index,
                e.external,
                e.internal,
                e.port,
                e.nat.code(),
                e.delta.kind.code(),
                e.delta.value
            )?;
        }
        Ok(())
    }
}

impl FromStr for PeerAddr {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_LEN {
            return Err(AddrError::TooLong);
        }
        let sections = split_outside_brackets(s);
        let [brokers, ipv4, ipv6, node_id] = sections.as_slice() else {
            return Err(AddrError::Sections(sections.len()));
        };
        let addr = PeerAddr {
            brokers: parse_brokers(brokers)?,
            ipv4: parse_section(ipv4, true)?,
            ipv6: parse_section(ipv6, false)?,
            node_id: node_id.parse()?,
        };
        Ok(addr)
    }
}

fn split_outside_brackets(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            '-' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn parse_brokers(s: &str) -> Result<Vec<u8>, AddrError> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let bad = || AddrError::Brokers(s.to_owned());
    let brokers = s
        .split(',')
        .map(|n| {
            if n.bytes().all(|b| b.is_ascii_digit()) {
                n.parse::<u8>().map_err(|_| bad())
            } else {
                Err(bad())
            }
        })
        .collect::<Result<Vec<u8>, _>>()?;
    if brokers.len() > MAX_BROKERS || has_repeats(&brokers) {
        return Err(bad());
    }
    Ok(brokers)
}

fn has_repeats(items: &[u8]) -> bool {
    items
        .iter()
        .enumerate()
        .any(|(i, a)| items[..i].contains(a))
}

fn parse_section(s: &str, v4: bool) -> Result<Vec<Endpoint>, AddrError> {
    let family = if v4 { "IPv4" } else { "IPv6" };
    let err = |why: String| AddrError::Section { family, why };
    if s == "0" {
        return Ok(Vec::new());
    }
    let entries: Vec<&str> = s.split('|').collect();
    if entries.len() > MAX_ENTRIES {
        return Err(err(format!("more than {MAX_ENTRIES} entries")));
    }
    entries
        .into_iter()
        .map(|entry| parse_entry(entry, v4).map_err(err))
        .collect()
}

fn parse_entry(s: &str, v4: bool) -> Result<Endpoint, String> {
    let inner = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(|| format!("`{s}` is not [..] or 0"))?;
    let fields: Vec<&str> = inner.split(',').collect();
    let [
        if_index,
        external,
        internal,
        port,
        nat,
        delta_kind,
        delta_value,
    ] = fields.as_slice()
    else {
        return Err(format!("`{s}` needs 7 fields, has {}", fields.len()));
    };
    let number = |name: &str, text: &str| -> Result<i64, String> {
        let digits = text.strip_prefix('-').unwrap_or(text);
        if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{name} `{text}` is not a number"));
        }
        text.parse::<i64>()
            .map_err(|_| format!("{name} `{text}` is not a number"))
    };
    let ip = |name: &str, text: &str| -> Result<IpAddr, String> {
        text.parse::<IpAddr>()
            .map_err(|_| format!("{name} `{text}` is not an IP address"))
    };
    let endpoint = Endpoint {
        if_index: u8::try_from(number("interface index", if_index)?)
            .map_err(|_| format!("interface index `{if_index}` is not 0-255"))?,
        external: ip("external IP", external)?,
        internal: ip("internal IP", internal)?,
        port: u16::try_from(number("port", port)?)
            .map_err(|_| format!("port `{port}` is not 1-65535"))?,
        nat: u8::try_from(number("NAT code", nat)?)
            .ok()
            .and_then(NatType::from_code)
            .ok_or_else(|| format!("NAT code `{nat}` is not 1-7"))?,
        delta: Delta {
            kind: u8::try_from(number("delta code", delta_kind)?)
                .ok()
                .and_then(DeltaType::from_code)
                .ok_or_else(|| format!("delta code `{delta_kind}` is not 1-6"))?,
            value: i32::try_from(number("delta value", delta_value)?)
                .map_err(|_| format!("delta value `{delta_value}` out of range"))?,
        },
    };
    check_entry(&endpoint, v4)?;
    Ok(endpoint)
}

fn check_entry(e: &Endpoint, v4: bool) -> Result<(), String> {
    if e.external.is_ipv4() != v4 || e.internal.is_ipv4() != v4 {
        return Err(format!(
            "{} / {} are of the wrong family",
            e.external, e.internal
        ));
    }
    if e.port == 0 {
        return Err("port 0".into());
    }
    if e.delta.value.abs() > MAX_DELTA {
        return Err(format!("delta value {} beyond ±{MAX_DELTA}", e.delta.value));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn the_manual_shape_parses_and_prints_back() {
        let text = format!("0,1-[0,8.8.8.8,192.168.21.21,58959,3,2,0]-0-{ID}");
        let addr: PeerAddr = text.parse().expect("valid");
        assert_eq!(addr.brokers, vec![0, 1]);
        assert_eq!(addr.ipv4[0].port, 58959);
        assert_eq!(addr.ipv4[0].nat, NatType::FullCone);
        assert_eq!(addr.ipv4[0].delta.kind, DeltaType::Equal);
        assert!(addr.ipv6.is_empty());
        assert_eq!(addr.to_string(), text);
    }

    #[test]
    fn negative_deltas_ipv6_and_no_brokers() {
        let text = format!(
            "-[0,198.18.1.1,192.168.1.2,4000,6,4,-2]|[1,198.18.1.1,10.0.0.2,4000,5,2,0]-[0,fd00:1::2,fe80::1,4000,2,1,0]-{ID}"
        );
        let addr: PeerAddr = text.parse().expect("valid");
        assert!(addr.brokers.is_empty());
        assert_eq!(addr.ipv4[0].delta.value, -2);
        assert_eq!(
            addr.ipv6[0].internal,
            "fe80::1".parse::<IpAddr>().expect("lit")
        );
        assert_eq!(addr.to_string(), text);
    }

    #[test]
    fn every_error_is_named() {
        let cases = [
            ("", "sections"),
            ("0-0-0", "sections"),
            (&format!("x-0-0-{ID}") as &str, "broker"),
            (&format!("1,1-0-0-{ID}"), "broker"),
            (&format!("-[0,1.2.3.4,1.2.3.4,0,1,1,0]-0-{ID}"), "port"),
            (&format!("-[0,1.2.3.4,1.2.3.4,1,8,1,0]-0-{ID}"), "NAT code"),
            (
                &format!("-[0,1.2.3.4,1.2.3.4,1,1,7,0]-0-{ID}"),
                "delta code",
            ),
            (
                &format!("-[0,1.2.3.4,1.2.3.4,1,1,1,70000]-0-{ID}"),
                "delta value",
            ),
            (&format!("-[0,::1,1.2.3.4,1,1,1,0]-0-{ID}"), "family"),
            (&format!("-0-[0,1.2.3.4,1.2.3.4,1,1,1,0]-{ID}"), "family"),
            (&format!("-[0,1.2.3.4,1.2.3.4,1,1,1]-0-{ID}"), "7 fields"),
            (
                &format!(
                    "-[0,1.2.3.4,1.2.3.4,1,1,1,0]|[0,1.2.3.4,1.2.3.4,1,1,1,0]|[0,1.2.3.4,1.2.3.4,1,1,1,0]|[0,1.2.3.4,1.2.3.4,1,1,1,0]-0-{ID}"
                ),
                "entries",
            ),
            ("-0-0-zmUGXPOFxBuToh", "node id"),
        ];
        for (text, expected) in cases {
            let err = text.parse::<PeerAddr>().expect_err(text).to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn node_id_hex_is_case_insensitive_and_printed_lowercase() {
        let id: NodeId = ID.to_uppercase().parse().expect("valid");
        assert_eq!(id.to_string(), ID);
    }
}
