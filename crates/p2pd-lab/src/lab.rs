//! A whole lab: the fake internet, its public hosts and services, and two
//! private sides behind routers of a chosen kind. See [`crate::topology`] for
//! the drawing and addresses.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::LabError;
use crate::exec::SHORT;
use crate::nat::NatKind;
use crate::netns::{self, Netns};
use crate::topology::{
    BROKER1_V4, BROKER2_V4, INTERNET_V4_PREFIX, MQTT_PORT, NTP_V4, STUN_ALT_V4, STUN_ALT_V6,
    STUN_PORT, STUN_V4, STUN_V6, Side, TURN_PORT, TURN_USER, TURN_V4, V6_PREFIX, public_hosts,
};

/// How long a service may take to start listening.
const SERVICE_START: Duration = Duration::from_secs(5);

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
    /// [`TURN_USER`].
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

/// A process running inside a lab host.
#[derive(Debug)]
struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
}

/// A running lab. Dropping it (or [`Lab::down`]) stops its processes and
/// deletes its namespaces.
#[derive(Debug)]
pub struct Lab {
    hosts: BTreeMap<String, Netns>,
    daemons: Vec<Daemon>,
    dir: PathBuf,
    up_time: Duration,
}

impl Lab {
    /// Builds the lab described by `spec`.
    pub fn up(spec: &LabSpec) -> Result<Lab, LabError> {
        let started = Instant::now();
        let dir = std::env::temp_dir().join(format!("{}-lab", netns::unique_name()));
        fs::create_dir_all(&dir).map_err(|e| LabError::Io {
            what: format!("creating {}", dir.display()),
            source: e,
        })?;
        let mut lab = Lab {
            hosts: BTreeMap::new(),
            daemons: Vec::new(),
            dir,
            up_time: Duration::ZERO,
        };
        lab.build(spec)?;
        for service in &spec.services {
            lab.start(*service)?;
        }
        lab.up_time = started.elapsed();
        Ok(lab)
    }

    /// How long [`Lab::up`] took.
    pub fn up_time(&self) -> Duration {
        self.up_time
    }

    /// The namespace of a host (`a`, `b2`, `router-a`, `stun`, ...).
    ///
    /// # Panics
    /// When the lab has no such host: a mistake in the test itself.
    pub fn host(&self, name: &str) -> &Netns {
        self.hosts
            .get(name)
            .unwrap_or_else(|| panic!("the lab has no host `{name}`"))
    }

    /// Every host name with its namespace.
    pub fn hosts(&self) -> impl Iterator<Item = (&str, &Netns)> {
        self.hosts.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// A directory for the lab's configs and logs, deleted with the lab.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts `program args...` in `host`; it runs until [`Lab::stop`] or the
    /// lab goes down. Its output goes to `<dir>/<name>.log`. Returns its pid.
    pub fn spawn(
        &mut self,
        name: &str,
        host: &str,
        program: &str,
        args: &[&str],
    ) -> Result<u32, LabError> {
        let log = self.dir.join(format!("{name}.log"));
        let io_err = |e| LabError::Io {
            what: format!("creating {}", log.display()),
            source: e,
        };
        let out = fs::File::create(&log).map_err(io_err)?;
        let err = out.try_clone().map_err(io_err)?;
        let ns_args = self.host(host).exec_args(program, args);
        let child = Command::new("ip")
            .args(&ns_args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| LabError::Spawn {
                command: format!("{program} {}", args.join(" ")),
                source,
            })?;
        let pid = child.id();
        self.daemons.push(Daemon {
            name: name.to_owned(),
            child,
            log,
        });
        Ok(pid)
    }

    /// Stops the process started as `name`, as a crash would (SIGKILL).
    pub fn stop(&mut self, name: &str) -> bool {
        let Some(pos) = self.daemons.iter().position(|d| d.name == name) else {
            return false;
        };
        let mut daemon = self.daemons.remove(pos);
        let _ = daemon.child.kill();
        let _ = daemon.child.wait();
        true
    }

    /// Waits until something in `host` listens on `addr` (`tcp` or `udp`).
    pub fn wait_listening(
        &mut self,
        host: &str,
        tcp: bool,
        addr: SocketAddr,
        limit: Duration,
    ) -> Result<(), LabError> {
        let flag = if tcp { "-Hlnt" } else { "-Hlnu" };
        let filter = format!("src {addr}");
        let deadline = Instant::now() + limit;
        loop {
            let out = self.host(host).exec("ss", &[flag, &filter], SHORT)?;
            if !out.stdout.trim().is_empty() {
                return Ok(());
            }
            if let Some(dead) = self.dead_daemon() {
                return Err(dead);
            }
            if Instant::now() >= deadline {
                return Err(LabError::NotListening {
                    host: host.to_owned(),
                    addr,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops every process and deletes every namespace. Safe to call twice.
    pub fn down(&mut self) {
        for mut daemon in self.daemons.drain(..) {
            let pid = Pid::from_raw(i32::try_from(daemon.child.id()).unwrap_or(i32::MAX));
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(2);
            while matches!(daemon.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = daemon.child.kill();
            let _ = daemon.child.wait();
        }
        // Dropping a namespace kills what is left in it and deletes it.
        self.hosts.clear();
        let _ = fs::remove_dir_all(&self.dir);
    }

    fn dead_daemon(&mut self) -> Option<LabError> {
        self.daemons.iter_mut().find_map(|d| {
            let Ok(Some(status)) = d.child.try_wait() else {
                return None;
            };
            Some(LabError::ServiceDied {
                name: d.name.clone(),
                status: status.to_string(),
                log: fs::read_to_string(&d.log).unwrap_or_default(),
            })
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.down();
    }
}

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
    fn build(&mut self, spec: &LabSpec) -> Result<(), LabError> {
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
            self.load_rules(&side.router_name(), s.nat, router_wan)?;
            if let (Some(kind), Some(wan)) = (s.cgnat, cgnat_wan) {
                self.load_rules(&side.cgnat_name(), kind, wan)?;
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
    ) -> Result<(), LabError> {
        let Some(rules) = kind.ruleset(wan) else {
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

    fn start(&mut self, service: Service) -> Result<(), LabError> {
        let dir = self.dir.display().to_string();
        match service {
            Service::CoturnStun => {
                let db = format!("{dir}/stun.db");
                let mut args = vec![
                    "-n",
                    "--stun-only",
                    "--no-cli",
                    "--no-tls",
                    "--no-dtls",
                    "--log-file",
                    "stdout",
                    "--simple-log",
                    "--listening-port",
                    "3478",
                    "--alt-listening-port",
                    "3479",
                    "--db",
                    &db,
                ];
                let ips = [
                    STUN_V4.to_string(),
                    STUN_ALT_V4.to_string(),
                    STUN_V6.to_string(),
                    STUN_ALT_V6.to_string(),
                ];
                for ip in &ips {
                    args.extend(["--listening-ip", ip.as_str()]);
                }
                let pid_file = format!("{dir}/stun.pid");
                args.extend(["--pidfile", &pid_file]);
                self.spawn("coturn-stun", "stun", "turnserver", &args)?;
                for ip in [STUN_V4, STUN_ALT_V4] {
                    for port in [STUN_PORT, STUN_PORT + 1] {
                        let addr = SocketAddr::new(ip.into(), port);
                        self.wait_listening("stun", false, addr, SERVICE_START)?;
                        self.wait_listening("stun", true, addr, SERVICE_START)?;
                    }
                }
            }
            Service::Turn => {
                let (user, password, realm) = TURN_USER;
                let credential = format!("{user}:{password}");
                let ip = TURN_V4.to_string();
                let port = TURN_PORT.to_string();
                let db = format!("{dir}/turn.db");
                let pid_file = format!("{dir}/turn.pid");
                let args = [
                    "-n",
                    "--no-cli",
                    "--no-tls",
                    "--no-dtls",
                    "--log-file",
                    "stdout",
                    "--simple-log",
                    "--listening-ip",
                    &ip,
                    "--relay-ip",
                    &ip,
                    "--listening-port",
                    &port,
                    "--lt-cred-mech",
                    "--user",
                    &credential,
                    "--realm",
                    realm,
                    "--db",
                    &db,
                    "--pidfile",
                    &pid_file,
                ];
                self.spawn("coturn-turn", "turn", "turnserver", &args)?;
                let addr = SocketAddr::new(TURN_V4.into(), TURN_PORT);
                self.wait_listening("turn", false, addr, SERVICE_START)?;
            }
            Service::Brokers => {
                for (n, ip) in [(1, BROKER1_V4), (2, BROKER2_V4)] {
                    let conf = self.dir.join(format!("mosquitto{n}.conf"));
                    write_file(
                        &conf,
                        &format!(
                            "listener {MQTT_PORT} {ip}\nallow_anonymous true\npersistence false\n"
                        ),
                    )?;
                    let conf = conf.display().to_string();
                    self.spawn(&format!("broker{n}"), "broker", "mosquitto", &["-c", &conf])?;
                    let addr = SocketAddr::new(ip.into(), MQTT_PORT);
                    self.wait_listening("broker", true, addr, SERVICE_START)?;
                }
            }
            Service::Ntp => {
                let conf = self.dir.join("chrony.conf");
                write_file(
                    &conf,
                    &format!(
                        "local stratum 1\nallow all\nport 123\ncmdport 0\nbindaddress {NTP_V4}\n\
                         pidfile {dir}/chrony.pid\ndriftfile {dir}/chrony.drift\n"
                    ),
                )?;
                let conf = conf.display().to_string();
                self.spawn(
                    "ntp",
                    "ntp",
                    "chronyd",
                    &["-x", "-d", "-u", "root", "-f", &conf],
                )?;
                let addr = SocketAddr::new(NTP_V4.into(), 123);
                self.wait_listening("ntp", false, addr, SERVICE_START)?;
            }
        }
        Ok(())
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), LabError> {
    fs::write(path, text).map_err(|source| LabError::Io {
        what: format!("writing {}", path.display()),
        source,
    })
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
