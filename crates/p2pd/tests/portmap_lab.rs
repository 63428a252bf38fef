//! Port mapping in the lab: a node behind a router running miniupnpd (UPnP
//! IGD, NAT-PMP, PCP) is reached by plain direct connect; a node behind a
//! router without them starts as fast as one that does not ask.

mod lab_peers;

use std::time::Instant;

use lab_peers::{LIMIT, connect, lab, report, start_node, start_node_via, wait_for_line};
use p2pd_lab::{Lab, LabSpec, NatKind, Side, require_lab};

/// The lab's config with only `protocols` asked for (and, unless `stun`,
/// no STUN server: discovery then ends at once).
fn with_protocols(lab: &Lab, protocols: &str, stun: bool) {
    let path = lab.dir().join("p2pd.toml");
    let config = std::fs::read_to_string(&path).expect("config");
    let config: String = config
        .lines()
        .map(|l| {
            if l.starts_with("protocols = ") {
                format!("protocols = [{protocols}]\n")
            } else if !stun && l.starts_with("servers = [\"198.18.0.2") {
                "servers = []\n".to_owned()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert!(config.contains(&format!("[{protocols}]")), "{config}");
    std::fs::write(&path, config).expect("config");
}

/// The DNAT rules miniupnpd keeps on side A's router.
fn forwarded_ports(lab: &Lab) -> String {
    let router = lab.host(&Side::A.router_name());
    let out = router
        .exec("nft", &["list", "ruleset"], LIMIT)
        .expect("nft list ruleset");
    out.stdout
        .lines()
        .filter(|l| l.contains("dnat"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A lab whose side A router (port-restricted) runs miniupnpd.
fn mapping_lab() -> Lab {
    lab(LabSpec::default()
        .nat(Side::A, NatKind::PortRestrictedCone)
        .portmap(Side::A))
}

/// What the mapper logs.
const LOGGING: [&str; 2] = ["env", "RUST_LOG=p2pd_node=info"];

/// Stops a node as SIGTERM does, and waits for its last line.
fn stop_cleanly(lab: &mut Lab, name: &str, pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    wait_for_line(&lab.dir().join(format!("{name}.log")), |l| {
        l.contains("stopped;")
    });
    lab.stop(name);
}

/// The node's address and listen port, from `p2pd node`'s line.
fn listen_port(addr: &str) -> String {
    let entry = addr.split('[').nth(1).expect("an IPv4 entry");
    entry.split(',').nth(3).expect("the port").to_owned()
}

fn reached_behind_the_router_by(protocols: &str) {
    let spec = LabSpec::default()
        .nat(Side::A, NatKind::PortRestrictedCone)
        .portmap(Side::A)
        .nat(Side::B, NatKind::PortRestrictedCone);
    let mut lab = lab(spec);
    with_protocols(&lab, protocols, true);
    let started = Instant::now();
    let (addr, pid) = start_node_via(&mut lab, "node-a", "a", &LOGGING);
    let first_line = started.elapsed();
    let log = lab.dir().join("node-a.log");
    let mapped = wait_for_line(&log, |l| l.contains("port mapped"));
    // Every other protocol has had its say before the checks below.
    let others = protocols.matches(',').count();
    let settled = |text: &str| {
        text.matches("port mapped").count() + text.matches("no port mapping").count() > others
    };
    let deadline = Instant::now() + LIMIT;
    while !settled(&std::fs::read_to_string(&log).expect("log")) {
        assert!(
            Instant::now() < deadline,
            "the other protocols never answered"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&log).expect("log");
    let mapper_lines: Vec<&str> = text.lines().filter(|l| l.contains("portmap")).collect();
    println!(
        "{protocols}: first line after {first_line:?}: {addr}\n  {}",
        mapper_lines.join("\n  ")
    );
    assert!(mapper_lines.iter().any(|l| l == &mapped));
    let port = listen_port(&addr);
    assert!(
        addr.contains(&format!("{},", Side::A.internet_v4())),
        "the router's external IP: {addr}"
    );
    let rules = forwarded_ports(&lab);
    assert_eq!(
        rules.matches(&format!("dport {port} ")).count(),
        1,
        "miniupnpd forwards {port}, once whichever protocols asked:\n{rules}"
    );

    for host in ["peer", "b"] {
        let outcome = connect(&lab, host, &addr, "direct", b"ECHO mapped");
        report(&format!("{protocols}: direct from {host}"), &outcome);
        assert!(outcome.success, "{host}: {}", outcome.info);
        assert_eq!(outcome.info["strategy"], "direct");
        assert_eq!(outcome.stdout, "mapped");
    }

    stop_cleanly(&mut lab, "node-a", pid);
    assert!(
        !forwarded_ports(&lab).contains(&format!("dport {port}")),
        "the mapping is deleted when the node stops:\n{}",
        forwarded_ports(&lab)
    );
}

#[test]
fn a_node_behind_a_pcp_router_is_reached_by_direct_connect() {
    require_lab!();
    reached_behind_the_router_by("\"pcp\"");
}

#[test]
fn a_node_behind_a_nat_pmp_router_is_reached_by_direct_connect() {
    require_lab!();
    reached_behind_the_router_by("\"nat-pmp\"");
}

#[test]
fn a_node_behind_a_upnp_router_is_reached_by_direct_connect() {
    require_lab!();
    reached_behind_the_router_by("\"upnp\"");
}

#[test]
fn a_node_asking_with_every_protocol_keeps_one_mapping_and_is_reached() {
    require_lab!();
    reached_behind_the_router_by("\"pcp\", \"nat-pmp\", \"upnp\"");
}

#[test]
fn a_node_behind_a_router_without_port_mapping_is_not_reached_directly_nor_delayed() {
    require_lab!();
    let mut lab = lab(LabSpec::default().nat(Side::A, NatKind::PortRestrictedCone));
    // Without STUN the first line waits for nothing but the start-up.
    with_protocols(&lab, "", false);
    let started = Instant::now();
    let (_, _) = start_node(&mut lab, "node-off", "a");
    let off = started.elapsed();
    assert!(lab.stop("node-off"));
    with_protocols(&lab, "\"pcp\", \"nat-pmp\", \"upnp\"", false);
    let started = Instant::now();
    let (addr, _) = start_node_via(&mut lab, "node-a", "a", &LOGGING);
    let on = started.elapsed();
    // The first line is out while the UPnP search still waits (2 s).
    let log = lab.dir().join("node-a.log");
    let text = std::fs::read_to_string(&log).expect("log");
    let printed_at = text.find(&addr).expect("the address is in the log");
    let upnp_gave_up = wait_for_line(&log, |l| l.contains("UPnP at") && l.contains("no gateway"));
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.find(&upnp_gave_up).expect("the line") > printed_at,
        "the address waited for the mapper:\n{text}"
    );
    println!(
        "first line without the mapper {off:?}, with it (router without support) {on:?}: {:.2}",
        on.as_secs_f64() / off.as_secs_f64()
    );

    let outcome = connect(&lab, "peer", &addr, "direct", b"ECHO x");
    assert!(
        !outcome.success,
        "no mapping, no direct path: {}",
        outcome.info
    );
}

#[test]
fn a_mapping_granted_after_the_first_line_is_printed_on_a_line_of_its_own() {
    require_lab!();
    let mut lab = mapping_lab();
    // No STUN: the first line is out at once, the UPnP mapping some
    // round trips later.
    with_protocols(&lab, "\"upnp\"", false);
    let (first, _) = start_node_via(&mut lab, "node-a", "a", &LOGGING);
    let external = format!("[0,{},", Side::A.internet_v4());
    assert!(!first.contains(&external), "not mapped yet: {first}");
    let log = lab.dir().join("node-a.log");
    let second = wait_for_line(&log, |l| !l.contains(' ') && l.contains(&external));
    println!("first line {first}\nthen       {second}");
    assert_eq!(
        first.rsplit('-').next(),
        second.rsplit('-').next(),
        "the same node"
    );
}

#[test]
fn p2pd_nat_reports_what_each_protocol_mapped_and_deletes_it() {
    require_lab!();
    let lab = mapping_lab();
    with_protocols(&lab, "\"pcp\", \"nat-pmp\", \"upnp\"", true);
    let config = lab.dir().join("p2pd.toml").display().to_string();
    let stun = format!("{}:3478", p2pd_lab::topology::STUN_V4);
    let args = ["--config", &config, "nat", "--json", "--stun", &stun];
    let out = lab
        .host("a")
        .exec(env!("CARGO_BIN_EXE_p2pd"), &args, LIMIT)
        .expect("p2pd nat");
    let parsed: serde_json::Value = serde_json::from_str(&out.stdout).expect("one JSON object");
    let entry = parsed["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .find(|e| e["af"] == "ipv4")
        .cloned()
        .expect("an IPv4 entry");
    println!("{}", entry["portmap"]);
    let probes = entry["portmap"].as_array().expect("a portmap list");
    let names: Vec<&str> = probes
        .iter()
        .filter_map(|p| p["protocol"].as_str())
        .collect();
    assert_eq!(names, ["pcp", "nat-pmp", "upnp"]);
    for probe in probes {
        let mapped = probe["mapped"]
            .as_str()
            .unwrap_or_else(|| panic!("{probe}"));
        assert!(mapped.starts_with("198.18.1.1:"), "{probe}");
        let port = mapped.rsplit(':').next().expect("port");
        assert!(
            !forwarded_ports(&lab).contains(&format!("dport {port}")),
            "the probe's mapping is deleted"
        );
    }
    let ipv6 = parsed["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .find(|e| e["af"] == "ipv6");
    if let Some(ipv6) = ipv6 {
        assert_eq!(ipv6["portmap"], serde_json::json!([]), "IPv4 only");
    }
}

#[test]
fn a_router_that_restarts_gets_the_mapping_back_at_once() {
    require_lab!();
    let mut lab = mapping_lab();
    with_protocols(&lab, "\"pcp\", \"nat-pmp\"", true);
    let (addr, _) = start_node_via(&mut lab, "node-a", "a", &LOGGING);
    let port = listen_port(&addr);
    let forwarded = |lab: &Lab| forwarded_ports(lab).contains(&format!("dport {port} "));
    let deadline = Instant::now() + LIMIT;
    while !forwarded(&lab) {
        assert!(Instant::now() < deadline, "never mapped");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // A reboot: the router forgets every mapping, and announces itself.
    lab.restart_portmap(Side::A).expect("miniupnpd restarts");
    let restarted = Instant::now();
    while !forwarded(&lab) {
        assert!(
            Instant::now() < restarted + LIMIT,
            "the mapping never came back:\n{}",
            forwarded_ports(&lab)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    println!("mapped again {:?} after the restart", restarted.elapsed());
    let outcome = connect(&lab, "peer", &addr, "direct", b"ECHO again");
    assert!(outcome.success, "{}", outcome.info);
    assert_eq!(outcome.stdout, "again");
}
