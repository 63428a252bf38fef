//! Pipes: one message layer over TCP and UDP, IPv4 and IPv6 (manual 1.4.2).
//!
//! A [`Pipe`] is a connection (TCP client, an accepted TCP connection, a UDP
//! socket with a default destination) or a server (TCP listener, UDP socket).
//! Whatever it is, it is used the same way, from any number of tasks:
//!
//! * [`Pipe::send`] a message (UDP and TCP servers need the destination);
//! * [`Pipe::subscribe`] a queue to messages matching a pair of patterns,
//!   then [`Pipe::recv`] from it;
//! * [`Pipe::add_msg_cb`] / [`Pipe::add_end_cb`] run code on every message
//!   and when the pipe ends;
//! * [`Pipe::add_pipe`] forwards every message into another pipe;
//! * [`Pipe::stream`] gives a TCP connection as a tokio byte stream.
//!
//! Every received message goes, in this order, to every matching
//! subscription queue (a copy each), every forward pipe, every message
//! callback and the byte stream. Queues are bounded and drop their oldest
//! message when full (see [`queue`]); forwards, callbacks and the byte
//! stream are awaited, so a slow consumer slows the sender down (TCP flow
//! control) and nothing is lost.
//!
//! On TCP a message is what one read returns: the bytes the kernel had ready,
//! at most [`PipeConfig::read_buffer`]. TCP has no message boundaries, so a
//! protocol on top must frame its own messages. On UDP a message is one
//! datagram.
//!
//! A pipe ends when [`Pipe::close`] is called or when the peer ends a TCP
//! connection; end callbacks then run once. Dropping the last handle also
//! stops it and frees its sockets, without running callbacks.

pub mod config;
pub mod dedup;
pub mod queue;
mod stream;
pub mod subscription;
mod tcp;
mod udp;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::PipeConfig;
pub use stream::PipeStream;
pub use subscription::{PatternError, SubKey};

use crate::bind::BindError;
use dedup::DedupWindow;
use queue::BoundedQueue;
use subscription::Matcher;

/// The transport of a pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP: reliable, ordered bytes.
    Tcp,
    /// UDP: datagrams.
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One received message and who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The bytes: one datagram, or what one TCP read returned.
    pub data: Bytes,
    /// The sender.
    pub from: SocketAddr,
}

/// Identifies a callback so it can be removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallbackId(u64);

/// Identifies a pipe in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PipeId(u64);

impl fmt::Display for PipeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pipe-{}", self.0)
    }
}

/// Counters of one pipe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipeStats {
    /// Messages received.
    pub received: u64,
    /// Messages dropped from full subscription queues (each queue counts).
    pub queue_dropped: u64,
    /// Datagrams dropped as duplicates.
    pub duplicates: u64,
    /// Connections a server refused because it had `max_clients`.
    pub refused_clients: u64,
}

/// Why a pipe operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipeError {
    /// The local address could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// A TCP connect was refused or failed.
    #[error("cannot connect to {dest}: {source}")]
    Connect {
        /// Where to.
        dest: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A TCP connect took longer than the configured timeout.
    #[error("connecting to {dest} timed out after {after:?}")]
    ConnectTimeout {
        /// Where to.
        dest: SocketAddr,
        /// The timeout.
        after: Duration,
    },
    /// The pipe is closed.
    #[error("the pipe is closed")]
    Closed,
    /// A UDP pipe without a default destination was given none.
    #[error("this pipe has no default destination: give one")]
    NoDestination,
    /// A TCP server has no connection from this address.
    #[error("no client {0} is connected to this server")]
    UnknownClient(SocketAddr),
    /// A byte stream only exists for one TCP connection.
    #[error("only a TCP connection (not a server, not UDP) gives a byte stream")]
    NotAStream,
    /// A byte stream was already taken from this pipe.
    #[error("this pipe's byte stream was already taken")]
    StreamTaken,
    /// A subscription pattern is invalid.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// Sending failed.
    #[error("send failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Why [`Pipe::recv`] returned no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// No message arrived in time.
    #[error("no message within the timeout")]
    Timeout,
    /// Nothing subscribed with this pair of patterns.
    #[error("no such subscription")]
    NoSubscription,
    /// The pipe ended and the queue is empty.
    #[error("the pipe is closed")]
    Closed,
}

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
type MsgCb = Arc<dyn Fn(Message, Pipe) -> BoxFuture + Send + Sync>;
type EndCb = Arc<dyn Fn(Pipe) -> BoxFuture + Send + Sync>;
type AcceptCb = Arc<dyn Fn(&Pipe) + Send + Sync>;

/// A handle to a pipe; clones share it.
#[derive(Clone)]
pub struct Pipe {
    inner: Arc<Inner>,
}

struct Inner {
    id: PipeId,
    protocol: Protocol,
    local: SocketAddr,
    /// TCP connection: the remote end. UDP: the default destination.
    peer: Option<SocketAddr>,
    config: PipeConfig,
    io: Io,
    state: Mutex<State>,
    /// Cancelled by `close` (or the last handle dropping): tasks stop.
    closed: CancellationToken,
    /// Cancelled once the pipe has ended, whatever the cause.
    ended: CancellationToken,
    end_ran: AtomicBool,
    /// The TCP server that accepted this connection.
    parent: Option<Weak<Inner>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    received: AtomicU64,
    queue_dropped: AtomicU64,
    duplicates: AtomicU64,
    refused_clients: AtomicU64,
}

enum Io {
    Tcp(tokio::sync::Mutex<Option<OwnedWriteHalf>>),
    Udp(Mutex<Option<Arc<UdpSocket>>>),
    TcpServer,
}

struct Sub {
    key: SubKey,
    matcher: Matcher,
    /// A lock of its own, so the reader pushing and a receiver popping do
    /// not wait on the pipe's state.
    queue: Mutex<BoundedQueue<Message>>,
    ready: Notify,
    /// Set when unsubscribed: a receiver holding this queue stops.
    gone: AtomicBool,
}

/// Everything a received message goes to. Delivery takes a snapshot (one
/// reference count) and works outside the state lock; changes copy it when
/// a delivery holds it ([`Arc::make_mut`]), so they never disturb one in
/// progress.
#[derive(Default, Clone)]
struct Consumers {
    subs: Vec<Arc<Sub>>,
    msg_cbs: Vec<(CallbackId, MsgCb)>,
    forwards: Vec<Weak<Inner>>,
    stream: Option<mpsc::Sender<Bytes>>,
}

#[derive(Default)]
struct State {
    consumers: Arc<Consumers>,
    /// Copied on change like [`Consumers`], for the same reason.
    end_cbs: Arc<Vec<(CallbackId, EndCb)>>,
    accept_cbs: Arc<Vec<(CallbackId, AcceptCb)>>,
    stream_taken: bool,
    children: HashMap<SocketAddr, Pipe>,
    dedup: Option<DedupWindow>,
    next_cb: u64,
}

static NEXT_PIPE: AtomicU64 = AtomicU64::new(1);

impl Pipe {
    /// Opens a client pipe to `dest`: a TCP connection, or a UDP socket
    /// whose default destination is `dest`. `local` chooses the local IP
    /// (and port; 0 picks one), else the OS chooses.
    pub async fn connect(
        protocol: Protocol,
        dest: SocketAddr,
        local: Option<SocketAddr>,
        config: &PipeConfig,
    ) -> Result<Pipe, PipeError> {
        let local = local.unwrap_or_else(|| unspecified_like(dest));
        match protocol {
            Protocol::Tcp => tcp::connect(dest, local, config).await,
            Protocol::Udp => {
                let socket = udp::bind(local, config)?;
                Ok(Pipe::from_udp_socket(socket, Some(dest), config))
            }
        }
    }

    /// Opens a server pipe on `local`: a TCP listener whose connections
    /// become pipes of their own, or a UDP socket that receives from anyone.
    pub async fn listen(
        protocol: Protocol,
        local: SocketAddr,
        config: &PipeConfig,
    ) -> Result<Pipe, PipeError> {
        match protocol {
            Protocol::Tcp => tcp::listen(local, config),
            Protocol::Udp => {
                let socket = udp::bind(local, config)?;
                Ok(Pipe::from_udp_socket(socket, None, config))
            }
        }
    }

    /// Wraps a connected TCP stream.
    pub fn from_tcp_stream(
        stream: tokio::net::TcpStream,
        config: &PipeConfig,
    ) -> Result<Pipe, PipeError> {
        tcp::wrap_stream(stream, config, None)
    }

    /// Wraps a TCP listener.
    pub fn from_tcp_listener(
        listener: tokio::net::TcpListener,
        config: &PipeConfig,
    ) -> Result<Pipe, PipeError> {
        tcp::wrap_listener(listener, config)
    }

    /// Wraps a UDP socket; `default_dest` is where [`Pipe::send`] goes when
    /// given no destination.
    pub fn from_udp_socket(
        socket: UdpSocket,
        default_dest: Option<SocketAddr>,
        config: &PipeConfig,
    ) -> Pipe {
        udp::wrap(socket, default_dest, config)
    }

    /// Sends `data`: on a TCP connection down the stream, on UDP to `dest`
    /// (else the default destination), on a TCP server to the connection
    /// from `dest`. Returns the bytes sent.
    ///
    /// Cancel-safe for UDP. On TCP, cancelling (or closing the pipe) during
    /// a send may leave part of the message written.
    pub async fn send(&self, data: &[u8], dest: Option<SocketAddr>) -> Result<usize, PipeError> {
        match &self.inner.io {
            Io::Tcp(writer) => {
                let closed = &self.inner.closed;
                // Fast path, no future polled: no other send in progress.
                let mut guard = match writer.try_lock() {
                    Ok(guard) => guard,
                    Err(_) => tokio::select! {
                        biased;
                        guard = writer.lock() => guard,
                        () = closed.cancelled() => return Err(PipeError::Closed),
                    },
                };
                let Some(w) = guard.as_mut() else {
                    return Err(PipeError::Closed);
                };
                // Fast path again: the kernel usually takes it all at once.
                let written = match w.try_write(data) {
                    Ok(n) => n,
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => 0,
                    Err(err) => return Err(err.into()),
                };
                if written < data.len() {
                    // A peer that stops reading must not keep `close`
                    // waiting for this write. Biased: the write is polled
                    // first, so the cancellation costs nothing while the
                    // write makes progress.
                    tokio::select! {
                        biased;
                        rest = w.write_all(&data[written..]) => rest?,
                        () = closed.cancelled() => return Err(PipeError::Closed),
                    }
                }
                Ok(data.len())
            }
            Io::Udp(socket) => {
                let dest = dest.or(self.inner.peer).ok_or(PipeError::NoDestination)?;
                let socket = {
                    let held = lock(socket);
                    let socket = held.as_ref().ok_or(PipeError::Closed)?;
                    // Fast path: sent under the lock, no reference taken.
                    match socket.try_send_to(data, dest) {
                        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => socket.clone(),
                        sent => return Ok(sent?),
                    }
                };
                Ok(socket.send_to(data, dest).await?)
            }
            Io::TcpServer => {
                let dest = dest.ok_or(PipeError::NoDestination)?;
                let client = self
                    .inner
                    .state()
                    .children
                    .get(&dest)
                    .cloned()
                    .ok_or(PipeError::UnknownClient(dest))?;
                Box::pin(client.send(data, None)).await
            }
        }
    }

    /// Starts queueing messages that match `key` (manual: `subscribe`).
    /// Subscribing twice with the same key keeps one queue.
    pub fn subscribe(&self, key: &SubKey) -> Result<(), PipeError> {
        let matcher = Matcher::new(key)?;
        let mut state = self.inner.state();
        if !state.consumers.subs.iter().any(|s| s.key == *key) {
            Arc::make_mut(&mut state.consumers).subs.push(Arc::new(Sub {
                key: key.clone(),
                matcher,
                queue: Mutex::new(BoundedQueue::new(self.inner.config.max_queue)),
                ready: Notify::new(),
                gone: AtomicBool::new(false),
            }));
        }
        Ok(())
    }

    /// Deletes the queue of `key` and what is in it; returns whether it
    /// existed.
    pub fn unsubscribe(&self, key: &SubKey) -> bool {
        let mut state = self.inner.state();
        let Some(at) = state.consumers.subs.iter().position(|s| s.key == *key) else {
            return false;
        };
        let sub = Arc::make_mut(&mut state.consumers).subs.remove(at);
        // Waiting receivers wake up and find no subscription.
        sub.gone.store(true, Ordering::Release);
        sub.ready.notify_waiters();
        true
    }

    /// Waits for the next message in the queue of `key`, at most `timeout`
    /// (`None`: no limit). Messages already queued when the pipe ended are
    /// still returned.
    ///
    /// Cancel-safe: a message is only taken from the queue when returned.
    pub async fn recv(
        &self,
        key: &SubKey,
        timeout: Option<Duration>,
    ) -> Result<Message, RecvError> {
        let sub = self
            .inner
            .state()
            .consumers
            .subs
            .iter()
            .find(|s| s.key == *key)
            .cloned()
            .ok_or(RecvError::NoSubscription)?;
        // One timer for the whole wait, registered only if the wait blocks.
        let expiry = timeout.map(tokio::time::sleep);
        let mut expiry = std::pin::pin!(expiry);
        loop {
            // Created before the checks: a message pushed (`notify_one`
            // keeps a permit) or an end or unsubscribe (`notify_waiters`)
            // after them still wakes it.
            let ready = sub.ready.notified();
            if sub.gone.load(Ordering::Acquire) {
                return Err(RecvError::NoSubscription);
            }
            if let Some(msg) = lock(&sub.queue).pop() {
                return Ok(msg);
            }
            if self.has_ended() {
                return Err(RecvError::Closed);
            }
            match expiry.as_mut().as_pin_mut() {
                Some(expiry) => tokio::select! {
                    biased;
                    () = ready => {}
                    () = expiry => return Err(RecvError::Timeout),
                },
                None => ready.await,
            }
        }
    }

    /// Runs `cb` on every received message, with the pipe to answer on (for
    /// a TCP server, the connection the message came from). Messages wait
    /// for the callback to finish, so it should not block for long.
    pub fn add_msg_cb<F, Fut>(&self, cb: F) -> CallbackId
    where
        F: Fn(Message, Pipe) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let cb: MsgCb = Arc::new(move |msg, pipe| Box::pin(cb(msg, pipe)));
        let mut state = self.inner.state();
        let id = state.next_id();
        Arc::make_mut(&mut state.consumers).msg_cbs.push((id, cb));
        id
    }

    /// Removes a message callback; returns whether it was installed.
    pub fn del_msg_cb(&self, id: CallbackId) -> bool {
        let mut state = self.inner.state();
        let Some(at) = state.consumers.msg_cbs.iter().position(|(i, _)| *i == id) else {
            return false;
        };
        Arc::make_mut(&mut state.consumers).msg_cbs.remove(at);
        true
    }

    /// Runs `cb` once when the pipe ends (closed by us or by the peer). On a
    /// TCP server it also runs when a connection ends, with that connection.
    pub fn add_end_cb<F, Fut>(&self, cb: F) -> CallbackId
    where
        F: Fn(Pipe) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let cb: EndCb = Arc::new(move |pipe| Box::pin(cb(pipe)));
        let mut state = self.inner.state();
        let id = state.next_id();
        Arc::make_mut(&mut state.end_cbs).push((id, cb));
        id
    }

    /// Runs `cb` on every connection a TCP server accepts, before the
    /// connection's first message is read: callbacks that `cb` installs on
    /// the connection see all of its messages, and state they keep is the
    /// connection's own.
    pub fn add_accept_cb<F>(&self, cb: F) -> CallbackId
    where
        F: Fn(&Pipe) + Send + Sync + 'static,
    {
        let cb: AcceptCb = Arc::new(cb);
        let mut state = self.inner.state();
        let id = state.next_id();
        Arc::make_mut(&mut state.accept_cbs).push((id, cb));
        id
    }

    /// Removes an end callback; returns whether it was installed.
    pub fn del_end_cb(&self, id: CallbackId) -> bool {
        let mut state = self.inner.state();
        let Some(at) = state.end_cbs.iter().position(|(i, _)| *i == id) else {
            return false;
        };
        Arc::make_mut(&mut state.end_cbs).remove(at);
        true
    }

    /// Sends every message this pipe receives down `other` (manual:
    /// `add_pipe`). Link both ways for a relay; this does not loop, because
    /// a forwarded message is sent, not received. The link holds no
    /// ownership: it ends when either pipe goes away.
    pub fn add_pipe(&self, other: &Pipe) {
        let other = Arc::downgrade(&other.inner);
        let mut state = self.inner.state();
        if !state.consumers.forwards.iter().any(|w| w.ptr_eq(&other)) {
            Arc::make_mut(&mut state.consumers).forwards.push(other);
        }
    }

    /// Stops forwarding into `other`; returns whether it was linked.
    pub fn del_pipe(&self, other: &Pipe) -> bool {
        let other = Arc::downgrade(&other.inner);
        let mut state = self.inner.state();
        let Some(at) = state
            .consumers
            .forwards
            .iter()
            .position(|w| w.ptr_eq(&other))
        else {
            return false;
        };
        Arc::make_mut(&mut state.consumers).forwards.remove(at);
        true
    }

    /// The TCP connection as a tokio byte stream (AsyncRead + AsyncWrite),
    /// for protocol code written against streams. It receives what arrives
    /// from now on, with backpressure; queues and callbacks still see every
    /// message too.
    pub fn stream(&self) -> Result<PipeStream, PipeError> {
        if !matches!(self.inner.io, Io::Tcp(_)) {
            return Err(PipeError::NotAStream);
        }
        let mut state = self.inner.state();
        if state.stream_taken {
            return Err(PipeError::StreamTaken);
        }
        if self.inner.ended.is_cancelled() {
            return Err(PipeError::Closed);
        }
        let (tx, rx) = mpsc::channel(stream::DEPTH);
        Arc::make_mut(&mut state.consumers).stream = Some(tx);
        state.stream_taken = true;
        Ok(PipeStream::new(self.clone(), rx))
    }

    /// Closes the pipe: tasks stop, sockets are freed, end callbacks run; a
    /// server also closes its connections. Safe to call more than once.
    pub async fn close(&self) {
        self.inner.closed.cancel();
        // The I/O loops first: once the accept loop has stopped, no new
        // connection can join the server behind our back.
        let current = tokio::task::try_id();
        loop {
            let Some(task) = lock(&self.inner.tasks).pop() else {
                break;
            };
            // Aborted, not asked: the loops wait on no cancellation per
            // message, and a consumer that never finishes cannot keep
            // `close` waiting. A callback may close its own pipe; that task
            // cannot wait for itself (nor be aborted in the middle of this
            // close), and it stops on its own after the callback.
            if Some(task.id()) != current {
                task.abort();
                let _ = task.await;
            }
        }
        let children: Vec<Pipe> = self.inner.state().children.values().cloned().collect();
        for child in children {
            Box::pin(child.close()).await;
        }
        self.shutdown_io().await;
        self.finish().await;
        self.leave_server();
    }

    /// Whether the pipe has ended.
    pub fn is_closed(&self) -> bool {
        self.inner.ended.is_cancelled()
    }

    /// Waits until the pipe has ended. Cancel-safe.
    pub async fn closed(&self) {
        self.inner.ended.cancelled().await;
    }

    /// The transport.
    pub fn protocol(&self) -> Protocol {
        self.inner.protocol
    }

    /// The local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// The remote end of a TCP connection, or a UDP pipe's default
    /// destination.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.inner.peer
    }

    /// Whether this is a server (TCP listener, or UDP without destination).
    pub fn is_server(&self) -> bool {
        match self.inner.io {
            Io::TcpServer => true,
            Io::Udp(_) => self.inner.peer.is_none(),
            Io::Tcp(_) => false,
        }
    }

    /// A TCP server's open connections.
    pub fn clients(&self) -> Vec<Pipe> {
        self.inner.state().children.values().cloned().collect()
    }

    /// This pipe's id, for logs.
    pub fn id(&self) -> PipeId {
        self.inner.id
    }

    /// The pipe's counters.
    pub fn stats(&self) -> PipeStats {
        PipeStats {
            received: self.inner.received.load(Ordering::Relaxed),
            queue_dropped: self.inner.queue_dropped.load(Ordering::Relaxed),
            duplicates: self.inner.duplicates.load(Ordering::Relaxed),
            refused_clients: self.inner.refused_clients.load(Ordering::Relaxed),
        }
    }

    /// The options the pipe was opened with.
    pub fn config(&self) -> &PipeConfig {
        &self.inner.config
    }

    // ----- used by the transport modules -----

    fn new(
        protocol: Protocol,
        local: SocketAddr,
        peer: Option<SocketAddr>,
        io: Io,
        config: &PipeConfig,
        parent: Option<Weak<Inner>>,
    ) -> Pipe {
        let state = State {
            dedup: match (protocol, config.dedup_window) {
                (Protocol::Udp, Some(n)) => Some(DedupWindow::new(n)),
                _ => None,
            },
            ..State::default()
        };
        let id = PipeId(NEXT_PIPE.fetch_add(1, Ordering::Relaxed));
        tracing::debug!(pipe = %id, %protocol, %local, ?peer, "pipe open");
        Pipe {
            inner: Arc::new(Inner {
                id,
                protocol,
                local,
                peer,
                config: config.clone(),
                io,
                state: Mutex::new(state),
                closed: CancellationToken::new(),
                ended: CancellationToken::new(),
                end_ran: AtomicBool::new(false),
                parent,
                tasks: Mutex::new(Vec::new()),
                received: AtomicU64::new(0),
                queue_dropped: AtomicU64::new(0),
                duplicates: AtomicU64::new(0),
                refused_clients: AtomicU64::new(0),
            }),
        }
    }

    fn weak(&self) -> Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    fn upgrade(weak: &Weak<Inner>) -> Option<Pipe> {
        weak.upgrade().map(|inner| Pipe { inner })
    }

    fn track(&self, task: JoinHandle<()>) {
        let mut tasks = lock(&self.inner.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Hands one received message to everything that wants it; `reply` is
    /// the pipe callbacks should answer on.
    async fn deliver(&self, msg: Message, reply: &Pipe) {
        self.inner.received.fetch_add(1, Ordering::Relaxed);
        let consumers = {
            let mut state = self.inner.state();
            if let Some(dedup) = state.dedup.as_mut()
                && !dedup.insert(msg.from, &msg.data)
            {
                self.inner.duplicates.fetch_add(1, Ordering::Relaxed);
                return;
            }
            state.consumers.clone()
        };
        // Outside the state lock: a receiver woken here must not find it
        // still held (on a busy machine it would spin, then sleep again).
        for sub in &consumers.subs {
            if sub.matcher.matches(&msg.data, msg.from) {
                let dropped = {
                    let mut queue = lock(&sub.queue);
                    let before = queue.dropped();
                    queue.push(msg.clone());
                    queue.dropped() != before
                };
                if dropped {
                    self.inner.queue_dropped.fetch_add(1, Ordering::Relaxed);
                }
                sub.ready.notify_one();
            }
        }
        for target in consumers.forwards.iter().filter_map(Pipe::upgrade) {
            if let Err(err) = target.send(&msg.data, None).await {
                tracing::debug!(pipe = %self.inner.id, to = %target.inner.id, %err, "forward failed");
            }
        }
        for (_, cb) in &consumers.msg_cbs {
            cb(msg.clone(), reply.clone()).await;
        }
        if let Some(stream) = &consumers.stream {
            // A dropped stream reader just stops receiving.
            let _ = stream.send(msg.data).await;
        }
    }

    /// Marks the pipe ended (once): wakes receivers, runs end callbacks,
    /// leaves its server. The I/O loops run this on a task of its own, so an
    /// end callback that closes another pipe never waits on its own loop.
    async fn finish(&self) {
        if self.inner.end_ran.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.ended.cancel();
        let (subs, end_cbs) = {
            let mut state = self.inner.state();
            let consumers = Arc::make_mut(&mut state.consumers);
            consumers.stream = None;
            consumers.forwards = Vec::new();
            (consumers.subs.clone(), state.end_cbs.clone())
        };
        // Waiting receivers return what is queued, then `Closed`.
        for sub in &subs {
            sub.ready.notify_waiters();
        }
        tracing::debug!(pipe = %self.inner.id, "pipe ended");
        let keep_open = self.inner.config.keep_open_on_end && !self.inner.closed.is_cancelled();
        if !keep_open {
            self.shutdown_io().await;
        }
        for (_, cb) in end_cbs.iter() {
            cb(self.clone()).await;
        }
        let server = self.inner.parent.as_ref().and_then(Pipe::upgrade);
        if let Some(server) = server {
            let server_cbs = server.inner.state().end_cbs.clone();
            for (_, cb) in server_cbs.iter() {
                cb(self.clone()).await;
            }
        }
        if !keep_open {
            self.leave_server();
        }
        // Callbacks often hold a handle to their own pipe: dropping them
        // breaks that cycle, so an ended pipe's memory is freed.
        let mut state = self.inner.state();
        Arc::make_mut(&mut state.consumers).msg_cbs = Vec::new();
        state.end_cbs = Arc::new(Vec::new());
        state.accept_cbs = Arc::new(Vec::new());
    }

    /// Whether [`Pipe::finish`] has started: the pipe was closed, or its
    /// loop already stopped.
    fn has_ended(&self) -> bool {
        self.inner.end_ran.load(Ordering::Acquire)
    }

    /// Runs [`Pipe::finish`] on a task of its own; for the I/O loops.
    fn finish_detached(&self) {
        let pipe = self.clone();
        tokio::spawn(async move { pipe.finish().await });
    }

    /// Removes this connection from its server's list, if it is still this
    /// pipe there (a new connection from the same address may have replaced
    /// it).
    fn leave_server(&self) {
        let (Some(server), Some(peer)) = (
            self.inner.parent.as_ref().and_then(Pipe::upgrade),
            self.inner.peer,
        ) else {
            return;
        };
        let mut state = server.inner.state();
        if state
            .children
            .get(&peer)
            .is_some_and(|c| Arc::ptr_eq(&c.inner, &self.inner))
        {
            state.children.remove(&peer);
        }
    }

    async fn shutdown_io(&self) {
        match &self.inner.io {
            Io::Tcp(writer) => {
                if let Some(mut w) = writer.lock().await.take() {
                    let _ = w.shutdown().await;
                }
            }
            Io::Udp(socket) => {
                lock(socket).take();
            }
            Io::TcpServer => {}
        }
    }
}

impl fmt::Debug for Pipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipe")
            .field("id", &self.inner.id)
            .field("protocol", &self.inner.protocol)
            .field("local", &self.inner.local)
            .field("peer", &self.inner.peer)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.closed.cancel();
        self.ended.cancel();
        // The I/O loops hold the pipe only weakly while they wait; they stop
        // here and free the sockets.
        for task in lock(&self.tasks).iter() {
            task.abort();
        }
    }
}

impl State {
    fn next_id(&mut self) -> CallbackId {
        self.next_cb += 1;
        CallbackId(self.next_cb)
    }
}

/// Locks a mutex; a panic elsewhere while it was held leaves data that is
/// still consistent (every critical section is a few field updates).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The wildcard address of `dest`'s family, port 0.
fn unspecified_like(dest: SocketAddr) -> SocketAddr {
    match dest {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    }
}
