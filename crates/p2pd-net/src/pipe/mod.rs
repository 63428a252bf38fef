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
mod consumers;
pub mod dedup;
mod error;
pub mod layer;
mod lifecycle;
pub mod queue;
mod stream;
pub mod subscription;
mod tcp;
mod udp;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::PipeConfig;
pub use error::{PipeError, RecvError};
pub use layer::{Authenticated, Greeter, Layer};
pub use stream::PipeStream;
pub use subscription::{PatternError, SubKey};

use consumers::{AcceptCb, Consumers, EndCb};
use dedup::DedupWindow;

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

/// Identifies a pipe in logs: the address of its shared state, so no
/// counter is shared between pipes. Two pipes alive at the same time never
/// have the same id; a pipe opened after another has gone may reuse its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PipeId(usize);

impl fmt::Display for PipeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pipe-{:x}", self.0)
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

/// A handle to a pipe; clones share it.
#[derive(Clone)]
pub struct Pipe {
    inner: Arc<Inner>,
}

struct Inner {
    protocol: Protocol,
    local: SocketAddr,
    /// TCP connection: the remote end. UDP: the default destination.
    peer: Option<SocketAddr>,
    /// The socket's descriptor, for applications that hand it on.
    fd: Option<RawFd>,
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
    /// Who the other end proved to be in the connection handshake.
    authenticated: Option<Authenticated>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    received: AtomicU64,
    queue_dropped: AtomicU64,
    duplicates: AtomicU64,
    refused_clients: AtomicU64,
}

/// What a pipe is, fixed when it opens.
struct Ends {
    protocol: Protocol,
    local: SocketAddr,
    peer: Option<SocketAddr>,
    fd: Option<RawFd>,
}

enum Io {
    Tcp(tokio::sync::Mutex<Option<tcp::TcpWriter>>),
    Udp(Mutex<Option<Arc<UdpSocket>>>),
    TcpServer,
}

#[derive(Default)]
struct State {
    consumers: Arc<Consumers>,
    /// Copied on change like [`Consumers`], for the same reason.
    end_cbs: Arc<Vec<(CallbackId, EndCb)>>,
    accept_cbs: Arc<Vec<(CallbackId, AcceptCb)>>,
    stream_taken: bool,
    children: HashMap<SocketAddr, Pipe>,
    /// A TCP server's greeter, and how many connections it is greeting.
    greeter: Option<Greeter>,
    greeting: usize,
    dedup: Option<DedupWindow>,
    next_cb: u64,
}

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

    /// A TCP connection to `dest` (from `local`, else any address), with
    /// the options of `config`, not yet a pipe: for a handshake to run on
    /// it first (then [`Pipe::from_tcp_stream_layered`]).
    pub async fn connect_tcp_stream(
        dest: SocketAddr,
        local: Option<SocketAddr>,
        config: &PipeConfig,
    ) -> Result<tokio::net::TcpStream, PipeError> {
        tcp::connect_stream(
            dest,
            local.unwrap_or_else(|| unspecified_like(dest)),
            config,
        )
        .await
    }

    /// Wraps a connected TCP stream.
    pub fn from_tcp_stream(
        stream: tokio::net::TcpStream,
        config: &PipeConfig,
    ) -> Result<Pipe, PipeError> {
        tcp::wrap_stream(stream, config, None)
    }

    /// Wraps a TCP stream on which a handshake has run (see [`Layer`]):
    /// its leftover bytes are the first message, and an encrypted
    /// connection's messages are sealed and opened here. `setup` runs on
    /// the pipe before its first message is read, as accept callbacks do,
    /// so callbacks it installs see every message.
    pub fn from_tcp_stream_layered(
        stream: tokio::net::TcpStream,
        config: &PipeConfig,
        layer: Layer,
        setup: impl FnOnce(&Pipe),
    ) -> Result<Pipe, PipeError> {
        tcp::wrap_layered(stream, config, layer, setup)
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
                w.write(data, closed).await?;
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

    /// The socket's file descriptor (the REST API reports it, as the
    /// original did). It stays the pipe's: reading or writing it directly
    /// races the pipe's own tasks.
    pub fn raw_fd(&self) -> Option<RawFd> {
        self.inner.fd
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

    /// Who the other end proved to be in the connection handshake; `None`
    /// for an anonymous client (no handshake) and for UDP and servers.
    pub fn authenticated(&self) -> Option<Authenticated> {
        self.inner.authenticated
    }

    /// Has a TCP server greet each connection it accepts before the
    /// connection becomes a pipe (see [`Greeter`]). Greetings run
    /// concurrently and count toward `max_clients`.
    pub fn set_greeter(&self, greeter: Greeter) {
        self.inner.state().greeter = Some(greeter);
    }

    /// This pipe's id, for logs.
    pub fn id(&self) -> PipeId {
        PipeId(Arc::as_ptr(&self.inner) as usize)
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
        ends: Ends,
        io: Io,
        config: &PipeConfig,
        parent: Option<Weak<Inner>>,
        authenticated: Option<Authenticated>,
    ) -> Pipe {
        let Ends {
            protocol,
            local,
            peer,
            fd,
        } = ends;
        let state = State {
            dedup: match (protocol, config.dedup_window) {
                (Protocol::Udp, Some(n)) => Some(DedupWindow::new(n)),
                _ => None,
            },
            ..State::default()
        };
        let pipe = Pipe {
            inner: Arc::new(Inner {
                protocol,
                local,
                peer,
                fd,
                config: config.clone(),
                io,
                state: Mutex::new(state),
                closed: CancellationToken::new(),
                ended: CancellationToken::new(),
                end_ran: AtomicBool::new(false),
                parent,
                authenticated,
                tasks: Mutex::new(Vec::new()),
                received: AtomicU64::new(0),
                queue_dropped: AtomicU64::new(0),
                duplicates: AtomicU64::new(0),
                refused_clients: AtomicU64::new(0),
            }),
        };
        tracing::debug!(pipe = %pipe.id(), %protocol, %local, ?peer, "pipe open");
        pipe
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
}

impl fmt::Debug for Pipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipe")
            .field("id", &self.id())
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
