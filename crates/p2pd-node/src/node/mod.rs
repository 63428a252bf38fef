//! A running peer, as an actor: one task owns the node's state, and
//! [`Node`] is a cloneable handle to it.
//!
//! ```text
//! Node (handle) ──commands (bounded)──► actor task: servers, candidates, inbox,
//!      ▲                                 pending reverse requests, dial-backs
//!      └────────── watch: address, status ◄┘
//! Node::start ─► bind every local address ─► spawn the actor ─► discovery (≤ 3 s),
//!                                                                port mapping (kept)
//! Node::connect(addr) ─► strategies, on the caller's task (see `connect`)
//! ```
//!
//! ECHO is served on every connection a remote peer asked for: accepted
//! ones, and ones dialled back for a reverse request; never on connections
//! this node's user opened.

mod actor;
mod binds;
mod command;
mod dialback;
mod inbound;
mod limits;
mod portmap;
mod punch;
mod relay;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use p2pd_net::daemon::Daemon;
use p2pd_net::handshake::Acceptor;
use p2pd_net::interfaces;
use p2pd_net::pipe::{Message, Pipe, PipeConfig};
use p2pd_net::wall_clock::unix_ms;
use p2pd_proto::addr::{NodeId, PeerAddr};
use p2pd_proto::connect::ReverseToken;
use p2pd_proto::signal::{Body, Identity, InboxStats, Signal, seal};
use tokio::sync::{mpsc, oneshot, watch};

use crate::candidates::Candidates;
use crate::config::{NodeConfig, Strategy};
use crate::connect::{self, ConnectError, Connection, Signals};
use crate::locals::{self, Local};
use crate::signaling::Signaling;

use command::Command;
pub use inbound::ECHO;

/// Discovery is given this long before the first address is final.
pub const DISCOVERY_LIMIT: Duration = Duration::from_secs(3);
/// Commands waiting for the actor; senders wait when it is full.
const COMMAND_QUEUE: usize = 64;
/// A reverse request is sent again after each of these pauses until its
/// connection arrives or the asker gives up: a copy lost to a busy broker
/// or a flood toward the peer does not lose the strategy. The peer answers
/// one token once.
const REVERSE_RESEND: [Duration; 4] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_millis(1000),
    Duration::from_millis(2000),
];

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The identity could not be loaded.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// Interfaces could not be listed.
    #[error(transparent)]
    Interfaces(#[from] interfaces::InterfaceError),
    /// The node server could not listen.
    #[error("node server: {0}")]
    Listen(#[from] p2pd_net::pipe::PipeError),
}

/// What a node knows about itself, besides its address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The first discovery round has ended.
    pub discovered: bool,
    /// Signaling envelopes opened: accepted and dropped, by reason.
    pub signals: InboxStats,
    /// How far the local clock is from the NTP servers'.
    pub clock: crate::clock::Clock,
}

/// Every signaling message that reached the node, counted under exactly
/// one reason: dropped before opening (`links`), or opened (`inbox`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignalStats {
    /// Received from the brokers, and dropped before opening.
    pub links: crate::signaling::LinkStats,
    /// What opening made of the rest.
    pub inbox: InboxStats,
}

/// A handle to a running node. Clones share it; the node stops when
/// [`Node::close`] is called or the last handle is dropped.
#[derive(Clone)]
pub struct Node {
    pub(crate) shared: Arc<Shared>,
    pub(crate) commands: mpsc::Sender<Command>,
    addr: watch::Receiver<PeerAddr>,
    status: watch::Receiver<Status>,
}

/// What never changes while a node runs, or changes only through a
/// `watch`: shared by the handles, the actor and its tasks.
pub(crate) struct Shared {
    pub(crate) identity: Identity,
    pub(crate) config: NodeConfig,
    pub(crate) signaling: Signaling,
    /// Our interfaces' networks, to spot peers on the same LAN.
    pub(crate) lan_nets: Vec<ipnet::IpNet>,
    /// The application's hooks on remote-initiated connections.
    pub(crate) hooks: watch::Sender<inbound::Hooks>,
    /// Greets the node server's connections; punched ones too.
    pub(crate) acceptor: Arc<Acceptor>,
    /// The STUN servers as last resolved.
    stun: Mutex<Vec<SocketAddr>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Starts a node: servers, signaling, and discovery in the background.
    /// Returns once it listens on what it can bind; [`Node::discovered`]
    /// tells when its address is final.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let identity = match config.identity_dir() {
            Some(dir) => crate::identity::load_or_create(dir)?,
            None => crate::identity::throwaway(),
        };
        let all = interfaces::list()?;
        let mut chosen = locals::select(&all, &config.interfaces);
        if chosen.is_empty() {
            // Offline: loopback still lets this machine's nodes reach each
            // other.
            chosen.push(Local {
                name: "lo".into(),
                if_index: 0,
                os_index: 0,
                ip: IpAddr::from([127, 0, 0, 1]),
                link_local: None,
                gateway_v4: None,
            });
        }
        let lan_nets = all
            .iter()
            .filter(|i| i.has_route())
            .flat_map(|i| {
                let v4 = i.ipv4.iter().map(|n| ipnet::IpNet::V4(*n));
                let v6 = i.ipv6_global.iter().map(|n| ipnet::IpNet::V6(*n));
                v4.chain(v6).collect::<Vec<_>>()
            })
            .collect();
        let mut candidates = Candidates::new(chosen);
        let mut daemon = Daemon::new(PipeConfig::default());
        // Before listening, so every accepted connection is greeted.
        let acceptor = Acceptor::new(
            identity.clone(),
            config.connect.encrypt,
            crate::defaults::HANDSHAKE_LIMIT,
        );
        let acceptor = Arc::new(acceptor);
        daemon.set_greeter(acceptor.greeter());
        let binds = binds::listen(&mut daemon, &mut candidates, config.port).await?;
        let joined = if config.joins_brokers() {
            &config.brokers[..]
        } else {
            &[]
        };
        let brokers: Vec<u8> = (0..joined.len().min(p2pd_proto::addr::MAX_BROKERS))
            .filter_map(|i| u8::try_from(i).ok())
            .collect();
        let (signaling, envelopes) = Signaling::start(joined, &identity.id());
        let addr = watch::Sender::new(candidates.address(&brokers, identity.id()));
        let status = watch::Sender::new(Status::default());
        let shared = Arc::new(Shared {
            identity,
            config,
            signaling,
            lan_nets,
            hooks: watch::Sender::new(Arc::new(Vec::new())),
            acceptor,
            stun: Mutex::new(Vec::new()),
        });
        let (commands, inbox) = mpsc::channel(COMMAND_QUEUE);
        let node = Node {
            shared: shared.clone(),
            commands: commands.clone(),
            addr: addr.subscribe(),
            status: status.subscribe(),
        };
        tracing::info!(id = %node.id(), port = binds.port(), "node up");
        let actor = actor::Actor::new(actor::Parts {
            shared,
            me: commands.downgrade(),
            commands: inbox,
            envelopes,
            daemon,
            candidates,
            binds,
            brokers,
            addr,
            status,
        });
        tokio::spawn(actor.run());
        Ok(node)
    }

    /// This node's id (its public key).
    pub fn id(&self) -> NodeId {
        self.shared.identity.id()
    }

    /// The current address (external IPs are the interfaces' own until
    /// discovery has ended).
    pub fn addr(&self) -> PeerAddr {
        self.addr.borrow().clone()
    }

    /// The current address, and every later change of it.
    pub fn watch_addr(&self) -> watch::Receiver<PeerAddr> {
        self.addr.clone()
    }

    /// Waits until the first discovery round has ended (at most
    /// [`DISCOVERY_LIMIT`] after start), or the node has stopped.
    ///
    /// Cancel-safe.
    pub async fn discovered(&self) {
        let mut status = self.status.clone();
        let _ = status.wait_for(|s| s.discovered).await;
    }

    /// Runs `cb` on every message of every connection a remote peer opened
    /// to this node (besides ECHO, which is always served): the hook for an
    /// application's own protocol. `cb` gets the connection to answer on.
    pub fn add_msg_cb<F, Fut>(&self, cb: F)
    where
        F: Fn(Message, Pipe) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let hook: inbound::Hook = Arc::new(move |msg, pipe| Box::pin(cb(msg, pipe)));
        self.shared.hooks.send_modify(|hooks| {
            let mut more = Vec::clone(hooks);
            more.push(hook);
            *hooks = Arc::new(more);
        });
    }

    /// Connects to `peer` with `strategies` (in this order of preference).
    /// The connection is this node's user's: no ECHO is served on it.
    pub async fn connect(
        &self,
        peer: &PeerAddr,
        strategies: &[Strategy],
    ) -> Result<Connection, ConnectError> {
        let ours: Vec<IpAddr> = self.addr().endpoints().map(|e| e.external).collect();
        let nets = &self.shared.lan_nets;
        let config = &self.shared.config.connect;
        connect::connect(
            self,
            &self.shared.identity,
            (&ours, nets),
            peer,
            strategies,
            config,
        )
        .await
    }

    /// Waits until signaling is up on at least one broker, at most `limit`;
    /// returns whether it is.
    ///
    /// Cancel-safe.
    pub async fn signaling_ready(&self, limit: Duration) -> bool {
        self.shared.signaling.wait_connected(limit).await
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.shared.config
    }

    /// Whether the first discovery round has ended.
    pub fn is_discovered(&self) -> bool {
        self.status.borrow().discovered
    }

    /// How far this machine's clock is from the NTP servers' (measured in
    /// the background at start, within [`crate::clock::CLOCK_LIMIT`]).
    pub fn clock(&self) -> crate::clock::Clock {
        self.status.borrow().clock
    }

    /// Waits until the clock measurement has ended, or the node stopped.
    ///
    /// Cancel-safe.
    pub async fn clock_measured(&self) -> crate::clock::Clock {
        let mut status = self.status.clone();
        let _ = status
            .wait_for(|s| s.clock != crate::clock::Clock::Measuring)
            .await;
        self.clock()
    }

    /// Indexes (into the configured list) of the brokers signaling is
    /// connected to now.
    pub fn brokers_connected(&self) -> Vec<u8> {
        self.shared.signaling.connected()
    }

    /// Signaling messages received, accepted and dropped, by reason.
    /// Envelopes still queued are in `links` but not yet in `inbox`.
    pub fn signal_stats(&self) -> SignalStats {
        SignalStats {
            links: self.shared.signaling.stats(),
            inbox: self.status.borrow().signals,
        }
    }

    /// Stops serving, signaling and discovery; returns once the servers are
    /// closed.
    ///
    /// Cancel-safe: the node stops even if this future is dropped.
    pub async fn close(&self) {
        let (done, stopped) = oneshot::channel();
        if self.commands.send(Command::Close { done }).await.is_ok() {
            let _ = stopped.await;
        }
    }

    /// Seals and publishes a signal to `to` on the brokers its address
    /// lists; returns on how many it was queued.
    pub(crate) fn send_signal(&self, to: &PeerAddr, body: Body) -> usize {
        self.shared.send_signal(to, body)
    }
}

impl Shared {
    /// Resolves the STUN servers, and remembers them for punches.
    pub(crate) async fn resolve_stun(&self) -> Vec<SocketAddr> {
        let servers = crate::discovery::resolve_stun(&self.config.stun_servers).await;
        if !servers.is_empty() {
            *self.stun.lock().unwrap_or_else(PoisonError::into_inner) = servers.clone();
        }
        servers
    }

    /// The STUN servers the last discovery round resolved, or resolved now
    /// when none are known: a punch does not wait for DNS.
    pub(crate) async fn stun_servers(&self) -> Vec<SocketAddr> {
        let known = self
            .stun
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if known.is_empty() {
            self.resolve_stun().await
        } else {
            known
        }
    }

    /// See [`Node::send_signal`].
    pub(crate) fn send_signal(&self, to: &PeerAddr, body: Body) -> usize {
        let signal = Signal {
            id: format!("{:032x}", rand::random::<u128>()),
            sent_ms: unix_ms(),
            body,
        };
        let Some(envelope) = seal(&self.identity, &to.node_id, &signal, rand::random()) else {
            return 0;
        };
        self.signaling.publish(&to.node_id, &to.brokers, &envelope)
    }
}

impl Signals for Node {
    fn wait_up(&self, limit: Duration) -> impl Future<Output = bool> + Send + 'static {
        let node = self.clone();
        async move { node.signaling_ready(limit).await }
    }

    async fn ask_reverse(
        &self,
        peer: &PeerAddr,
        token: ReverseToken,
    ) -> Option<(usize, oneshot::Receiver<Pipe>)> {
        // The actor forgets the request once the forwarder below ends (and
        // with it `connection`, the receiving side of `arrived`): when the
        // connection came or `rx` is dropped.
        let (reply, rx) = oneshot::channel();
        let (arrived, mut connection) = oneshot::channel();
        let command = Command::AwaitReverse {
            token,
            peer: peer.node_id,
            reply: arrived,
        };
        self.commands.send(command).await.ok()?;
        let body = Body::Reverse {
            token: token.to_string(),
            addr: self.addr().to_string(),
        };
        let sent_on = self.send_signal(peer, body.clone());
        let (node, peer) = (self.clone(), peer.clone());
        tokio::spawn(async move {
            let mut reply = reply;
            let mut resends = REVERSE_RESEND.iter();
            loop {
                let pause = resends.next().copied();
                tokio::select! {
                    conn = &mut connection => {
                        if let Ok(conn) = conn
                            && let Err(unwanted) = reply.send(conn)
                        {
                            unwanted.close().await;
                        }
                        return;
                    }
                    () = reply.closed() => return,
                    () = tokio::time::sleep(pause.unwrap_or_default()), if pause.is_some() => {
                        node.send_signal(&peer, body.clone());
                    }
                }
            }
        });
        Some((sent_on, rx))
    }

    fn punch(
        &self,
        peer: &PeerAddr,
    ) -> impl Future<Output = Result<Pipe, String>> + Send + 'static {
        let (node, peer) = (self.clone(), peer.clone());
        async move { node.punch_to(&peer).await }
    }

    fn relay(
        &self,
        peer: &PeerAddr,
    ) -> impl Future<Output = Result<Pipe, String>> + Send + 'static {
        let (node, peer) = (self.clone(), peer.clone());
        async move { node.relay_to(&peer).await }
    }
}

impl Node {
    /// Punches to `peer` as the initiator (see `punch`).
    async fn punch_to(&self, peer: &PeerAddr) -> Result<Pipe, String> {
        // Both end within their own limits after the node started.
        self.discovered().await;
        self.clock_measured().await;
        let token = ReverseToken::from_random(rand::random());
        let (reply, inbox) = mpsc::channel(4);
        let command = Command::AwaitPunch {
            token,
            peer: peer.node_id,
            reply,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| "the node is closed".to_owned())?;
        punch::initiate(
            &self.shared,
            &self.addr(),
            peer,
            (token, inbox),
            self.clock(),
        )
        .await
        .map_err(|e| e.to_string())
    }

    /// Relays to `peer` as the initiator (see `relay`).
    async fn relay_to(&self, peer: &PeerAddr) -> Result<Pipe, String> {
        if self.shared.config.turn_servers.is_empty() {
            return Err(relay::RelayFailed::NoServer.to_string());
        }
        let token = ReverseToken::from_random(rand::random());
        let (reply, inbox) = mpsc::channel(2);
        let command = Command::AwaitRelay {
            token,
            peer: peer.node_id,
            reply,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| relay::RelayFailed::Closed.to_string())?;
        relay::initiate(&self.shared, &self.addr(), peer, (token, inbox))
            .await
            .map_err(|e| e.to_string())
    }
}
