//! Which local addresses p2pd uses: on every interface with a route (or
//! only the ones named), its first IPv4 address and its first global IPv6
//! address, with the interface's link-local address beside the IPv6 one.
//! The node serves on them and `p2pd nat` tests them.

use std::net::{IpAddr, Ipv4Addr};

use p2pd_net::interfaces::Interface;

/// One local address and the interface it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    /// The interface's name.
    pub name: String,
    /// The interface's position among the chosen ones: the address
    /// format's interface index.
    pub if_index: u8,
    /// The OS's index of the interface (an IPv6 scope id).
    pub os_index: u32,
    /// The address.
    pub ip: IpAddr,
    /// IPv6 only: the interface's link-local address and its scope id,
    /// when the kernel has made one.
    pub link_local: Option<(IpAddr, u32)>,
    /// IPv4 only: the interface's default gateway, which port mapping asks.
    pub gateway_v4: Option<Ipv4Addr>,
}

/// The local addresses of `all` to use; `only` names interfaces to keep
/// (empty: every interface with a route).
pub fn select(all: &[Interface], only: &[String]) -> Vec<Local> {
    let chosen = all
        .iter()
        .filter(|i| i.has_route() && (only.is_empty() || only.contains(&i.name)));
    let mut locals = Vec::new();
    for (n, i) in chosen.enumerate() {
        let if_index = u8::try_from(n).unwrap_or(u8::MAX);
        if let Some(v4) = i.ipv4.first() {
            locals.push(Local {
                name: i.name.clone(),
                if_index,
                os_index: i.index,
                ip: IpAddr::V4(v4.addr()),
                link_local: None,
                gateway_v4: i.gateway_v4,
            });
        }
        if let Some(v6) = i.ipv6_global.first() {
            locals.push(Local {
                name: i.name.clone(),
                if_index,
                os_index: i.index,
                ip: IpAddr::V6(v6.addr()),
                link_local: link_local_of(i),
                gateway_v4: None,
            });
        }
    }
    locals
}

/// The link-local address the kernel has given interface `i`, if any yet.
pub(crate) fn link_local_of(i: &Interface) -> Option<(IpAddr, u32)> {
    i.ipv6_link_local
        .first()
        .map(|l| (IpAddr::V6(l.ip), l.scope_id))
}
