//! One TURN allocation on tokio: the link to the server (a UDP socket, or
//! a TCP connection cut into frames), the sans-IO [`Client`] and a task
//! that drives its timers and reads what the server sends.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use p2pd_proto::turn::channel;
use p2pd_proto::turn::{Client, ClientConfig, Event, Input, TurnError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::RelayError;
use super::shared::{Datagram, Link, Shared, UdpLink};
use super::socket::RelaySocket;

/// Peer datagrams waiting for the transport above; more are dropped, as a
/// full socket buffer would drop them (QUIC resends).
const INCOMING_DEPTH: usize = 4096;
/// Frames waiting for the TCP link to the server; more are dropped.
const OUTGOING_DEPTH: usize = 4096;

/// An allocation on a TURN server: where peers reach us, and the channels
/// to them.
pub struct Allocation {
    shared: Arc<Shared>,
    events: mpsc::UnboundedReceiver<Event>,
    incoming: Option<mpsc::Receiver<Datagram>>,
    driver: JoinHandle<()>,
    writer: Option<JoinHandle<()>>,
    relayed: SocketAddr,
    mapped: Option<SocketAddr>,
    lifetime: Duration,
}

impl std::fmt::Debug for Allocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Allocation")
            .field("server", &self.shared.server)
            .field("relayed", &self.relayed)
            .finish_non_exhaustive()
    }
}

impl Allocation {
    /// Allocates on the server `config` names, over UDP or TCP as it says.
    pub async fn open(config: ClientConfig) -> Result<Self, RelayError> {
        let server = config.server;
        let timeout = config.timeout;
        let (link, reader, writer) = if config.stream {
            let stream = tokio::time::timeout(timeout, TcpStream::connect(server))
                .await
                .map_err(|_| {
                    RelayError::Turn(TurnError::TimedOut {
                        server,
                        after: timeout,
                    })
                })?
                .map_err(|source| RelayError::Connect { server, source })?;
            stream.set_nodelay(true).ok();
            let (read, write) = stream.into_split();
            let (tx, rx) = mpsc::channel(OUTGOING_DEPTH);
            let writer = tokio::spawn(write_frames(write, rx));
            (
                Link::Stream(tx),
                Reader::Stream(read, BytesMut::new()),
                Some(writer),
            )
        } else {
            let any = match server {
                SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
                SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
            };
            let socket = super::datagram_socket(any).map_err(|e| RelayError::Connect {
                server,
                source: io::Error::other(e),
            })?;
            (Link::Udp(UdpLink::new(socket)), Reader::Udp, None)
        };
        let client = Client::new(Instant::now().into_std(), config, rand::random());
        let shared = Arc::new(Shared {
            client: Mutex::new(client),
            link,
            server,
            poke: Notify::new(),
        });
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let (incoming_tx, incoming) = mpsc::channel(INCOMING_DEPTH);
        let driver = tokio::spawn(drive(shared.clone(), reader, events_tx, incoming_tx));
        let mut allocation = Self {
            shared,
            events: mpsc::unbounded_channel().1,
            incoming: Some(incoming),
            driver,
            writer,
            relayed: server,
            mapped: None,
            lifetime: Duration::ZERO,
        };
        loop {
            match events.recv().await {
                Some(Event::Allocated {
                    relayed,
                    mapped,
                    lifetime,
                }) => {
                    allocation.relayed = relayed;
                    allocation.mapped = mapped;
                    allocation.lifetime = lifetime;
                    allocation.events = events;
                    return Ok(allocation);
                }
                Some(Event::Failed(err)) => return Err(err.into()),
                Some(_) => {}
                None => return Err(RelayError::Closed { server }),
            }
        }
    }

    /// Where peers reach us.
    pub fn relayed(&self) -> SocketAddr {
        self.relayed
    }

    /// Where the server saw us come from.
    pub fn mapped(&self) -> Option<SocketAddr> {
        self.mapped
    }

    /// The lifetime the server gave (refreshes renew it).
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The server.
    pub fn server(&self) -> SocketAddr {
        self.shared.server
    }

    /// Binds a channel to `peer`, which lets its data in; returns once the
    /// server has it.
    pub async fn bind(&mut self, peer: SocketAddr) -> Result<(), RelayError> {
        self.shared
            .client()
            .bind_channel(Instant::now().into_std(), peer)?;
        self.shared.poke.notify_one();
        self.wait_for(|event| match event {
            Event::ChannelBound { peer: bound, .. } if *bound == peer => Some(Ok(())),
            Event::PeerFailed { peer: ip, error } if *ip == peer.ip() => Some(Err(error.clone())),
            _ => None,
        })
        .await
    }

    /// Lets data from `peer` in without a channel (CreatePermission).
    pub async fn permit(&mut self, peer: IpAddr) -> Result<(), RelayError> {
        self.shared
            .client()
            .create_permission(Instant::now().into_std(), peer)?;
        self.shared.poke.notify_one();
        self.wait_for(|event| match event {
            Event::PermissionCreated { peer: ip } if *ip == peer => Some(Ok(())),
            Event::PeerFailed { peer: ip, error } if *ip == peer => Some(Err(error.clone())),
            _ => None,
        })
        .await
    }

    /// Waits for the next refresh the client makes, and its lifetime: how a
    /// test sees the allocation kept alive.
    pub async fn refreshed(&mut self) -> Result<Duration, RelayError> {
        self.wait_for(|event| match event {
            Event::Refreshed { lifetime } => Some(Ok(*lifetime)),
            _ => None,
        })
        .await
    }

    /// The allocation as a datagram socket for a transport (QUIC): what it
    /// sends to an address goes to that peer through the relay.
    pub fn socket(&mut self) -> Option<Arc<RelaySocket>> {
        let incoming = self.incoming.take()?;
        Some(Arc::new(RelaySocket::new(
            self.shared.clone(),
            incoming,
            self.relayed,
        )))
    }

    /// Deletes the allocation on the server, waiting at most `limit`.
    pub async fn close(mut self, limit: Duration) {
        self.shared.client().close(Instant::now().into_std());
        self.shared.poke.notify_one();
        let closed = self.wait_for(|event| matches!(event, Event::Closed).then_some(Ok(())));
        let _ = tokio::time::timeout(limit, closed).await;
    }

    async fn wait_for<T>(
        &mut self,
        mut pick: impl FnMut(&Event) -> Option<Result<T, TurnError>>,
    ) -> Result<T, RelayError> {
        let server = self.shared.server;
        loop {
            let Some(event) = self.events.recv().await else {
                return Err(RelayError::Closed { server });
            };
            if let Event::Failed(err) = &event {
                return Err(err.clone().into());
            }
            if let Some(done) = pick(&event) {
                return done.map_err(Into::into);
            }
        }
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        // Dropped without `close` (a relay that failed or was cancelled):
        // delete it all the same, with one unanswered Refresh 0, so the
        // server does not keep it for its lifetime. Over TCP, closing the
        // link deletes it.
        {
            let mut client = self.shared.client();
            if !client.is_done() {
                client.close(Instant::now().into_std());
                if let Link::Udp(udp) = &self.shared.link {
                    while let Some(transmit) = client.poll_transmit() {
                        let _ = udp
                            .socket
                            .try_send_to(&transmit.payload, self.shared.server);
                    }
                }
            }
        }
        self.driver.abort();
        if let Some(writer) = &self.writer {
            writer.abort();
        }
    }
}

/// How the driver reads the server.
enum Reader {
    Udp,
    Stream(OwnedReadHalf, BytesMut),
}

/// Drives the client: what the server sends, the timers, the requests
/// others queue. Ends when the client is done or the link fails.
async fn drive(
    shared: Arc<Shared>,
    mut reader: Reader,
    events: mpsc::UnboundedSender<Event>,
    incoming: mpsc::Sender<Datagram>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        flush(&shared).await;
        let (wake, done) = {
            let mut client = shared.client();
            while let Some(event) = client.poll_event() {
                let _ = events.send(event);
            }
            (client.poll_timeout(), client.is_done())
        };
        if done {
            return;
        }
        tokio::select! {
            got = read(&shared, &mut reader, &mut buf) => {
                let Ok(len) = got else {
                    let _ = events.send(Event::Failed(TurnError::NotAllocated { server: shared.server }));
                    return;
                };
                let frame: &[u8] = match &reader {
                    Reader::Udp => &buf[..len],
                    Reader::Stream(_, pending) => &pending[..len],
                };
                let now = Instant::now().into_std();
                let datagram = match shared.client().handle_input(now, frame) {
                    Input::Peer { peer, data } => Some((peer, Bytes::copy_from_slice(&data))),
                    Input::Control | Input::Ignored => None,
                };
                if let Reader::Stream(_, pending) = &mut reader {
                    let _ = pending.split_to(len);
                }
                if let Some(datagram) = datagram {
                    let _ = incoming.try_send(datagram);
                }
            }
            () = sleep_until(wake) => shared.client().handle_timeout(Instant::now().into_std()),
            () = shared.poke.notified() => {}
        }
    }
}

/// The next datagram (UDP, into `buf`) or frame (TCP, at the front of the
/// reader's buffer): its length.
async fn read(shared: &Shared, reader: &mut Reader, buf: &mut [u8]) -> io::Result<usize> {
    match (reader, &shared.link) {
        (Reader::Udp, Link::Udp(udp)) => loop {
            let (len, from) = udp.socket.recv_from(buf).await?;
            if from == shared.server {
                return Ok(len);
            }
        },
        (Reader::Stream(read, pending), _) => loop {
            match channel::frame_len(pending) {
                Ok(Some(len)) if pending.len() >= len => return Ok(len),
                Ok(_) => {}
                Err(err) => return Err(io::Error::new(io::ErrorKind::InvalidData, err)),
            }
            if read.read_buf(pending).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        },
        (Reader::Udp, Link::Stream(_)) => Err(io::ErrorKind::Unsupported.into()),
    }
}

/// Sends what the client queued.
async fn flush(shared: &Shared) {
    let transmits: Vec<_> = std::iter::from_fn(|| shared.client().poll_transmit()).collect();
    for transmit in transmits {
        let sent = match &shared.link {
            Link::Udp(udp) => udp
                .socket
                .send_to(&transmit.payload, transmit.dst)
                .await
                .map(drop),
            Link::Stream(tx) => tx
                .send(transmit.payload)
                .await
                .map_err(|_| io::ErrorKind::BrokenPipe.into()),
        };
        if let Err(err) = sent {
            // The request's retransmission or timeout takes it from here.
            tracing::debug!(%err, server = %shared.server, "TURN request not sent");
        }
    }
}

async fn write_frames(mut write: tokio::net::tcp::OwnedWriteHalf, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(frame) = rx.recv().await {
        if write.write_all(&frame).await.is_err() {
            return;
        }
    }
}

async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}
