//! Signaling over MQTT: every configured broker at once.
//!
//! A node subscribes to its own topic (`p2pd/<node id>`) on every broker and
//! re-subscribes after every reconnect (a clean session forgets them); each
//! broker is one [`link`]. A message to a peer is published on every broker the
//! peer's address lists, so signaling keeps working while any one of them
//! is up; the receiving [`p2pd_proto::signal::Inbox`] drops the copies by
//! message id. Envelopes are opaque here: sealing and opening are the
//! node's.
//!
//! What others publish to our topic cannot knock us off a broker: a packet
//! larger than an envelope can be is skipped unread, whatever its size; on
//! every connect the node first clears any retained message there; and each
//! broker has its own share of the queue toward the node, so a flood
//! through one does not crowd out envelopes arriving through the others.
//! Every message received is counted, under exactly one reason when it is
//! dropped here. Messages go out and come in at QoS 0: TCP carries them,
//! and the node resends what matters (a reverse request).

mod frame;
mod link;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use p2pd_proto::addr::NodeId;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::servers::BrokerUrl;

/// Envelopes from one broker waiting for the node; more are dropped (and
/// counted as busy) so a flood cannot grow memory or crowd out the other
/// brokers.
const PER_BROKER_DEPTH: usize = 256;
/// Envelopes queued per broker link while it writes.
const CLIENT_QUEUE: usize = 64;

/// The topic a node listens on.
pub fn topic(id: &NodeId) -> String {
    format!("p2pd/{id}")
}

struct Link {
    url: BrokerUrl,
    outgoing: mpsc::Sender<Bytes>,
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
            let (outgoing, to_send) = mpsc::channel(CLIENT_QUEUE);
            let link = link::Link {
                host: url.server.host.clone(),
                port: url.server.port,
                url: url.to_string(),
                topic: topic(me),
                via,
                up: up.clone(),
                outgoing: to_send,
                tx: tx.clone(),
                queued: Arc::new(AtomicUsize::new(0)),
                counters: counters.clone(),
                stop: stop.clone(),
            };
            tokio::spawn(link.run());
            links.push(Link {
                url: url.clone(),
                outgoing,
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
        let Some(packet) = link::encode_publish(&topic(to), envelope) else {
            return 0;
        };
        let up = self.up.borrow().clone();
        indexes
            .iter()
            .map(|i| usize::from(*i))
            // A link that is down would queue the message until it is
            // stale, and fill the queue the re-subscription needs.
            .filter(|i| up.get(*i).copied().unwrap_or(false))
            .filter_map(|i| self.links.get(i))
            .filter(|link| {
                link.outgoing
                    .try_send(packet.clone())
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
