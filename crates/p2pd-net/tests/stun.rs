//! The STUN server and client over loopback (127.0.0.1 and 127.0.0.2 make
//! the two IPs RFC 5780 needs).

use std::net::SocketAddr;
use std::time::Duration;

use p2pd_net::bind::{self, BindOptions};
use p2pd_net::stun::client::{Query, query, query_all, query_tcp};
use p2pd_net::stun::discovery::{DiscoveryOptions, discover};
use p2pd_net::stun::{StunError, StunServer};
use p2pd_proto::stun::behavior::{DeltaType, Filtering, NatType};
use p2pd_proto::stun::server::ServerAddresses;
use p2pd_proto::stun::transaction::RetransmitPolicy;
use p2pd_proto::stun::{Attribute, Message};

const POLICY: RetransmitPolicy = RetransmitPolicy {
    rto: Duration::from_millis(100),
    max_sends: 7,
    last_wait: 4,
    deadline: Some(Duration::from_secs(2)),
};

async fn server() -> StunServer {
    // Ports differ per test run; the alternate is the primary + 1.
    for _ in 0..20 {
        let probe =
            bind::udp("127.0.0.1:0".parse().expect("lit"), &BindOptions::default()).expect("probe");
        let port = probe.local_addr().expect("addr").port();
        drop(probe);
        if port == u16::MAX {
            continue;
        }
        let addrs = ServerAddresses {
            primary: SocketAddr::from(([127, 0, 0, 1], port)),
            alternate: Some(SocketAddr::from(([127, 0, 0, 2], port + 1))),
        };
        if let Ok(server) = StunServer::start(addrs).await {
            return server;
        }
    }
    panic!("no free port pair for the STUN server");
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().expect("lit")
}

#[tokio::test]
async fn udp_and_tcp_binding_give_the_mapped_address_and_other_address() {
    let server = server().await;
    let addrs = server.addresses();
    let socket = bind::udp(local(), &BindOptions::default()).expect("bind");

    let (udp, sent) = query(&socket, Query::plain(addrs.primary), POLICY).await;
    let udp = udp.expect("udp answer");
    assert_eq!(udp.mapped, socket.local_addr().expect("addr"));
    assert_eq!(udp.other, addrs.alternate);
    assert_eq!(sent, 1);

    let tcp = query_tcp(local(), addrs.primary, Duration::from_secs(2))
        .await
        .expect("tcp answer");
    assert_eq!(tcp.mapped.ip(), udp.mapped.ip());
    assert_eq!(tcp.other, addrs.alternate);
    assert!(server.answered() >= 2);
    server.stop().await;
}

#[tokio::test]
async fn change_request_is_answered_from_the_other_address() {
    let server = server().await;
    let addrs = server.addresses();
    let alt = addrs.alternate.expect("alternate");
    let socket = bind::udp(local(), &BindOptions::default()).expect("bind");
    let query_both = Query {
        server: addrs.primary,
        change: Some((true, true)),
    };
    let (answer, _) = query(&socket, query_both, POLICY).await;
    assert_eq!(answer.expect("answer").from, alt);
    let query_port = Query {
        server: addrs.primary,
        change: Some((false, true)),
    };
    let (answer, _) = query(&socket, query_port, POLICY).await;
    assert_eq!(
        answer.expect("answer").from,
        SocketAddr::new(addrs.primary.ip(), alt.port())
    );
}

#[tokio::test]
async fn classic_rfc3489_requests_get_classic_answers() {
    let server = server().await;
    let addrs = server.addresses();
    let socket = tokio::net::UdpSocket::bind(local()).await.expect("bind");
    // A classic request: 16-byte transaction id, no magic cookie.
    let mut request = vec![0x00, 0x01, 0x00, 0x00];
    request.extend_from_slice(&[0x42; 16]);
    socket.send_to(&request, addrs.primary).await.expect("send");
    let mut buf = [0u8; 512];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf))
        .await
        .expect("answer in time")
        .expect("recv");
    let answer = Message::decode(&buf[..n]).expect("valid");
    assert!(answer.is_classic());
    assert_eq!(&buf[4..20], &[0x42; 16]);
    assert!(answer.attributes.contains(&Attribute::MappedAddress(
        socket.local_addr().expect("addr")
    )));
    assert!(
        answer
            .attributes
            .contains(&Attribute::ChangedAddress(addrs.alternate.expect("alt")))
    );
}

#[tokio::test]
async fn garbage_is_dropped_and_counted() {
    let server = server().await;
    let socket = tokio::net::UdpSocket::bind(local()).await.expect("bind");
    for junk in [&b""[..], b"\xff\xff", &[0u8; 20], b"GET / HTTP/1.1\r\n\r\n"] {
        socket
            .send_to(junk, server.addresses().primary)
            .await
            .expect("send");
    }
    let (answer, _) = query(
        &bind::udp(local(), &BindOptions::default()).expect("bind"),
        Query::plain(server.addresses().primary),
        POLICY,
    )
    .await;
    answer.expect("still answering");
    assert!(server.dropped() >= 3, "dropped {}", server.dropped());
}

#[tokio::test]
async fn a_dead_server_does_not_delay_the_others_answers() {
    let server = server().await;
    let dead = bind::udp(local(), &BindOptions::default()).expect("a socket nobody answers on");
    let socket = bind::udp(local(), &BindOptions::default()).expect("bind");
    let queries = [
        Query::plain(dead.local_addr().expect("addr")),
        Query::plain(server.addresses().primary),
    ];
    let started = tokio::time::Instant::now();
    let grace = |_rtt: Duration| Duration::from_millis(50);
    let (results, _) = query_all(&socket, &queries, POLICY, Some(&grace)).await;
    assert!(
        matches!(results[0], Err(StunError::Timeout(_))),
        "the dead server is reported"
    );
    assert!(results[1].is_ok());
    assert!(
        started.elapsed() < POLICY.deadline.expect("bounded"),
        "the dead server's full timeout was waited for"
    );
}

#[tokio::test]
async fn discovery_without_nat_finds_an_open_internet() {
    let server = server().await;
    let report = discover(
        "127.0.0.1".parse().expect("lit"),
        0,
        &[server.addresses().primary],
        &DiscoveryOptions::default(),
    )
    .await
    .expect("discovery");
    assert_eq!(report.nat, NatType::Open);
    assert_eq!(report.filtering, Some(Filtering::EndpointIndependent));
    assert_eq!(report.delta.kind, DeltaType::NotApplicable);
    assert_eq!(
        report.external.map(|a| a.ip()),
        Some("127.0.0.1".parse().expect("lit"))
    );
    assert!(report.requests <= 5, "{report:?}");
}

#[tokio::test]
async fn discovery_with_no_server_answering_is_blocked() {
    let dead = bind::udp(local(), &BindOptions::default()).expect("silent socket");
    let options = DiscoveryOptions {
        first_answer: Duration::from_millis(300),
        ..DiscoveryOptions::default()
    };
    let report = discover(
        "127.0.0.1".parse().expect("lit"),
        0,
        &[dead.local_addr().expect("addr")],
        &options,
    )
    .await
    .expect("discovery");
    assert_eq!(report.nat, NatType::Blocked);
    assert_eq!(report.unreachable.len(), 1);
    assert!(report.requests >= 2, "retransmitted: {report:?}");
}

#[tokio::test]
async fn discovery_prefers_a_server_that_supports_rfc5780() {
    let full = server().await;
    let probe =
        bind::udp("127.0.0.3:0".parse().expect("lit"), &BindOptions::default()).expect("probe");
    let port = probe.local_addr().expect("addr").port();
    drop(probe);
    let single = StunServer::start(ServerAddresses {
        primary: SocketAddr::from(([127, 0, 0, 3], port)),
        alternate: None,
    })
    .await
    .expect("single-address server");
    let report = discover(
        "127.0.0.1".parse().expect("lit"),
        0,
        &[single.addresses().primary, full.addresses().primary],
        &DiscoveryOptions::default(),
    )
    .await
    .expect("discovery");
    assert_eq!(report.nat, NatType::Open, "{report:?}");
    assert_eq!(report.filtering, Some(Filtering::EndpointIndependent));
}

/// A STUN server that answers every Binding request with the same made-up
/// mapped address.
async fn lying_server(claims: SocketAddr) -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind(local()).await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let Ok(request) = Message::decode(&buf[..n]) else {
                continue;
            };
            let answer = Message::response_to(&request, p2pd_proto::stun::Class::Success)
                .with(Attribute::XorMappedAddress(claims));
            let _ = socket.send_to(&answer.encode(), from).await;
        }
    });
    addr
}

#[tokio::test]
async fn a_server_that_disagrees_is_reported() {
    let honest = server().await;
    let claims: SocketAddr = "203.0.113.1:1".parse().expect("lit");
    let liar = lying_server(claims).await;
    let report = discover(
        "127.0.0.1".parse().expect("lit"),
        0,
        &[honest.addresses().primary, liar],
        &DiscoveryOptions::default(),
    )
    .await
    .expect("discovery");
    assert_eq!(
        report.external.map(|a| a.ip()),
        Some("127.0.0.1".parse().expect("lit"))
    );
    assert_eq!(report.disagreements, vec![(liar, claims)]);
    assert_eq!(report.nat, NatType::Open, "the RFC 5780 server decides");
}

#[tokio::test]
async fn tcp_behaviour_without_a_nat_is_independent_and_equal() {
    let server = server().await;
    let addrs = server.addresses();
    let report = p2pd_net::stun::tcp_behaviour::discover_tcp(
        "127.0.0.1".parse().expect("lit"),
        addrs.primary,
    )
    .await
    .expect("tcp tests");
    assert_eq!(
        report.mapping,
        Some(p2pd_proto::stun::behavior::Mapping::EndpointIndependent)
    );
    assert_eq!(report.delta.kind, DeltaType::Equal, "{report:?}");
    assert_eq!(
        report.series.len(),
        p2pd_net::stun::tcp_behaviour::DELTA_SAMPLES
    );
    assert!(report.series.iter().all(|(local, mapped)| local == mapped));
    server.stop().await;
}
