//! A blocking MQTT 3.1.1 client that sends whatever a test tells it, the
//! way a hostile client would (rumqttc's codec, none of its rules).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Connect, Packet, Publish, Subscribe, SubscribeFilter};

/// One raw connection.
pub(crate) struct Raw {
    pub(crate) stream: TcpStream,
    buffer: BytesMut,
}

impl Raw {
    /// Connects over TCP only.
    pub(crate) fn tcp(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        Raw {
            stream,
            buffer: BytesMut::new(),
        }
    }

    /// Connects and completes CONNECT/CONNACK.
    pub(crate) fn connect(port: u16, id: &str, clean: bool) -> Raw {
        let mut raw = Raw::tcp(port);
        let mut connect = Connect::new(id);
        connect.clean_session = clean;
        connect.keep_alive = 60;
        raw.send(&Packet::Connect(connect));
        match raw.read() {
            Some(Packet::ConnAck(ack)) => assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success),
            other => panic!("no CONNACK: {other:?}"),
        }
        raw
    }

    /// Writes one packet.
    pub(crate) fn send(&mut self, packet: &Packet) {
        let mut bytes = BytesMut::new();
        packet.write(&mut bytes, usize::MAX).expect("encode");
        self.stream.write_all(&bytes).expect("write");
    }

    /// Subscribes and returns the SUBACK's codes.
    pub(crate) fn subscribe(
        &mut self,
        filters: &[&str],
        qos: QoS,
    ) -> Vec<rumqttc::SubscribeReasonCode> {
        let filters = filters
            .iter()
            .map(|f| SubscribeFilter::new((*f).into(), qos))
            .collect();
        self.send(&Packet::Subscribe(Subscribe { pkid: 1, filters }));
        match self.read() {
            Some(Packet::SubAck(ack)) => ack.return_codes,
            other => panic!("no SUBACK: {other:?}"),
        }
    }

    /// Publishes (QoS 1 gets packet id 1).
    pub(crate) fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        let mut publish = Publish::new(topic, qos, payload.to_vec());
        publish.retain = retain;
        if qos != QoS::AtMostOnce {
            publish.pkid = 1;
        }
        self.send(&Packet::Publish(publish));
    }

    /// The next packet, or `None` when the connection ends or stays
    /// silent for the read timeout.
    pub(crate) fn read(&mut self) -> Option<Packet> {
        loop {
            match Packet::read(&mut self.buffer, usize::MAX) {
                Ok(packet) => return Some(packet),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(err) => panic!("bad packet from the broker: {err}"),
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next PUBLISH's payload, skipping acknowledgements.
    pub(crate) fn next_message(&mut self) -> Option<Vec<u8>> {
        loop {
            match self.read()? {
                Packet::Publish(publish) => return Some(publish.payload.to_vec()),
                _ => continue,
            }
        }
    }
}
