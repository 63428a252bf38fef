//! One broker connection: an MQTT 3.1.1 client made for one job, listening
//! on the node's topic and publishing envelopes, on rumqttc's codec.
//!
//! Why not rumqttc's client: it drops the connection on a packet larger
//! than its limit, so anyone could knock a node off a broker by publishing
//! one large message to its topic. This one skips such a packet unread
//! (counted) and stays connected.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Connect, Packet, Publish, Subscribe};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::frame::{Frame, frame};
use super::{Counters, Envelope, Place, set_up};

/// MQTT keep-alive: a PINGREQ when nothing else was sent for this long,
/// and the broker counts as gone when it has not answered by the next.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Connecting, and the broker's CONNACK, may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A write to the broker that takes longer breaks the link.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnect backoff bounds after a broker error.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A link counts as stable, and its backoff is reset, after this long.
const STABLE: Duration = Duration::from_secs(10);
/// Largest packet read: envelopes are small; a larger packet is skipped.
const MAX_PACKET: usize = 64 * 1024;

/// What one broker's task needs.
pub(super) struct Link {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) url: String,
    pub(super) topic: String,
    /// Index of the broker in the list, as envelopes carry it.
    pub(super) via: u8,
    pub(super) up: Arc<watch::Sender<Vec<bool>>>,
    /// Encoded PUBLISH packets to send.
    pub(super) outgoing: mpsc::Receiver<Bytes>,
    pub(super) tx: mpsc::Sender<Envelope>,
    /// This broker's envelopes waiting for the node.
    pub(super) queued: Arc<AtomicUsize>,
    pub(super) counters: Arc<Counters>,
    /// Ends the link (cancelled when signaling closes).
    pub(super) stop: CancellationToken,
}

impl Link {
    /// Connects, subscribes and serves until stopped, reconnecting with
    /// backoff.
    pub(super) async fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        let stop = self.stop.clone();
        loop {
            let started = tokio::time::Instant::now();
            let why = tokio::select! {
                () = stop.cancelled() => break,
                why = self.session() => why,
            };
            set_up(&self.up, usize::from(self.via), false);
            if started.elapsed() >= STABLE {
                backoff = BACKOFF_MIN;
            }
            tracing::debug!(broker = %self.url, why, ?backoff, "broker connection ended");
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One connection, until it fails; returns why.
    async fn session(&mut self) -> &'static str {
        let connected = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((self.host.as_str(), self.port)),
        );
        let stream = match connected.await {
            Ok(Ok(stream)) => stream,
            Ok(Err(_)) => return "cannot connect",
            Err(_) => return "connect timed out",
        };
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = stream.into_split();
        let mut connect = Connect::new(format!("p2pd-{:016x}", rand::random::<u64>()));
        connect.keep_alive = u16::try_from(KEEP_ALIVE.as_secs()).unwrap_or(u16::MAX);
        connect.clean_session = true;
        // Whatever is retained on our topic is cleared before we subscribe
        // (the broker handles the two in order): retained messages are old
        // by definition, and may be built to hurt.
        let clear = Publish {
            retain: true,
            ..Publish::new(self.topic.clone(), QoS::AtMostOnce, Vec::new())
        };
        let subscribe = Subscribe::new(self.topic.clone(), QoS::AtMostOnce);
        let opening = [
            Packet::Connect(connect),
            Packet::Publish(clear),
            Packet::Subscribe(Subscribe {
                pkid: 1,
                ..subscribe
            }),
        ];
        for packet in &opening {
            if send(&mut writer, packet).await.is_err() {
                return "cannot write";
            }
        }
        let mut buf = BytesMut::with_capacity(4096);
        let mut skipping = 0usize;
        let mut answered_ping = true;
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
        let connack_by = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        let mut acknowledged = false;
        loop {
            tokio::select! {
                read = reader.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => return "connection closed",
                    Ok(_) => {}
                },
                out = self.outgoing.recv() => match out {
                    Some(packet) => {
                        if write(&mut writer, &packet).await.is_err() {
                            return "cannot write";
                        }
                        continue;
                    }
                    None => return "signaling closed",
                },
                _ = ping.tick() => {
                    if !answered_ping {
                        return "broker silent";
                    }
                    answered_ping = false;
                    if send(&mut writer, &Packet::PingReq).await.is_err() {
                        return "cannot write";
                    }
                    continue;
                }
                () = tokio::time::sleep_until(connack_by), if !acknowledged => return "no CONNACK",
            }
            loop {
                if skipping > 0 {
                    let n = skipping.min(buf.len());
                    buf.advance(n);
                    skipping -= n;
                    if skipping > 0 {
                        break;
                    }
                }
                match frame(&buf, MAX_PACKET) {
                    Frame::Incomplete => break,
                    Frame::Malformed => return "malformed packet",
                    Frame::Oversized(total) => {
                        // Only publishes carry data; a large one is someone
                        // else's message, skipped unread.
                        self.counters.received.fetch_add(1, Ordering::Relaxed);
                        self.counters.oversized.fetch_add(1, Ordering::Relaxed);
                        skipping = total;
                    }
                    Frame::Packet(_) => match Packet::read(&mut buf, MAX_PACKET) {
                        Ok(Packet::ConnAck(ack)) => {
                            if ack.code != rumqttc::ConnectReturnCode::Success {
                                return "connection refused";
                            }
                            acknowledged = true;
                        }
                        Ok(Packet::SubAck(ack)) => {
                            if ack
                                .return_codes
                                .contains(&rumqttc::SubscribeReasonCode::Failure)
                            {
                                return "subscription refused";
                            }
                            set_up(&self.up, usize::from(self.via), true);
                            tracing::debug!(broker = %self.url, "signaling subscribed");
                        }
                        Ok(Packet::Publish(publish)) => self.on_publish(publish),
                        Ok(Packet::PingResp) => answered_ping = true,
                        Ok(_) => {}
                        Err(_) => return "malformed packet",
                    },
                }
            }
        }
    }

    fn on_publish(&self, publish: Publish) {
        if publish.topic != self.topic {
            return;
        }
        let counters = &self.counters;
        counters.received.fetch_add(1, Ordering::Relaxed);
        let dropped = if publish.retain {
            Some(&counters.retained)
        } else if publish.payload.len() > p2pd_proto::signal::MAX_ENVELOPE {
            Some(&counters.oversized)
        } else {
            let envelope = Place::take(&self.queued).map(|place| Envelope {
                via: self.via,
                bytes: publish.payload.to_vec(),
                _place: place,
            });
            match envelope.map(|e| self.tx.try_send(e)) {
                Some(Ok(())) => None,
                _ => Some(&counters.busy),
            }
        };
        if let Some(counter) = dropped {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The PUBLISH packet that sends `payload` to `topic`.
pub(super) fn encode_publish(topic: &str, payload: &[u8]) -> Option<Bytes> {
    let mut buf = BytesMut::new();
    Packet::Publish(Publish::new(topic, QoS::AtMostOnce, payload.to_vec()))
        .write(&mut buf, MAX_PACKET)
        .ok()?;
    Some(buf.freeze())
}

async fn send(writer: &mut OwnedWriteHalf, packet: &Packet) -> std::io::Result<()> {
    let mut buf = BytesMut::new();
    packet
        .write(&mut buf, usize::MAX)
        .map_err(std::io::Error::other)?;
    write(writer, &buf).await
}

async fn write(writer: &mut OwnedWriteHalf, bytes: &[u8]) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(bytes)).await {
        Ok(written) => written,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}
