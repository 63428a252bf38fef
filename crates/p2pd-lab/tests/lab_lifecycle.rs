//! The lab itself: it comes up quickly with every service working, several
//! labs coexist, and nothing is left behind however a test ends.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use p2pd_lab::netns::{self, Netns};
use p2pd_lab::topology::{BROKER1_V4, BROKER2_V4, NTP_V4, PEER_V4, STUN_V4, TURN_USER, TURN_V4};
use p2pd_lab::{Lab, LabError, LabSpec, NatKind, Service, Side, require_lab};

const TOOL_LIMIT: Duration = Duration::from_secs(20);

fn full_spec() -> LabSpec {
    LabSpec::default()
        .nat(Side::A, NatKind::FullCone)
        .cgnat(Side::A, NatKind::PortRestrictedCone)
        .nat(Side::B, NatKind::SymmetricSequential { delta: 1 })
        .hosts(Side::B, 2)
        .service(Service::CoturnStun)
        .service(Service::Turn)
        .service(Service::Brokers)
        .service(Service::Ntp)
}

#[test]
fn full_lab_comes_up_and_every_service_answers_independent_clients() {
    require_lab!();
    let mut lab = Lab::up(&full_spec()).expect("lab");
    println!(
        "lab with 4 services, CGNAT and 3 LAN hosts up in {} ms",
        lab.up_time().as_millis()
    );

    // STUN (coturn) seen from behind the CGNAT: the mapped address is the
    // CGNAT's, not the home router's.
    let stun = lab
        .host("a")
        .exec("stun", &["-v", &STUN_V4.to_string()], TOOL_LIMIT)
        .map(|o| o.stdout + &o.stderr)
        .unwrap_or_else(|e| match e {
            LabError::Failed { stderr, .. } => stderr,
            other => panic!("{other}"),
        });
    assert!(
        stun.contains(&format!("MappedAddress = {}:", Side::A.internet_v4())),
        "{stun}"
    );

    // MQTT: a retained message published on each broker from side A is read
    // from side B.
    for broker in [BROKER1_V4, BROKER2_V4] {
        let host = broker.to_string();
        lab.host("a")
            .exec(
                "mosquitto_pub",
                &["-h", &host, "-t", "lab/t", "-m", &host, "-r"],
                TOOL_LIMIT,
            )
            .expect("publish");
        let got = lab
            .host("b2")
            .exec(
                "mosquitto_sub",
                &["-h", &host, "-t", "lab/t", "-C", "1", "-W", "5"],
                TOOL_LIMIT,
            )
            .expect("subscribe");
        assert_eq!(got.stdout.trim(), host);
    }

    // NTP: chrony on the ntp host answers a one-shot query.
    let ntp = lab
        .host("b")
        .exec(
            "chronyd",
            &[
                "-Q",
                "-t",
                "5",
                &format!("server {NTP_V4} iburst maxsamples 1"),
            ],
            TOOL_LIMIT,
        )
        .expect("chronyd -Q");
    assert!(
        ntp.stderr.contains("System clock wrong by"),
        "{}",
        ntp.stderr
    );

    // TURN: coturn relays between a client behind the sequential NAT and an
    // echo peer on the internet.
    lab.spawn(
        "turn-peer",
        "peer",
        "turnutils_peer",
        &["-L", &PEER_V4.to_string(), "-p", "3480"],
    )
    .expect("turnutils_peer");
    lab.wait_listening(
        "peer",
        false,
        SocketAddr::new(PEER_V4.into(), 3480),
        TOOL_LIMIT,
    )
    .expect("peer listens");
    let (user, password, _) = TURN_USER;
    let turn = lab
        .host("b")
        .exec(
            "turnutils_uclient",
            &[
                "-u",
                user,
                "-w",
                password,
                "-n",
                "5",
                "-m",
                "1",
                "-c",
                "-e",
                &PEER_V4.to_string(),
                "-r",
                "3480",
                &TURN_V4.to_string(),
            ],
            TOOL_LIMIT,
        )
        .expect("turnutils_uclient");
    let text = turn.stdout + &turn.stderr;
    assert!(text.contains("tot_recv_msgs=5"), "{text}");
}

#[test]
fn lan_hosts_reach_each_other_and_the_internet_over_ipv4_and_ipv6() {
    require_lab!();
    let lab = Lab::up(
        &LabSpec::default()
            .nat(Side::B, NatKind::PortRestrictedCone)
            .hosts(Side::B, 2),
    )
    .expect("lab");
    for (from, to) in [
        ("b", SocketAddr::new(Side::B.lan_v4(3).into(), 7000)),
        ("b", SocketAddr::new(Side::B.lan_v6(3).into(), 7000)),
        ("b", SocketAddr::new(PEER_V4.into(), 7000)),
        (
            "b",
            SocketAddr::new(p2pd_lab::topology::PEER_V6.into(), 7000),
        ),
    ] {
        let server = if to.ip() == std::net::IpAddr::from(PEER_V4)
            || to.ip() == std::net::IpAddr::from(p2pd_lab::topology::PEER_V6)
        {
            "peer"
        } else {
            "b2"
        };
        let listener = lab
            .host(server)
            .block_on(|| async move {
                tokio::net::TcpListener::bind(to)
                    .await
                    .expect("listen")
                    .into_std()
                    .expect("std")
            })
            .expect("enter server");
        lab.host(from)
            .block_on(|| async move {
                tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(to))
                    .await
                    .expect("connect within 5 s")
                    .expect("connect");
            })
            .expect("enter client");
        drop(listener);
    }
}

#[test]
fn two_labs_coexist_with_their_own_kinds() {
    require_lab!();
    let spec = |kind| {
        LabSpec::default()
            .nat(Side::A, kind)
            .service(Service::CoturnStun)
    };
    let first = Lab::up(&spec(NatKind::FullCone)).expect("first lab");
    let second = Lab::up(&spec(NatKind::SymmetricRandom)).expect("second lab");
    for (lab, says) in [
        (&first, "Independent Filter"),
        (&second, "Dependent Mapping"),
    ] {
        let out = lab
            .host("a")
            .exec_unchecked("stun", &[&STUN_V4.to_string()], TOOL_LIMIT)
            .expect("stun");
        assert!(out.stdout.contains(says), "{}", out.stdout);
    }
}

#[test]
fn down_removes_namespaces_processes_and_files_and_can_run_twice() {
    require_lab!();
    let mut lab = Lab::up(&full_spec()).expect("lab");
    let names: Vec<String> = lab.hosts().map(|(_, ns)| ns.name().to_owned()).collect();
    let pids: Vec<String> = lab
        .hosts()
        .flat_map(|(_, ns)| {
            p2pd_lab::run("ip", &["netns", "pids", ns.name()], TOOL_LIMIT)
                .expect("ip netns pids")
                .stdout
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(pids.len() >= 5, "services run: {pids:?}");
    let dir = lab.dir().to_owned();

    lab.down();
    lab.down();

    assert_gone(&names, &pids, &dir);
}

#[test]
fn a_panicking_test_leaves_nothing_behind() {
    require_lab!();
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let lab = Lab::up(&LabSpec::default().service(Service::Brokers)).expect("lab");
        let names: Vec<String> = lab.hosts().map(|(_, ns)| ns.name().to_owned()).collect();
        tx.send((names, lab.dir().to_owned())).expect("send");
        panic!("the test fails here, with the lab up");
    })
    .join();
    assert!(result.is_err());
    let (names, dir) = rx.recv().expect("names");
    assert_gone(&names, &[], &dir);
}

#[test]
fn labs_of_dead_processes_are_cleaned() {
    require_lab!();
    // A pid that no process has: the lab's owner is gone.
    let dead = (4_000_000u32..4_194_304)
        .find(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
        .expect("a free pid");
    let name = format!("{}{}_0-stale", netns::PREFIX, radix36(dead));
    p2pd_lab::run("ip", &["netns", "add", &name], TOOL_LIMIT).expect("add");
    let mine = Netns::new().expect("a live lab's namespace");

    let cleaned = netns::clean_stale().expect("clean");

    assert!(cleaned.contains(&name), "{cleaned:?}");
    assert!(!cleaned.iter().any(|n| n == mine.name()), "live labs stay");
    assert!(!namespaces().contains(&name));
}

#[test]
fn latency_is_added_where_netem_exists() {
    require_lab!();
    let one_way = Duration::from_millis(20);
    let lab = match Lab::up(&LabSpec::default().latency(one_way)) {
        Ok(lab) => lab,
        Err(LabError::NetemUnavailable(why)) => {
            p2pd_lab::report_skip("latency_is_added_where_netem_exists", &why);
            return;
        }
        Err(other) => panic!("{other}"),
    };
    let listener = lab
        .host("peer")
        .block_on(|| async {
            tokio::net::TcpListener::bind((PEER_V4, 7000))
                .await
                .expect("listen")
                .into_std()
                .expect("std")
        })
        .expect("enter peer");
    let rtt = lab
        .host("a")
        .block_on(|| async {
            let started = Instant::now();
            tokio::net::TcpStream::connect((PEER_V4, 7000))
                .await
                .expect("connect");
            started.elapsed()
        })
        .expect("enter a");
    drop(listener);
    println!("handshake with {one_way:?} one-way latency took {rtt:?}");
    assert!(rtt >= one_way * 2, "{rtt:?}");
}

fn assert_gone(names: &[String], pids: &[String], dir: &Path) {
    let left = namespaces();
    for name in names {
        assert!(!left.contains(name), "namespace {name} left behind");
    }
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} left behind"
        );
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
}

fn namespaces() -> Vec<String> {
    p2pd_lab::run("ip", &["netns", "list"], TOOL_LIMIT)
        .expect("ip netns list")
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn radix36(mut n: u32) -> String {
    let mut digits = Vec::new();
    while n > 0 {
        digits.push(char::from_digit(n % 36, 36).expect("digit"));
        n /= 36;
    }
    digits.iter().rev().collect()
}
