//! Building a lab's network: namespaces, veth links, addresses, routes, the
//! routers' NAT rules (with miniupnpd's chains on port-mapping routers) and
//! optional latency, laid out as a [`Plan`] of `ip` commands first so each
//! namespace gets one batch.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Lab, LabSpec};
use crate::LabError;
use crate::exec::SHORT;
use crate::nat::NatKind;
use crate::netns::{self, Netns};
use crate::topology::{INTERNET_V4_PREFIX, Side, V6_PREFIX, public_hosts};

/// The `ip` commands for one namespace, in the order they must run.
#[derive(Default)]
struct Plan {
    /// Per host: commands run in its namespace.
    hosts: BTreeMap<String, Vec<String>>,
    /// veth pairs: (host, interface, host, interface).
    links: Vec<(String, String, String, String)>,
}

impl Plan {
    fn cmd(&mut self, host: &str, line: String) {
        self.hosts.entry(host.to_owned()).or_default().push(line);
    }

    fn link(&mut self, a: &str, a_if: &str, b: &str, b_if: &str) {
        self.links
            .push((a.to_owned(), a_if.to_owned(), b.to_owned(), b_if.to_owned()));
    }
}
impl Lab {
    pub(super) fn build(&mut self, spec: &LabSpec) -> Result<(), LabError> {
        let mut names: Vec<String> = vec!["inet".into()];
        names.extend(public_hosts().into_iter().map(|(h, _)| h.to_owned()));
        for side in Side::BOTH {
            let s = spec.side(side);
            if s.cgnat.is_some() {
                names.push(side.cgnat_name());
            }
            names.push(side.router_name());
            names.extend((0..s.hosts).map(|i| side.host_name(i)));
        }
        for name in &names {
            let ns = Netns::labeled(name)?;
            self.hosts.insert(name.clone(), ns);
        }
        // Addresses are usable at once (no DAD) and never made by the kernel
        // behind the lab's back, except link-local ones.
        for (name, ns) in &self.hosts {
            let mut settings = vec![
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv6.conf.default.accept_ra=0",
            ];
            if name.starts_with("router-") || name.starts_with("cgnat-") {
                settings.extend(["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]);
            }
            ns.sysctl(&settings)?;
        }

        let plan = plan(spec);
        self.create_links(&plan)?;
        for (host, lines) in &plan.hosts {
            self.host(host).ip_batch(lines)?;
        }
        for side in Side::BOTH {
            let s = spec.side(side);
            let (router_wan, cgnat_wan) = match s.cgnat {
                Some(_) => (side.cgnat_inside_v4(true), Some(side.internet_v4())),
                None => (side.internet_v4(), None),
            };
            self.load_rules(&side.router_name(), s.nat, router_wan, s.portmap)?;
            if let (Some(kind), Some(wan)) = (s.cgnat, cgnat_wan) {
                self.load_rules(&side.cgnat_name(), kind, wan, false)?;
            }
        }
        if let Some(delay) = spec.latency {
            self.add_latency(delay)?;
        }
        Ok(())
    }

    fn create_links(&self, plan: &Plan) -> Result<(), LabError> {
        let mut creates = Vec::new();
        let mut renames: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (a, a_if, b, b_if) in &plan.links {
            let (tmp_a, tmp_b) = (netns::unique_name(), netns::unique_name());
            creates.push(format!(
                "link add {tmp_a} netns {} type veth peer name {tmp_b} netns {}",
                self.host(a).name(),
                self.host(b).name()
            ));
            renames
                .entry(a)
                .or_default()
                .push(format!("link set {tmp_a} name {a_if}"));
            renames
                .entry(b)
                .or_default()
                .push(format!("link set {tmp_b} name {b_if}"));
        }
        crate::exec::run_with_input("ip", &["-batch", "-"], &creates.join("\n"), SHORT)?;
        for (host, lines) in renames {
            self.host(host).ip_batch(&lines)?;
        }
        Ok(())
    }

    fn load_rules(
        &self,
        router: &str,
        kind: NatKind,
        wan: std::net::Ipv4Addr,
        portmap: bool,
    ) -> Result<(), LabError> {
        let rules = if portmap {
            kind.portmap_ruleset(wan)
        } else {
            kind.ruleset(wan)
        };
        let Some(rules) = rules else {
            return Ok(());
        };
        self.host(router)
            .exec_with_input("nft", &["-f", "-"], &rules, SHORT)
            .map(drop)
    }

    /// Delays every packet leaving the internet bridge towards a host, so
    /// each crossing of the internet costs `delay` one way.
    fn add_latency(&self, delay: Duration) -> Result<(), LabError> {
        let inet = self.host("inet");
        let ports = inet.ip(&["-o", "link", "show", "master", "br0"])?;
        let delay = format!("{}us", delay.as_micros());
        for line in ports.stdout.lines() {
            let Some(port) = line
                .split(':')
                .nth(1)
                .map(|p| p.trim().split('@').next().unwrap_or(""))
            else {
                continue;
            };
            inet.exec(
                "tc",
                &[
                    "qdisc", "add", "dev", port, "root", "netem", "delay", &delay,
                ],
                SHORT,
            )
            .map_err(|err| LabError::NetemUnavailable(err.to_string()))?;
        }
        Ok(())
    }
}

/// Lays out every link, address and route of the lab.
fn plan(spec: &LabSpec) -> Plan {
    let mut p = Plan::default();
    p.cmd("inet", "link add br0 type bridge".into());
    p.cmd("inet", "link set br0 up".into());
    let mut port = 0;
    let mut attach = |p: &mut Plan, host: &str, host_if: &str| {
        let bridge_port = format!("i{port}");
        port += 1;
        p.link("inet", &bridge_port, host, host_if);
        p.cmd("inet", format!("link set {bridge_port} master br0"));
        p.cmd("inet", format!("link set {bridge_port} up"));
    };

    // Prefixes reached through each side's outermost router.
    let mut side_routes: Vec<(String, String)> = Vec::new();
    for side in Side::BOTH {
        let via4 = side.internet_v4();
        let via6 = side.internet_v6();
        side_routes.push((format!("{}/24", side.lan_net_v4()), format!("{via4}")));
        side_routes.push((format!("{}/64", side.lan_net_v6()), format!("{via6}")));
        if spec.side(side).cgnat.is_some() {
            side_routes.push((format!("{}/24", side.cgnat_net_v4()), format!("{via4}")));
            side_routes.push((format!("{}/64", side.cgnat_net_v6()), format!("{via6}")));
        }
    }

    for (host, addrs) in public_hosts() {
        attach(&mut p, host, "eth0");
        p.cmd(host, "link set eth0 up".into());
        for addr in addrs {
            let prefix = if addr.is_ipv6() {
                V6_PREFIX
            } else {
                INTERNET_V4_PREFIX
            };
            p.cmd(host, format!("addr add {addr}/{prefix} dev eth0"));
        }
        for (net, via) in &side_routes {
            p.cmd(host, format!("route add {net} via {via}"));
        }
    }

    for side in Side::BOTH {
        let s = spec.side(side);
        let router = side.router_name();
        let outer = match s.cgnat {
            Some(_) => side.cgnat_name(),
            None => router.clone(),
        };
        attach(&mut p, &outer, "wan");
        p.cmd(&outer, "link set wan up".into());
        p.cmd(
            &outer,
            format!(
                "addr add {}/{INTERNET_V4_PREFIX} dev wan",
                side.internet_v4()
            ),
        );
        p.cmd(
            &outer,
            format!("addr add {}/{V6_PREFIX} dev wan", side.internet_v6()),
        );
        let own_v4 = format!("{}/24", side.lan_net_v4());
        let own_v6 = format!("{}/64", side.lan_net_v6());
        for (net, via) in &side_routes {
            let own = *net == own_v4
                || *net == own_v6
                || *net == format!("{}/24", side.cgnat_net_v4())
                || *net == format!("{}/64", side.cgnat_net_v6());
            if !own {
                p.cmd(&outer, format!("route add {net} via {via}"));
            }
        }
        if s.cgnat.is_some() {
            let cgnat = side.cgnat_name();
            p.link(&cgnat, "lan", &router, "wan");
            p.cmd(&cgnat, "link set lan up".into());
            p.cmd(&router, "link set wan up".into());
            // The CGNAT link: addresses on both ends, the LAN routed through
            // the home router, the home router's default through the CGNAT.
            let families = [
                (
                    side.cgnat_inside_v4(false).to_string(),
                    side.cgnat_inside_v4(true).to_string(),
                    &own_v4,
                    24,
                ),
                (
                    side.cgnat_inside_v6(false).to_string(),
                    side.cgnat_inside_v6(true).to_string(),
                    &own_v6,
                    V6_PREFIX,
                ),
            ];
            for (cgnat_ip, router_ip, own, prefix) in families {
                p.cmd(&cgnat, format!("addr add {cgnat_ip}/{prefix} dev lan"));
                p.cmd(&cgnat, format!("route add {own} via {router_ip}"));
                p.cmd(&router, format!("addr add {router_ip}/{prefix} dev wan"));
                p.cmd(&router, format!("route add default via {cgnat_ip}"));
            }
        }
        p.cmd(&router, "link add lan type bridge".into());
        p.cmd(&router, "link set lan up".into());
        p.cmd(&router, format!("addr add {}/24 dev lan", side.lan_v4(1)));
        p.cmd(&router, format!("addr add {}/64 dev lan", side.lan_v6(1)));
        for i in 0..s.hosts {
            let host = side.host_name(i);
            let bridge_port = format!("p{i}");
            p.link(&router, &bridge_port, &host, "eth0");
            p.cmd(&router, format!("link set {bridge_port} master lan"));
            p.cmd(&router, format!("link set {bridge_port} up"));
            let n = u8::try_from(i + 2).unwrap_or(u8::MAX);
            p.cmd(&host, "link set eth0 up".into());
            p.cmd(&host, format!("addr add {}/24 dev eth0", side.lan_v4(n)));
            p.cmd(&host, format!("addr add {}/64 dev eth0", side.lan_v6(n)));
            p.cmd(&host, format!("route add default via {}", side.lan_v4(1)));
            p.cmd(&host, format!("route add default via {}", side.lan_v6(1)));
        }
    }
    p
}
