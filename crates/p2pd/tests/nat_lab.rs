//! `p2pd nat` and `p2pd stun-server` across every router kind of the lab,
//! over UDP and TCP, checked against tools that are not ours: coturn as
//! the server for our client, Debian's `stun` client against our server.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use p2pd_lab::topology::{STUN_ALT_V4, STUN_ALT_V6, STUN_V4, STUN_V6};
use p2pd_lab::{Lab, LabSpec, NatKind, Service, Side, require_lab};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(20);
/// Where `p2pd stun-server` listens on the stun host (coturn has 3478/3479).
const OURS: (u16, u16) = (3490, 3491);

macro_rules! kind {
    ($name:ident, $kind:expr, $nat:expr, $delta:expr, $value:expr, $stun_client:expr) => {
        #[test]
        fn $name() {
            require_lab!();
            check($kind, $nat, $delta, $value, $stun_client);
        }
    };
}

kind!(
    plain_router_is_open,
    NatKind::None,
    "open",
    "not-applicable",
    0,
    "Primary: Open"
);
kind!(
    firewall_is_udp_firewall,
    NatKind::UdpFirewall,
    "udp-firewall",
    "not-applicable",
    0,
    "Primary: Firewall"
);
kind!(
    full_cone,
    NatKind::FullCone,
    "full-cone",
    "equal",
    0,
    "Independent Mapping, Independent Filter"
);
kind!(
    restricted_cone,
    NatKind::RestrictedCone,
    "restricted",
    "equal",
    0,
    "Independent Mapping, Address Dependent Filter"
);
kind!(
    port_restricted_cone,
    NatKind::PortRestrictedCone,
    "port-restricted",
    "equal",
    0,
    "Independent Mapping, Port Dependent Filter"
);
kind!(
    symmetric_random,
    NatKind::SymmetricRandom,
    "symmetric",
    "random",
    0,
    "Dependent Mapping"
);
kind!(
    symmetric_sequential_plus_1,
    NatKind::SymmetricSequential { delta: 1 },
    "symmetric",
    "independent",
    1,
    "Dependent Mapping"
);
kind!(
    symmetric_sequential_plus_2,
    NatKind::SymmetricSequential { delta: 2 },
    "symmetric",
    "independent",
    2,
    "Dependent Mapping"
);

#[test]
fn behind_cgnat_the_external_address_is_the_carriers() {
    require_lab!();
    let mut lab = lab_with_our_server(
        LabSpec::default()
            .nat(Side::A, NatKind::FullCone)
            .cgnat(Side::A, NatKind::PortRestrictedCone),
    );
    let entry = nat_json(&mut lab, OURS.0);
    assert_eq!(entry["external_ip"], Side::A.internet_v4().to_string());
    assert_eq!(entry["nat"]["type"], "port-restricted", "{entry}");
}

#[test]
fn an_unreachable_server_costs_one_timeout_not_one_each() {
    require_lab!();
    let mut lab = lab_with_our_server(LabSpec::default().nat(Side::A, NatKind::PortRestrictedCone));
    // Two servers that never answer (nothing listens there) and ours.
    let dead1 = format!("{STUN_V4}:4000");
    let dead2 = format!("{STUN_ALT_V4}:4001");
    let ours = format!("{STUN_V4}:{}", OURS.0);
    let out = p2pd_in(
        &mut lab,
        "a",
        &[
            "nat", "--json", "--stun", &dead1, "--stun", &dead2, "--stun", &ours,
        ],
    );
    let entry = ipv4_entry(&out);
    assert_eq!(entry["nat"]["type"], "port-restricted", "{entry}");
    let unreachable = entry["unreachable"].as_array().expect("list").len();
    assert_eq!(unreachable, 2, "{entry}");
    let ms = entry["ms"].as_u64().expect("ms");
    println!(
        "with two dead servers: {ms} ms, {} requests",
        entry["requests"]
    );
    assert!(ms < 3000, "dead servers were waited for in turn: {ms} ms");
}

fn check(kind: NatKind, nat: &str, delta: &str, value: i64, stun_client_says: &str) {
    let mut lab = lab_with_our_server(
        LabSpec::default()
            .nat(Side::A, kind)
            .service(Service::CoturnStun),
    );

    // Our client against our server, and against coturn.
    for (server, port) in [("p2pd", OURS.0), ("coturn", 3478)] {
        let entry = nat_json(&mut lab, port);
        println!(
            "{kind} via {server}: {} delta {} {} in {} ms with {} requests",
            entry["nat"]["type"],
            entry["delta"]["type"],
            entry["delta"]["value"],
            entry["ms"],
            entry["requests"]
        );
        assert_eq!(entry["nat"]["type"], nat, "{kind} via {server}: {entry}");
        assert_eq!(
            entry["delta"]["type"], delta,
            "{kind} via {server}: {entry}"
        );
        assert_eq!(
            entry["delta"]["value"], value,
            "{kind} via {server}: {entry}"
        );
        println!("{kind} via {server}, tcp: {}", entry["tcp"]);
        // TCP behaves as UDP in every router of the lab, except that a
        // host without a NAT keeps its ports (equal), where UDP's delta
        // is not applicable.
        let tcp = &entry["tcp"];
        let tcp_delta = if delta == "not-applicable" {
            "equal"
        } else {
            delta
        };
        let tcp_mapping = if nat == "symmetric" {
            "address-and-port-dependent"
        } else {
            "endpoint-independent"
        };
        assert_eq!(tcp["mapping"], tcp_mapping, "{kind} via {server}: {tcp}");
        assert_eq!(
            tcp["delta"]["type"], tcp_delta,
            "{kind} via {server}: {tcp}"
        );
        assert_eq!(tcp["delta"]["value"], value, "{kind} via {server}: {tcp}");
        assert_eq!(tcp["external_ip"], entry["external_ip"], "{kind}: {tcp}");
        let expected_ip = if kind.translates() {
            Side::A.internet_v4().to_string()
        } else {
            Side::A.lan_v4(2).to_string()
        };
        assert_eq!(entry["external_ip"], expected_ip);
    }

    // Debian's RFC 3489 client against our server sees the same NAT.
    let out = lab
        .host("a")
        .exec_unchecked("stun", &[&format!("{STUN_V4}:{}", OURS.0)], LIMIT)
        .expect("stun client runs");
    assert!(
        out.stdout.contains(stun_client_says),
        "{kind}: stun said\n{}",
        out.stdout
    );
}

fn lab_with_our_server(spec: LabSpec) -> Lab {
    let mut lab = Lab::up(&spec).expect("lab");
    start_our_server(&mut lab, "p2pd-stun", STUN_V4.into(), STUN_ALT_V4.into());
    lab
}

/// Runs `p2pd stun-server` on the stun host on `primary` and `alternate`
/// with our ports, and waits until all four sockets listen.
fn start_our_server(lab: &mut Lab, name: &str, primary: IpAddr, alternate: IpAddr) {
    let primary_addr = SocketAddr::new(primary, OURS.0).to_string();
    let alternate_addr = SocketAddr::new(alternate, OURS.1).to_string();
    let config = config_file(lab);
    lab.spawn(
        name,
        "stun",
        env!("CARGO_BIN_EXE_p2pd"),
        &[
            "--config",
            &config,
            "stun-server",
            "--primary",
            &primary_addr,
            "--alternate",
            &alternate_addr,
        ],
    )
    .expect("spawn p2pd stun-server");
    for ip in [primary, alternate] {
        for port in [OURS.0, OURS.1] {
            lab.wait_listening("stun", false, SocketAddr::new(ip, port), LIMIT)
                .expect("our server listens");
        }
    }
}

/// A config that names no public server, and asks no gateway for a port
/// (the port-mapping lab tests do).
fn config_file(lab: &Lab) -> String {
    let path = lab.dir().join("p2pd.toml");
    std::fs::write(
        &path,
        "[signaling]\nbrokers = []\n[stun]\nservers = []\n[ntp]\nservers = []\n[portmap]\nprotocols = []\n",
    )
    .expect("write config");
    path.display().to_string()
}

fn nat_json(lab: &mut Lab, port: u16) -> Value {
    let server = format!("{STUN_V4}:{port}");
    let out = p2pd_in(lab, "a", &["nat", "--json", "--stun", &server]);
    ipv4_entry(&out)
}

fn p2pd_in(lab: &mut Lab, host: &str, args: &[&str]) -> String {
    let config = config_file(lab);
    let mut full = vec!["--config", config.as_str()];
    full.extend_from_slice(args);
    let out = lab
        .host(host)
        .exec(env!("CARGO_BIN_EXE_p2pd"), &full, LIMIT)
        .expect("p2pd runs");
    out.stdout
}

fn ipv4_entry(stdout: &str) -> Value {
    let parsed: Value = serde_json::from_str(stdout).expect("one JSON object");
    parsed["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .find(|e| e["af"] == "ipv4" && e["name"] == "eth0")
        .cloned()
        .unwrap_or_else(|| panic!("no eth0 ipv4 entry in {stdout}"))
}

#[test]
fn ipv6_is_discovered_too_no_nat_behind_a_firewall() {
    require_lab!();
    for (kind, expected) in [
        (NatKind::PortRestrictedCone, "udp-firewall"),
        (NatKind::None, "open"),
    ] {
        let mut lab = lab_with_our_server(LabSpec::default().nat(Side::A, kind));
        start_our_server(&mut lab, "p2pd-stun6", STUN_V6.into(), STUN_ALT_V6.into());
        let primary = SocketAddr::new(STUN_V6.into(), OURS.0).to_string();
        let v4 = format!("{STUN_V4}:{}", OURS.0);
        let out = p2pd_in(
            &mut lab,
            "a",
            &["nat", "--json", "--stun", &v4, "--stun", &primary],
        );
        let parsed: Value = serde_json::from_str(&out).expect("one JSON object");
        let v6 = parsed["interfaces"]
            .as_array()
            .expect("interfaces")
            .iter()
            .find(|e| e["af"] == "ipv6")
            .cloned()
            .unwrap_or_else(|| panic!("no ipv6 entry in {out}"));
        println!("{kind}, IPv6: {} in {} ms", v6["nat"]["type"], v6["ms"]);
        assert_eq!(v6["nat"]["type"], expected, "{kind}: {v6}");
        assert_eq!(v6["external_ip"], Side::A.lan_v6(2).to_string());
        assert_eq!(v6["delta"]["type"], "not-applicable");
    }
}
