//! A router with port mapping ([`LabSpec::portmap`]: miniupnpd) hands out
//! mappings that work, as seen by clients that are not ours: libnatpmp's
//! `natpmpc`, miniupnpc's `upnpc`, and a minimal PCP MAP request. Each tool's
//! time is printed (past the output capture) to quote beside p2pd's own
//! client; no assertion depends on it.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use p2pd_lab::topology::{NATPMP_PORT, PEER_V4, UPNP_HTTP_PORT};
use p2pd_lab::{Lab, LabError, LabSpec, NatKind, Side, require_lab};

const TOOL_LIMIT: Duration = Duration::from_secs(20);
/// How long a connection through a mapping may take (the lab's RTT is
/// well under a millisecond).
const CONNECT: Duration = Duration::from_secs(2);
/// How long an unmapped port is tried before it counts as closed (the
/// router drops the SYN silently, so only a time-out tells).
const CLOSED: Duration = Duration::from_secs(1);

fn portmap_lab(kind: NatKind) -> Lab {
    let lab = Lab::up(&LabSpec::default().nat(Side::A, kind).portmap(Side::A)).expect("lab");
    report(&format!(
        "{kind} router with miniupnpd: lab up in {} ms",
        lab.up_time().as_millis()
    ));
    lab
}

#[test]
fn natpmpc_maps_a_tcp_port_on_a_port_restricted_cone() {
    require_lab!();
    natpmpc_maps_and_reaches(NatKind::PortRestrictedCone, 40_001);
}

/// On a `kind` router with miniupnpd: `port` is closed from the public peer,
/// natpmpc maps it (same port), and the peer then reaches host a through it.
fn natpmpc_maps_and_reaches(kind: NatKind, port: u16) {
    let lab = portmap_lab(kind);
    let listener = listen(&lab, port);
    let public = SocketAddr::new(Side::A.internet_v4().into(), port);
    assert_closed(&lab, &listener, public);
    let (mapping, took) = natpmpc_map(&lab, port, "tcp");
    report(&format!("{kind}: natpmpc mapping in {took:?}"));
    let mapping = mapping.unwrap_or_else(|out| panic!("{kind}: no mapping:\n{out}"));
    assert_eq!(mapping, public, "{kind}");
    reach(&lab, &listener, mapping).unwrap_or_else(|e| panic!("{kind}: {e}"));
}

#[test]
fn upnpc_discovers_the_router_and_maps_a_tcp_port() {
    require_lab!();
    let lab = portmap_lab(NatKind::PortRestrictedCone);
    let host = Side::A.lan_v4(2).to_string();
    let (first, second) = (40_002, 40_003);
    let listeners = [listen(&lab, first), listen(&lab, second)];
    let public = |port| SocketAddr::new(Side::A.internet_v4().into(), port);
    assert_closed(&lab, &listeners[0], public(first));

    // -i: the router's external address is reserved (198.18.0.0/15), which
    // upnpc otherwise takes for a disconnected IGD.
    let port = first.to_string();
    let started = Instant::now();
    let out = upnpc(&lab, &["-i", "-a", &host, &port, &port, "TCP", "60"]);
    let took = started.elapsed();
    report(&format!("upnpc: discovery and mapping in {took:?}"));
    let mapping = upnpc_mapping(&out).unwrap_or_else(|| panic!("no mapping:\n{out}"));
    assert_eq!(
        mapping,
        (
            public(first),
            SocketAddr::new(host.parse().expect("ip"), first)
        )
    );
    reach(&lab, &listeners[0], public(first)).expect("the mapped port reaches host a");

    // The description URL discovery found, given back: a mapping alone.
    let desc = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("desc: "))
        .unwrap_or_else(|| panic!("no description URL:\n{out}"))
        .to_owned();
    assert_eq!(
        desc,
        format!("http://{}:{UPNP_HTTP_PORT}/rootDesc.xml", Side::A.lan_v4(1))
    );
    let port = second.to_string();
    let started = Instant::now();
    let out = upnpc(
        &lab,
        &["-i", "-u", &desc, "-a", &host, &port, &port, "TCP", "60"],
    );
    let took = started.elapsed();
    report(&format!("upnpc -u (no discovery): mapping in {took:?}"));
    assert!(upnpc_mapping(&out).is_some(), "no mapping:\n{out}");
    reach(&lab, &listeners[1], public(second)).expect("the second mapping reaches host a");
}

#[test]
fn pcp_map_request_gets_a_working_mapping() {
    require_lab!();
    let lab = portmap_lab(NatKind::PortRestrictedCone);
    let port = 40_004;
    let listener = listen(&lab, port);
    let started = Instant::now();
    let mapped = pcp_map(&lab, port).expect("PCP MAP");
    report(&format!(
        "PCP MAP (in-process client): mapping in {:?}",
        started.elapsed()
    ));
    assert_eq!(mapped, SocketAddr::new(Side::A.internet_v4().into(), port));
    reach(&lab, &listener, mapped).expect("the PCP mapping reaches host a");
}

#[test]
fn mappings_work_behind_every_translating_kind() {
    require_lab!();
    for kind in [
        NatKind::FullCone,
        NatKind::RestrictedCone,
        NatKind::SymmetricRandom,
        NatKind::SymmetricSequential { delta: 1 },
    ] {
        natpmpc_maps_and_reaches(kind, 40_005);
    }
}

#[test]
fn a_router_without_portmap_gives_no_mapping() {
    require_lab!();
    let lab = Lab::up(&LabSpec::default().nat(Side::A, NatKind::PortRestrictedCone)).expect("lab");
    let (mapping, took) = natpmpc_map(&lab, 40_006, "tcp");
    report(&format!(
        "natpmpc without NAT-PMP on the router: gave up after {took:?}"
    ));
    if let Ok(mapping) = mapping {
        panic!("a router without miniupnpd mapped {mapping}");
    }
}

#[test]
fn behind_a_filtering_cgnat_miniupnpd_refuses_mappings() {
    require_lab!();
    let started = Instant::now();
    let lab = Lab::up(
        &LabSpec::default()
            .nat(Side::A, NatKind::PortRestrictedCone)
            .cgnat(Side::A, NatKind::PortRestrictedCone)
            .portmap(Side::A),
    )
    .expect("lab");
    report(&format!(
        "miniupnpd behind a CGNAT: lab up in {:?} (its STUN test waits for answers the CGNAT filters)",
        started.elapsed()
    ));
    let (mapping, _) = natpmpc_map(&lab, 40_007, "tcp");
    if let Ok(mapping) = mapping {
        panic!("miniupnpd behind a filtering CGNAT mapped {mapping}");
    }
}

#[test]
fn portmap_on_a_router_that_does_not_translate_is_refused() {
    for kind in [NatKind::None, NatKind::UdpFirewall] {
        let err =
            Lab::up(&LabSpec::default().nat(Side::A, kind).portmap(Side::A)).expect_err("refused");
        assert!(matches!(err, LabError::Unsupported(_)), "{kind}: {err}");
    }
}

/// Prints a line past the test harness's capture, so timings are seen.
fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A TCP listener on host `a`, all addresses, `port`: non-blocking, so
/// accepting can be bounded in time.
fn listen(lab: &Lab, port: u16) -> TcpListener {
    lab.host("a")
        .block_on(|| async move {
            tokio::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
                .await
                .expect("listen")
                .into_std()
                .expect("std listener")
        })
        .expect("enter a")
}

/// Connects from the public peer to `target`, sends a token, and checks it
/// arrives at `listener` on host `a` from the peer's address.
fn reach(lab: &Lab, listener: &TcpListener, target: SocketAddr) -> Result<(), String> {
    let token: [u8; 16] = rand::random();
    lab.host("peer")
        .block_on(|| async move {
            use tokio::io::AsyncWriteExt;
            let mut stream = tokio::time::timeout(CONNECT, tokio::net::TcpStream::connect(target))
                .await
                .map_err(|_| format!("connecting to {target} timed out"))?
                .map_err(|e| format!("connecting to {target}: {e}"))?;
            stream
                .write_all(&token)
                .await
                .map_err(|e| format!("sending to {target}: {e}"))
        })
        .expect("enter peer")?;
    let (mut accepted, from) = accept(listener, CONNECT)?;
    if from.ip() != IpAddr::from(PEER_V4) {
        return Err(format!(
            "host a accepted a connection from {from}, not the peer"
        ));
    }
    accepted
        .set_read_timeout(Some(CONNECT))
        .map_err(|e| e.to_string())?;
    let mut got = [0u8; 16];
    accepted
        .read_exact(&mut got)
        .map_err(|e| format!("reading the token: {e}"))?;
    if got == token {
        Ok(())
    } else {
        Err("host a read another token".into())
    }
}

/// Accepts one connection on a non-blocking listener within `limit`.
fn accept(
    listener: &TcpListener,
    limit: Duration,
) -> Result<(std::net::TcpStream, SocketAddr), String> {
    let deadline = Instant::now() + limit;
    loop {
        match listener.accept() {
            Ok((stream, from)) => {
                stream.set_nonblocking(false).map_err(|e| e.to_string())?;
                return Ok((stream, from));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(format!("host a accepted nothing: {e}")),
        }
    }
}

/// Without a mapping, the peer's connection to `target` goes nowhere.
fn assert_closed(lab: &Lab, listener: &TcpListener, target: SocketAddr) {
    let connected = lab
        .host("peer")
        .block_on(|| async move {
            tokio::time::timeout(CLOSED, tokio::net::TcpStream::connect(target))
                .await
                .is_ok_and(|r| r.is_ok())
        })
        .expect("enter peer");
    assert!(!connected, "{target} is open before any mapping");
    assert!(
        accept(listener, Duration::ZERO).is_err(),
        "host a accepted a connection through no mapping"
    );
}

/// `natpmpc -g <router> -a port port proto 60` on host `a`, within 5 s:
/// the public address and port it reports, or everything it printed; and
/// how long it took.
fn natpmpc_map(lab: &Lab, port: u16, proto: &str) -> (Result<SocketAddr, String>, Duration) {
    let gateway = Side::A.lan_v4(1).to_string();
    let port = port.to_string();
    let started = Instant::now();
    let out = lab
        .host("a")
        .exec_unchecked(
            "timeout",
            &[
                "5", "natpmpc", "-g", &gateway, "-a", &port, &port, proto, "60",
            ],
            TOOL_LIMIT,
        )
        .expect("natpmpc runs");
    let took = started.elapsed();
    let text = format!("{}{}", out.stdout, out.stderr);
    // "Public IP address : 198.18.1.1" and
    // "Mapped public port 40001 protocol TCP to local port 40001 liftime 60".
    let ip = text
        .lines()
        .find_map(|l| l.strip_prefix("Public IP address : "))
        .and_then(|ip| ip.trim().parse::<IpAddr>().ok());
    let mapped = text
        .lines()
        .find_map(|l| l.strip_prefix("Mapped public port "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse::<u16>().ok());
    let mapping = match (ip, mapped) {
        (Some(ip), Some(port)) => Ok(SocketAddr::new(ip, port)),
        _ => Err(text),
    };
    (mapping, took)
}

fn upnpc(lab: &Lab, args: &[&str]) -> String {
    let out = lab
        .host("a")
        .exec_unchecked("upnpc", args, TOOL_LIMIT)
        .expect("upnpc runs");
    format!("{}{}", out.stdout, out.stderr)
}

/// From "external 198.18.1.1:40002 TCP is redirected to internal
/// 192.168.1.2:40002 (duration=60)": the external and internal addresses.
fn upnpc_mapping(out: &str) -> Option<(SocketAddr, SocketAddr)> {
    let line = out
        .lines()
        .find(|l| l.contains("is redirected to internal"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let external = words.get(1)?.parse().ok()?;
    let internal = words.get(7)?.parse().ok()?;
    Some((external, internal))
}

/// A PCP (RFC 6887) MAP request for TCP `port` from host `a` to its router,
/// asking for the same external port: the assigned external address.
fn pcp_map(lab: &Lab, port: u16) -> Result<SocketAddr, String> {
    let client = Side::A.lan_v4(2);
    let server = SocketAddr::new(Side::A.lan_v4(1).into(), NATPMP_PORT);
    let nonce: [u8; 12] = rand::random();
    let mut request = Vec::with_capacity(60);
    request.extend([2, 1, 0, 0]); // version 2, request, opcode MAP
    request.extend(60u32.to_be_bytes()); // lifetime
    request.extend(client.to_ipv6_mapped().octets());
    request.extend(nonce);
    request.extend([6, 0, 0, 0]); // TCP
    request.extend(port.to_be_bytes()); // internal port
    request.extend(port.to_be_bytes()); // suggested external port
    request.extend(Ipv4Addr::UNSPECIFIED.to_ipv6_mapped().octets());
    let response = lab
        .host("a")
        .block_on(|| async move {
            let socket = tokio::net::UdpSocket::bind((client, 0))
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 1100];
            for _ in 0..3 {
                socket
                    .send_to(&request, server)
                    .await
                    .map_err(|e| e.to_string())?;
                let wait = socket.recv_from(&mut buf);
                if let Ok(got) = tokio::time::timeout(Duration::from_millis(500), wait).await {
                    let (n, _) = got.map_err(|e| e.to_string())?;
                    return Ok(buf[..n].to_vec());
                }
            }
            Err("no PCP answer in 3 tries".to_owned())
        })
        .expect("enter a")?;
    if response.len() < 60 || response[0] != 2 || response[1] != 0x81 {
        return Err(format!("not a PCP MAP response: {response:02x?}"));
    }
    if response[3] != 0 {
        return Err(format!("PCP result code {}", response[3]));
    }
    if response[24..36] != nonce {
        return Err("the response has another nonce".into());
    }
    let external_port = u16::from_be_bytes([response[42], response[43]]);
    let octets: [u8; 16] = response[44..60].try_into().map_err(|_| "short")?;
    let ip = std::net::Ipv6Addr::from(octets)
        .to_ipv4_mapped()
        .ok_or("the external address is not IPv4")?;
    Ok(SocketAddr::new(ip.into(), external_port))
}
