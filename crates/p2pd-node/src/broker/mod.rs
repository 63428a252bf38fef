//! `p2pd broker`: a small MQTT 3.1.1 broker in the process, so a LAN or an
//! offline machine needs no outside broker.
//!
//! It is made for signaling and for strangers: every client is one task
//! with a bounded outgoing queue (a slow reader loses deliveries, counted,
//! instead of growing memory), packets are size-limited, silent clients are
//! closed, and nothing outlives a connection (see [`session`]). The wire
//! codec is rumqttc's.

mod router;
mod session;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::Packet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use router::{ClientId, Router};
use session::{Output, Session};

/// Largest packet accepted from a client: signaling envelopes are a few
/// hundred bytes; this leaves room without letting a client make the
/// broker buffer megabytes. A larger packet closes its connection.
const MAX_PACKET: usize = 64 * 1024;
/// Clients served at once; more are closed as they arrive.
const MAX_CLIENTS: usize = 10_000;
/// Packets and bytes queued per client; deliveries past either are
/// dropped (and counted), so a slow reader costs at most this much.
const CLIENT_QUEUE: usize = 256;
const CLIENT_QUEUE_BYTES: usize = 1024 * 1024;
/// How long a closing client's last replies (a refusing CONNACK) may take.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// A write to a client that takes longer closes it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the broker did not start, or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Accepting connections failed.
    #[error("accepting connections: {0}")]
    Accept(std::io::Error),
    /// Routing broke (a bug); the broker stops rather than accept clients
    /// it cannot serve.
    #[error("the broker can no longer route messages")]
    Broken,
}

/// Counts of what the broker did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed at once because the broker was full.
    pub refused: u64,
    /// Deliveries dropped because the subscriber's queue was full.
    pub dropped: u64,
}

/// An MQTT broker bound to its address, not yet serving.
#[derive(Debug)]
pub struct Broker {
    listener: TcpListener,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Cancelled when routing broke.
    broken: CancellationToken,
    accepted: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    router: Router,
    queues: std::collections::HashMap<ClientId, Queue>,
}

/// The way to one client's writer, and the bytes waiting in it.
#[derive(Debug, Clone)]
struct Queue {
    packets: mpsc::Sender<Bytes>,
    bytes: Arc<AtomicUsize>,
}

impl Queue {
    /// Queues a delivery unless the client is too far behind.
    fn deliver(&self, packet: &Bytes) -> bool {
        let len = packet.len();
        let room = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued + len <= CLIENT_QUEUE_BYTES).then_some(queued + len)
            })
            .is_ok();
        if !room {
            return false;
        }
        if self.packets.try_send(packet.clone()).is_err() {
            self.bytes.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }
}

impl Shared {
    /// The routing state, or `None` (and the broker marked broken) if a
    /// panic left it inconsistent.
    fn state(&self) -> Option<MutexGuard<'_, State>> {
        match self.state.lock() {
            Ok(state) => Some(state),
            Err(_) => {
                self.broken.cancel();
                None
            }
        }
    }

    fn route(&self, topic: &str, payload: Bytes) {
        let Some(state) = self.state() else { return };
        let to = state.router.route(topic);
        // Most publishes on signaling topics have one subscriber or none:
        // encode only for someone, once for all.
        if to.is_empty() {
            return;
        }
        let mut encoded = BytesMut::new();
        if session::delivery(topic, payload)
            .write(&mut encoded, usize::MAX)
            .is_err()
        {
            return;
        }
        let encoded = encoded.freeze();
        for client in to {
            let delivered = state
                .queues
                .get(&client)
                .is_some_and(|queue| queue.deliver(&encoded));
            if !delivered {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Broker {
    /// Binds `listen`.
    pub async fn bind(listen: SocketAddr) -> Result<Self, BrokerError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| BrokerError::Bind {
                addr: listen,
                source,
            })?;
        Ok(Self {
            listener,
            shared: Arc::default(),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A live view of the broker's counters.
    pub fn stats(&self) -> impl Fn() -> BrokerStats + Send + Sync + 'static {
        let shared = self.shared.clone();
        move || BrokerStats {
            accepted: shared.accepted.load(Ordering::Relaxed),
            refused: shared.refused.load(Ordering::Relaxed),
            dropped: shared.dropped.load(Ordering::Relaxed),
        }
    }

    /// Serves clients until `stop` is cancelled (then `Ok`) or the broker
    /// can no longer route.
    pub async fn serve(self, stop: CancellationToken) -> Result<(), BrokerError> {
        let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
        let mut next: ClientId = 0;
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = self.shared.broken.cancelled() => return Err(BrokerError::Broken),
                accepted = self.listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors or a connection reset before accept:
                // the listener itself is fine; pause so a full table is
                // not spun on.
                Err(err) if is_transient(&err) => {
                    tracing::debug!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(err) => return Err(BrokerError::Accept(err)),
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                self.shared.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            self.shared.accepted.fetch_add(1, Ordering::Relaxed);
            next += 1;
            let (client, shared, stop) = (next, self.shared.clone(), stop.clone());
            tokio::spawn(async move {
                let _slot = slot;
                serve_client(&shared, client, stream, &stop).await;
            });
        }
    }
}

/// Accept errors that say something about one connection or about
/// resources (descriptors, memory, buffers), not about the listener: all
/// but a listener that is not (or no longer) one.
fn is_transient(err: &std::io::Error) -> bool {
    // EBADF, EINVAL, ENOTSOCK, EOPNOTSUPP
    !matches!(err.raw_os_error(), Some(9 | 22 | 88 | 95))
}

/// Runs one client until it leaves, breaks the protocol, goes silent or
/// the broker stops; then removes everything it had.
async fn serve_client(
    shared: &Shared,
    client: ClientId,
    stream: TcpStream,
    stop: &CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (packets, mut outgoing) = mpsc::channel::<Bytes>(CLIENT_QUEUE);
    let queue = Queue {
        packets,
        bytes: Arc::new(AtomicUsize::new(0)),
    };
    let queued = queue.bytes.clone();
    let mut writes = tokio::spawn(async move {
        while let Some(bytes) = outgoing.recv().await {
            let written = tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&bytes)).await;
            queued.fetch_sub(bytes.len(), Ordering::AcqRel);
            if !matches!(written, Ok(Ok(()))) {
                return;
            }
        }
    });
    let mut session = Session::new(std::time::Instant::now());
    tokio::select! {
        () = stop.cancelled() => {}
        _ = &mut writes => {}
        reason = read_packets(shared, client, &mut reader, &mut session, &queue) => {
            tracing::debug!(client, reason, "mqtt client closed");
        }
    }
    if let Some(mut state) = shared.state() {
        state.queues.remove(&client);
        state.router.remove(client, session.filters());
    }
    // The last replies (a refusing CONNACK) still go out; then the writer
    // ends with the queue.
    drop(queue);
    if tokio::time::timeout(FLUSH_TIMEOUT, &mut writes)
        .await
        .is_err()
    {
        writes.abort();
    }
    if let Some(Output::Route { topic, payload }) = session.take_will() {
        shared.route(&topic, payload);
    }
}

/// Reads and handles packets until the connection should close; returns
/// why.
async fn read_packets(
    shared: &Shared,
    client: ClientId,
    reader: &mut tokio::net::tcp::OwnedReadHalf,
    session: &mut Session,
    queue: &Queue,
) -> &'static str {
    let mut buffer = BytesMut::with_capacity(4096);
    loop {
        loop {
            let packet = match Packet::read(&mut buffer, MAX_PACKET) {
                Ok(packet) => packet,
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(more)) => {
                    buffer.reserve(more);
                    break;
                }
                Err(_) => return "malformed or oversized packet",
            };
            let now = std::time::Instant::now();
            for output in session.on_packet(now, packet) {
                match output {
                    Output::Reply(reply) => {
                        let mut encoded = BytesMut::new();
                        if reply.write(&mut encoded, usize::MAX).is_err() {
                            return "unencodable reply";
                        }
                        let encoded = encoded.freeze();
                        queue.bytes.fetch_add(encoded.len(), Ordering::AcqRel);
                        if queue.packets.send(encoded).await.is_err() {
                            return "writer closed";
                        }
                    }
                    Output::Route { topic, payload } => shared.route(&topic, payload),
                    Output::Subscribe(filter) => {
                        let Some(mut state) = shared.state() else {
                            return "routing broke";
                        };
                        state.queues.entry(client).or_insert_with(|| queue.clone());
                        state.router.subscribe(client, filter);
                    }
                    Output::Unsubscribe(filter) => {
                        let Some(mut state) = shared.state() else {
                            return "routing broke";
                        };
                        state.router.unsubscribe(client, &filter);
                    }
                    Output::Close(reason) => return reason,
                }
            }
        }
        let deadline = tokio::time::Instant::from_std(session.deadline());
        match tokio::time::timeout_at(deadline, reader.read_buf(&mut buffer)).await {
            Err(_) => return "silent too long",
            Ok(Ok(0)) => return "connection closed",
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return "read failed",
        }
    }
}
