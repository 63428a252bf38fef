//! A running peer: its servers, its address, its signaling and ECHO.
//!
//! ```text
//! Node::start ─► listen on every interface (one port) ─► address (external = own IP)
//!             ├► signaling on every broker ─► inbox ─► reverse requests: dial back, serve ECHO
//!             └► STUN discovery (≤ 3 s) ─► address updated with external IPs, NAT, delta
//! Node::connect(addr) ─► strategies (see `connect`)
//! ```
//!
//! ECHO is served on every connection a remote peer asked for: accepted
//! ones, and ones dialled back for a reverse request; never on connections
//! this node's user opened.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use p2pd_net::daemon::Daemon;
use p2pd_net::interfaces::{self, Interface};
use p2pd_net::pipe::{Message, Pipe, PipeConfig, PipeError, PipeId, Protocol};
use p2pd_net::stun::discovery::{DeltaSeriesGate, DiscoveryOptions, discover_gated};
use p2pd_proto::addr::{Endpoint, MAX_ENTRIES, NodeId, PeerAddr};
use p2pd_proto::signal::{Body, Identity, Inbox, InboxStats, Signal, seal};
use p2pd_proto::stun::behavior::{Delta, NatType};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, HostPort};
use crate::signaling::Signaling;

/// The prefix of an ECHO request.
pub const ECHO: &[u8] = b"ECHO ";
/// What a node dialling back for a reverse request sends first.
pub(crate) const REVERSE_MAGIC: &[u8] = b"P2PD-REVERSE ";
/// Length of a reverse preamble: magic, 32 hex digits, newline.
pub(crate) const REVERSE_PREAMBLE_LEN: usize = 13 + 32 + 1;
/// Discovery is given this long before the first address is final.
pub const DISCOVERY_LIMIT: Duration = Duration::from_secs(3);

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

/// A running node. Clones share it.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) identity: Identity,
    pub(crate) signaling: Signaling,
    inbox: Mutex<Inbox>,
    pub(crate) addr: watch::Sender<PeerAddr>,
    /// Reverse requests waiting for their connection, by token.
    pub(crate) pending: Mutex<HashMap<String, oneshot::Sender<Pipe>>>,
    /// Accepted connections handed to our user (answers to our reverse
    /// requests): no ECHO on them.
    owned: Mutex<HashSet<PipeId>>,
    /// Accepted connections whose first message was seen.
    greeted: Mutex<HashSet<PipeId>>,
    daemon: tokio::sync::Mutex<Daemon>,
    discovered: watch::Sender<bool>,
    /// Discovery rounds may overlap (start, a new address); their delta
    /// series take turns.
    delta_gate: DeltaSeriesGate,
    stop: CancellationToken,
    /// Live dial-back connections per asking peer.
    dialbacks: Mutex<HashMap<NodeId, usize>>,
    /// The application's hooks on remote-initiated connections.
    hooks: Mutex<Vec<Hook>>,
    /// Our interfaces' networks, to spot peers on the same LAN.
    pub(crate) lan_nets: Vec<ipnet::IpNet>,
}

type Hook = Arc<
    dyn Fn(Message, Pipe) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// Dial-back connections a node keeps at once, and per asking peer: a
/// signed request names the asker, but the asker picks the address, so a
/// stranger must not be able to make a node open connections without
/// bound.
const MAX_DIALBACKS: usize = 64;
const MAX_DIALBACKS_PER_PEER: usize = 4;

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.inner.identity.id())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Starts a node: servers, signaling, and discovery in the background.
    /// Returns once it listens; [`Node::discovered`] tells when its address
    /// is final.
    pub async fn start(config: Config) -> Result<Node, NodeError> {
        let identity = match &config.node.data_dir {
            Some(dir) => crate::identity::load_or_create(dir)?,
            None => crate::identity::throwaway(),
        };
        let all = interfaces::list()?;
        let locals = local_addresses(&all, &config.node.interfaces);
        let lan_nets = all
            .iter()
            .filter(|i| i.has_route())
            .flat_map(|i| {
                let v4 = i.ipv4.iter().map(|n| ipnet::IpNet::V4(*n));
                let v6 = i.ipv6_global.iter().map(|n| ipnet::IpNet::V6(*n));
                v4.chain(v6).collect::<Vec<_>>()
            })
            .collect();
        let mut daemon = Daemon::new(PipeConfig::default());
        let (port, pending) = listen(&mut daemon, &locals, config.node.port).await?;
        let brokers: Vec<u8> = (0..config
            .signaling
            .brokers
            .len()
            .min(p2pd_proto::addr::MAX_BROKERS))
            .filter_map(|i| u8::try_from(i).ok())
            .collect();
        let addr = initial_address(&locals, &pending, port, brokers, identity.id());
        let (signaling, envelopes) = Signaling::start(&config.signaling.brokers, &identity.id());
        let node = Node {
            inner: Arc::new(Inner {
                inbox: Mutex::new(Inbox::new(identity.clone())),
                identity,
                signaling,
                addr: watch::Sender::new(addr),
                pending: Mutex::new(HashMap::new()),
                owned: Mutex::new(HashSet::new()),
                greeted: Mutex::new(HashSet::new()),
                daemon: tokio::sync::Mutex::new(daemon),
                discovered: watch::Sender::new(false),
                delta_gate: DeltaSeriesGate::default(),
                stop: CancellationToken::new(),
                dialbacks: Mutex::new(HashMap::new()),
                hooks: Mutex::new(Vec::new()),
                lan_nets,
                config,
            }),
        };
        node.serve_accepted().await;
        tokio::spawn(node.clone().handle_signals(envelopes));
        tracing::info!(id = %node.id(), port, "node up");
        let late = locals.clone();
        tokio::spawn(node.clone().run_discovery(locals));
        if !pending.is_empty() {
            tokio::spawn(node.clone().bind_when_ready(late, pending, port));
        }
        Ok(node)
    }

    /// This node's id (its public key).
    pub fn id(&self) -> NodeId {
        self.inner.identity.id()
    }

    /// The current address (external IPs are the interfaces' own until
    /// discovery has ended).
    pub fn addr(&self) -> PeerAddr {
        self.inner.addr.borrow().clone()
    }

    /// The current address, and every later change of it.
    pub fn watch_addr(&self) -> watch::Receiver<PeerAddr> {
        self.inner.addr.subscribe()
    }

    /// Waits until the first discovery round has ended (at most
    /// [`DISCOVERY_LIMIT`] after start).
    pub async fn discovered(&self) {
        let mut rx = self.inner.discovered.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }

    /// Runs `cb` on every message of every connection a remote peer opened
    /// to this node (besides ECHO, which is always served): the hook for an
    /// application's own protocol. `cb` gets the connection to answer on.
    pub fn add_msg_cb<F, Fut>(&self, cb: F)
    where
        F: Fn(Message, Pipe) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let hook: Hook = Arc::new(move |msg, pipe| Box::pin(cb(msg, pipe)));
        lock(&self.inner.hooks).push(hook);
    }

    /// Waits until signaling is up on at least one broker, at most `limit`;
    /// returns whether it is.
    pub async fn signaling_ready(&self, limit: Duration) -> bool {
        self.inner.signaling.wait_connected(limit).await
    }

    /// Signaling envelopes dropped, by reason.
    pub fn signal_stats(&self) -> InboxStats {
        lock(&self.inner.inbox).stats()
    }

    /// Stops serving, signaling and discovery.
    pub async fn close(&self) {
        self.inner.stop.cancel();
        self.inner.signaling.close();
        self.inner.daemon.lock().await.close().await;
    }

    /// Seals and publishes a signal to `to` on the brokers its address lists.
    pub(crate) fn send_signal(&self, to: &PeerAddr, body: Body) -> usize {
        let signal = Signal {
            id: format!("{:032x}", rand::random::<u128>()),
            sent_ms: unix_ms(),
            body,
        };
        let Some(envelope) = seal(&self.inner.identity, &to.node_id, &signal, rand::random())
        else {
            return 0;
        };
        self.inner
            .signaling
            .publish(&to.node_id, &to.brokers, &envelope)
    }

    /// ECHO on accepted connections, except those answering our own
    /// reverse requests, which go to the waiting `connect`.
    async fn serve_accepted(&self) {
        let weak = Arc::downgrade(&self.inner);
        let mut daemon = self.inner.daemon.lock().await;
        daemon.add_msg_cb(move |msg, conn| {
            let node = weak.upgrade().map(|inner| Node { inner });
            async move {
                if let Some(node) = node {
                    node.on_accepted_message(msg, conn).await;
                }
            }
        });
        // Forget ended connections, so the sets stay as small as the number
        // of open ones.
        let weak = Arc::downgrade(&self.inner);
        daemon.add_end_cb(move |conn| {
            if let Some(inner) = weak.upgrade() {
                lock(&inner.greeted).remove(&conn.id());
                lock(&inner.owned).remove(&conn.id());
            }
            async {}
        });
    }

    async fn on_accepted_message(&self, msg: Message, conn: Pipe) {
        if lock(&self.inner.owned).contains(&conn.id()) {
            return;
        }
        let first = lock(&self.inner.greeted).insert(conn.id());
        if first && let Some(token) = reverse_token(&msg.data) {
            let waiter = lock(&self.inner.pending).remove(&token);
            if let Some(waiter) = waiter {
                lock(&self.inner.owned).insert(conn.id());
                // The connect that asked may have been won by another
                // strategy meanwhile: then nobody wants this connection.
                if let Err(unwanted) = waiter.send(conn) {
                    unwanted.close().await;
                }
                return;
            }
        }
        self.serve_remote(msg, conn).await;
    }

    /// A message on a connection a remote peer asked for: ECHO, then the
    /// application's hooks.
    async fn serve_remote(&self, msg: Message, conn: Pipe) {
        echo(&msg, &conn).await;
        let hooks: Vec<Hook> = lock(&self.inner.hooks).clone();
        for hook in hooks {
            hook(msg.clone(), conn.clone()).await;
        }
    }

    async fn handle_signals(self, mut envelopes: tokio::sync::mpsc::Receiver<Vec<u8>>) {
        loop {
            let envelope = tokio::select! {
                () = self.inner.stop.cancelled() => return,
                envelope = envelopes.recv() => match envelope {
                    Some(e) => e,
                    None => return,
                },
            };
            let opened = lock(&self.inner.inbox).open(unix_ms(), &envelope);
            match opened {
                Ok((from, signal)) => self.on_signal(from, signal),
                Err(reason) => tracing::debug!(%reason, "signal dropped"),
            }
        }
    }

    fn on_signal(&self, from: NodeId, signal: Signal) {
        match signal.body {
            Body::Reverse { token, addr } => {
                let Ok(asker) = addr.parse::<PeerAddr>() else {
                    tracing::debug!(%from, "reverse request with a bad address");
                    return;
                };
                // The address must be the signer's own: nobody can make us
                // dial a third party in someone else's name.
                if asker.node_id != from
                    || token.len() != 32
                    || !token.bytes().all(|b| b.is_ascii_hexdigit())
                    || !self.may_dial(&asker)
                {
                    tracing::debug!(%from, "reverse request refused");
                    return;
                }
                let node = self.clone();
                tokio::spawn(async move { node.dial_back(asker, token).await });
            }
            Body::Ping => tracing::debug!(%from, "ping"),
            _ => tracing::debug!(%from, "unknown signal"),
        }
    }

    /// Whether a reverse request may make us dial `asker`'s address: never
    /// multicast, broadcast or unspecified addresses, and loopback only
    /// when this node itself is on loopback alone (offline, same machine);
    /// otherwise a stranger could point us at services on this host.
    fn may_dial(&self, asker: &PeerAddr) -> bool {
        let offline = self.addr().endpoints().all(|e| e.external.is_loopback());
        dialable(asker, offline)
    }

    /// Answers a reverse request: connect to the asker, say which request
    /// this is, then serve ECHO and the hooks (the asker wanted this
    /// connection). Bounded: at most [`MAX_DIALBACKS`] live, and
    /// [`MAX_DIALBACKS_PER_PEER`] per asker.
    async fn dial_back(&self, asker: PeerAddr, token: String) {
        {
            let mut live = lock(&self.inner.dialbacks);
            let total: usize = live.values().sum();
            let mine = live.entry(asker.node_id).or_default();
            if total >= MAX_DIALBACKS || *mine >= MAX_DIALBACKS_PER_PEER {
                tracing::debug!(from = %asker.node_id, "dial back refused: too many");
                return;
            }
            *mine += 1;
        }
        let release = DialbackSlot {
            node: self.clone(),
            peer: asker.node_id,
        };
        let budget = self
            .inner
            .config
            .connect
            .budget(crate::config::Strategy::Reverse);
        let Ok(pipe) = crate::connect::dial(self, &asker, budget).await else {
            tracing::debug!(to = %asker.node_id, "dial back failed");
            return;
        };
        let mut preamble = REVERSE_MAGIC.to_vec();
        preamble.extend_from_slice(token.as_bytes());
        preamble.push(b'\n');
        let weak = Arc::downgrade(&self.inner);
        pipe.add_msg_cb(move |msg, conn| {
            let node = weak.upgrade().map(|inner| Node { inner });
            async move {
                if let Some(node) = node {
                    node.serve_remote(msg, conn).await;
                }
            }
        });
        if pipe.send(&preamble, None).await.is_err() {
            pipe.close().await;
            return;
        }
        tracing::info!(to = %asker.node_id, local = %pipe.local_addr(), "dialled back for a reverse connect");
        let stop = self.inner.stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => pipe.close().await,
                () = pipe.closed() => {}
            }
            drop(release);
        });
    }

    async fn run_discovery(self, locals: Vec<Local>) {
        self.discover_locals(&locals).await;
        self.inner.discovered.send_replace(true);
    }

    /// Runs STUN discovery for `locals` (at most [`DISCOVERY_LIMIT`]) and
    /// puts what it finds in the address.
    async fn discover_locals(&self, locals: &[Local]) {
        let run = async {
            let servers = resolve_stun(&self.inner.config.stun.servers).await;
            let mut updates = Vec::new();
            if servers.is_empty() {
                return updates;
            }
            for local in locals.iter().filter(|l| !l.ip.is_loopback()) {
                let options = DiscoveryOptions::default();
                let gate = &self.inner.delta_gate;
                let report = discover_gated(local.ip, 0, &servers, &options, gate).await;
                if let Ok(report) = report
                    && let Some(external) = report.external
                {
                    updates.push((local.ip, external.ip(), report.nat, report.delta));
                }
            }
            updates
        };
        let updates = tokio::select! {
            () = self.inner.stop.cancelled() => return,
            updates = tokio::time::timeout(DISCOVERY_LIMIT, run) => updates.unwrap_or_default(),
        };
        if updates.is_empty() {
            return;
        }
        self.inner.addr.send_modify(|addr| {
            for endpoint in addr.ipv4.iter_mut().chain(addr.ipv6.iter_mut()) {
                // Before discovery an endpoint's external IP is its own.
                if let Some((_, external, nat, delta)) =
                    updates.iter().find(|u| u.0 == endpoint.external)
                {
                    endpoint.external = *external;
                    endpoint.nat = *nat;
                    endpoint.delta = *delta;
                }
            }
        });
    }

    /// Binds the addresses that were not usable at start (IPv6 during
    /// DAD) as soon as the kernel lets us, and adds each to the address.
    /// Gives up on an address after [`BIND_RETRY_LIMIT`].
    async fn bind_when_ready(
        self,
        mut locals: Vec<Local>,
        mut pending: Vec<Pending>,
        mut port: u16,
    ) {
        // Link-local addresses not bound: an entry keeps its own IP as
        // the internal one until its link-local address is served.
        let mut ll_unbound: HashSet<usize> = pending
            .iter()
            .filter(|p| p.link_local)
            .map(|p| p.local)
            .collect();
        let mut tick = tokio::time::interval(BIND_RETRY_EVERY);
        let give_up = tokio::time::Instant::now() + BIND_RETRY_LIMIT;
        while !pending.is_empty() {
            tokio::select! {
                () = self.inner.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if tokio::time::Instant::now() >= give_up {
                for p in &pending {
                    match p.addr {
                        Some(addr) => {
                            tracing::warn!(%addr, "address never became usable; not served")
                        }
                        // Legitimate: links can be set to make none.
                        None => {
                            tracing::debug!(ip = %locals[p.local].ip, "interface has no link-local address")
                        }
                    }
                }
                return;
            }
            let mut ready = Vec::new();
            let mut daemon = self.inner.daemon.lock().await;
            let mut still = Vec::new();
            for mut p in pending {
                if p.addr.is_none() {
                    let local = &mut locals[p.local];
                    local.link_local = listed_link_local(local.os_index);
                    p.addr = local.link_local.map(|(ll, scope)| scoped(ll, port, scope));
                }
                let Some(mut addr) = p.addr else {
                    still.push(p);
                    continue;
                };
                addr.set_port(port);
                p.addr = Some(addr);
                match daemon.listen_specific(&[(addr, Protocol::Tcp)]).await {
                    Ok(pipes) => {
                        if port == 0 {
                            port = pipes.first().map_or(0, |pipe| pipe.local_addr().port());
                        }
                        tracing::info!(%addr, "address usable; now served");
                        ready.push(p);
                    }
                    Err(PipeError::Bind(err)) if err.is_not_ready() => still.push(p),
                    Err(err) => tracing::warn!(%addr, %err, "address not served"),
                }
            }
            drop(daemon);
            pending = still;
            if ready.is_empty() {
                continue;
            }
            let mut fresh = Vec::new();
            self.inner.addr.send_modify(|addr| {
                for p in &ready {
                    let local = &locals[p.local];
                    if p.link_local {
                        ll_unbound.remove(&p.local);
                    }
                    let ll_bound = !ll_unbound.contains(&p.local);
                    if serve_in_address(addr, local, p.link_local, ll_bound, port) {
                        fresh.push(*local);
                    }
                }
            });
            if !fresh.is_empty() {
                self.discover_locals(&fresh).await;
            }
        }
    }
}

/// Puts a late-bound socket of `local` into `addr`: a new entry when its
/// own IP bound (returns true then), the link-local address as the
/// entry's internal IP when that one bound.
fn serve_in_address(
    addr: &mut PeerAddr,
    local: &Local,
    link_local: bool,
    ll_bound: bool,
    port: u16,
) -> bool {
    let family = if local.ip.is_ipv4() {
        &mut addr.ipv4
    } else {
        &mut addr.ipv6
    };
    let internal = match local.link_local {
        Some((ll, _)) if ll_bound => ll,
        _ => local.ip,
    };
    if let Some(entry) = family.iter_mut().find(|e| e.if_index == local.if_index) {
        if link_local {
            entry.internal = internal;
        }
        return false;
    }
    if link_local || family.len() >= MAX_ENTRIES {
        return false;
    }
    family.push(Endpoint {
        if_index: local.if_index,
        external: local.ip,
        internal,
        port,
        nat: NatType::Open,
        delta: Delta::NOT_APPLICABLE,
    });
    true
}

/// See [`Node::may_dial`].
fn dialable(asker: &PeerAddr, offline: bool) -> bool {
    let broadcast = IpAddr::from([255, 255, 255, 255]);
    asker.endpoints().all(|e| {
        [e.external, e.internal].iter().all(|ip| {
            !ip.is_unspecified()
                && !ip.is_multicast()
                && *ip != broadcast
                && (offline || !ip.is_loopback())
        })
    })
}

/// Frees a dial-back slot when the connection (or the attempt) ends.
struct DialbackSlot {
    node: Node,
    peer: NodeId,
}

impl Drop for DialbackSlot {
    fn drop(&mut self) {
        let mut live = lock(&self.node.inner.dialbacks);
        if let Some(n) = live.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                live.remove(&self.peer);
            }
        }
    }
}

/// Answers an ECHO request with the bytes after `ECHO `, unchanged.
async fn echo(msg: &Message, conn: &Pipe) {
    if let Some(rest) = msg.data.strip_prefix(ECHO) {
        let _ = conn.send(rest, Some(msg.from)).await;
    }
}

/// The token of a reverse preamble, if `data` is one.
fn reverse_token(data: &[u8]) -> Option<String> {
    let preamble = data.get(..REVERSE_PREAMBLE_LEN)?;
    let token = preamble.strip_prefix(REVERSE_MAGIC)?.strip_suffix(b"\n")?;
    if !token.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    std::str::from_utf8(token).ok().map(str::to_ascii_lowercase)
}

/// One local address the node serves on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Local {
    pub(crate) if_index: u8,
    /// The OS's index of the interface (an IPv6 scope id).
    pub(crate) os_index: u32,
    pub(crate) ip: IpAddr,
    /// IPv6 only: the link-local address of the same interface.
    pub(crate) link_local: Option<(IpAddr, u32)>,
}

fn local_addresses(all: &[Interface], only: &[String]) -> Vec<Local> {
    let mut locals = Vec::new();
    let chosen: Vec<&Interface> = all
        .iter()
        .filter(|i| i.has_route() && (only.is_empty() || only.contains(&i.name)))
        .collect();
    for (n, i) in chosen.iter().enumerate() {
        let if_index = u8::try_from(n).unwrap_or(u8::MAX);
        if let Some(v4) = i.ipv4.first() {
            locals.push(Local {
                if_index,
                os_index: i.index,
                ip: IpAddr::V4(v4.addr()),
                link_local: None,
            });
        }
        if let Some(v6) = i.ipv6_global.first() {
            locals.push(Local {
                if_index,
                os_index: i.index,
                ip: IpAddr::V6(v6.addr()),
                link_local: i
                    .ipv6_link_local
                    .first()
                    .map(|l| (IpAddr::V6(l.ip), l.scope_id)),
            });
        }
    }
    if locals.is_empty() {
        // Offline: loopback still lets this machine's nodes reach each other.
        locals.push(Local {
            if_index: 0,
            os_index: 0,
            ip: IpAddr::from([127, 0, 0, 1]),
            link_local: None,
        });
    }
    let mut v4 = 0;
    let mut v6 = 0;
    locals.retain(|l| {
        let count = if l.ip.is_ipv4() { &mut v4 } else { &mut v6 };
        *count += 1;
        *count <= MAX_ENTRIES
    });
    locals
}

/// A socket the node could not bind yet: the own IP of `locals[local]`,
/// or its link-local address (`addr` is `None` while the kernel has not
/// made one yet: it does when the link comes up).
#[derive(Debug, Clone, Copy)]
struct Pending {
    local: usize,
    link_local: bool,
    addr: Option<SocketAddr>,
}

/// How often addresses that were not usable are tried again, and for how
/// long: DAD takes about a second (one probe, one second's wait), longer
/// where more probes are configured.
const BIND_RETRY_EVERY: Duration = Duration::from_millis(200);
const BIND_RETRY_LIMIT: Duration = Duration::from_secs(60);

/// Listens on every local address (and IPv6 link-local) on one port;
/// port 0 takes the first free one. Returns the port, and the addresses
/// the kernel does not let us use yet (IPv6 during DAD), to be bound
/// later; any other failure stops the node.
async fn listen(
    daemon: &mut Daemon,
    locals: &[Local],
    port: u16,
) -> Result<(u16, Vec<Pending>), NodeError> {
    let mut port = port;
    let mut pending = Vec::new();
    for (n, local) in locals.iter().enumerate() {
        let mut addrs = vec![(SocketAddr::new(local.ip, port), false)];
        match local.link_local {
            Some((ll, scope)) => addrs.push((scoped(ll, port, scope), true)),
            None if local.ip.is_ipv6() => pending.push(Pending {
                local: n,
                link_local: true,
                addr: None,
            }),
            None => {}
        }
        for (mut addr, link_local) in addrs {
            addr.set_port(port);
            match daemon.listen_specific(&[(addr, Protocol::Tcp)]).await {
                Ok(pipes) => {
                    if port == 0 {
                        port = pipes.first().map_or(0, |p| p.local_addr().port());
                    }
                }
                Err(PipeError::Bind(err)) if err.is_not_ready() => {
                    tracing::info!(%addr, "address not usable yet (duplicate address detection); served once it is");
                    pending.push(Pending {
                        local: n,
                        link_local,
                        addr: Some(addr),
                    });
                }
                Err(err) => return Err(err.into()),
            }
        }
    }
    Ok((port, pending))
}

/// `ip` on `port`, with the scope id when it is IPv6.
fn scoped(ip: IpAddr, port: u16, scope: u32) -> SocketAddr {
    match ip {
        IpAddr::V6(v6) => SocketAddr::V6(std::net::SocketAddrV6::new(v6, port, 0, scope)),
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V4(v4), port),
    }
}

/// The link-local address the kernel has given interface `os_index`, if
/// any yet.
fn listed_link_local(os_index: u32) -> Option<(IpAddr, u32)> {
    let all = interfaces::list().ok()?;
    let found = all.iter().find(|i| i.index == os_index)?;
    found
        .ipv6_link_local
        .first()
        .map(|l| (IpAddr::V6(l.ip), l.scope_id))
}

fn initial_address(
    locals: &[Local],
    pending: &[Pending],
    port: u16,
    brokers: Vec<u8>,
    id: NodeId,
) -> PeerAddr {
    let waiting = |n: usize, link_local: bool| {
        pending
            .iter()
            .any(|p| p.local == n && p.link_local == link_local)
    };
    let mut addr = PeerAddr {
        brokers,
        ipv4: Vec::new(),
        ipv6: Vec::new(),
        node_id: id,
    };
    for (n, local) in locals.iter().enumerate() {
        if !waiting(n, false) {
            serve_in_address(&mut addr, local, false, !waiting(n, true), port);
        }
    }
    addr
}

/// How long resolving one STUN server name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// The usual STUN port, for servers given without one.
pub const STUN_PORT: u16 = 3478;

/// Resolves STUN servers; a name that does not resolve in time is logged
/// and skipped.
pub async fn resolve_stun(servers: &[HostPort]) -> Vec<SocketAddr> {
    let mut lookups = tokio::task::JoinSet::new();
    for (n, server) in servers.iter().enumerate() {
        let host = if server.host.contains(':') {
            format!("[{}]", server.host)
        } else {
            server.host.clone()
        };
        let name = format!("{host}:{}", server.port_or(STUN_PORT));
        // All at once: an unanswered name costs one timeout, not one each.
        lookups.spawn(async move {
            let found =
                tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(name.clone())).await;
            (n, name, found)
        });
    }
    let mut found = Vec::new();
    while let Some(joined) = lookups.join_next().await {
        let Ok((n, name, result)) = joined else {
            continue;
        };
        match result {
            Ok(Ok(addrs)) => found.push((n, addrs.collect::<Vec<_>>())),
            Ok(Err(err)) => tracing::warn!(server = %name, %err, "STUN server skipped"),
            Err(_) => tracing::warn!(server = %name, "STUN server skipped: no DNS answer"),
        }
    }
    // Keep the configured order.
    found.sort_by_key(|(n, _)| *n);
    let mut out: Vec<SocketAddr> = found.into_iter().flat_map(|(_, addrs)| addrs).collect();
    out.dedup();
    out
}

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_requests_may_not_point_at_this_host_or_at_groups() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let addr = |ip: &str| -> PeerAddr {
            format!("-[0,{ip},{ip},4000,1,1,0]-0-{id}")
                .parse()
                .expect("valid")
        };
        assert!(dialable(&addr("198.18.0.7"), false));
        assert!(
            !dialable(&addr("127.0.0.1"), false),
            "loopback while online"
        );
        assert!(
            dialable(&addr("127.0.0.1"), true),
            "loopback when we are offline too"
        );
        assert!(!dialable(&addr("0.0.0.0"), true));
        assert!(!dialable(&addr("224.0.0.1"), false));
        assert!(!dialable(&addr("255.255.255.255"), false));
    }

    #[test]
    fn reverse_preambles_are_recognised_exactly() {
        let token = "00112233445566778899aabbccddeeff";
        let preamble = format!("P2PD-REVERSE {token}\n");
        assert_eq!(preamble.len(), REVERSE_PREAMBLE_LEN);
        assert_eq!(reverse_token(preamble.as_bytes()).as_deref(), Some(token));
        assert_eq!(reverse_token(b"P2PD-REVERSE short\n"), None);
        assert_eq!(reverse_token(b"ECHO hi"), None);
    }
}
