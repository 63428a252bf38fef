//! The TURN client against an in-memory server on virtual time.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use p2pd_proto::stun::attribute::code;
use p2pd_proto::stun::message::{Integrity, check_integrity};
use p2pd_proto::stun::{Attribute, Class, Message};
use p2pd_proto::turn::channel;
use p2pd_proto::turn::client::long_term_key;
use p2pd_proto::turn::{
    ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, Client, ClientConfig, DATA, Event, Family, Input,
    REFRESH, SEND, TurnError,
};
use proptest::prelude::*;

const SERVER: &str = "198.18.0.6:3478";
const RELAYED: &str = "198.18.0.6:49152";
const PEER: &str = "198.18.0.6:49999";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal")
}

fn config(password: &str) -> ClientConfig {
    ClientConfig {
        server: addr(SERVER),
        stream: false,
        username: "test".into(),
        password: password.into(),
        realm: String::new(),
        family: Family::V4,
        lifetime: Duration::from_secs(600),
        timeout: Duration::from_secs(3),
        refresh_every: None,
    }
}

/// A server that challenges, checks the key and answers each method.
struct Server {
    nonce: String,
    key: [u8; 16],
    lifetime: u32,
    /// Answer the next signed request with 438 once.
    stale_once: bool,
    /// Drop every request.
    silent: bool,
    requests: Vec<u16>,
    channels: HashMap<u16, SocketAddr>,
    sent: Vec<(SocketAddr, Vec<u8>)>,
}

impl Server {
    fn new() -> Self {
        Self {
            nonce: "n1".into(),
            key: long_term_key("test", "lab", "test"),
            lifetime: 600,
            stale_once: false,
            silent: false,
            requests: Vec::new(),
            channels: HashMap::new(),
            sent: Vec::new(),
        }
    }

    fn answer(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        if self.silent {
            return None;
        }
        if channel::is_channel_data(bytes) {
            let data = channel::decode(bytes).expect("client ChannelData decodes");
            let peer = self.channels[&data.channel];
            self.sent.push((peer, data.payload.to_vec()));
            return None;
        }
        let request = Message::decode(bytes).expect("client messages decode");
        if request.class == Class::Indication {
            assert_eq!(request.method, SEND);
            let peer = request.attributes.iter().find_map(|a| match a {
                Attribute::XorPeerAddress(p) => Some(*p),
                _ => None,
            });
            let data = request.attributes.iter().find_map(|a| match a {
                Attribute::Data(d) => Some(d.clone()),
                _ => None,
            });
            self.sent.push((peer.expect("peer"), data.expect("data")));
            return None;
        }
        self.requests.push(request.method);
        let error = |code: u16, reason: &str, nonce: &str| {
            Message::response_to(&request, Class::Error)
                .with(Attribute::ErrorCode {
                    code,
                    reason: reason.into(),
                })
                .with(Attribute::Realm("lab".into()))
                .with(Attribute::Nonce(nonce.into()))
                .encode()
        };
        if request.get(code::MESSAGE_INTEGRITY).is_none() || !check_integrity(bytes, &self.key) {
            return Some(error(401, "Unauthorized", &self.nonce));
        }
        if self.stale_once {
            self.stale_once = false;
            self.nonce = "n2".into();
            return Some(error(438, "Stale Nonce", &self.nonce));
        }
        let nonce_ok = request
            .attributes
            .iter()
            .any(|a| *a == Attribute::Nonce(self.nonce.clone()));
        assert!(nonce_ok, "the client signs with the current nonce");
        let mut response = Message::response_to(&request, Class::Success);
        match request.method {
            ALLOCATE => {
                response = response
                    .with(Attribute::XorRelayedAddress(addr(RELAYED)))
                    .with(Attribute::XorMappedAddress(addr("203.0.113.7:5000")))
                    .with(Attribute::Lifetime(self.lifetime));
            }
            REFRESH => {
                let asked = request.attributes.iter().find_map(|a| match a {
                    Attribute::Lifetime(l) => Some(*l),
                    _ => None,
                });
                response =
                    response.with(Attribute::Lifetime(asked.unwrap_or(0).min(self.lifetime)));
            }
            CHANNEL_BIND => {
                let number = request.attributes.iter().find_map(|a| match a {
                    Attribute::ChannelNumber(n) => Some(*n),
                    _ => None,
                });
                let peer = request.attributes.iter().find_map(|a| match a {
                    Attribute::XorPeerAddress(p) => Some(*p),
                    _ => None,
                });
                self.channels
                    .insert(number.expect("number"), peer.expect("peer"));
            }
            CREATE_PERMISSION => {}
            other => panic!("unexpected method {other}"),
        }
        Some(response.encode_signed(Some(Integrity::Sha1(&self.key)), false))
    }
}

/// Runs the client and server until nothing is due before `until`.
fn run(client: &mut Client, server: &mut Server, now: &mut Instant, until: Instant) -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        while let Some(transmit) = client.poll_transmit() {
            assert_eq!(transmit.dst, addr(SERVER));
            if let Some(reply) = server.answer(&transmit.payload) {
                assert_eq!(client.handle_input(*now, &reply), Input::Control);
            }
        }
        events.extend(std::iter::from_fn(|| client.poll_event()));
        match client.poll_timeout() {
            Some(at) if at <= until => {
                *now = at.max(*now);
                client.handle_timeout(*now);
            }
            _ => {
                *now = until;
                return events;
            }
        }
    }
}

fn allocated(password: &str, server: &mut Server) -> (Client, Instant) {
    let now = Instant::now();
    let mut client = Client::new(now, config(password), 7);
    let events = run(&mut client, server, &mut now.clone(), now);
    assert!(
        matches!(events[..], [Event::Allocated { relayed, mapped: Some(_), lifetime }]
            if relayed == addr(RELAYED) && lifetime == Duration::from_secs(u64::from(server.lifetime))),
        "{events:?}"
    );
    (client, now)
}

#[test]
fn allocates_after_the_realm_and_nonce_challenge() {
    let mut server = Server::new();
    let (client, _) = allocated("test", &mut server);
    assert_eq!(server.requests, vec![ALLOCATE, ALLOCATE]);
    assert_eq!(client.relayed(), Some(addr(RELAYED)));
}

#[test]
fn a_wrong_password_fails_naming_the_server() {
    let mut server = Server::new();
    let now = Instant::now();
    let mut client = Client::new(now, config("wrong"), 1);
    let events = run(&mut client, &mut server, &mut now.clone(), now);
    let [Event::Failed(err @ TurnError::Unauthorized { .. })] = &events[..] else {
        panic!("{events:?}");
    };
    assert!(err.to_string().contains(SERVER), "{err}");
    assert!(client.is_done());
    assert_eq!(server.requests.len(), 2, "no retry loop on bad credentials");
}

#[test]
fn a_realm_other_than_the_configured_one_is_refused() {
    let mut server = Server::new();
    let now = Instant::now();
    let mut cfg = config("test");
    cfg.realm = "elsewhere".into();
    let mut client = Client::new(now, cfg, 1);
    let events = run(&mut client, &mut server, &mut now.clone(), now);
    assert!(
        matches!(&events[..], [Event::Failed(TurnError::Realm { theirs, .. })] if theirs == "lab"),
        "{events:?}"
    );
}

#[test]
fn a_stale_nonce_is_replaced_and_the_request_sent_again() {
    let mut server = Server::new();
    server.stale_once = true;
    let (_, _) = allocated("test", &mut server);
    assert_eq!(server.requests, vec![ALLOCATE, ALLOCATE, ALLOCATE]);
}

#[test]
fn refreshes_keep_a_short_allocation_alive() {
    let mut server = Server::new();
    server.lifetime = 10;
    let (mut client, mut now) = allocated("test", &mut server);
    let until = now + Duration::from_secs(60);
    let events = run(&mut client, &mut server, &mut now, until);
    let refreshes = events
        .iter()
        .filter(
            |e| matches!(e, Event::Refreshed { lifetime } if *lifetime == Duration::from_secs(10)),
        )
        .count();
    assert!(
        refreshes >= 10,
        "refreshed {refreshes} times in 60 s: {events:?}"
    );
    assert!(
        !events.iter().any(|e| matches!(e, Event::Failed(_))),
        "{events:?}"
    );
    assert_eq!(client.relayed(), Some(addr(RELAYED)));
}

#[test]
fn an_unanswered_refresh_ends_in_expiry() {
    let mut server = Server::new();
    server.lifetime = 10;
    let (mut client, mut now) = allocated("test", &mut server);
    server.silent = true;
    let until = now + Duration::from_secs(30);
    let events = run(&mut client, &mut server, &mut now, until);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Failed(TurnError::Expired { .. }))),
        "{events:?}"
    );
    assert!(client.is_done());
}

#[test]
fn a_silent_server_times_out_after_retransmits() {
    let mut server = Server::new();
    server.silent = true;
    let mut now = Instant::now();
    let start = now;
    let mut client = Client::new(now, config("test"), 3);
    let mut sends = 0;
    let mut events = Vec::new();
    while let Some(at) = client.poll_timeout() {
        sends += std::iter::from_fn(|| client.poll_transmit()).count();
        now = at;
        client.handle_timeout(now);
        events.extend(std::iter::from_fn(|| client.poll_event()));
    }
    assert!(sends >= 3, "retransmitted: {sends}");
    assert!(
        matches!(events[..], [Event::Failed(TurnError::TimedOut { .. })]),
        "{events:?}"
    );
    assert_eq!(now - start, Duration::from_secs(3));
}

#[test]
fn a_bound_channel_carries_data_both_ways() {
    let mut server = Server::new();
    let (mut client, mut now) = allocated("test", &mut server);
    let peer = addr(PEER);
    let number = client.bind_channel(now, peer).expect("allocated");
    let mut out = Vec::new();
    assert!(matches!(
        client.wrap(peer, b"early", &mut out),
        Err(TurnError::NoPermission(_))
    ));
    let events = run(&mut client, &mut server, &mut now.clone(), now);
    assert_eq!(
        events,
        vec![Event::ChannelBound {
            peer,
            channel: number
        }]
    );
    client.wrap(peer, b"hello", &mut out).expect("bound");
    assert_eq!(out.len(), 4 + 5, "ChannelData, unpadded over UDP");
    server.answer(&out);
    assert_eq!(server.sent, vec![(peer, b"hello".to_vec())]);
    let mut back = Vec::new();
    channel::encode(number, b"world", false, &mut back);
    match client.handle_input(now, &back) {
        Input::Peer { peer: from, data } => {
            assert_eq!(from, peer);
            assert_eq!(&data[..], b"world");
        }
        other => panic!("{other:?}"),
    }
    let mut unknown = Vec::new();
    channel::encode(number + 1, b"x", false, &mut unknown);
    assert_eq!(client.handle_input(now, &unknown), Input::Ignored);
    // Rebound before the permission's five minutes are up.
    let before = server.requests.len();
    let until = now + Duration::from_secs(300);
    run(&mut client, &mut server, &mut now, until);
    assert!(
        server.requests[before..].contains(&CHANNEL_BIND),
        "{:?}",
        server.requests
    );
}

#[test]
fn a_permission_carries_send_and_data_indications() {
    let mut server = Server::new();
    let (mut client, now) = allocated("test", &mut server);
    let peer = addr(PEER);
    client.create_permission(now, peer.ip()).expect("allocated");
    let events = run(&mut client, &mut server, &mut now.clone(), now);
    assert_eq!(events, vec![Event::PermissionCreated { peer: peer.ip() }]);
    let mut out = Vec::new();
    client.wrap(peer, b"via send", &mut out).expect("permitted");
    server.answer(&out);
    assert_eq!(server.sent, vec![(peer, b"via send".to_vec())]);
    let data = Message::new(
        Class::Indication,
        DATA,
        p2pd_proto::stun::TransactionId([5; 12]),
    )
    .with(Attribute::XorPeerAddress(peer))
    .with(Attribute::Data(b"via data".to_vec()))
    .encode();
    assert!(
        matches!(client.handle_input(now, &data), Input::Peer { peer: p, data } if p == peer && &data[..] == b"via data")
    );
}

#[test]
fn an_unsigned_success_is_not_taken_for_the_servers() {
    let mut server = Server::new();
    let now = Instant::now();
    let mut client = Client::new(now, config("test"), 9);
    // First the challenge, so the client holds a key.
    let first = client.poll_transmit().expect("allocate");
    let challenge = server.answer(&first.payload).expect("401");
    assert_eq!(client.handle_input(now, &challenge), Input::Control);
    let signed = client.poll_transmit().expect("signed allocate");
    let request = Message::decode(&signed.payload).expect("decodes");
    let forged = Message::response_to(&request, Class::Success)
        .with(Attribute::XorRelayedAddress(addr("192.0.2.66:1")))
        .encode();
    assert_eq!(client.handle_input(now, &forged), Input::Ignored);
    let real = server.answer(&signed.payload).expect("answer");
    assert_eq!(client.handle_input(now, &real), Input::Control);
    let events = run(&mut client, &mut server, &mut now.clone(), now);
    assert!(matches!(events[..], [Event::Allocated { relayed, .. }] if relayed == addr(RELAYED)));
}

#[test]
fn close_deletes_the_allocation() {
    let mut server = Server::new();
    let (mut client, now) = allocated("test", &mut server);
    client.close(now);
    let events = run(&mut client, &mut server, &mut now.clone(), now);
    assert_eq!(events, vec![Event::Closed]);
    assert_eq!(server.requests.last(), Some(&REFRESH));
    assert!(client.is_done());
    assert!(client.bind_channel(now, addr(PEER)).is_err());
}

#[test]
fn ipv6_relays_are_asked_for_by_family() {
    let mut cfg = config("test");
    cfg.family = Family::V6;
    let mut client = Client::new(Instant::now(), cfg, 2);
    let first = client.poll_transmit().expect("allocate");
    let message = Message::decode(&first.payload).expect("decodes");
    assert!(
        message
            .attributes
            .contains(&Attribute::RequestedAddressFamily(2))
    );
    let v6: SocketAddr = "[2001:db8::6]:49152".parse().expect("literal");
    let encoded = Message::new(Class::Success, ALLOCATE, message.transaction)
        .with(Attribute::XorRelayedAddress(v6))
        .encode();
    let decoded = Message::decode(&encoded).expect("decodes");
    assert_eq!(decoded.attributes, vec![Attribute::XorRelayedAddress(v6)]);
    let _: IpAddr = v6.ip();
}

proptest! {
    #[test]
    fn any_bytes_from_the_server_are_survived(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..8)) {
        let mut server = Server::new();
        let (mut client, now) = allocated("test", &mut server);
        for bytes in &chunks {
            let _ = client.handle_input(now, bytes);
        }
        client.handle_timeout(now);
        prop_assert_eq!(client.relayed(), Some(addr(RELAYED)));
    }

    #[test]
    fn turn_attributes_round_trip(port: u16, ip: [u8; 4], lifetime: u32, channel in 0x4000u16..=0x4fff, data in proptest::collection::vec(any::<u8>(), 0..100)) {
        let peer = SocketAddr::from((ip, port));
        let message = Message::new(Class::Request, CHANNEL_BIND, p2pd_proto::stun::TransactionId([3; 12]))
            .with(Attribute::XorPeerAddress(peer))
            .with(Attribute::XorRelayedAddress(peer))
            .with(Attribute::ChannelNumber(channel))
            .with(Attribute::Lifetime(lifetime))
            .with(Attribute::Data(data))
            .with(Attribute::RequestedTransport(17))
            .with(Attribute::RequestedAddressFamily(1));
        prop_assert_eq!(Message::decode(&message.encode()).expect("decodes"), message);
    }
}

proptest! {
    #[test]
    fn the_fuzz_body_holds_on_random_server_bytes(mut bytes in proptest::collection::vec(any::<u8>(), 0..120), shape in 0u8..3) {
        // Steer a third towards ChannelData and a third towards STUN.
        if let Some(first) = bytes.first_mut() {
            match shape {
                0 => *first = 0x40,
                1 => *first &= 0x3f,
                _ => {}
            }
        }
        p2pd_proto::fuzz::turn_input(&bytes);
    }
}

#[test]
fn refresh_every_refreshes_a_long_allocation_often() {
    let mut server = Server::new();
    let mut now = Instant::now();
    let mut cfg = config("test");
    cfg.refresh_every = Some(Duration::from_secs(5));
    let mut client = Client::new(now, cfg, 4);
    let until = now + Duration::from_secs(60);
    let events = run(&mut client, &mut server, &mut now, until);
    let refreshes = events
        .iter()
        .filter(|e| matches!(e, Event::Refreshed { .. }))
        .count();
    assert_eq!(refreshes, 12, "{events:?}");
}
