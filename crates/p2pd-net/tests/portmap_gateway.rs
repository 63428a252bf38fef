//! The PCP and NAT-PMP mappers against stand-in gateways on loopback: a
//! grant, hostile answers (garbage first, a private external IP), a port
//! with no server behind it, and the delete on close.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use p2pd_net::portmap::{MapEvent, Mapper, Protocol, Target};
use p2pd_proto::portmap::{Transport, natpmp, pcp};
use tokio::net::UdpSocket;

/// No test waits longer for an event.
const LIMIT: Duration = Duration::from_secs(10);
/// The external address the stand-ins grant.
const EXTERNAL: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const MAPPED_PORT: u16 = 40_123;

/// What a stand-in answers to one request: any number of datagrams.
type Answer = Box<dyn Fn(&[u8]) -> Vec<Vec<u8>> + Send + Sync>;

/// A gateway on loopback answering with `answer`; it records every request.
async fn gateway(answer: Answer) -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            record.lock().expect("lock").push(buf[..n].to_vec());
            for reply in answer(&buf[..n]) {
                let _ = socket.send_to(&reply, from).await;
            }
        }
    });
    (addr, seen)
}

fn target(gateway: SocketAddr) -> Target {
    Target {
        gateway,
        internal: "127.0.0.1:4000".parse().expect("literal"),
        lifetime: Duration::from_secs(7200),
    }
}

/// A PCP server granting `external` for what it is asked.
fn pcp_granting(external: IpAddr) -> Answer {
    Box::new(move |bytes| {
        let Ok(request) = pcp::Request::decode(bytes) else {
            return Vec::new();
        };
        let map = pcp::Map {
            external_port: MAPPED_PORT,
            external_ip: external,
            ..request.map
        };
        let response = pcp::Response {
            result: pcp::ResultCode::Success,
            lifetime: request.lifetime,
            epoch: 100,
            map: Some(map),
        };
        vec![response.encode()]
    })
}

/// A NAT-PMP gateway granting [`MAPPED_PORT`] on [`EXTERNAL`].
fn natpmp_granting() -> Answer {
    Box::new(|bytes| {
        let body = match natpmp::Request::decode(bytes) {
            Ok(natpmp::Request::ExternalAddress) => natpmp::Body::ExternalAddress(EXTERNAL),
            Ok(natpmp::Request::Map(m)) => natpmp::Body::Map(natpmp::Mapping {
                external_port: MAPPED_PORT,
                ..m
            }),
            Err(_) => return Vec::new(),
        };
        let response = natpmp::Response {
            result: natpmp::ResultCode::Success,
            epoch: 100,
            body,
        };
        vec![response.encode()]
    })
}

async fn next(mapper: &mut Mapper) -> MapEvent {
    tokio::time::timeout(LIMIT, mapper.next())
        .await
        .expect("an event in time")
        .expect("the mapper reports before it ends")
}

#[tokio::test]
async fn pcp_maps_then_deletes_on_close() {
    let (addr, seen) = gateway(pcp_granting(EXTERNAL.into())).await;
    let mut mapper = Mapper::start(Protocol::Pcp, target(addr));
    let MapEvent::Mapped { external, lifetime } = next(&mut mapper).await else {
        panic!("not mapped");
    };
    assert_eq!(external, SocketAddr::new(EXTERNAL.into(), MAPPED_PORT));
    assert_eq!(lifetime, Duration::from_secs(7200));
    mapper.close(Duration::from_secs(2)).await;
    let requests = seen.lock().expect("lock").clone();
    let last = pcp::Request::decode(requests.last().expect("requests")).expect("PCP");
    assert_eq!(last.lifetime, 0, "the last request deletes");
    assert_eq!(last.map.internal_port, 4000);
    assert_eq!(last.map.transport, Transport::Tcp);
}

#[tokio::test]
async fn nat_pmp_maps_the_port_the_gateway_picks_then_deletes_on_close() {
    let (addr, seen) = gateway(natpmp_granting()).await;
    let mut mapper = Mapper::start(Protocol::NatPmp, target(addr));
    assert_eq!(
        next(&mut mapper).await,
        MapEvent::Mapped {
            external: SocketAddr::new(EXTERNAL.into(), MAPPED_PORT),
            lifetime: Duration::from_secs(7200),
        }
    );
    mapper.close(Duration::from_secs(2)).await;
    let requests = seen.lock().expect("lock").clone();
    let last = natpmp::Request::decode(requests.last().expect("requests")).expect("NAT-PMP");
    let natpmp::Request::Map(mapping) = last else {
        panic!("the last request maps: {last:?}");
    };
    assert_eq!(
        (mapping.lifetime, mapping.internal_port),
        (0, 4000),
        "a delete"
    );
}

#[tokio::test]
async fn garbage_before_the_answer_is_survived() {
    let grant = pcp_granting(EXTERNAL.into());
    let hostile: Answer = Box::new(move |bytes| {
        let mut replies = vec![vec![0xff; 3], vec![2, 0x81, 0, 0], vec![0; 2000]];
        replies.extend(grant(bytes));
        replies
    });
    let (addr, _) = gateway(hostile).await;
    let mut mapper = Mapper::start(Protocol::Pcp, target(addr));
    assert!(matches!(next(&mut mapper).await, MapEvent::Mapped { .. }));
}

#[tokio::test]
async fn unusable_external_addresses_are_refused_and_their_grant_deleted() {
    let cases: [(IpAddr, &str); 2] = [
        (IpAddr::from([10, 0, 0, 1]), "private"),
        ("2001:db8::5".parse().expect("literal"), "IPv6"),
    ];
    for (external, reason) in cases {
        let (addr, seen) = gateway(pcp_granting(external)).await;
        let mut mapper = Mapper::start(Protocol::Pcp, target(addr));
        let MapEvent::Failed(why) = next(&mut mapper).await else {
            panic!("{external} was accepted");
        };
        assert!(
            why.contains(&external.to_string()) && why.contains(reason),
            "{why}"
        );
        let ended = tokio::time::timeout(LIMIT, mapper.next()).await;
        assert_eq!(ended, Ok(None), "the mapper ends after the delete");
        let requests = seen.lock().expect("lock").clone();
        let last = pcp::Request::decode(requests.last().expect("requests")).expect("PCP");
        assert_eq!(last.lifetime, 0, "{external}: the grant is deleted");
    }
}

#[tokio::test]
async fn a_port_with_no_server_fails_at_once() {
    // Bound and dropped: nothing listens there, and loopback answers with
    // ICMP port unreachable.
    let closed = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    for protocol in [Protocol::Pcp, Protocol::NatPmp] {
        let started = tokio::time::Instant::now();
        let mut mapper = Mapper::start(protocol, target(closed));
        let MapEvent::Failed(why) = next(&mut mapper).await else {
            panic!("{protocol}: mapped with no gateway");
        };
        println!("{protocol}: failed after {:?}: {why}", started.elapsed());
        assert!(why.contains(&closed.to_string()), "{why}");
        assert!(
            why.contains("unsupported"),
            "an ICMP answer, not time-outs: {why}"
        );
    }
}
