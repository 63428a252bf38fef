//! Signaling over MQTT: every configured broker at once.
//!
//! A node subscribes to its own topic (`p2pd/<node id>`) on every broker and
//! re-subscribes after every reconnect (rumqttc forgets subscriptions of a
//! clean session). A message to a peer is published on every broker the
//! peer's address lists, so signaling keeps working while any one of them
//! is up; the receiving [`p2pd_proto::signal::Inbox`] drops the copies by
//! message id. Envelopes are opaque here: sealing and opening are the
//! node's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use p2pd_proto::addr::NodeId;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::servers::BrokerUrl;

/// Envelopes waiting for the node; more are dropped (and counted) so a
/// flood cannot grow memory.
const INBOX_DEPTH: usize = 1024;
/// Requests queued per broker client while it is (re)connecting.
const CLIENT_QUEUE: usize = 64;
/// MQTT keep-alive.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Reconnect backoff bounds after a broker error.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Largest MQTT packet accepted: envelopes are small, but a larger one
/// (dropped unread) must not break the connection, or a retained oversized
/// message would keep the node deaf on that broker.
const MAX_PACKET: usize = 256 * 1024;
/// A link counts as stable, and its reconnect backoff is reset, after
/// staying up this long.
const STABLE: Duration = Duration::from_secs(10);

/// The topic a node listens on.
pub fn topic(id: &NodeId) -> String {
    format!("p2pd/{id}")
}

struct Link {
    url: BrokerUrl,
    client: AsyncClient,
}

/// Connections to every configured broker.
pub struct Signaling {
    links: Vec<Link>,
    /// Which links are subscribed now, by index.
    up: Arc<watch::Sender<Vec<bool>>>,
    stop: CancellationToken,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Signaling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<String> = self.links.iter().map(|l| l.url.to_string()).collect();
        f.debug_struct("Signaling")
            .field("brokers", &urls)
            .finish_non_exhaustive()
    }
}

impl Signaling {
    /// Connects to every broker (in the background) and subscribes to
    /// `me`'s topic. Received envelopes arrive on the returned channel.
    pub fn start(brokers: &[BrokerUrl], me: &NodeId) -> (Signaling, mpsc::Receiver<Vec<u8>>) {
        let (tx, rx) = mpsc::channel(INBOX_DEPTH);
        let stop = CancellationToken::new();
        let dropped = Arc::new(AtomicU64::new(0));
        let up = Arc::new(watch::Sender::new(vec![false; brokers.len()]));
        let mut links = Vec::new();
        for (index, url) in brokers.iter().enumerate() {
            let client_id = format!("p2pd-{:016x}", rand::random::<u64>());
            let mut options = MqttOptions::new(client_id, url.server.host.clone(), url.server.port);
            options
                .set_keep_alive(KEEP_ALIVE)
                .set_clean_session(true)
                .set_max_packet_size(MAX_PACKET, MAX_PACKET);
            let (client, eventloop) = AsyncClient::new(options, CLIENT_QUEUE);
            let driver = Driver {
                client: client.clone(),
                topic: topic(me),
                up: up.clone(),
                index,
                tx: tx.clone(),
                dropped: dropped.clone(),
                stop: stop.clone(),
                url: url.to_string(),
            };
            tokio::spawn(driver.run(eventloop));
            links.push(Link {
                url: url.clone(),
                client,
            });
        }
        (
            Signaling {
                links,
                up,
                stop,
                dropped,
            },
            rx,
        )
    }

    /// Publishes `envelope` to `to`'s topic on each broker of `indexes`
    /// (indexes into the shared broker list); returns on how many it was
    /// queued.
    pub fn publish(&self, to: &NodeId, indexes: &[u8], envelope: &[u8]) -> usize {
        let topic = topic(to);
        let up = self.up.borrow().clone();
        indexes
            .iter()
            .map(|i| usize::from(*i))
            // A link that is down would queue the message until it is
            // stale, and fill the queue the re-subscription needs.
            .filter(|i| up.get(*i).copied().unwrap_or(false))
            .filter_map(|i| self.links.get(i))
            .filter(|link| {
                link.client
                    .try_publish(topic.clone(), QoS::AtLeastOnce, false, envelope.to_vec())
                    .map_err(|err| tracing::debug!(broker = %link.url, %err, "publish not queued"))
                    .is_ok()
            })
            .count()
    }

    /// Indexes of the brokers connected now.
    pub fn connected(&self) -> Vec<u8> {
        self.up
            .borrow()
            .iter()
            .enumerate()
            .filter(|(_, up)| **up)
            .filter_map(|(i, _)| u8::try_from(i).ok())
            .collect()
    }

    /// Waits until a broker is connected, at most `limit`; returns whether
    /// one is.
    ///
    /// Cancel-safe.
    pub async fn wait_connected(&self, limit: Duration) -> bool {
        if self.links.is_empty() {
            return false;
        }
        let mut up = self.up.subscribe();
        let any = up.wait_for(|links| links.iter().any(|l| *l));
        matches!(tokio::time::timeout(limit, any).await, Ok(Ok(_)))
    }

    /// Disconnects from every broker.
    pub fn close(&self) {
        self.stop.cancel();
    }

    /// Envelopes dropped because the node did not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Signaling {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Records whether link `index` is subscribed; wakes waiters on a change.
fn set_up(up: &watch::Sender<Vec<bool>>, index: usize, now: bool) {
    up.send_if_modified(|links| match links.get_mut(index) {
        Some(link) if *link != now => {
            *link = now;
            true
        }
        _ => false,
    });
}

/// What one broker's event loop task needs.
struct Driver {
    client: AsyncClient,
    topic: String,
    up: Arc<watch::Sender<Vec<bool>>>,
    index: usize,
    tx: mpsc::Sender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
    stop: CancellationToken,
    url: String,
}

impl Driver {
    /// Polls the broker connection until stopped: re-subscribes on every
    /// connect, forwards envelopes, backs off after errors.
    async fn run(self, mut eventloop: rumqttc::EventLoop) {
        let Driver {
            client,
            topic,
            up,
            index,
            tx,
            dropped,
            stop,
            url,
        } = self;
        let mut backoff = BACKOFF_MIN;
        let mut up_since: Option<tokio::time::Instant> = None;
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => break,
                event = eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    up_since = Some(tokio::time::Instant::now());
                    // A clean session starts with no subscriptions.
                    if let Err(err) = client.try_subscribe(topic.clone(), QoS::AtLeastOnce) {
                        tracing::debug!(broker = %url, %err, "subscribe not queued");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    set_up(&up, index, true);
                    tracing::debug!(broker = %url, "signaling subscribed");
                }
                Ok(Event::Incoming(Packet::Publish(publish))) if publish.topic == topic => {
                    // Retained messages are old by definition; oversized ones
                    // are not envelopes.
                    let unwanted =
                        publish.retain || publish.payload.len() > p2pd_proto::signal::MAX_ENVELOPE;
                    if unwanted || tx.try_send(publish.payload.to_vec()).is_err() {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(_) => {}
                Err(err) => {
                    set_up(&up, index, false);
                    if up_since.take().is_some_and(|at| at.elapsed() >= STABLE) {
                        backoff = BACKOFF_MIN;
                    }
                    tracing::debug!(broker = %url, %err, ?backoff, "broker connection failed");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        let _ = client.try_disconnect();
    }
}
