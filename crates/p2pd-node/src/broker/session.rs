//! One client of the embedded broker as a state machine: MQTT packets in;
//! replies, routing requests and the client's deadline out.
//!
//! The broker keeps nothing a client could make it hold on to: no
//! persistent sessions, no retained messages, no shared subscriptions, and
//! it delivers at QoS 0, so a client that vanishes mid-acknowledgement
//! leaves no state behind.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::mqttbytes::{Protocol, QoS, has_wildcards, valid_filter, valid_topic};
use rumqttc::{
    ConnAck, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, Publish, SubAck,
    SubscribeReasonCode, UnsubAck,
};

/// How long a new connection may take to send CONNECT.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a client may stay silent, whatever keep-alive it asked for
/// (0 included): idle connections are what a stranger would hoard.
pub(crate) const MAX_IDLE: Duration = Duration::from_secs(300);
/// Subscriptions one client may hold, and of them with wildcards (each
/// wildcard filter is matched against every publish).
pub(crate) const MAX_SUBSCRIPTIONS: usize = 64;
const MAX_WILDCARDS: usize = 4;
/// QoS 2 publishes a client may leave unreleased.
const MAX_UNRELEASED: usize = 64;
/// Longest topic or filter accepted, in bytes.
const MAX_TOPIC: usize = 1024;

/// What the driver must do after a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Output {
    /// Send this packet to the client.
    Reply(Packet),
    /// Deliver `payload` to every subscriber of `topic`.
    Route {
        /// Where it was published.
        topic: String,
        /// What was published.
        payload: Bytes,
    },
    /// Add a subscription of this client.
    Subscribe(String),
    /// Remove a subscription of this client.
    Unsubscribe(String),
    /// Close the connection, for the given reason.
    Close(&'static str),
}

/// The state of one client connection.
#[derive(Debug)]
pub(crate) struct Session {
    connected: bool,
    idle: Duration,
    deadline: Instant,
    filters: HashSet<String>,
    /// QoS 2 packet ids received and not yet released: a resent PUBLISH
    /// with one of them is not routed twice.
    unreleased: HashSet<u16>,
    will: Option<(String, Bytes)>,
}

impl Session {
    /// A connection accepted at `now`.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            connected: false,
            idle: CONNECT_TIMEOUT,
            deadline: now + CONNECT_TIMEOUT,
            filters: HashSet::new(),
            unreleased: HashSet::new(),
            will: None,
        }
    }

    /// When the connection is closed unless the client sends something.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The filters this client is subscribed to.
    pub(crate) fn filters(&self) -> impl Iterator<Item = &str> {
        self.filters.iter().map(String::as_str)
    }

    /// What to route when the connection ends: the will, unless the
    /// client said goodbye with DISCONNECT.
    pub(crate) fn take_will(&mut self) -> Option<Output> {
        self.will
            .take()
            .map(|(topic, payload)| Output::Route { topic, payload })
    }

    /// Handles one packet received at `now`.
    pub(crate) fn on_packet(&mut self, now: Instant, packet: Packet) -> Vec<Output> {
        let out = if self.connected {
            self.on_connected(packet)
        } else {
            self.on_connect(packet)
        };
        self.deadline = now + self.idle;
        out
    }

    fn on_connected(&mut self, packet: Packet) -> Vec<Output> {
        match packet {
            Packet::Publish(publish) => self.on_publish(publish),
            Packet::PubRel(release) => {
                self.unreleased.remove(&release.pkid);
                vec![Output::Reply(Packet::PubComp(PubComp::new(release.pkid)))]
            }
            Packet::Subscribe(subscribe) => {
                let mut out = Vec::new();
                let codes = subscribe
                    .filters
                    .into_iter()
                    .map(|filter| {
                        if !self.acceptable_filter(&filter.path) {
                            return SubscribeReasonCode::Failure;
                        }
                        if self.filters.insert(filter.path.clone()) {
                            out.push(Output::Subscribe(filter.path));
                        }
                        SubscribeReasonCode::Success(QoS::AtMostOnce)
                    })
                    .collect();
                out.push(Output::Reply(Packet::SubAck(SubAck::new(
                    subscribe.pkid,
                    codes,
                ))));
                out
            }
            Packet::Unsubscribe(unsubscribe) => {
                let mut out: Vec<Output> = unsubscribe
                    .topics
                    .into_iter()
                    .filter(|topic| self.filters.remove(topic))
                    .map(Output::Unsubscribe)
                    .collect();
                out.push(Output::Reply(Packet::UnsubAck(UnsubAck::new(
                    unsubscribe.pkid,
                ))));
                out
            }
            Packet::PingReq => vec![Output::Reply(Packet::PingResp)],
            Packet::Disconnect => {
                self.will = None;
                vec![Output::Close("client disconnected")]
            }
            // Deliveries are QoS 0, so there is nothing for a client to
            // acknowledge; a stray acknowledgement is harmless.
            Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) => Vec::new(),
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp => vec![Output::Close("protocol violation")],
        }
    }

    fn on_connect(&mut self, packet: Packet) -> Vec<Output> {
        let Packet::Connect(connect) = packet else {
            return vec![Output::Close("first packet is not CONNECT")];
        };
        let refuse = |code| {
            vec![
                Output::Reply(Packet::ConnAck(ConnAck::new(code, false))),
                Output::Close("connection refused"),
            ]
        };
        if connect.protocol != Protocol::V4 {
            return refuse(ConnectReturnCode::RefusedProtocolVersion);
        }
        if connect.client_id.is_empty() && !connect.clean_session {
            return refuse(ConnectReturnCode::BadClientId);
        }
        if let Some(will) = connect.last_will {
            if !acceptable_topic(&will.topic) {
                return vec![Output::Close("invalid will topic")];
            }
            self.will = Some((will.topic, will.message));
        }
        self.connected = true;
        self.idle = match connect.keep_alive {
            0 => MAX_IDLE,
            seconds => (Duration::from_secs(u64::from(seconds)) * 3 / 2).min(MAX_IDLE),
        };
        // No session is ever kept, so none is ever present.
        vec![Output::Reply(Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            false,
        )))]
    }

    fn on_publish(&mut self, publish: Publish) -> Vec<Output> {
        if !acceptable_topic(&publish.topic) {
            return vec![Output::Close("invalid topic")];
        }
        let route = Output::Route {
            topic: publish.topic,
            payload: publish.payload,
        };
        match publish.qos {
            QoS::AtMostOnce => vec![route],
            QoS::AtLeastOnce => vec![
                route,
                Output::Reply(Packet::PubAck(PubAck::new(publish.pkid))),
            ],
            QoS::ExactlyOnce => {
                let reply = Output::Reply(Packet::PubRec(PubRec::new(publish.pkid)));
                if self.unreleased.len() >= MAX_UNRELEASED
                    && !self.unreleased.contains(&publish.pkid)
                {
                    return vec![Output::Close("too many unreleased QoS 2 publishes")];
                }
                if self.unreleased.insert(publish.pkid) {
                    vec![route, reply]
                } else {
                    vec![reply]
                }
            }
        }
    }

    /// Filters this broker can serve: valid, not a `$` topic (`$SYS`,
    /// `$share`: there are none here), and within the per-client limits.
    fn acceptable_filter(&self, filter: &str) -> bool {
        let wildcards = self.filters.iter().filter(|f| has_wildcards(f)).count();
        valid_filter(filter)
            && !filter.starts_with('$')
            && filter.len() <= MAX_TOPIC
            && (self.filters.contains(filter)
                || (self.filters.len() < MAX_SUBSCRIPTIONS
                    && (!has_wildcards(filter) || wildcards < MAX_WILDCARDS)))
    }
}

fn acceptable_topic(topic: &str) -> bool {
    !topic.is_empty() && valid_topic(topic) && !topic.starts_with('$') && topic.len() <= MAX_TOPIC
}

/// The packet that delivers a message to a subscriber.
pub(crate) fn delivery(topic: &str, payload: Bytes) -> Packet {
    let mut publish = Publish::new(topic, QoS::AtMostOnce, Vec::new());
    publish.payload = payload;
    Packet::Publish(publish)
}

#[cfg(test)]
mod tests {
    use rumqttc::mqttbytes::v4::{Connect, LastWill, Subscribe, SubscribeFilter, Unsubscribe};

    use super::*;

    fn connected(now: Instant) -> Session {
        let mut session = Session::new(now);
        let mut connect = Connect::new("c");
        connect.keep_alive = 10;
        let out = session.on_packet(now, Packet::Connect(connect));
        assert_eq!(
            out,
            vec![Output::Reply(Packet::ConnAck(ConnAck::new(
                ConnectReturnCode::Success,
                false
            )))]
        );
        session
    }

    fn subscribe(session: &mut Session, now: Instant, filters: &[&str]) -> Vec<Output> {
        let filters = filters
            .iter()
            .map(|f| SubscribeFilter::new((*f).into(), QoS::AtLeastOnce))
            .collect();
        session.on_packet(now, Packet::Subscribe(Subscribe { pkid: 7, filters }))
    }

    #[test]
    fn the_first_packet_must_be_connect_within_the_timeout() {
        let now = Instant::now();
        let mut session = Session::new(now);
        assert_eq!(session.deadline(), now + CONNECT_TIMEOUT);
        assert_eq!(
            session.on_packet(now, Packet::PingReq),
            vec![Output::Close("first packet is not CONNECT")]
        );
    }

    #[test]
    fn keep_alive_sets_the_deadline_and_zero_is_capped() {
        let now = Instant::now();
        let session = connected(now);
        assert_eq!(session.deadline(), now + Duration::from_secs(15));
        let mut silent = Session::new(now);
        let mut connect = Connect::new("c");
        connect.keep_alive = 0;
        silent.on_packet(now, Packet::Connect(connect));
        assert_eq!(silent.deadline(), now + MAX_IDLE);
    }

    #[test]
    fn mqtt5_and_anonymous_persistent_sessions_are_refused() {
        let now = Instant::now();
        let mut connect = Connect::new("c");
        connect.protocol = Protocol::V5;
        let out = Session::new(now).on_packet(now, Packet::Connect(connect));
        assert_eq!(
            out[0],
            Output::Reply(Packet::ConnAck(ConnAck::new(
                ConnectReturnCode::RefusedProtocolVersion,
                false
            )))
        );
        let mut connect = Connect::new("");
        connect.clean_session = false;
        let out = Session::new(now).on_packet(now, Packet::Connect(connect));
        assert_eq!(
            out[0],
            Output::Reply(Packet::ConnAck(ConnAck::new(
                ConnectReturnCode::BadClientId,
                false
            )))
        );
    }

    #[test]
    fn shared_system_empty_and_invalid_filters_are_refused() {
        let now = Instant::now();
        let mut session = connected(now);
        let out = subscribe(
            &mut session,
            now,
            &["$share/g/t", "$SYS/#", "", "a/#/b", "p2pd/x", "p2pd/x"],
        );
        let wild: Vec<String> = (0..=MAX_WILDCARDS).map(|i| format!("w/{i}/#")).collect();
        let wild: Vec<&str> = wild.iter().map(String::as_str).collect();
        let Some(Output::Reply(Packet::SubAck(ack))) = subscribe(&mut session, now, &wild).pop()
        else {
            panic!("no SUBACK");
        };
        assert_eq!(
            ack.return_codes
                .iter()
                .filter(|c| **c == SubscribeReasonCode::Failure)
                .count(),
            1,
            "wildcard filters are bounded"
        );
        let codes = vec![
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Success(QoS::AtMostOnce),
            SubscribeReasonCode::Success(QoS::AtMostOnce),
        ];
        assert_eq!(
            out,
            vec![
                Output::Subscribe("p2pd/x".into()),
                Output::Reply(Packet::SubAck(SubAck::new(7, codes)))
            ]
        );
    }

    #[test]
    fn subscriptions_per_client_are_bounded() {
        let now = Instant::now();
        let mut session = connected(now);
        let names: Vec<String> = (0..=MAX_SUBSCRIPTIONS).map(|i| format!("t/{i}")).collect();
        let filters: Vec<&str> = names.iter().map(String::as_str).collect();
        let out = subscribe(&mut session, now, &filters);
        let added = out
            .iter()
            .filter(|o| matches!(o, Output::Subscribe(_)))
            .count();
        assert_eq!(added, MAX_SUBSCRIPTIONS);
        let Some(Output::Reply(Packet::SubAck(ack))) = out.last() else {
            panic!("no SUBACK: {out:?}");
        };
        assert_eq!(ack.return_codes.last(), Some(&SubscribeReasonCode::Failure));
        let out = session.on_packet(
            now,
            Packet::Unsubscribe(Unsubscribe {
                pkid: 8,
                topics: vec!["t/0".into(), "never".into()],
            }),
        );
        assert_eq!(
            out,
            vec![
                Output::Unsubscribe("t/0".into()),
                Output::Reply(Packet::UnsubAck(UnsubAck::new(8)))
            ]
        );
    }

    #[test]
    fn publishes_are_routed_once_and_acknowledged_by_qos() {
        let now = Instant::now();
        let mut session = connected(now);
        let route = Output::Route {
            topic: "t".into(),
            payload: Bytes::from_static(b"x"),
        };
        let mut publish = Publish::new("t", QoS::AtLeastOnce, b"x".to_vec());
        publish.pkid = 3;
        assert_eq!(
            session.on_packet(now, Packet::Publish(publish.clone())),
            vec![route.clone(), Output::Reply(Packet::PubAck(PubAck::new(3)))]
        );
        publish.qos = QoS::ExactlyOnce;
        let rec = Output::Reply(Packet::PubRec(PubRec::new(3)));
        assert_eq!(
            session.on_packet(now, Packet::Publish(publish.clone())),
            vec![route.clone(), rec.clone()]
        );
        publish.dup = true;
        assert_eq!(
            session.on_packet(now, Packet::Publish(publish.clone())),
            vec![rec.clone()],
            "a resent QoS 2 publish is not routed again"
        );
        session.on_packet(now, Packet::PubRel(rumqttc::PubRel::new(3)));
        assert_eq!(
            session.on_packet(now, Packet::Publish(publish)),
            vec![route, rec]
        );
        let wild = Publish::new("a/+", QoS::AtMostOnce, b"x".to_vec());
        assert_eq!(
            session.on_packet(now, Packet::Publish(wild)),
            vec![Output::Close("invalid topic")]
        );
    }

    #[test]
    fn the_will_is_routed_unless_the_client_disconnects() {
        let now = Instant::now();
        let mut connect = Connect::new("c");
        connect.last_will = Some(LastWill::new(
            "gone",
            b"bye".to_vec(),
            QoS::AtMostOnce,
            true,
        ));
        let mut session = Session::new(now);
        session.on_packet(now, Packet::Connect(connect.clone()));
        assert_eq!(
            session.take_will(),
            Some(Output::Route {
                topic: "gone".into(),
                payload: Bytes::from_static(b"bye")
            })
        );
        let mut polite = Session::new(now);
        polite.on_packet(now, Packet::Connect(connect));
        polite.on_packet(now, Packet::Disconnect);
        assert_eq!(polite.take_will(), None);
    }

    #[test]
    fn a_second_connect_closes() {
        let now = Instant::now();
        let mut session = connected(now);
        assert_eq!(
            session.on_packet(now, Packet::Connect(Connect::new("again"))),
            vec![Output::Close("protocol violation")]
        );
    }

    proptest::proptest! {
        /// Whatever a client sends, reading and handling it never panics,
        /// and a session never routes before CONNECT.
        #[test]
        fn any_bytes_from_a_client_are_handled_without_panic(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            connect_first in proptest::prelude::any::<bool>(),
        ) {
            let now = Instant::now();
            let mut session = if connect_first { connected(now) } else { Session::new(now) };
            let mut buf = bytes::BytesMut::from(&data[..]);
            while let Ok(packet) = Packet::read(&mut buf, 64 * 1024) {
                let out = session.on_packet(now, packet);
                if !connect_first && !session.connected {
                    let routed = out.iter().any(|o| matches!(o, Output::Route { .. }));
                    proptest::prop_assert!(!routed, "routed before CONNECT");
                }
                if out.iter().any(|o| matches!(o, Output::Close(_))) {
                    break;
                }
            }
        }
    }
}
