//! miniupnpd on a home router ([`super::LabSpec::portmap`]): UPnP IGD,
//! NAT-PMP and PCP on the LAN, mappings written into the chains the router's
//! ruleset prepared ([`crate::nat::NatKind::portmap_ruleset`]).
//!
//! What it takes on these machines (Debian 12's `miniupnpd-nftables`
//! 2.3.1):
//!
//! * the WAN address is reserved for miniupnpd (198.18.0.0/15 and
//!   100.64.0.0/10 alike) and `ext_ip=` with one is a fatal error, so it
//!   learns its external address with `ext_perform_stun` against the lab's
//!   STUN server, which must be running first;
//! * it logs to `/dev/console` when there is no `/dev/log` (about 1 ms a
//!   line, and a denied request logs thousands), so it runs with `/dev/null`
//!   bind-mounted over `/dev/console` in the private mount namespace
//!   `ip netns exec` gives it; in the foreground (`-d`) it also logs
//!   everything to `<lab dir>/miniupnpd-<side>.log`;
//! * its nftables backend adds rules to existing chains only
//!   ([`crate::nat::UPNP_FILTER_TABLE`] and friends).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::Lab;
use super::services::write_file;
use crate::LabError;
use crate::nat::{
    UPNP_FILTER_TABLE, UPNP_FORWARD_CHAIN, UPNP_NAT_TABLE, UPNP_POSTROUTING_CHAIN,
    UPNP_PREROUTING_CHAIN,
};
use crate::topology::{NATPMP_PORT, STUN_PORT, STUN_V4, Side, UPNP_HTTP_PORT};

/// How long miniupnpd may take to serve: its STUN test alone waits 3 × 3 s
/// when answers are filtered (behind a CGNAT).
const PORTMAP_START: Duration = Duration::from_secs(20);

impl Lab {
    /// Starts miniupnpd on `side`'s home router and waits until its HTTP
    /// and NAT-PMP sockets are open (it opens them after its STUN test).
    pub(super) fn start_portmap(&mut self, side: Side) -> Result<(), LabError> {
        let name = format!("miniupnpd-{}", side.letter());
        let conf = self.dir.join(format!("{name}.conf"));
        let pid = self.dir.join(format!("{name}.pid"));
        write_file(&conf, &miniupnpd_conf(side, &self.dir))?;
        let (conf, pid) = (conf.display().to_string(), pid.display().to_string());
        self.spawn(
            &name,
            &side.router_name(),
            "sh",
            &[
                "-c",
                "mount --bind /dev/null /dev/console 2>/dev/null; exec miniupnpd -d -f \"$0\" -P \"$1\"",
                &conf,
                &pid,
            ],
        )?;
        let router = side.router_name();
        let http = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), UPNP_HTTP_PORT);
        self.wait_listening(&router, true, http, PORTMAP_START)?;
        let natpmp = SocketAddr::new(side.lan_v4(1).into(), NATPMP_PORT);
        self.wait_listening(&router, false, natpmp, PORTMAP_START)
    }
}

impl Lab {
    /// Restarts `side`'s miniupnpd as a router reboot would: killed, its
    /// mappings flushed from the ruleset, started again (with a new
    /// epoch).
    pub fn restart_portmap(&mut self, side: Side) -> Result<(), LabError> {
        self.stop(&format!("miniupnpd-{}", side.letter()));
        let router = side.router_name();
        for (family, table, chain) in [
            ("inet", UPNP_FILTER_TABLE, UPNP_FORWARD_CHAIN),
            ("inet", UPNP_NAT_TABLE, UPNP_PREROUTING_CHAIN),
            ("inet", UPNP_NAT_TABLE, UPNP_POSTROUTING_CHAIN),
        ] {
            self.host(&router).exec(
                "nft",
                &["flush", "chain", family, table, chain],
                PORTMAP_START,
            )?;
        }
        self.start_portmap(side)
    }
}

/// miniupnpd's configuration for `side`'s router.
fn miniupnpd_conf(side: Side, dir: &Path) -> String {
    let lan = format!("{}/24", side.lan_net_v4());
    let r = rand::random::<u128>();
    // A version 4 UUID.
    let uuid = format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        r >> 96,
        (r >> 80) & 0xffff,
        (r >> 68) & 0xfff,
        0x8000 | ((r >> 52) & 0x3fff),
        r & 0xffff_ffff_ffff
    );
    let dir = dir.display();
    let router = side.router_name();
    format!(
        "ext_ifname=wan
listening_ip=lan
ipv6_disable=yes
http_port={UPNP_HTTP_PORT}
enable_upnp=yes
enable_natpmp=yes
min_lifetime=1
max_lifetime=86400
ext_perform_stun=yes
ext_stun_host={STUN_V4}
ext_stun_port={STUN_PORT}
secure_mode=yes
system_uptime=no
notify_interval=60
friendly_name=p2pd lab {router}
uuid={uuid}
minissdpdsocket={dir}/minissdpd-absent.sock
upnp_table_name={UPNP_FILTER_TABLE}
upnp_forward_chain={UPNP_FORWARD_CHAIN}
upnp_nat_table_name={UPNP_NAT_TABLE}
upnp_nat_chain={UPNP_PREROUTING_CHAIN}
upnp_nat_postrouting_chain={UPNP_POSTROUTING_CHAIN}
allow 1024-65535 {lan} 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_the_lab_chains_and_the_lan() {
        let conf = miniupnpd_conf(Side::B, Path::new("/tmp/x"));
        for line in [
            "ext_ifname=wan",
            "listening_ip=lan",
            "enable_natpmp=yes",
            "ext_stun_host=198.18.0.2",
            "upnp_nat_table_name=p2pd_upnp",
            "allow 1024-65535 192.168.2.0/24 1024-65535",
        ] {
            assert!(conf.lines().any(|l| l == line), "no `{line}` in\n{conf}");
        }
        let uuid = conf
            .lines()
            .find_map(|l| l.strip_prefix("uuid="))
            .expect("uuid");
        assert_eq!(uuid.len(), 36, "{uuid}");
        assert_eq!(uuid.as_bytes()[14], b'4', "{uuid}");
    }
}
