//! NAT-PMP and PCP: codec round trips, decoding arbitrary bytes, the fuzz
//! corpus replayed on stable, and the port-mapping client against a fake
//! gateway on virtual time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use p2pd_proto::portmap::natpmp::{self, Body, Mapping, Op};
use p2pd_proto::portmap::{
    BadExternal, Client, ClientConfig, Event, GATEWAY_PORT, MapError, Protocol, Refusal, Transport,
    pcp,
};
use proptest::prelude::*;

const GATEWAY: &str = "192.168.1.1:5351";
const INTERNAL: &str = "192.168.1.20:4433";
const NONCE: [u8; 12] = [0x5a; 12];
const EXTERNAL: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 7);

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal")
}

fn config(protocol: Protocol) -> ClientConfig {
    ClientConfig {
        protocol,
        gateway: addr(GATEWAY),
        internal: addr(INTERNAL),
        transport: Transport::Udp,
        lifetime: Duration::from_secs(7200),
        tries: 4,
        nonce: NONCE,
    }
}

/// A gateway that grants what it is asked, from an external address, a
/// port (or the suggested one) and a lifetime cap it is told.
struct Gateway {
    external: IpAddr,
    port: Option<u16>,
    lifetime: u32,
    epoch: u32,
}

impl Gateway {
    fn new() -> Self {
        Self {
            external: EXTERNAL.into(),
            port: None,
            lifetime: 7200,
            epoch: 1000,
        }
    }

    fn answer(&self, protocol: Protocol, request: &[u8]) -> Vec<u8> {
        match protocol {
            Protocol::NatPmp => natpmp_answer(self, request),
            Protocol::Pcp => pcp_answer(self, request),
        }
    }
}

fn natpmp_answer(gateway: &Gateway, request: &[u8]) -> Vec<u8> {
    let body = match natpmp::Request::decode(request).expect("the client's requests decode") {
        natpmp::Request::ExternalAddress => {
            let IpAddr::V4(ip) = gateway.external else {
                panic!("NAT-PMP has IPv4 externals only");
            };
            Body::ExternalAddress(ip)
        }
        natpmp::Request::Map(m) => Body::Map(Mapping {
            external_port: match m.lifetime {
                0 => 0,
                _ => gateway.port.unwrap_or(m.external_port),
            },
            lifetime: m.lifetime.min(gateway.lifetime),
            ..m
        }),
    };
    natpmp::Response {
        result: natpmp::ResultCode::Success,
        epoch: gateway.epoch,
        body,
    }
    .encode()
}

fn pcp_answer(gateway: &Gateway, request: &[u8]) -> Vec<u8> {
    let request = pcp::Request::decode(request).expect("the client's requests decode");
    pcp::Response {
        result: pcp::ResultCode::Success,
        lifetime: request.lifetime.min(gateway.lifetime),
        epoch: gateway.epoch,
        map: Some(pcp::Map {
            external_ip: gateway.external,
            external_port: gateway.port.unwrap_or(request.map.external_port),
            ..request.map
        }),
    }
    .encode()
}

fn transmits(client: &mut Client) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| client.poll_transmit())
        .inspect(|t| assert_eq!(t.dst, addr(GATEWAY)))
        .map(|t| t.payload)
        .collect()
}

fn events(client: &mut Client) -> Vec<Event> {
    std::iter::from_fn(|| client.poll_event()).collect()
}

/// Answers everything the client sends, at `now`; returns the events.
fn exchange(
    client: &mut Client,
    gateway: &Gateway,
    protocol: Protocol,
    now: Instant,
) -> Vec<Event> {
    for request in transmits(client) {
        client.handle_datagram(now, addr(GATEWAY), &gateway.answer(protocol, &request));
    }
    events(client)
}

fn mapped(external: &str, secs: u64) -> Event {
    Event::Mapped {
        external: addr(external),
        lifetime: Duration::from_secs(secs),
    }
}

fn granted(protocol: Protocol, t0: Instant) -> Client {
    let mut client = Client::new(t0, config(protocol));
    let events = exchange(&mut client, &Gateway::new(), protocol, t0);
    assert_eq!(events, [mapped("198.18.0.7:4433", 7200)]);
    client
}

fn failure(client: &mut Client) -> MapError {
    match events(client).as_slice() {
        [Event::Failed(error)] => error.clone(),
        other => panic!("expected one failure, got {other:?}"),
    }
}

// ---- codec properties ----

fn transport() -> impl Strategy<Value = Transport> {
    prop_oneof![Just(Transport::Tcp), Just(Transport::Udp)]
}

/// Any address, as the wire gives it back: IPv4-mapped reads as IPv4.
fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(|b| Ipv6Addr::from(b).to_canonical()),
    ]
}

fn mapping() -> impl Strategy<Value = Mapping> {
    (transport(), any::<u16>(), any::<u16>(), any::<u32>()).prop_map(
        |(transport, internal_port, external_port, lifetime)| Mapping {
            transport,
            internal_port,
            external_port,
            lifetime,
        },
    )
}

fn pcp_map() -> impl Strategy<Value = pcp::Map> {
    (
        any::<[u8; 12]>(),
        transport(),
        any::<u16>(),
        any::<u16>(),
        ip(),
    )
        .prop_map(
            |(nonce, transport, internal_port, external_port, external_ip)| pcp::Map {
                nonce,
                transport,
                internal_port,
                external_port,
                external_ip,
            },
        )
}

fn natpmp_response() -> impl Strategy<Value = natpmp::Response> {
    let op = prop_oneof![Just(Op::ExternalAddress), transport().prop_map(Op::Map)];
    let body = prop_oneof![
        any::<[u8; 4]>().prop_map(|b| Body::ExternalAddress(b.into())),
        mapping().prop_map(Body::Map),
        op.prop_map(Body::Bare),
    ];
    (any::<u16>(), any::<u32>(), body).prop_map(|(code, epoch, body)| natpmp::Response {
        result: code.into(),
        epoch,
        body,
    })
}

fn pcp_response() -> impl Strategy<Value = pcp::Response> {
    (
        any::<u8>(),
        any::<u32>(),
        any::<u32>(),
        proptest::option::of(pcp_map()),
    )
        .prop_map(|(code, lifetime, epoch, map)| pcp::Response {
            result: code.into(),
            lifetime,
            epoch,
            map,
        })
}

/// PCP options: code, reserved, length, data padded to 4.
fn options() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..20)),
        0..4,
    )
    .prop_map(|options| {
        let mut out = Vec::new();
        for (code, data) in options {
            out.extend_from_slice(&[code, 0]);
            out.extend_from_slice(&u16::try_from(data.len()).expect("short").to_be_bytes());
            out.extend_from_slice(&data);
            out.resize(out.len().div_ceil(4) * 4, 0);
        }
        out
    })
}

proptest! {
    #[test]
    fn natpmp_requests_round_trip(
        map in proptest::option::of(mapping()),
    ) {
        let request = map.map_or(natpmp::Request::ExternalAddress, natpmp::Request::Map);
        prop_assert_eq!(natpmp::Request::decode(&request.encode()), Ok(request));
    }

    #[test]
    fn natpmp_responses_round_trip(response in natpmp_response()) {
        let bytes = response.encode();
        prop_assert_eq!(natpmp::Response::decode(&bytes), Ok(response));
        // Neither decoder takes it for the other's.
        prop_assert!(natpmp::Request::decode(&bytes).is_err());
        prop_assert!(pcp::Response::decode(&bytes).is_err());
    }

    #[test]
    fn pcp_requests_round_trip(lifetime in any::<u32>(), client in ip(), map in pcp_map(), options in options()) {
        let request = pcp::Request { lifetime, client, map };
        let mut bytes = request.encode();
        prop_assert_eq!(bytes.len(), 60);
        prop_assert_eq!(pcp::Request::decode(&bytes), Ok(request));
        bytes.extend_from_slice(&options);
        prop_assert_eq!(pcp::Request::decode(&bytes), Ok(request));
    }

    #[test]
    fn pcp_responses_round_trip(response in pcp_response(), options in options()) {
        let mut bytes = response.encode();
        prop_assert_eq!(pcp::Response::decode(&bytes), Ok(response));
        prop_assert!(pcp::Request::decode(&bytes).is_err());
        prop_assert!(natpmp::Response::decode(&bytes).is_err());
        if response.map.is_some() {
            bytes.extend_from_slice(&options);
            prop_assert_eq!(pcp::Response::decode(&bytes), Ok(response));
        }
    }

    #[test]
    fn decoding_and_clients_never_panic_on_arbitrary_bytes(
        data in proptest::collection::vec(any::<u8>(), 0..140),
    ) {
        p2pd_proto::fuzz::portmap_response(&data);
    }

    #[test]
    fn mutated_valid_answers_never_panic(
        response in prop_oneof![
            natpmp_response().prop_map(|r| r.encode()),
            pcp_response().prop_map(|r| r.encode()),
        ],
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in any::<usize>(),
    ) {
        let mut data = response;
        for (at, xor) in flips {
            let len = data.len();
            data[at % len] ^= xor;
        }
        data.truncate(cut % (data.len() + 1));
        p2pd_proto::fuzz::portmap_response(&data);
    }

    #[test]
    fn a_stranger_changes_nothing(
        data in proptest::collection::vec(any::<u8>(), 0..80),
        pcp in any::<bool>(),
    ) {
        let protocol = if pcp { Protocol::Pcp } else { Protocol::NatPmp };
        let t0 = Instant::now();
        let mut client = Client::new(t0, config(protocol));
        let sent = transmits(&mut client).len();
        let from = SocketAddr::new(IpAddr::from([192, 168, 1, 2]), GATEWAY_PORT);
        client.handle_datagram(t0, from, &data);
        prop_assert!(matches!(events(&mut client).as_slice(), [Event::Ignored(_)]));
        prop_assert_eq!(client.poll_timeout(), Some(t0 + Duration::from_millis(250)));
        client.handle_timeout(t0 + Duration::from_millis(250));
        prop_assert_eq!(transmits(&mut client).len(), sent);
    }
}

#[test]
fn committed_fuzz_corpus_replays_cleanly() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/portmap_response");
    let (mut replayed, mut natpmp, mut pcp) = (0, 0, 0);
    for entry in std::fs::read_dir(&dir).expect("the corpus directory exists") {
        let data = std::fs::read(entry.expect("corpus entry").path()).expect("corpus file");
        p2pd_proto::fuzz::portmap_response(&data);
        replayed += 1;
        natpmp += usize::from(natpmp::Response::decode(&data).is_ok());
        pcp += usize::from(pcp::Response::decode(&data).is_ok());
    }
    assert!(replayed > 0, "empty corpus");
    assert!(
        natpmp >= 3 && pcp >= 3,
        "the corpus lacks valid answers: {natpmp} NAT-PMP, {pcp} PCP"
    );
}

// ---- the client ----

#[test]
fn pcp_asks_with_one_map_request_and_maps() {
    let t0 = Instant::now();
    let mut client = Client::new(t0, config(Protocol::Pcp));
    let sent = transmits(&mut client);
    assert_eq!(sent.len(), 1);
    let request = pcp::Request::decode(&sent[0]).expect("valid");
    assert_eq!(
        request,
        pcp::Request {
            lifetime: 7200,
            client: IpAddr::from([192, 168, 1, 20]),
            map: pcp::Map {
                nonce: NONCE,
                transport: Transport::Udp,
                internal_port: 4433,
                external_port: 4433,
                external_ip: Ipv4Addr::UNSPECIFIED.into(),
            },
        }
    );
    // The client IP goes IPv4-mapped, "no preference" as ::ffff:0.0.0.0.
    assert_eq!(
        sent[0][8..24],
        Ipv4Addr::new(192, 168, 1, 20).to_ipv6_mapped().octets()
    );
    assert_eq!(
        sent[0][44..60],
        Ipv4Addr::UNSPECIFIED.to_ipv6_mapped().octets()
    );
    let mut gateway = Gateway::new();
    gateway.port = Some(40000);
    gateway.lifetime = 3600;
    client.handle_datagram(t0, addr(GATEWAY), &gateway.answer(Protocol::Pcp, &sent[0]));
    assert_eq!(events(&mut client), [mapped("198.18.0.7:40000", 3600)]);
    assert_eq!(client.mapped(), Some(addr("198.18.0.7:40000")));
    assert_eq!(client.poll_timeout(), Some(t0 + Duration::from_secs(1800)));
}

#[test]
fn natpmp_sends_both_requests_at_once_and_maps_once_both_answer() {
    let t0 = Instant::now();
    let mut client = Client::new(t0, config(Protocol::NatPmp));
    let sent = transmits(&mut client);
    assert_eq!(
        sent.iter()
            .map(|s| natpmp::Request::decode(s))
            .collect::<Vec<_>>(),
        [
            Ok(natpmp::Request::ExternalAddress),
            Ok(natpmp::Request::Map(Mapping {
                transport: Transport::Udp,
                internal_port: 4433,
                external_port: 4433,
                lifetime: 7200,
            })),
        ]
    );
    let gateway = Gateway::new();
    // The mapping first: nothing until the address is in too.
    client.handle_datagram(
        t0,
        addr(GATEWAY),
        &gateway.answer(Protocol::NatPmp, &sent[1]),
    );
    assert_eq!(events(&mut client), []);
    client.handle_datagram(
        t0,
        addr(GATEWAY),
        &gateway.answer(Protocol::NatPmp, &sent[0]),
    );
    assert_eq!(events(&mut client), [mapped("198.18.0.7:4433", 7200)]);
}

#[test]
fn no_answer_fails_after_exactly_tries_sends_at_3_75_s() {
    for protocol in [Protocol::NatPmp, Protocol::Pcp] {
        let t0 = Instant::now();
        let mut client = Client::new(t0, config(protocol));
        let mut sends = Vec::new();
        let mut now = t0;
        loop {
            for _ in transmits(&mut client) {
                sends.push((now - t0).as_millis());
            }
            if let Some(event) = client.poll_event() {
                let Event::Failed(error) = event else {
                    panic!("{event:?}");
                };
                assert_eq!((now - t0).as_millis(), 3750);
                assert_eq!(
                    error.to_string(),
                    format!("{protocol} at 192.168.1.1:5351: no answer after 4 tries")
                );
                break;
            }
            now = client.poll_timeout().expect("still asking");
            client.handle_timeout(now);
        }
        let per_round = if protocol == Protocol::NatPmp { 2 } else { 1 };
        let expected: Vec<u128> = [0, 250, 750, 1750]
            .into_iter()
            .flat_map(|t| std::iter::repeat_n(t, per_round))
            .collect();
        assert_eq!(sends, expected, "{protocol}");
        assert_eq!(client.poll_timeout(), None);
        assert_eq!(client.mapped(), None);
    }
}

#[test]
fn ignored_datagrams_say_why_and_change_nothing() {
    let t0 = Instant::now();
    let gateway = Gateway::new();
    let mut client = Client::new(t0, config(Protocol::Pcp));
    let sent = transmits(&mut client);
    let good = gateway.answer(Protocol::Pcp, &sent[0]);
    let request = pcp::Request::decode(&sent[0]).expect("valid");
    let with = |map: pcp::Map| {
        pcp::Response {
            result: pcp::ResultCode::Success,
            lifetime: 7200,
            epoch: 1000,
            map: Some(map),
        }
        .encode()
    };
    let cases: [(SocketAddr, Vec<u8>, &str); 7] = [
        (addr("192.168.1.2:5351"), good.clone(), "not the gateway"),
        (addr("192.168.1.1:5350"), good.clone(), "not the gateway"),
        (
            addr(GATEWAY),
            b"garbage!".to_vec(),
            "not a PCP MAP response",
        ),
        (addr(GATEWAY), good[..40].to_vec(), "not a PCP MAP response"),
        (
            addr(GATEWAY),
            with(pcp::Map {
                nonce: [0; 12],
                ..request.map
            }),
            "another nonce",
        ),
        (
            addr(GATEWAY),
            with(pcp::Map {
                transport: Transport::Tcp,
                ..request.map
            }),
            "for TCP, not UDP",
        ),
        (
            addr(GATEWAY),
            with(pcp::Map {
                internal_port: 4434,
                ..request.map
            }),
            "internal port 4434, not 4433",
        ),
    ];
    for (from, bytes, why) in cases {
        client.handle_datagram(t0, from, &bytes);
        match events(&mut client).as_slice() {
            [Event::Ignored(reason)] => assert!(reason.contains(why), "{reason} / {why}"),
            other => panic!("{other:?} for {why}"),
        }
        assert_eq!(client.mapped(), None);
        assert_eq!(transmits(&mut client), Vec::<Vec<u8>>::new());
    }
    assert_eq!(client.poll_timeout(), Some(t0 + Duration::from_millis(250)));
    client.handle_datagram(t0, addr(GATEWAY), &good);
    assert_eq!(events(&mut client), [mapped("198.18.0.7:4433", 7200)]);

    // NAT-PMP: an answer for TCP or for another internal port.
    let mut client = Client::new(t0, config(Protocol::NatPmp));
    let sent = transmits(&mut client);
    let tcp = natpmp::Response {
        result: natpmp::ResultCode::Success,
        epoch: 1000,
        body: Body::Map(Mapping {
            transport: Transport::Tcp,
            internal_port: 4433,
            external_port: 4433,
            lifetime: 7200,
        }),
    };
    let other_port = natpmp::Response {
        body: Body::Map(Mapping {
            transport: Transport::Udp,
            internal_port: 80,
            external_port: 4433,
            lifetime: 7200,
        }),
        ..tcp
    };
    for (bytes, why) in [
        (tcp.encode(), "for TCP, not UDP"),
        (other_port.encode(), "internal port 80, not 4433"),
        (vec![0, 1, 0, 0], "not a NAT-PMP response"),
    ] {
        client.handle_datagram(t0, addr(GATEWAY), &bytes);
        match events(&mut client).as_slice() {
            [Event::Ignored(reason)] => assert!(reason.contains(why), "{reason} / {why}"),
            other => panic!("{other:?} for {why}"),
        }
    }
    for request in sent {
        client.handle_datagram(
            t0,
            addr(GATEWAY),
            &gateway.answer(Protocol::NatPmp, &request),
        );
    }
    assert_eq!(events(&mut client), [mapped("198.18.0.7:4433", 7200)]);
}

#[test]
fn pcp_renews_at_half_life_with_the_nonce_and_the_granted_port_silently() {
    let t0 = Instant::now();
    let mut client = Client::new(t0, config(Protocol::Pcp));
    let mut gateway = Gateway::new();
    gateway.port = Some(5000);
    assert_eq!(
        exchange(&mut client, &gateway, Protocol::Pcp, t0),
        [mapped("198.18.0.7:5000", 7200)]
    );
    let half = t0 + Duration::from_secs(3600);
    assert_eq!(client.poll_timeout(), Some(half));
    client.handle_timeout(half - Duration::from_millis(1));
    assert_eq!(transmits(&mut client), Vec::<Vec<u8>>::new());
    client.handle_timeout(half);
    let sent = transmits(&mut client);
    assert_eq!(sent.len(), 1);
    let renewal = pcp::Request::decode(&sent[0]).expect("valid");
    assert_eq!(renewal.map.nonce, NONCE);
    assert_eq!(renewal.map.external_port, 5000);
    assert_eq!(renewal.map.external_ip, IpAddr::from(EXTERNAL));
    assert_eq!(renewal.lifetime, 7200);
    gateway.epoch += 3600;
    client.handle_datagram(
        half,
        addr(GATEWAY),
        &gateway.answer(Protocol::Pcp, &sent[0]),
    );
    assert_eq!(events(&mut client), [], "an unchanged renewal is silent");
    assert_eq!(
        client.poll_timeout(),
        Some(half + Duration::from_secs(3600))
    );
}

#[test]
fn natpmp_renews_the_address_and_the_mapping() {
    let t0 = Instant::now();
    let mut client = granted(Protocol::NatPmp, t0);
    let half = t0 + Duration::from_secs(3600);
    assert_eq!(client.poll_timeout(), Some(half));
    client.handle_timeout(half);
    let sent = transmits(&mut client);
    assert_eq!(sent.len(), 2);
    assert_eq!(
        natpmp::Request::decode(&sent[0]),
        Ok(natpmp::Request::ExternalAddress)
    );
    // The external address changed meanwhile: mapped again.
    let mut gateway = Gateway::new();
    gateway.external = IpAddr::from([198, 18, 0, 99]);
    gateway.epoch += 3600;
    for request in sent {
        client.handle_datagram(
            half,
            addr(GATEWAY),
            &gateway.answer(Protocol::NatPmp, &request),
        );
    }
    assert_eq!(events(&mut client), [mapped("198.18.0.99:4433", 7200)]);
}

#[test]
fn a_renewal_that_changes_the_external_port_maps_again() {
    for protocol in [Protocol::NatPmp, Protocol::Pcp] {
        let t0 = Instant::now();
        let mut client = granted(protocol, t0);
        let half = t0 + Duration::from_secs(3600);
        client.handle_timeout(half);
        let mut gateway = Gateway::new();
        gateway.port = Some(6000);
        gateway.lifetime = 600;
        gateway.epoch += 3600;
        assert_eq!(
            exchange(&mut client, &gateway, protocol, half),
            [mapped("198.18.0.7:6000", 600)],
            "{protocol}"
        );
        assert_eq!(client.mapped(), Some(addr("198.18.0.7:6000")));
        assert_eq!(client.poll_timeout(), Some(half + Duration::from_secs(300)));
    }
}

#[test]
fn an_epoch_going_backwards_renews_at_once() {
    let t0 = Instant::now();
    let mut client = granted(Protocol::NatPmp, t0);
    let later = t0 + Duration::from_secs(100);
    // An announcement that fits the clock changes nothing.
    let announce = |epoch| {
        natpmp::Response {
            result: natpmp::ResultCode::Success,
            epoch,
            body: Body::ExternalAddress(EXTERNAL),
        }
        .encode()
    };
    client.handle_datagram(later, addr(GATEWAY), &announce(1100));
    assert_eq!(events(&mut client), []);
    assert_eq!(transmits(&mut client), Vec::<Vec<u8>>::new());
    // The gateway rebooted: its epoch starts again.
    client.handle_datagram(later, addr(GATEWAY), &announce(4));
    assert_eq!(events(&mut client), []);
    let sent = transmits(&mut client);
    assert_eq!(sent.len(), 1, "the mapping is asked for at once");
    let Ok(natpmp::Request::Map(renewal)) = natpmp::Request::decode(&sent[0]) else {
        panic!("not a map request");
    };
    assert_eq!(renewal.external_port, 4433);
    let mut gateway = Gateway::new();
    gateway.epoch = 4;
    gateway.port = Some(7000);
    client.handle_datagram(
        later,
        addr(GATEWAY),
        &gateway.answer(Protocol::NatPmp, &sent[0]),
    );
    assert_eq!(events(&mut client), [mapped("198.18.0.7:7000", 7200)]);

    // PCP, while renewing: the answer after a reboot is itself fresh.
    let mut client = granted(Protocol::Pcp, t0);
    let half = t0 + Duration::from_secs(3600);
    client.handle_timeout(half);
    let mut rebooted = Gateway::new();
    rebooted.epoch = 2;
    rebooted.port = Some(7001);
    assert_eq!(
        exchange(&mut client, &rebooted, Protocol::Pcp, half),
        [mapped("198.18.0.7:7001", 7200)]
    );
    assert_eq!(transmits(&mut client), Vec::<Vec<u8>>::new());
}

#[test]
fn unanswered_renewals_lose_the_mapping_at_expiry_then_ask_again_quietly() {
    let t0 = Instant::now();
    let mut client = Client::new(t0, config(Protocol::Pcp));
    let mut gateway = Gateway::new();
    gateway.lifetime = 60;
    assert_eq!(
        exchange(&mut client, &gateway, Protocol::Pcp, t0),
        [mapped("198.18.0.7:4433", 60)]
    );
    let mut sends = Vec::new();
    let mut now;
    let lost = loop {
        now = client.poll_timeout().expect("renewing");
        client.handle_timeout(now);
        if let Some(event) = client.poll_event() {
            break event;
        }
        sends.extend(
            transmits(&mut client)
                .iter()
                .map(|_| (now - t0).as_millis()),
        );
    };
    assert_eq!(
        sends,
        [30_000, 30_250, 30_750, 31_750, 33_750, 37_750, 45_750]
    );
    assert_eq!(now, t0 + Duration::from_secs(60));
    assert_eq!(
        lost,
        Event::Lost(MapError::Expired {
            protocol: Protocol::Pcp,
            gateway: addr(GATEWAY),
        })
    );
    assert_eq!(client.mapped(), None);
    // Asked again from scratch at once, and for as long as it takes.
    let sent = transmits(&mut client);
    assert_eq!(sent.len(), 1);
    let fresh = pcp::Request::decode(&sent[0]).expect("valid");
    assert_eq!(fresh.map.external_ip, IpAddr::from(Ipv4Addr::UNSPECIFIED));
    for _ in 0..30 {
        now = client.poll_timeout().expect("asking again");
        client.handle_timeout(now);
        assert_eq!(
            events(&mut client),
            [],
            "no event while the gateway is silent"
        );
        assert_eq!(transmits(&mut client).len(), 1);
    }
    assert!(now > t0 + Duration::from_secs(600));
    gateway.epoch += u32::try_from((now - t0).as_secs()).expect("short");
    client.handle_datagram(now, addr(GATEWAY), &gateway.answer(Protocol::Pcp, &sent[0]));
    assert_eq!(events(&mut client), [mapped("198.18.0.7:4433", 60)]);
}

#[test]
fn lost_names_the_error_a_renewal_got() {
    let t0 = Instant::now();
    let mut client = granted(Protocol::NatPmp, t0);
    client.handle_timeout(t0 + Duration::from_secs(3600));
    transmits(&mut client);
    let refused = natpmp::Response {
        result: natpmp::ResultCode::OutOfResources,
        epoch: 4600,
        body: Body::Bare(Op::Map(Transport::Udp)),
    };
    client.handle_datagram(
        t0 + Duration::from_secs(3600),
        addr(GATEWAY),
        &refused.encode(),
    );
    assert_eq!(events(&mut client), []);
    assert!(client.mapped().is_some(), "kept until its expiry");
    client.handle_timeout(t0 + Duration::from_secs(7200));
    let lost = events(&mut client);
    assert_eq!(
        lost,
        [Event::Lost(MapError::Refused {
            protocol: Protocol::NatPmp,
            gateway: addr(GATEWAY),
            code: Refusal::NatPmp(natpmp::ResultCode::OutOfResources),
        })]
    );
}

#[test]
fn close_deletes_with_lifetime_0_then_closes() {
    // NAT-PMP, unanswered: two sends, then Closed.
    let t0 = Instant::now();
    let mut client = granted(Protocol::NatPmp, t0);
    let at = t0 + Duration::from_secs(10);
    client.close(at);
    let delete = natpmp::Request::Map(Mapping {
        transport: Transport::Udp,
        internal_port: 4433,
        external_port: 0,
        lifetime: 0,
    });
    assert_eq!(transmits(&mut client), [delete.encode()]);
    assert_eq!(client.mapped(), None);
    client.handle_timeout(client.poll_timeout().expect("closing"));
    assert_eq!(transmits(&mut client), [delete.encode()]);
    assert_eq!(events(&mut client), []);
    let end = client.poll_timeout().expect("closing");
    assert_eq!(end, at + Duration::from_millis(750));
    client.handle_timeout(end);
    assert_eq!(events(&mut client), [Event::Closed]);
    assert_eq!(client.poll_timeout(), None);
    client.close(end);
    assert_eq!(events(&mut client), []);

    // PCP, answered: Closed at once; a late grant is ignored.
    let mut client = granted(Protocol::Pcp, t0);
    client.close(at);
    let sent = transmits(&mut client);
    let request = pcp::Request::decode(&sent[0]).expect("valid");
    assert_eq!(request.lifetime, 0);
    assert_eq!(request.map.nonce, NONCE);
    let late = pcp::Response {
        result: pcp::ResultCode::Success,
        lifetime: 7200,
        epoch: 1010,
        map: Some(pcp::Map {
            external_ip: EXTERNAL.into(),
            external_port: 4433,
            ..request.map
        }),
    };
    client.handle_datagram(at, addr(GATEWAY), &late.encode());
    assert!(matches!(
        events(&mut client).as_slice(),
        [Event::Ignored(_)]
    ));
    let answer = Gateway::new().answer(Protocol::Pcp, &sent[0]);
    client.handle_datagram(at, addr(GATEWAY), &answer);
    assert_eq!(events(&mut client), [Event::Closed]);
    assert_eq!(client.poll_timeout(), None);
}

#[test]
fn unsupported_version_answers_fail_as_unsupported() {
    let t0 = Instant::now();
    // A NAT-PMP-only gateway's answer to PCP (RFC 6886 section 3.5).
    let mut client = Client::new(t0, config(Protocol::Pcp));
    client.handle_datagram(t0, addr(GATEWAY), &[0, 129, 0, 1, 0, 0, 0, 9]);
    let error = failure(&mut client);
    assert!(matches!(error, MapError::Unsupported { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "PCP at 192.168.1.1:5351: unsupported (the gateway speaks NAT-PMP only)"
    );
    assert_eq!(client.poll_timeout(), None);

    // A PCP-only gateway's answer to NAT-PMP.
    let mut client = Client::new(t0, config(Protocol::NatPmp));
    let unsupp = pcp::Response {
        result: pcp::ResultCode::UnsuppVersion,
        lifetime: 0,
        epoch: 9,
        map: None,
    };
    client.handle_datagram(t0, addr(GATEWAY), &unsupp.encode());
    let error = failure(&mut client);
    assert_eq!(
        error.to_string(),
        "NAT-PMP at 192.168.1.1:5351: unsupported (the gateway speaks PCP only)"
    );

    // A PCP server of our version saying UNSUPP_OPCODE.
    let mut client = Client::new(t0, config(Protocol::Pcp));
    let unsupp = pcp::Response {
        result: pcp::ResultCode::UnsuppOpcode,
        ..unsupp
    };
    client.handle_datagram(t0, addr(GATEWAY), &unsupp.encode());
    assert!(matches!(failure(&mut client), MapError::Unsupported { .. }));
}

#[test]
fn refusals_fail_the_first_attempt_with_the_code() {
    let t0 = Instant::now();
    let mut client = Client::new(t0, config(Protocol::Pcp));
    let sent = transmits(&mut client);
    let request = pcp::Request::decode(&sent[0]).expect("valid");
    let refused = pcp::Response {
        result: pcp::ResultCode::NotAuthorized,
        lifetime: 30,
        epoch: 1,
        map: Some(request.map),
    };
    client.handle_datagram(t0, addr(GATEWAY), &refused.encode());
    assert_eq!(
        failure(&mut client).to_string(),
        "PCP at 192.168.1.1:5351: refused (NOT_AUTHORIZED)"
    );
    // Retransmitted answers after the end are ignored.
    client.handle_datagram(t0, addr(GATEWAY), &refused.encode());
    assert!(matches!(
        events(&mut client).as_slice(),
        [Event::Ignored(_)]
    ));

    let mut client = Client::new(t0, config(Protocol::NatPmp));
    let refused = natpmp::Response {
        result: natpmp::ResultCode::NetworkFailure,
        epoch: 1,
        body: Body::ExternalAddress(Ipv4Addr::UNSPECIFIED),
    };
    client.handle_datagram(t0, addr(GATEWAY), &refused.encode());
    assert_eq!(
        failure(&mut client).to_string(),
        "NAT-PMP at 192.168.1.1:5351: refused (NETWORK_FAILURE)"
    );
}

#[test]
fn an_announcement_renews_a_granted_mapping_at_once() {
    for protocol in [Protocol::NatPmp, Protocol::Pcp] {
        let t0 = Instant::now();
        let mut client = granted(protocol, t0);
        assert!(transmits(&mut client).is_empty());
        // Soon after the grant: the stand-in's epoch stands still, which later
        // would read as a restart.
        let later = t0 + Duration::from_secs(1);
        client.handle_announce(later);
        let renewal = transmits(&mut client);
        assert!(!renewal.is_empty(), "{protocol}: asked again at once");
        client.handle_announce(later);
        assert!(transmits(&mut client).is_empty(), "one renewal at a time");
        for request in renewal {
            client.handle_datagram(
                later,
                addr(GATEWAY),
                &Gateway::new().answer(protocol, &request),
            );
        }
        assert!(
            events(&mut client).is_empty(),
            "an unchanged renewal is silent"
        );
        assert_eq!(client.mapped(), Some(addr("198.18.0.7:4433")));
        // A flood of them (anyone can send one) renews once per 10 s.
        client.handle_announce(later + Duration::from_secs(1));
        assert!(transmits(&mut client).is_empty(), "{protocol}: too soon");
        client.handle_announce(later + Duration::from_secs(11));
        assert!(
            !transmits(&mut client).is_empty(),
            "{protocol}: later again"
        );
    }
}

#[test]
fn a_private_or_shared_external_address_fails() {
    for protocol in [Protocol::NatPmp, Protocol::Pcp] {
        for (external, kind) in [
            ("10.0.0.1", "is private: the gateway is behind another NAT"),
            ("100.64.1.2", "carrier-grade NAT"),
            ("0.0.0.0", "unspecified"),
        ] {
            let t0 = Instant::now();
            let mut client = Client::new(t0, config(protocol));
            let mut gateway = Gateway::new();
            gateway.external = external.parse().expect("literal");
            // NAT-PMP fails on the address answer; the mapping's answer
            // after it is ignored.
            let answered = exchange(&mut client, &gateway, protocol, t0);
            let Some(Event::Failed(error)) = answered.first() else {
                panic!("{answered:?}");
            };
            assert!(answered[1..].iter().all(|e| matches!(e, Event::Ignored(_))));
            assert!(matches!(
                error,
                MapError::BadExternal {
                    error: BadExternal::Private(_)
                        | BadExternal::Shared(_)
                        | BadExternal::Unspecified(_),
                    ..
                }
            ));
            let text = error.to_string();
            assert!(
                text.starts_with(&format!(
                    "{protocol} at 192.168.1.1:5351: external address {external} "
                )),
                "{text}"
            );
            assert!(text.contains(kind), "{text}");
            assert_eq!(client.mapped(), None);
            // What the gateway granted meanwhile is deleted.
            assert!(!client.is_done(), "the delete is still to come");
            let deletes = transmits(&mut client);
            let lifetimes: Vec<u32> = deletes
                .iter()
                .map(|bytes| match protocol {
                    Protocol::Pcp => pcp::Request::decode(bytes).expect("PCP").lifetime,
                    Protocol::NatPmp => match natpmp::Request::decode(bytes).expect("NAT-PMP") {
                        natpmp::Request::Map(m) => m.lifetime,
                        other => panic!("{other:?}"),
                    },
                })
                .collect();
            assert_eq!(lifetimes, [0], "{protocol}: one delete");
            client.handle_datagram(t0, addr(GATEWAY), &gateway.answer(protocol, &deletes[0]));
            assert!(events(&mut client).contains(&Event::Closed));
            assert!(client.is_done());
        }
    }
}

#[test]
fn a_grant_of_port_0_or_lifetime_0_fails() {
    let t0 = Instant::now();
    for (port, lifetime, why) in [(0, 7200, "external port 0"), (4433, 0, "lifetime 0")] {
        let mut client = Client::new(t0, config(Protocol::Pcp));
        let sent = transmits(&mut client);
        let request = pcp::Request::decode(&sent[0]).expect("valid");
        let grant = pcp::Response {
            result: pcp::ResultCode::Success,
            lifetime,
            epoch: 1,
            map: Some(pcp::Map {
                external_ip: EXTERNAL.into(),
                external_port: port,
                ..request.map
            }),
        };
        client.handle_datagram(t0, addr(GATEWAY), &grant.encode());
        assert_eq!(
            failure(&mut client).to_string(),
            format!("PCP at 192.168.1.1:5351: a grant with {why}")
        );
    }
}

#[test]
fn lifetimes_over_a_day_are_renewed_within_half_a_day() {
    let t0 = Instant::now();
    let mut gateway = Gateway::new();
    gateway.lifetime = u32::MAX;
    let mut cfg = config(Protocol::Pcp);
    cfg.lifetime = Duration::from_secs(u64::from(u32::MAX) * 2);
    let mut long = Client::new(t0, cfg);
    let sent = transmits(&mut long);
    assert_eq!(
        pcp::Request::decode(&sent[0]).expect("valid").lifetime,
        u32::MAX
    );
    long.handle_datagram(t0, addr(GATEWAY), &gateway.answer(Protocol::Pcp, &sent[0]));
    assert_eq!(events(&mut long), [mapped("198.18.0.7:4433", 86_400)]);
    assert_eq!(long.poll_timeout(), Some(t0 + Duration::from_secs(43_200)));
}
