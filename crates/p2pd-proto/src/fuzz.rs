//! Bodies of the fuzz targets in `fuzz/`, here so the test suite replays the
//! committed corpus and property tests on stable Rust (cargo fuzz needs
//! nightly). Each panics on a bug and returns normally otherwise.

use crate::addr::PeerAddr;
use crate::handshake::record::Opener;
use crate::handshake::{Greeting, Hello, Initiator, ReplayGuard, Responder, classify};
use crate::signal::{Identity, Inbox};
use crate::stun::Attribute;
use crate::stun::message::{Message, check_integrity, frame_len};
use crate::stun::server::{self, ServerAddresses, Transport};

/// STUN decoding: never panics; whatever decodes re-encodes to a message
/// that decodes to the same value (a FINGERPRINT is recomputed, since
/// padding bytes it covered need not survive).
pub fn stun_message(data: &[u8]) {
    let _ = frame_len(data);
    let _ = check_integrity(data, b"key");
    let Ok(mut message) = Message::decode(data) else {
        return;
    };
    message
        .attributes
        .retain(|a| !matches!(a, Attribute::Fingerprint(_)));
    let again = Message::decode(&message.encode()).expect("a decoded message re-encodes validly");
    assert_eq!(again, message);
}

/// The STUN server's answer to any bytes: never panics, and every answer
/// decodes.
pub fn stun_server(data: &[u8]) {
    let addrs = ServerAddresses {
        primary: "198.18.0.2:3478".parse().expect("literal"),
        alternate: Some("198.18.0.12:3479".parse().expect("literal")),
    };
    let client = "203.0.113.9:5000".parse().expect("literal");
    for transport in [Transport::Udp, Transport::Tcp] {
        if let Some(reply) = server::respond(&addrs, transport, addrs.primary, client, data) {
            Message::decode(&reply.payload).expect("the server's answers decode");
        }
    }
}

/// Peer address parsing: never panics; what parses prints back to text that
/// parses to the same address.
pub fn peer_addr(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(addr) = text.parse::<PeerAddr>() else {
        return;
    };
    addr.validate()
        .expect("a parsed address is within the limits");
    let again: PeerAddr = addr.to_string().parse().expect("a printed address parses");
    assert_eq!(again, addr);
}

/// Opening signaling envelopes: never panics, and arbitrary bytes never
/// open (they would have to forge the sender's key).
pub fn signal_envelope(data: &[u8]) {
    let mut inbox = Inbox::new(Identity::from_secret([2; 32]), 0);
    assert!(
        inbox.open(1_800_000_000_000, 0, data).is_err(),
        "random bytes opened"
    );
}

/// The handshake on any bytes: classifying them, a responder reading them
/// as a first message, an initiator reading them as the answer, records
/// opened from them. Never panics; a legacy line ends in a newline within
/// the bytes; records that no sealer made never open.
pub fn handshake(data: &[u8]) {
    const NOW: u64 = 1_800_000_000_000;
    let source = std::net::IpAddr::from([198, 18, 0, 7]);
    let me = Identity::from_secret([2; 32]);
    let peer = Identity::from_secret([1; 32]);
    if let Greeting::Legacy { line_len } = classify(data) {
        assert_eq!(data[line_len - 1], b'\n');
    }
    // The bytes as a first message, then as the confirmation of a genuine
    // one.
    if let Ok(mut responder) = Responder::new(&me, true, [4; 32])
        && let Ok(Some(heard)) = responder.read_first(data)
        && ReplayGuard::new()
            .admit(NOW, source, heard.hello.sent_ms, heard.ephemeral)
            .is_ok()
    {
        let _ = responder.answer();
    }
    let hello = Hello {
        encrypt: true,
        sent_ms: NOW,
        token: None,
    };
    let Ok((mut initiator, first)) = Initiator::start(&peer, &me.id(), hello, [3; 32]) else {
        return;
    };
    let _ = initiator.read(data);
    let Ok(mut responder) = Responder::new(&me, true, [4; 32]) else {
        return;
    };
    if !matches!(responder.read_first(&first), Ok(Some(_))) || responder.answer().is_err() {
        return;
    }
    assert!(
        !matches!(responder.confirm(data), Ok(Some(_))),
        "bytes no initiator sealed confirmed a handshake"
    );
    // And as records of an encrypted session.
    let (Ok((mut genuine, first)), Ok(mut responder)) = (
        Initiator::start(&peer, &me.id(), hello, [5; 32]),
        Responder::new(&me, true, [6; 32]),
    ) else {
        return;
    };
    let Ok(Some(_)) = responder.read_first(&first) else {
        return;
    };
    let Ok(reply) = responder.answer() else {
        return;
    };
    let Ok(Some(finished)) = genuine.read(&reply) else {
        return;
    };
    if let Ok(Some(accepted)) = responder.confirm(&finished.confirm)
        && let Some((_, mut opener)) = accepted.session.into_keys()
    {
        let mut out = Vec::new();
        assert!(
            opener_rejects_or_waits(&mut opener, data, &mut out),
            "random bytes opened as a record"
        );
    }
}

/// Whether bytes that no sealer made fail to open (or wait for more).
fn opener_rejects_or_waits(opener: &mut Opener, data: &[u8], out: &mut Vec<u8>) -> bool {
    opener.open(data, out).is_err() || out.is_empty()
}

/// SNTP: any bytes decode or are refused; what decodes re-encodes to the
/// same header; taking them as an answer or as a request never panics,
/// and a server's answer always decodes as one.
pub fn ntp_packet(data: &[u8]) {
    use crate::ntp::{Mode, Packet, Sample, answer};
    if let Ok(packet) = Packet::decode(data) {
        assert_eq!(&packet.encode()[..], &data[..crate::ntp::packet::LEN]);
        let from = std::net::SocketAddr::from(([127, 0, 0, 1], 123));
        let _ = Sample::from_answer(from, packet.origin.0, 0, data, i128::from(u64::MAX));
        let _ = Sample::from_answer(from, packet.origin.0, i128::MIN / 4, data, i128::MAX / 4);
    }
    if let Some(reply) = answer(data, 1_796_515_200_000_000_000) {
        let reply = Packet::decode(&reply).expect("an answer decodes");
        assert_eq!(reply.mode, Mode::Server);
    }
}

/// TURN: the server's datagrams (STUN answers, Data indications,
/// ChannelData) fed to an allocated client with one bound channel, and the
/// stream framing: never panics, the allocation survives whatever a
/// stranger sends, and peer data only comes from the bound channel or a
/// Data indication.
pub fn turn_input(data: &[u8]) {
    use crate::stun::message::Integrity;
    use crate::stun::{Class, Message};
    use crate::turn::channel;
    use crate::turn::client::long_term_key;
    use crate::turn::{Client, ClientConfig, Event, Family, Input};
    use std::time::{Duration, Instant};

    let _ = channel::frame_len(data);
    let _ = channel::decode(data);
    let server = "198.18.0.6:3478".parse().expect("literal");
    let relayed = "198.18.0.6:49152".parse().expect("literal");
    let peer = "198.18.0.6:50000".parse().expect("literal");
    let now = Instant::now();
    let config = ClientConfig {
        server,
        stream: false,
        username: "u".into(),
        password: "p".into(),
        realm: String::new(),
        family: Family::V4,
        lifetime: Duration::from_secs(600),
        timeout: Duration::from_secs(1),
        refresh_every: None,
    };
    let mut client = Client::new(now, config, 1);
    let key = long_term_key("u", "r", "p");
    // Challenge, allocation, channel: each request answered as a server would.
    let answer = |client: &mut Client, class: Class, attrs: Vec<Attribute>, sign: bool| {
        let request = client.poll_transmit().expect("a request is queued");
        let request = Message::decode(&request.payload).expect("requests decode");
        let mut reply = Message::response_to(&request, class);
        reply.attributes = attrs;
        let bytes = if sign {
            reply.encode_signed(Some(Integrity::Sha1(&key)), false)
        } else {
            reply.encode()
        };
        assert_eq!(client.handle_input(now, &bytes), Input::Control);
    };
    let challenge = vec![
        Attribute::ErrorCode {
            code: 401,
            reason: String::new(),
        },
        Attribute::Realm("r".into()),
        Attribute::Nonce("n".into()),
    ];
    answer(&mut client, Class::Error, challenge, false);
    answer(
        &mut client,
        Class::Success,
        vec![Attribute::XorRelayedAddress(relayed)],
        true,
    );
    let number = client.bind_channel(now, peer).expect("allocated");
    answer(&mut client, Class::Success, Vec::new(), true);
    while client.poll_event().is_some() {}
    if let Input::Peer { peer: from, .. } = client.handle_input(now, data) {
        let from_channel = channel::decode(data).is_ok_and(|d| d.channel == number);
        assert!(from_channel || !channel::is_channel_data(data), "{from}");
    }
    client.handle_timeout(now);
    assert!(
        !std::iter::from_fn(|| client.poll_event()).any(|e| matches!(e, Event::Failed(_))),
        "a stranger's bytes ended the allocation"
    );
    assert_eq!(client.relayed(), Some(relayed));
}

/// Port mapping: a gateway's answer in either format decodes or is
/// refused, and what decodes (requests too) re-encodes to the same value;
/// a client of each protocol, asking or mapped, takes the bytes without
/// panicking, ignores them from a stranger, and keeps a granted mapping
/// whatever the gateway says (only time or an unreachable port lose it).
pub fn portmap_response(data: &[u8]) {
    use crate::portmap::{Client, ClientConfig, Event, Protocol, Transport, natpmp, pcp};
    use std::time::{Duration, Instant};

    if let Ok(response) = natpmp::Response::decode(data) {
        assert_eq!(natpmp::Response::decode(&response.encode()), Ok(response));
    }
    if let Ok(response) = pcp::Response::decode(data) {
        assert_eq!(pcp::Response::decode(&response.encode()), Ok(response));
    }
    if let Ok(request) = natpmp::Request::decode(data) {
        assert_eq!(natpmp::Request::decode(&request.encode()), Ok(request));
    }
    if let Ok(request) = pcp::Request::decode(data) {
        assert_eq!(pcp::Request::decode(&request.encode()), Ok(request));
    }
    let gateway = "192.168.1.1:5351".parse().expect("literal");
    let stranger = "192.168.1.9:5351".parse().expect("literal");
    let external = std::net::Ipv4Addr::new(198, 18, 0, 7);
    let now = Instant::now();
    let grant = |protocol: Protocol| -> Vec<Vec<u8>> {
        match protocol {
            Protocol::NatPmp => vec![
                natpmp::Response {
                    result: natpmp::ResultCode::Success,
                    epoch: 1000,
                    body: natpmp::Body::ExternalAddress(external),
                }
                .encode(),
                natpmp::Response {
                    result: natpmp::ResultCode::Success,
                    epoch: 1000,
                    body: natpmp::Body::Map(natpmp::Mapping {
                        transport: Transport::Udp,
                        internal_port: 4433,
                        external_port: 4433,
                        lifetime: 7200,
                    }),
                }
                .encode(),
            ],
            Protocol::Pcp => vec![
                pcp::Response {
                    result: pcp::ResultCode::Success,
                    lifetime: 7200,
                    epoch: 1000,
                    map: Some(pcp::Map {
                        nonce: [7; 12],
                        transport: Transport::Udp,
                        internal_port: 4433,
                        external_port: 4433,
                        external_ip: external.into(),
                    }),
                }
                .encode(),
            ],
        }
    };
    for protocol in [Protocol::NatPmp, Protocol::Pcp] {
        for granted in [false, true] {
            let config = ClientConfig {
                protocol,
                gateway,
                internal: "192.168.1.20:4433".parse().expect("literal"),
                transport: Transport::Udp,
                lifetime: Duration::from_secs(7200),
                tries: 4,
                nonce: [7; 12],
            };
            let mut client = Client::new(now, config);
            if granted {
                for answer in grant(protocol) {
                    client.handle_datagram(now, gateway, &answer);
                }
                assert!(client.mapped().is_some(), "the grant was not taken");
            }
            while client.poll_transmit().is_some() {}
            while client.poll_event().is_some() {}
            let timeout = client.poll_timeout();
            client.handle_datagram(now, stranger, data);
            assert!(matches!(client.poll_event(), Some(Event::Ignored(_))));
            assert_eq!(client.poll_event(), None);
            assert!(client.poll_transmit().is_none());
            assert_eq!(client.poll_timeout(), timeout);

            let later = now + Duration::from_secs(1);
            client.handle_datagram(later, gateway, data);
            while client.poll_transmit().is_some() {}
            while client.poll_event().is_some() {}
            if granted {
                assert!(client.mapped().is_some(), "an answer dropped the mapping");
            }
            if let Some(at) = client.poll_timeout() {
                client.handle_timeout(at);
            }
            client.close(later);
            client.handle_datagram(later, gateway, data);
            while client.poll_transmit().is_some() {}
            while client.poll_event().is_some() {}
        }
    }
}
