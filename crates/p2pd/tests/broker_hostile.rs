//! `p2pd broker` against clients that break the rules: each attack closes
//! at most the attacker's own connection, and genuine clients keep being
//! served during and after it.

mod common;

use std::io::Write;
use std::time::Duration;

use common::mqtt::Raw;
use common::{Running, start_broker};
use rumqttc::SubscribeReasonCode;
use rumqttc::mqttbytes::QoS;

/// A message from a fresh publisher reaches a fresh subscriber, and the
/// broker process is still running.
fn still_routes(broker: &mut Running, port: u16, tag: &str) {
    assert!(
        broker.0.try_wait().expect("status").is_none(),
        "the broker exited ({tag})"
    );
    let topic = format!("p2pd/check-{tag}");
    let mut sub = Raw::connect(port, &format!("sub-{tag}"), true);
    assert_eq!(
        sub.subscribe(&[&topic], QoS::AtLeastOnce),
        vec![SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
    let mut publisher = Raw::connect(port, &format!("pub-{tag}"), true);
    publisher.publish(&topic, QoS::AtLeastOnce, false, tag.as_bytes());
    assert_eq!(sub.next_message().as_deref(), Some(tag.as_bytes()), "{tag}");
}

#[test]
fn a_client_that_vanishes_mid_acknowledgement_leaves_the_broker_serving() {
    let (mut broker, port) = start_broker();
    for round in 0..3 {
        // Persistent session, a shared subscription and a plain one at
        // QoS 1, then gone without PUBACK: what killed rumqttd's router.
        // A topic per round: a late "y" of the round before (its publisher
        // need not wait for PUBACK) never reaches this round's victim.
        let topic = format!("t{round}");
        let shared = format!("$share/g/{topic}");
        let mut victim = Raw::connect(port, "victim-sub", false);
        let codes = victim.subscribe(&[&shared, &topic], QoS::AtLeastOnce);
        assert_eq!(
            codes,
            vec![
                SubscribeReasonCode::Failure,
                SubscribeReasonCode::Success(QoS::AtMostOnce)
            ]
        );
        let mut publisher = Raw::connect(port, "pub", true);
        publisher.publish(&topic, QoS::AtLeastOnce, false, b"x");
        assert_eq!(victim.next_message().as_deref(), Some(&b"x"[..]));
        drop(victim);
        publisher.publish(&topic, QoS::AtLeastOnce, false, b"y");
        still_routes(&mut broker, port, &format!("vanish{round}"));
    }
}

#[test]
fn malformed_oversized_and_out_of_order_packets_close_only_their_sender() {
    let (mut broker, port) = start_broker();
    let mut bystander = Raw::connect(port, "bystander", true);
    bystander.subscribe(&["p2pd/bystander"], QoS::AtLeastOnce);
    let attacks: [(&str, &[u8]); 5] = [
        ("garbage", b"\xff\xff\xff\xff\xff"),
        // A PUBLISH claiming 200 MB follows.
        ("oversized", b"\x30\x80\x80\x80\x60"),
        ("ping before connect", b"\xc0\x00"),
        (
            "protocol level 3",
            b"\x10\x0c\x00\x04MQTT\x03\x02\x00\x3c\x00\x00",
        ),
        ("half a packet then silence", b"\x10\x20\x00\x04MQ"),
    ];
    for (name, bytes) in attacks {
        let mut raw = Raw::tcp(port);
        raw.stream.write_all(bytes).expect("write");
        if name != "half a packet then silence" {
            // Refused with CONNACK or closed; never answered as valid.
            match raw.read() {
                None => {}
                Some(rumqttc::Packet::ConnAck(ack)) => {
                    assert_ne!(ack.code, rumqttc::ConnectReturnCode::Success, "{name}");
                    assert!(raw.read().is_none(), "{name}: still open");
                }
                Some(other) => panic!("{name}: answered {other:?}"),
            }
        }
        still_routes(&mut broker, port, &name.replace(' ', "-"));
    }
    // MQTT 5 is told so, before the connection closes.
    let mut v5 = Raw::tcp(port);
    v5.stream
        .write_all(b"\x10\x0e\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x01c")
        .expect("write");
    match v5.read() {
        Some(rumqttc::Packet::ConnAck(ack)) => {
            assert_eq!(ack.code, rumqttc::ConnectReturnCode::RefusedProtocolVersion)
        }
        other => panic!("MQTT 5 got {other:?}"),
    }
    assert!(v5.read().is_none(), "then closed");
    let mut twice = Raw::connect(port, "twice", true);
    twice.send(&rumqttc::Packet::Connect(
        rumqttc::mqttbytes::v4::Connect::new("twice"),
    ));
    assert!(twice.read().is_none(), "a second CONNECT closes");
    let mut empty = Raw::connect(port, "empty", true);
    assert_eq!(
        empty.subscribe(&[""], QoS::AtLeastOnce),
        vec![SubscribeReasonCode::Failure],
        "an empty filter is refused"
    );
    let mut publisher = Raw::connect(port, "late", true);
    publisher.publish("p2pd/bystander", QoS::AtMostOnce, false, b"still here");
    assert_eq!(
        bystander.next_message().as_deref(),
        Some(&b"still here"[..])
    );
}

#[test]
fn a_subscriber_that_never_reads_does_not_stall_the_others() {
    let (mut broker, port) = start_broker();
    let mut stalled = Raw::connect(port, "stalled", true);
    stalled.subscribe(&["p2pd/flood"], QoS::AtLeastOnce);
    let mut reader = Raw::connect(port, "reader", true);
    reader.subscribe(&["p2pd/flood"], QoS::AtLeastOnce);
    let mut publisher = Raw::connect(port, "flooder", true);
    let payload = vec![7u8; 16 * 1024];
    // 32 MiB toward a subscriber that reads nothing: far beyond what its
    // socket buffers hold. The reading one may lose some too (its queue is
    // bounded) but keeps getting what is published after the flood.
    let (seen, got_last) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        while let Some(message) = reader.next_message() {
            if message == b"last" {
                let _ = seen.send(());
                return;
            }
        }
    });
    for _ in 0..2048 {
        publisher.publish("p2pd/flood", QoS::AtMostOnce, false, &payload);
    }
    let arrived = (0..50).any(|_| {
        publisher.publish("p2pd/flood", QoS::AtMostOnce, false, b"last");
        got_last.recv_timeout(Duration::from_millis(200)).is_ok()
    });
    assert!(arrived, "the reading subscriber was cut off");
    still_routes(&mut broker, port, "after-flood");
    drop(stalled);
}
