//! Each router kind behaves as named, as seen by tools that are not ours:
//! Debian's `stun` client (RFC 3489), coturn's `turnutils_natdiscovery`
//! (RFC 5780), `conntrack` on the router and `nc`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use p2pd_lab::topology::{PEER_V4, STUN_V4};
use p2pd_lab::{Lab, LabSpec, NatKind, Service, Side, require_lab};

const TOOL_LIMIT: Duration = Duration::from_secs(20);

macro_rules! router_kind {
    ($name:ident, $kind:expr, stun: $stun:expr, natdiscovery: $flags:expr => $expect:expr) => {
        #[test]
        fn $name() {
            require_lab!();
            check_kind($kind, $stun, $flags, $expect);
        }
    };
}

router_kind!(plain_router_is_open, NatKind::None,
    stun: "Primary: Open", natdiscovery: &[] => &[]);
router_kind!(firewall_without_nat_is_a_firewall, NatKind::UdpFirewall,
    stun: "Primary: Firewall", natdiscovery: &[] => &[]);
router_kind!(full_cone_is_independent_mapping_and_filtering, NatKind::FullCone,
    stun: "Independent Mapping, Independent Filter",
    natdiscovery: &["-m", "-f"] => &["Endpoint Independent Mapping", "Endpoint Independent Filtering"]);
router_kind!(restricted_cone_filters_by_address, NatKind::RestrictedCone,
    stun: "Independent Mapping, Address Dependent Filter",
    natdiscovery: &["-m", "-f"] => &["Endpoint Independent Mapping", "Address Dependent Filtering"]);
router_kind!(port_restricted_cone_filters_by_address_and_port, NatKind::PortRestrictedCone,
    stun: "Independent Mapping, Port Dependent Filter",
    natdiscovery: &["-m", "-f"] => &["Endpoint Independent Mapping", "Address and Port Dependent Filtering"]);
router_kind!(symmetric_random_maps_per_destination, NatKind::SymmetricRandom,
    stun: "Dependent Mapping, random port",
    natdiscovery: &["-m"] => &["Address and Port Dependent Mapping"]);
router_kind!(symmetric_sequential_maps_per_destination, NatKind::SymmetricSequential { delta: 1 },
    stun: "Dependent Mapping",
    natdiscovery: &["-m"] => &["Address and Port Dependent Mapping"]);

#[test]
fn sequential_kind_allocates_ports_by_its_delta() {
    require_lab!();
    for delta in [1u16, 2, 5] {
        let lab = Lab::up(&LabSpec::default().nat(Side::A, NatKind::SymmetricSequential { delta }))
            .expect("lab");
        let mapped = mapped_ports_of_fresh_sockets(&lab, 6);
        let steps: Vec<i32> = mapped
            .windows(2)
            .map(|w| i32::from(w[1].1) - i32::from(w[0].1))
            .collect();
        println!("delta +{delta}: mapped ports {mapped:?}");
        assert!(
            steps.iter().all(|s| *s == i32::from(delta)),
            "delta {delta}: {mapped:?}"
        );
    }
}

#[test]
fn random_kind_allocates_no_pattern() {
    require_lab!();
    let lab = Lab::up(&LabSpec::default().nat(Side::A, NatKind::SymmetricRandom)).expect("lab");
    let mapped = mapped_ports_of_fresh_sockets(&lab, 6);
    let steps: Vec<i32> = mapped
        .windows(2)
        .map(|w| i32::from(w[1].1) - i32::from(w[0].1))
        .collect();
    assert!(steps.windows(2).any(|w| w[0] != w[1]), "{mapped:?}");
}

#[test]
fn cone_kinds_keep_the_port_and_one_mapping_for_every_destination() {
    require_lab!();
    for kind in [
        NatKind::FullCone,
        NatKind::RestrictedCone,
        NatKind::PortRestrictedCone,
    ] {
        let lab = Lab::up(&LabSpec::default().nat(Side::A, kind)).expect("lab");
        let local = send_from_one_socket(
            &lab,
            &[
                SocketAddr::new(PEER_V4.into(), 9),
                SocketAddr::new(STUN_V4.into(), 9),
            ],
        );
        let entries = conntrack_udp(&lab, "router-a");
        let mapped: Vec<u16> = entries
            .iter()
            .filter(|e| e.0 == local)
            .map(|e| e.1)
            .collect();
        assert_eq!(mapped, vec![local, local], "{kind}: {entries:?}");
    }
}

/// Sends one datagram from each of `n` fresh sockets on host `a` to the
/// public peer, then reads the router's mappings: (local port, mapped port)
/// in sending order.
fn mapped_ports_of_fresh_sockets(lab: &Lab, n: usize) -> Vec<(u16, u16)> {
    let locals: Vec<u16> = (0..n)
        .map(|i| {
            let dst = SocketAddr::new(PEER_V4.into(), 9 + u16::try_from(i).expect("small"));
            send_from_one_socket(lab, &[dst])
        })
        .collect();
    let entries = conntrack_udp(lab, "router-a");
    locals
        .iter()
        .map(|l| {
            let mapped = entries
                .iter()
                .find(|e| e.0 == *l)
                .unwrap_or_else(|| panic!("no mapping for local port {l} in {entries:?}"));
            (*l, mapped.1)
        })
        .collect()
}

/// Sends a datagram from one fresh socket on host `a` to each destination;
/// returns the socket's local port.
fn send_from_one_socket(lab: &Lab, dsts: &[SocketAddr]) -> u16 {
    lab.host("a")
        .block_on(|| async {
            let socket = tokio::net::UdpSocket::bind("0.0.0.0:0")
                .await
                .expect("bind");
            for dst in dsts {
                socket.send_to(b"x", dst).await.expect("send");
            }
            socket.local_addr().expect("addr").port()
        })
        .expect("enter a")
}

/// UDP entries of a router's conntrack table as (original source port,
/// mapped port: the reply's destination port).
fn conntrack_udp(lab: &Lab, router: &str) -> Vec<(u16, u16)> {
    let out = lab
        .host(router)
        .exec("conntrack", &["-L", "-p", "udp"], TOOL_LIMIT)
        .expect("conntrack -L");
    out.stdout
        .lines()
        .filter_map(|line| {
            let field = |key: &str, last: bool| {
                let mut values = line.split_whitespace().filter_map(|w| w.strip_prefix(key));
                let v = if last {
                    values.next_back()
                } else {
                    values.next()
                };
                v.and_then(|v| v.parse::<u16>().ok())
            };
            Some((field("sport=", false)?, field("dport=", true)?))
        })
        .collect()
}

fn check_kind(kind: NatKind, stun_says: &str, natdiscovery: &[&str], expect: &[&str]) {
    let mut lab = Lab::up(
        &LabSpec::default()
            .nat(Side::A, kind)
            .service(Service::CoturnStun),
    )
    .expect("lab");
    println!("{kind}: lab up in {:?}", lab.up_time());

    let stun = lab
        .host("a")
        .exec_unchecked("stun", &[&STUN_V4.to_string()], TOOL_LIMIT)
        .expect("stun client runs");
    assert!(
        stun.stdout.contains(stun_says),
        "{kind}: stun said\n{}",
        stun.stdout
    );

    if !natdiscovery.is_empty() {
        let mut args = natdiscovery.to_vec();
        let server = STUN_V4.to_string();
        args.push(&server);
        let out = lab
            .host("a")
            .exec_unchecked("turnutils_natdiscovery", &args, TOOL_LIMIT)
            .expect("natdiscovery runs");
        let text = format!("{}{}", out.stdout, out.stderr);
        for line in expect {
            assert!(
                text.contains(&format!("NAT with {line}!")),
                "{kind}: expected {line} in\n{text}"
            );
        }
    }

    check_unsolicited_syns(&mut lab, kind);
}

/// From the public peer, SYNs to side A's public address, to host `a`'s
/// IPv4 and IPv6 addresses: a plain router lets the host refuse them (RST);
/// every other kind drops them silently, so they time out.
fn check_unsolicited_syns(lab: &mut Lab, kind: NatKind) {
    let targets: [IpAddr; 3] = [
        Side::A.internet_v4().into(),
        Side::A.lan_v4(2).into(),
        Side::A.lan_v6(2).into(),
    ];
    let peer = lab.host("peer");
    let results: Vec<(IpAddr, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = targets
            .iter()
            .map(|ip| {
                scope.spawn(move || {
                    let out = peer
                        .exec_unchecked(
                            "nc",
                            &["-z", "-v", "-w", "1", &ip.to_string(), "80"],
                            TOOL_LIMIT,
                        )
                        .expect("nc runs");
                    (*ip, out.stderr)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("nc thread"))
            .collect()
    });
    for (ip, said) in results {
        if kind == NatKind::None {
            // A plain router forwards the SYN to the host, and answers for
            // its own address like any host: with a RST either way.
            assert!(
                said.contains("refused"),
                "{kind}: SYN to {ip} should be refused: {said}"
            );
        } else {
            assert!(
                said.contains("timed out"),
                "{kind}: SYN to {ip} must be dropped silently: {said}"
            );
        }
    }
}
