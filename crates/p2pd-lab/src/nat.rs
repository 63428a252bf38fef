//! The router kinds of the lab and the nftables rulesets that make them.
//!
//! Every router has two interfaces, `wan` (towards the internet) and `lan`.
//! How each kind is made (measured on Debian 12's nftables 1.0.6):
//!
//! * plain `snat` is endpoint-independent and keeps the source port when it
//!   can; with conntrack's stateful filter that is a port-restricted cone;
//! * full and restricted cones add a dynamic map, filled from outbound
//!   packets, from `protocol . external port` to `internal ip . port`, used
//!   by a DNAT for inbound packets (restricted also checks a set of
//!   `protocol . port . remote ip` the inside has sent to);
//! * symmetric with random ports: `snat` to a port range, `fully-random`;
//! * symmetric with sequential ports: `numgen inc` mapped to base + n × delta
//!   (port ranges never allocate round-robin on this kernel);
//! * every kind but `none` drops unsolicited inbound packets silently, on the
//!   router itself and towards the LAN, so no RST or ICMP error ever answers
//!   an unsolicited SYN (RFC 5382; a RST would kill a TCP punch). IPv6 is
//!   never translated, only filtered.
//!
//! A router that runs miniupnpd ([`crate::SideSpec::portmap`]) gets
//! [`NatKind::portmap_ruleset`]: the same rules plus the chains miniupnpd's
//! nftables backend writes into (it never creates them itself), a hole for
//! the STUN test it runs on itself, and no translation of its own traffic.

use std::fmt::{self, Write};
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::topology::{STUN_ALT_V4, STUN_PORT, STUN_V4};

/// The `inet` table whose regular chain [`UPNP_FORWARD_CHAIN`] receives
/// miniupnpd's filter rules (miniupnpd's `upnp_table_name`): the routers'
/// own filter table, so its accepts come before the filter's drop.
pub const UPNP_FILTER_TABLE: &str = "p2pd_fw";
/// The chain of [`UPNP_FILTER_TABLE`] for miniupnpd's accepts
/// (`upnp_forward_chain`), jumped to for packets from the WAN.
pub const UPNP_FORWARD_CHAIN: &str = "upnp_forward";
/// The `inet` table of miniupnpd's NAT rules (`upnp_nat_table_name`): its
/// base chains run before the router kind's own NAT chains, so a mapping's
/// DNAT (and a PCP PEER's SNAT) wins over them.
pub const UPNP_NAT_TABLE: &str = "p2pd_upnp";
/// miniupnpd's DNAT rules, one per mapping (`upnp_nat_chain`).
pub const UPNP_PREROUTING_CHAIN: &str = "upnp_prerouting";
/// miniupnpd's SNAT rules for PCP PEER (`upnp_nat_postrouting_chain`).
pub const UPNP_POSTROUTING_CHAIN: &str = "upnp_postrouting";

/// How a lab router treats traffic between its LAN and the internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NatKind {
    /// Routing only: no translation, no filter.
    None,
    /// No translation; a stateful firewall drops unsolicited inbound.
    UdpFirewall,
    /// Endpoint-independent mapping and filtering.
    FullCone,
    /// Endpoint-independent mapping, address-dependent filtering.
    RestrictedCone,
    /// Endpoint-independent mapping, address-and-port-dependent filtering.
    PortRestrictedCone,
    /// A new random external port for every new destination.
    SymmetricRandom,
    /// A NAT-wide counter: each new mapping takes the last port + `delta`.
    SymmetricSequential {
        /// Distance between consecutive mappings (1 or more).
        delta: u16,
    },
}

/// First external port of sequential NATs.
pub const SEQUENTIAL_BASE: u16 = 20_000;

/// How many sequential ports a router hands out before wrapping around.
const SEQUENTIAL_SPAN: u16 = 1_000;

/// Mappings of the cone kinds live this long without traffic, like a real
/// router's UDP timeout.
const CONE_TIMEOUT_S: u32 = 120;

impl NatKind {
    /// Every kind, with deltas +1 and +2 for the sequential one.
    pub const ALL: [NatKind; 8] = [
        NatKind::None,
        NatKind::UdpFirewall,
        NatKind::FullCone,
        NatKind::RestrictedCone,
        NatKind::PortRestrictedCone,
        NatKind::SymmetricRandom,
        NatKind::SymmetricSequential { delta: 1 },
        NatKind::SymmetricSequential { delta: 2 },
    ];

    /// Whether the router translates IPv4 addresses.
    pub fn translates(self) -> bool {
        !matches!(self, NatKind::None | NatKind::UdpFirewall)
    }

    /// Whether a router of this kind can run miniupnpd
    /// ([`crate::SideSpec::portmap`]): every kind that translates. (A
    /// mapping on a router that does not translate would be a second,
    /// needless public address for a host that has one.)
    pub fn supports_portmap(self) -> bool {
        self.translates()
    }

    /// The nftables ruleset that makes a router of this kind, given its WAN
    /// address; `None` for a plain router.
    pub fn ruleset(self, wan: Ipv4Addr) -> Option<String> {
        if self == NatKind::None {
            return None;
        }
        let mut rules = firewall(false);
        if self.translates() {
            rules.push_str(&self.nat_table(wan, false));
        }
        Some(rules)
    }

    /// The ruleset of a router of this kind that runs miniupnpd: the rules
    /// of [`NatKind::ruleset`], plus
    ///
    /// * the chains miniupnpd writes into ([`UPNP_FORWARD_CHAIN`] in
    ///   [`UPNP_FILTER_TABLE`]; [`UPNP_PREROUTING_CHAIN`] and
    ///   [`UPNP_POSTROUTING_CHAIN`] in [`UPNP_NAT_TABLE`], hooked before the
    ///   kind's own NAT chains). Mapped traffic passes the filter as DNAT-ed
    ///   traffic does for every kind (`ct status dnat accept`);
    /// * UDP from the lab's STUN server (both addresses, both ports) to the
    ///   router itself accepted: miniupnpd's STUN test (`ext_perform_stun`)
    ///   asks for answers from the other address and port, which are not
    ///   replies to conntrack;
    /// * the router's own traffic (source: its WAN address) left
    ///   untranslated, so a symmetric kind does not change the STUN test's
    ///   ports and make miniupnpd refuse every mapping.
    ///
    /// `None` when the kind does not translate
    /// ([`NatKind::supports_portmap`]).
    pub fn portmap_ruleset(self, wan: Ipv4Addr) -> Option<String> {
        if !self.supports_portmap() {
            return None;
        }
        let mut rules = firewall(true);
        rules.push_str(&self.nat_table(wan, true));
        let _ = write!(
            rules,
            "table inet {UPNP_NAT_TABLE} {{\n\
             \x20 chain prerouting {{ type nat hook prerouting priority dstnat - 10; policy accept;\n\
             \x20   meta nfproto ipv4 jump {UPNP_PREROUTING_CHAIN}\n  }}\n\
             \x20 chain {UPNP_PREROUTING_CHAIN} {{\n  }}\n\
             \x20 chain postrouting {{ type nat hook postrouting priority srcnat - 10; policy accept;\n\
             \x20   meta nfproto ipv4 jump {UPNP_POSTROUTING_CHAIN}\n  }}\n\
             \x20 chain {UPNP_POSTROUTING_CHAIN} {{\n  }}\n}}\n"
        );
        Some(rules)
    }

    fn nat_table(self, wan: Ipv4Addr, portmap: bool) -> String {
        let mut t = String::from("table ip p2pd_nat {\n");
        let cone = matches!(self, NatKind::FullCone | NatKind::RestrictedCone);
        if cone {
            let _ = writeln!(
                t,
                "  map cone {{ type inet_proto . inet_service : ipv4_addr . inet_service; \
                 flags dynamic,timeout; timeout {CONE_TIMEOUT_S}s; }}"
            );
            // Outbound packets record their mapping. SNAT keeps the source
            // port (the port is free: one mapping per internal ip:port), so
            // the external port is the internal one.
            t.push_str(
                "  chain record { type filter hook prerouting priority -150; policy accept;\n\
                 \x20   iifname \"lan\" meta l4proto { tcp, udp } update @cone { meta l4proto . th sport : ip saddr . th sport }\n",
            );
            if self == NatKind::RestrictedCone {
                t.push_str(
                    "    iifname \"lan\" meta l4proto { tcp, udp } update @peers { meta l4proto . th sport . ip daddr }\n",
                );
            }
            t.push_str("  }\n");
            if self == NatKind::RestrictedCone {
                let _ = writeln!(
                    t,
                    "  set peers {{ type inet_proto . inet_service . ipv4_addr; \
                     flags dynamic,timeout; timeout {CONE_TIMEOUT_S}s; }}"
                );
            }
            let check = if self == NatKind::RestrictedCone {
                "meta l4proto . th dport . ip saddr @peers "
            } else {
                ""
            };
            let _ = writeln!(
                t,
                "  chain inbound {{ type nat hook prerouting priority dstnat; policy accept;\n\
                 \x20   iifname \"wan\" ip daddr {wan} meta l4proto {{ tcp, udp }} {check}dnat ip to meta l4proto . th dport map @cone\n  }}"
            );
        }
        let translate = match self {
            NatKind::SymmetricRandom => format!(
                "    oifname \"wan\" meta l4proto {{ tcp, udp }} snat ip to {wan}:1024-65535 fully-random\n"
            ),
            NatKind::SymmetricSequential { delta } => {
                let delta = u32::from(delta.max(1));
                let span = u32::from(SEQUENTIAL_SPAN)
                    .min((u32::from(u16::MAX) - u32::from(SEQUENTIAL_BASE)) / delta);
                let ports: Vec<String> = (0..span)
                    .map(|n| format!("{n} : {}", u32::from(SEQUENTIAL_BASE) + n * delta))
                    .collect();
                format!(
                    "    oifname \"wan\" meta l4proto {{ tcp, udp }} snat ip to {wan} : numgen inc mod {span} map {{ {} }}\n",
                    ports.join(", ")
                )
            }
            NatKind::None
            | NatKind::UdpFirewall
            | NatKind::FullCone
            | NatKind::RestrictedCone
            | NatKind::PortRestrictedCone => String::new(),
        };
        // The router's own packets keep their address and port.
        let own = if portmap {
            format!("    oifname \"wan\" ip saddr {wan} accept\n")
        } else {
            String::new()
        };
        let _ = write!(
            t,
            "  chain outbound {{ type nat hook postrouting priority srcnat; policy accept;\n\
             {own}{translate}    oifname \"wan\" snat ip to {wan}\n  }}\n}}\n"
        );
        t
    }
}

/// The stateful filter every kind but `none` has, for IPv4 and IPv6: replies
/// and DNAT-ed (cone or mapped) traffic pass, ICMP for the router itself
/// passes (neighbour discovery needs it), everything else from the WAN is
/// dropped without an answer. With `portmap`, also the STUN server's UDP to
/// the router and miniupnpd's forward chain.
fn firewall(portmap: bool) -> String {
    let (stun_hole, upnp_chain, upnp_jump) = if portmap {
        (
            format!(
                "    iifname \"wan\" ip saddr {{ {STUN_V4}, {STUN_ALT_V4} }} udp sport {{ {STUN_PORT}, {} }} accept\n",
                STUN_PORT + 1
            ),
            format!("  chain {UPNP_FORWARD_CHAIN} {{\n  }}\n"),
            format!("    iifname \"wan\" jump {UPNP_FORWARD_CHAIN}\n"),
        )
    } else {
        (String::new(), String::new(), String::new())
    };
    format!(
        "table inet {UPNP_FILTER_TABLE} {{
  chain input {{ type filter hook input priority filter; policy accept;
    iifname \"wan\" ct state established,related accept
    iifname \"wan\" meta l4proto {{ icmp, ipv6-icmp }} accept
{stun_hole}    iifname \"wan\" drop
  }}
{upnp_chain}  chain forward {{ type filter hook forward priority filter; policy accept;
    iifname \"wan\" ct state established,related accept
{upnp_jump}    iifname \"wan\" ct status dnat accept
    iifname \"wan\" drop
  }}
}}
"
    )
}

impl fmt::Display for NatKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatKind::None => f.write_str("none"),
            NatKind::UdpFirewall => f.write_str("udp-firewall"),
            NatKind::FullCone => f.write_str("full-cone"),
            NatKind::RestrictedCone => f.write_str("restricted-cone"),
            NatKind::PortRestrictedCone => f.write_str("port-restricted-cone"),
            NatKind::SymmetricRandom => f.write_str("symmetric-random"),
            NatKind::SymmetricSequential { delta } => write!(f, "symmetric-sequential+{delta}"),
        }
    }
}

impl FromStr for NatKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(delta) = s.strip_prefix("symmetric-sequential") {
            let delta = match delta {
                "" => 1,
                d => d
                    .strip_prefix('+')
                    .and_then(|d| d.parse::<u16>().ok())
                    .filter(|d| *d > 0 && *d <= 1000)
                    .ok_or_else(|| format!("`{s}`: write symmetric-sequential+N, N in 1..=1000"))?,
            };
            return Ok(NatKind::SymmetricSequential { delta });
        }
        NatKind::ALL
            .into_iter()
            .find(|k| k.to_string() == s)
            .ok_or_else(|| {
                format!(
                    "unknown NAT kind `{s}` (none, udp-firewall, full-cone, restricted-cone, \
                     port-restricted-cone, symmetric-random, symmetric-sequential+N)"
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAN: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);

    #[test]
    fn names_round_trip() {
        for kind in NatKind::ALL {
            assert_eq!(kind.to_string().parse::<NatKind>(), Ok(kind));
        }
        assert_eq!(
            "symmetric-sequential".parse::<NatKind>(),
            Ok(NatKind::SymmetricSequential { delta: 1 })
        );
        assert!("symmetric-sequential+0".parse::<NatKind>().is_err());
        assert!("cone".parse::<NatKind>().is_err());
    }

    #[test]
    fn plain_router_has_no_rules_and_firewall_no_nat() {
        assert_eq!(NatKind::None.ruleset(WAN), None);
        let fw = NatKind::UdpFirewall.ruleset(WAN).expect("rules");
        assert!(fw.contains("p2pd_fw") && !fw.contains("p2pd_nat"));
    }

    #[test]
    fn only_restricted_cone_checks_the_peer_set() {
        let full = NatKind::FullCone.ruleset(WAN).expect("rules");
        let restricted = NatKind::RestrictedCone.ruleset(WAN).expect("rules");
        assert!(full.contains("map @cone") && !full.contains("@peers"));
        assert!(restricted.contains("th dport . ip saddr @peers dnat"));
        let port_restricted = NatKind::PortRestrictedCone.ruleset(WAN).expect("rules");
        assert!(!port_restricted.contains("@cone"));
    }

    #[test]
    fn portmap_rules_add_miniupnpd_chains_and_the_stun_hole() {
        assert_eq!(NatKind::None.portmap_ruleset(WAN), None);
        assert_eq!(NatKind::UdpFirewall.portmap_ruleset(WAN), None);
        let plain = NatKind::PortRestrictedCone.ruleset(WAN).expect("rules");
        assert!(!plain.contains("upnp") && !plain.contains("3479"));
        for kind in NatKind::ALL.into_iter().filter(|k| k.supports_portmap()) {
            let rules = kind.portmap_ruleset(WAN).expect("rules");
            for needle in [
                "table inet p2pd_fw",
                "chain upnp_forward",
                "jump upnp_forward",
                "table inet p2pd_upnp",
                "chain upnp_prerouting",
                "chain upnp_postrouting",
                "ip saddr { 198.18.0.2, 198.18.0.12 } udp sport { 3478, 3479 } accept",
                "oifname \"wan\" ip saddr 198.18.1.1 accept",
            ] {
                assert!(rules.contains(needle), "{kind}: no `{needle}` in\n{rules}");
            }
            // The router's own traffic is exempt before any translation.
            let own = rules.find("ip saddr 198.18.1.1 accept").expect("own");
            let snat = rules.find("snat ip to").expect("snat");
            assert!(own < snat, "{kind}");
        }
    }

    #[test]
    fn sequential_ports_step_by_delta_and_stay_in_range() {
        let rules = NatKind::SymmetricSequential { delta: 7 }
            .ruleset(WAN)
            .expect("rules");
        assert!(rules.contains("0 : 20000, 1 : 20007, 2 : 20014"));
        let wide = NatKind::SymmetricSequential { delta: 1000 }
            .ruleset(WAN)
            .expect("rules");
        assert!(wide.contains("mod 45 map"), "45 × 1000 + 20000 ≤ 65535");
    }
}
