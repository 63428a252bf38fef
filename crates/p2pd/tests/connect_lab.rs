//! Nodes across the lab's NATs, with `p2pd broker` as the signaling brokers
//! and `p2pd stun-server` for discovery: direct and reverse connect,
//! same-LAN peers, self-connect, broker failover, forged signals.

mod lab_peers;

use std::time::{Duration, Instant};

use lab_peers::{LIMIT, connect, lab, report, start_node, wait_for_line};
use p2pd_lab::topology::BROKER2_V4;
use p2pd_lab::{LabSpec, NatKind, Side, require_lab};

#[test]
fn a_public_peer_is_reached_directly_and_echoes() {
    require_lab!();
    let mut lab = lab(LabSpec::default().nat(Side::A, NatKind::PortRestrictedCone));
    let (addr, _) = start_node(&mut lab, "node-peer", "peer");

    let outcome = connect(&lab, "a", &addr, "direct,reverse", b"ECHO hello, world!");

    report("public peer from behind a NAT", &outcome);
    assert!(outcome.success, "{}", outcome.info);
    assert_eq!(outcome.info["strategy"], "direct");
    assert_eq!(outcome.info["encrypted"], true);
    assert_eq!(outcome.stdout, "hello, world!");
    let raddr = outcome.info["raddr"][0].as_str().expect("ip");
    assert!(["198.18.0.7", "fd00:18::7"].contains(&raddr), "{raddr}");
}

#[test]
fn a_peer_behind_nat_is_reached_by_reverse_connect() {
    require_lab!();
    let mut lab = lab(LabSpec::default().nat(Side::A, NatKind::PortRestrictedCone));
    let (addr, _) = start_node(&mut lab, "node-a", "a");
    assert!(
        addr.contains(&Side::A.internet_v4().to_string()),
        "discovery filled the external IP: {addr}"
    );

    let started = Instant::now();
    let direct_only = connect(&lab, "peer", &addr, "direct", b"ECHO x");
    let took = started.elapsed();
    println!("direct alone to a NATed peer gave up after {took:?} (budget 1 s)");
    assert!(!direct_only.success);
    // Its budget plus start-up, not the whole connect timeout (6 s).
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert_eq!(
        direct_only.info["tried"][0]["strategy"], "direct",
        "{}",
        direct_only.info
    );

    let outcome = connect(
        &lab,
        "peer",
        &addr,
        "direct,reverse",
        b"ECHO \x00binary\xff",
    );
    report(
        "peer behind a port-restricted NAT from a public peer",
        &outcome,
    );
    assert!(outcome.success, "{}", outcome.info);
    assert_eq!(outcome.info["strategy"], "reverse");
    assert_eq!(outcome.info["encrypted"], true);
    assert_eq!(
        outcome.stdout.as_bytes(),
        "\u{0}binary\u{fffd}".as_bytes(),
        "lossy view of the echoed bytes"
    );
    // The peer dials back over IPv4 (through the NAT) or IPv6 (through the
    // firewall, which lets outbound connections out); both are side A.
    let raddr = outcome.info["raddr"][0].as_str().expect("ip");
    assert!(
        [
            Side::A.internet_v4().to_string(),
            Side::A.lan_v6(2).to_string()
        ]
        .contains(&raddr.to_owned()),
        "{raddr}"
    );
}

#[test]
fn peers_on_one_lan_connect_on_their_lan_addresses() {
    require_lab!();
    let mut lab = lab(LabSpec::default()
        .nat(Side::A, NatKind::PortRestrictedCone)
        .hosts(Side::A, 2));
    let (addr, _) = start_node(&mut lab, "node-a", "a");

    let outcome = connect(&lab, "a2", &addr, "direct", b"ECHO lan");

    report("two peers on one LAN", &outcome);
    assert!(outcome.success, "{}", outcome.info);
    // Both LAN addresses of `a` are candidates; whichever answers first wins.
    let raddr = outcome.info["raddr"][0].as_str().expect("ip");
    assert!(
        [Side::A.lan_v4(2).to_string(), Side::A.lan_v6(2).to_string()].contains(&raddr.to_owned()),
        "{raddr}"
    );
    assert_eq!(outcome.stdout, "lan");
}

#[test]
fn a_node_connects_to_its_own_address() {
    require_lab!();
    let mut lab = lab(LabSpec::default().nat(Side::A, NatKind::PortRestrictedCone));
    let (addr, _) = start_node(&mut lab, "node-a", "a");

    let outcome = connect(&lab, "a", &addr, "direct", b"ECHO me");

    assert!(outcome.success, "{}", outcome.info);
    assert_eq!(outcome.stdout, "me");
}

#[test]
fn signaling_survives_a_broker_failing() {
    require_lab!();
    let mut lab = lab(LabSpec::default().nat(Side::A, NatKind::SymmetricRandom));
    let (addr, _) = start_node(&mut lab, "node-a", "a");
    let before = connect(&lab, "peer", &addr, "reverse", b"ECHO before");
    assert!(before.success, "{}", before.info);

    assert!(lab.stop("broker1"), "broker1 was running");

    let after = connect(&lab, "peer", &addr, "reverse", b"ECHO after");
    report("reverse connect with one of two brokers down", &after);
    assert!(after.success, "{}", after.info);
    assert_eq!(after.stdout, "after");
}

#[test]
fn forged_signals_are_dropped_and_counted() {
    require_lab!();
    let mut lab = lab(LabSpec::default().nat(Side::A, NatKind::PortRestrictedCone));
    let (addr, pid) = start_node(&mut lab, "node-a", "a");
    let node_id = addr.rsplit('-').next().expect("node id");
    // An envelope of the current version, sealed with nothing.
    let forged = lab.dir().join("forged.bin");
    let mut bytes = vec![2u8];
    bytes.extend((0..120u32).map(|i| (i * 37 % 251) as u8));
    std::fs::write(&forged, bytes).expect("write");
    let topic = format!("p2pd/{node_id}");
    lab.host("peer")
        .exec(
            "mosquitto_pub",
            &[
                "-h",
                &BROKER2_V4.to_string(),
                "-t",
                &topic,
                "-f",
                &forged.display().to_string(),
            ],
            LIMIT,
        )
        .expect("mosquitto_pub");
    std::thread::sleep(Duration::from_millis(300));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("signal");
    let log = lab.dir().join("node-a.log");
    let stats = wait_for_line(&log, |l| l.contains("stopped;"));
    assert!(
        stats.contains(": 1 received, 0 accepted;") && stats.contains(" 1 forged,"),
        "{stats}"
    );
}

#[test]
fn plain_connections_cross_the_lab_by_direct_and_reverse() {
    require_lab!();
    let mut lab = lab(LabSpec::default().nat(Side::A, NatKind::PortRestrictedCone));
    // Both sides switch encryption off: the [connect] table ends the file.
    let path = lab.dir().join("p2pd.toml");
    let mut text = std::fs::read_to_string(&path).expect("config");
    text.push_str("encrypt = false\n");
    std::fs::write(&path, text).expect("config");
    let (public, _) = start_node(&mut lab, "node-peer", "peer");
    let (natted, _) = start_node(&mut lab, "node-a", "a");

    let direct = connect(&lab, "a", &public, "direct", b"ECHO plain direct");
    report("plain, public peer from behind a NAT", &direct);
    assert!(direct.success, "{}", direct.info);
    assert_eq!(direct.info["strategy"], "direct");
    assert_eq!(direct.info["encrypted"], false);
    assert_eq!(direct.stdout, "plain direct");

    let reverse = connect(
        &lab,
        "peer",
        &natted,
        "direct,reverse",
        b"ECHO plain reverse",
    );
    report("plain, peer behind a NAT from a public peer", &reverse);
    assert!(reverse.success, "{}", reverse.info);
    assert_eq!(reverse.info["strategy"], "reverse");
    assert_eq!(reverse.info["encrypted"], false);
    assert_eq!(reverse.stdout, "plain reverse");
}
