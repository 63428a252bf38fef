//! Signaling over MQTT: every configured broker at once.
//!
//! A node subscribes to its own topic (`p2pd/<node id>`) on every broker and
//! re-subscribes after every reconnect (rumqttc forgets subscriptions of a
//! clean session). A message to a peer is published on every broker the
//! peer's address lists, so signaling keeps working while any one of them
//! is up; the receiving [`p2pd_proto::signal::Inbox`] drops the copies by
//! message id. Envelopes are opaque here: sealing and opening are the
//! node's.
//!
//! What others retain on our topic cannot keep us off a broker: on every
//! connect the node first clears any retained message there (an oversized
//! one would break the link on every reconnect; a live oversized one still
//! breaks it once, as rumqttc cannot skip a packet), and each broker has its
//! own share of the queue toward the node, so a flood through one does not
//! crowd out envelopes arriving through the others. Every message received
//! is counted, under exactly one reason when it is dropped here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use p2pd_proto::addr::NodeId;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::servers::BrokerUrl;

/// Envelopes from one broker waiting for the node; more are dropped (and
/// counted as busy) so a flood cannot grow memory or crowd out the other
/// brokers.
const PER_BROKER_DEPTH: usize = 256;
/// Requests queued per broker client while it is (re)connecting.
const CLIENT_QUEUE: usize = 64;
/// MQTT keep-alive.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Reconnect backoff bounds after a broker error.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Largest MQTT packet accepted: envelopes are small, and a larger one
/// (dropped unread, counted) leaves the connection up; a packet past this
/// breaks it (rumqttc cannot skip one).
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

/// An envelope as received, with the broker it came through. It holds a
/// place in that broker's share of the queue until dropped.
#[derive(Debug)]
pub struct Envelope {
    /// Index of the broker in the configured list.
    pub via: u8,
    /// The envelope's bytes.
    pub bytes: Vec<u8>,
    _place: Place,
}

#[derive(Debug)]
struct Place(Arc<AtomicUsize>);

impl Place {
    /// A place in a share, if it has one free.
    fn take(queued: &Arc<AtomicUsize>) -> Option<Place> {
        queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < PER_BROKER_DEPTH).then_some(n + 1)
            })
            .ok()
            .map(|_| Place(queued.clone()))
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Messages received on our topic, and those dropped before opening, by
/// reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkStats {
    /// Received from every broker, whatever became of them.
    pub received: u64,
    /// Dropped: retained (old by definition).
    pub retained: u64,
    /// Dropped: larger than an envelope can be.
    pub oversized: u64,
    /// Dropped: that broker's share of the queue toward the node was full.
    pub busy: u64,
}

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    retained: AtomicU64,
    oversized: AtomicU64,
    busy: AtomicU64,
}

/// Connections to every configured broker.
pub struct Signaling {
    links: Vec<Link>,
    /// Which links are subscribed now, by index.
    up: Arc<watch::Sender<Vec<bool>>>,
    stop: CancellationToken,
    counters: Arc<Counters>,
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
    pub fn start(brokers: &[BrokerUrl], me: &NodeId) -> (Signaling, mpsc::Receiver<Envelope>) {
        let (tx, rx) = mpsc::channel(PER_BROKER_DEPTH * brokers.len().max(1));
        let stop = CancellationToken::new();
        let counters = Arc::new(Counters::default());
        let up = Arc::new(watch::Sender::new(vec![false; brokers.len()]));
        let mut links = Vec::new();
        // An address names brokers by a one-byte index: at most 256.
        for (via, url) in (0..=u8::MAX).zip(brokers) {
            let index = usize::from(via);
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
                via,
                tx: tx.clone(),
                queued: Arc::new(AtomicUsize::new(0)),
                counters: counters.clone(),
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
                counters,
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

    /// What was received, and what was dropped before opening.
    pub fn stats(&self) -> LinkStats {
        let c = &self.counters;
        LinkStats {
            received: c.received.load(Ordering::Relaxed),
            retained: c.retained.load(Ordering::Relaxed),
            oversized: c.oversized.load(Ordering::Relaxed),
            busy: c.busy.load(Ordering::Relaxed),
        }
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
    /// The same index, as envelopes carry it.
    via: u8,
    tx: mpsc::Sender<Envelope>,
    /// This broker's envelopes waiting for the node.
    queued: Arc<AtomicUsize>,
    counters: Arc<Counters>,
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
            via,
            tx,
            queued,
            counters,
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
                    // Clear whatever is retained on our topic before
                    // subscribing (the broker handles the two in order), then
                    // subscribe: a clean session starts with none.
                    let cleared =
                        client.try_publish(topic.clone(), QoS::AtLeastOnce, true, Vec::new());
                    if let Err(err) =
                        cleared.and_then(|()| client.try_subscribe(topic.clone(), QoS::AtLeastOnce))
                    {
                        tracing::debug!(broker = %url, %err, "subscribe not queued");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    set_up(&up, index, true);
                    tracing::debug!(broker = %url, "signaling subscribed");
                }
                Ok(Event::Incoming(Packet::Publish(publish))) if publish.topic == topic => {
                    counters.received.fetch_add(1, Ordering::Relaxed);
                    let dropped = if publish.retain {
                        Some(&counters.retained)
                    } else if publish.payload.len() > p2pd_proto::signal::MAX_ENVELOPE {
                        Some(&counters.oversized)
                    } else {
                        let envelope = Place::take(&queued).map(|place| Envelope {
                            via,
                            bytes: publish.payload.to_vec(),
                            _place: place,
                        });
                        match envelope.map(|e| tx.try_send(e)) {
                            Some(Ok(())) => None,
                            _ => Some(&counters.busy),
                        }
                    };
                    if let Some(counter) = dropped {
                        counter.fetch_add(1, Ordering::Relaxed);
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
