//! The task that owns a node's state. Everything that changes it arrives
//! as a [`Command`] on one bounded channel (from handles, accepted
//! connections and the node's own tasks) or as a signaling envelope; what
//! others read is published on `watch` channels.

use std::collections::HashMap;
use std::sync::Arc;

use p2pd_net::daemon::Daemon;
use p2pd_net::pipe::Pipe;
use p2pd_net::stun::discovery::{DeltaSeriesGate, DiscoveryOptions};
use p2pd_net::wall_clock::unix_ms;
use p2pd_proto::addr::{NodeId, PeerAddr};
use p2pd_proto::connect::{ReverseToken, candidates_for};
use p2pd_proto::punch::Message as PunchMessage;
use p2pd_proto::signal::{Body, Inbox, Signal};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::binds::{self, Binds};
use super::command::{Command, RelayAnswer};
use super::dialback::{Admission, Answered, DialBack, Here, dialable, is_offline, reachable};
use super::limits::Keyed;
use super::portmap::PortMaps;
use super::punch;
use super::relay;
use super::{DISCOVERY_LIMIT, Shared, Status, inbound};
use crate::candidates::{Candidates, Reflexive};
use crate::discovery;
use crate::locals::Local;
use crate::signaling::Envelope;

/// What [`Actor::new`] takes over.
pub(crate) struct Parts {
    pub(crate) shared: Arc<Shared>,
    pub(crate) me: mpsc::WeakSender<Command>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) envelopes: mpsc::Receiver<Envelope>,
    pub(crate) daemon: Daemon,
    pub(crate) candidates: Candidates,
    pub(crate) binds: Binds,
    pub(crate) brokers: Vec<u8>,
    pub(crate) addr: watch::Sender<PeerAddr>,
    pub(crate) status: watch::Sender<Status>,
}

/// Punches a node answers at once, in all and per asker: each holds a few
/// ports for at most [`punch::PUNCH_LIMIT`].
const MAX_PUNCHES: usize = 8;
const MAX_PUNCHES_PER_PEER: usize = 2;
/// Relays a node answers at once, in all and per asker: each holds an
/// allocation on our TURN server, for at most [`relay::RELAY_LIMIT`] while
/// its connection is being made and then for as long as it is served.
const MAX_RELAYS: usize = 8;
const MAX_RELAYS_PER_PEER: usize = 2;

/// Strategies of ours waiting for the peer's answer over signaling, by
/// token: only the peer asked may answer.
type Waiting<M> = HashMap<ReverseToken, (NodeId, mpsc::Sender<M>)>;

/// Answers for a strategy started on one request: in all, and per asker.
struct Slots {
    all: Arc<tokio::sync::Semaphore>,
    per_peer: Keyed<NodeId>,
}

impl Slots {
    fn new(all: usize, per_peer: usize) -> Self {
        Self {
            all: Arc::new(tokio::sync::Semaphore::new(all)),
            per_peer: Keyed::new(per_peer),
        }
    }

    /// Both permits for one more answer to `from`, or `None` when full.
    fn take(&mut self, from: NodeId) -> Option<impl Send + 'static> {
        self.per_peer
            .acquire(from)
            .zip(self.all.clone().try_acquire_owned().ok())
    }
}

pub(crate) struct Actor {
    parts: Parts,
    inbox: Inbox,
    /// Our reverse requests waiting for their connection.
    pending: HashMap<ReverseToken, (NodeId, oneshot::Sender<Pipe>)>,
    /// Our punches waiting for the peer's answer.
    punches: Waiting<PunchMessage>,
    punch_slots: Slots,
    /// Our relays waiting for the peer's answer.
    relays: Waiting<RelayAnswer>,
    relay_slots: Slots,
    admission: Admission,
    /// Tokens dialled back lately, and when: an asker resends its request,
    /// and every copy after the first is answered by the first dial-back.
    answered: Answered,
    /// Discovery rounds may overlap (start, a newly bound address): their
    /// delta series take turns here.
    delta_gate: DeltaSeriesGate,
    /// The port mappings on our gateways.
    portmaps: PortMaps,
    /// Cancelled when the node stops: its tasks end with it.
    stop: CancellationToken,
}

/// Registers a strategy of ours that waits for `peer`'s answer; those whose
/// connect has given up are forgotten here.
fn await_answer<M>(
    waiting: &mut Waiting<M>,
    token: ReverseToken,
    peer: NodeId,
    reply: mpsc::Sender<M>,
) {
    waiting.retain(|_, (_, w)| !w.is_closed());
    waiting.insert(token, (peer, reply));
}

/// Hands `from`'s answer to the strategy of ours its token names.
fn answer<M>(waiting: &Waiting<M>, from: NodeId, token: &str, message: M) {
    let Ok(token) = token.parse::<ReverseToken>() else {
        return;
    };
    match waiting.get(&token) {
        Some((peer, w)) if *peer == from => {
            let _ = w.try_send(message);
        }
        _ => tracing::debug!(%from, "an answer for nothing of ours"),
    }
}

/// Runs an answer to `from`'s request (a punch, a relay) holding its
/// permits, then serves the connection it made until it closes or the
/// node stops.
fn serve_answered(
    from: NodeId,
    what: &'static str,
    permits: impl Send + 'static,
    answered: impl std::future::Future<Output = Result<Pipe, String>> + Send + 'static,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let _permits = permits;
        let pipe = tokio::select! {
            () = stop.cancelled() => return,
            pipe = answered => pipe,
        };
        match pipe {
            Ok(pipe) => {
                tracing::info!(to = %from, local = %pipe.local_addr(), "{what}");
                tokio::select! {
                    () = stop.cancelled() => pipe.close().await,
                    () = pipe.closed() => {}
                }
            }
            Err(err) => tracing::debug!(%from, %err, "{what}: failed"),
        }
    });
}

impl Actor {
    pub(crate) fn new(parts: Parts) -> Self {
        let inbox = Inbox::new(parts.shared.identity.clone(), unix_ms());
        let mut actor = Self {
            parts,
            inbox,
            pending: HashMap::new(),
            punches: HashMap::new(),
            punch_slots: Slots::new(MAX_PUNCHES, MAX_PUNCHES_PER_PEER),
            relays: HashMap::new(),
            relay_slots: Slots::new(MAX_RELAYS, MAX_RELAYS_PER_PEER),
            admission: Admission::new(),
            answered: Answered::default(),
            delta_gate: DeltaSeriesGate::default(),
            portmaps: PortMaps::default(),
            stop: CancellationToken::new(),
        };
        let me = actor.parts.me.clone();
        let hooks = actor.parts.shared.hooks.subscribe();
        let shares = inbound::Shares::for_fd_limit(p2pd_net::fd_limit::current());
        actor.parts.daemon.add_accept_cb(move |conn| {
            inbound::on_accept(conn, me.clone(), hooks.clone(), &shares);
        });
        actor
    }

    /// Runs until closed or until every handle is dropped.
    pub(crate) async fn run(mut self) {
        let served: Vec<usize> = (0..self.parts.candidates.locals().len())
            .filter(|n| self.parts.candidates.is_served(*n))
            .collect();
        self.map_ports(&served);
        self.discover(served, true);
        self.measure_clock();
        let mut retry = tokio::time::interval(binds::RETRY_EVERY);
        loop {
            tokio::select! {
                command = self.parts.commands.recv() => match command {
                    Some(command) => {
                        if let Some(done) = self.handle(command) {
                            self.shut_down().await;
                            let _ = done.send(());
                            return;
                        }
                    }
                    None => break,
                },
                Some(envelope) = self.parts.envelopes.recv() => self.on_envelope(&envelope),
                _ = retry.tick(), if !self.parts.binds.is_empty() => self.retry_binds().await,
            }
        }
        self.shut_down().await;
    }

    /// Applies a command; for [`Command::Close`], returns whom to tell once
    /// `run` has shut down.
    fn handle(&mut self, command: Command) -> Option<oneshot::Sender<()>> {
        match command {
            Command::AwaitReverse { token, peer, reply } => {
                // Requests whose connect has given up are forgotten here.
                self.pending.retain(|_, (_, waiting)| !waiting.is_closed());
                self.pending.insert(token, (peer, reply));
            }
            Command::AwaitPunch { token, peer, reply } => {
                await_answer(&mut self.punches, token, peer, reply)
            }
            Command::AwaitRelay { token, peer, reply } => {
                await_answer(&mut self.relays, token, peer, reply)
            }
            Command::Claim {
                token,
                from,
                conn,
                claimed,
            } => {
                // Only the peer we asked may answer: the token was sent to
                // it alone, but a handshake proves who presents it.
                let asked = self
                    .pending
                    .get(&token)
                    .is_some_and(|(peer, _)| *peer == from);
                let waiting = if asked {
                    self.pending.remove(&token)
                } else {
                    None
                };
                let ours = match waiting.map(|(_, waiting)| waiting) {
                    // The connect that asked may have been won by another
                    // strategy meanwhile: then nobody wants this one.
                    Some(waiting) => match waiting.send(conn) {
                        Ok(()) => true,
                        Err(unwanted) => {
                            tokio::spawn(async move { unwanted.close().await });
                            true
                        }
                    },
                    None => false,
                };
                let _ = claimed.send(ours);
            }
            Command::Discovered { found, first } => {
                for (local, reflexive) in found {
                    self.parts.candidates.set_reflexive(local, reflexive);
                }
                self.publish_address();
                if first {
                    self.parts.status.send_modify(|s| s.discovered = true);
                }
            }
            Command::Mapped { local, external } => {
                self.parts.candidates.set_mapped(local, external);
                self.publish_address();
            }
            Command::Clock(clock) => self.parts.status.send_modify(|s| s.clock = clock),
            Command::Close { done } => return Some(done),
        }
        None
    }

    fn on_envelope(&mut self, envelope: &Envelope) {
        let opened = self.inbox.open(unix_ms(), envelope.via, &envelope.bytes);
        let stats = self.inbox.stats();
        self.parts.status.send_modify(|s| s.signals = stats);
        match opened {
            Ok((from, signal)) => self.on_signal(from, signal),
            Err(reason) => tracing::debug!(%reason, "signal dropped"),
        }
    }

    fn on_signal(&mut self, from: NodeId, signal: Signal) {
        match signal.body {
            Body::Reverse { token, addr } => self.on_reverse(from, &token, &addr),
            Body::Ping {} => tracing::debug!(%from, "ping"),
            Body::Punch {
                token,
                addr,
                offer,
                sent_ms,
                error_ms,
            } => {
                let request = PunchMessage::Request {
                    offer,
                    sent_ms,
                    error_ms,
                };
                self.on_punch(from, &token, &addr, request);
            }
            Body::PunchAnswer {
                token,
                offer,
                meet_ms,
            } => answer(
                &self.punches,
                from,
                &token,
                PunchMessage::Answer { offer, meet_ms },
            ),
            Body::PunchRefused { token, reason } => {
                answer(
                    &self.punches,
                    from,
                    &token,
                    PunchMessage::Refused { reason },
                );
            }
            Body::Relay {
                token,
                addr,
                relayed,
            } => self.on_relay(from, &token, &addr, relayed),
            Body::RelayAnswer { token, relayed } => {
                answer(&self.relays, from, &token, RelayAnswer::Relayed(relayed));
            }
            Body::RelayRefused { token, reason } => {
                answer(&self.relays, from, &token, RelayAnswer::Refused(reason));
            }
            _ => tracing::debug!(%from, "unknown signal"),
        }
    }

    /// A reverse request: dial the asker back, if its address is its own
    /// and one we may dial, and the dial-back limits allow it.
    fn on_reverse(&mut self, from: NodeId, token: &str, addr: &str) {
        let Ok(asker) = addr.parse::<PeerAddr>() else {
            tracing::debug!(%from, "reverse request with a bad address");
            return;
        };
        let Ok(token) = token.parse::<ReverseToken>() else {
            tracing::debug!(%from, "reverse request with a bad token");
            return;
        };
        // Our external IPs (to pick the asker's addresses), and with the
        // internal ones, this host (to tell which dial-backs stay local).
        let (ours, host): (Vec<_>, Vec<_>) = self
            .parts
            .addr
            .borrow()
            .endpoints()
            .map(|e| (e.external, [e.external, e.internal]))
            .unzip();
        let host: Vec<std::net::IpAddr> = host.into_iter().flatten().collect();
        // Offline only with an address, all on loopback: a node that has
        // none yet is not.
        let offline = is_offline(&ours);
        // The address must be the signer's own: nobody can make us dial a
        // third party in someone else's name.
        if asker.node_id != from || !dialable(&asker, offline) {
            tracing::debug!(%from, "reverse request refused");
            return;
        }
        let now = tokio::time::Instant::now();
        if self.answered.contains(now, from, token) {
            tracing::debug!(%from, "reverse request already answered");
            return;
        }
        let shared = &self.parts.shared;
        let dsts = candidates_for(&ours, &shared.lan_nets, &asker);
        let here = Here {
            host: &host,
            lans: &shared.lan_nets,
        };
        let Some((permits, dsts)) = self.admission.admit(from, &dsts, here) else {
            tracing::debug!(%from, "dial back refused: too many");
            return;
        };
        self.answered.insert(now, from, token);
        let dial_back = DialBack {
            me: shared.identity.clone(),
            encrypt: shared.config.connect.encrypt,
            asker,
            token,
            permits,
            dsts,
            budget: shared.config.connect.budgets.reverse,
            hooks: shared.hooks.subscribe(),
            stop: self.stop.clone(),
        };
        tokio::spawn(dial_back.run());
    }

    /// A punch request: answer it, if its address is the asker's own, its
    /// offer aims at that address, and the punch limits allow it.
    fn on_punch(&mut self, from: NodeId, token: &str, addr: &str, request: PunchMessage) {
        let (Ok(asker), Ok(token)) = (addr.parse::<PeerAddr>(), token.parse::<ReverseToken>())
        else {
            tracing::debug!(%from, "punch request malformed");
            return;
        };
        let ours = self.parts.addr.borrow().clone();
        let externals: Vec<std::net::IpAddr> = ours.endpoints().map(|e| e.external).collect();
        let offline = is_offline(&externals);
        let PunchMessage::Request { offer, .. } = &request else {
            return;
        };
        let aims_at_asker = asker.endpoints().any(|e| e.external == offer.ip);
        if asker.node_id != from || !aims_at_asker || !dialable(&asker, offline) {
            tracing::debug!(%from, "punch request refused");
            return;
        }
        let Some(permits) = self.punch_slots.take(from) else {
            tracing::debug!(%from, "punch refused: too many");
            return;
        };
        let shared = self.parts.shared.clone();
        let clock = self.parts.status.borrow().clock;
        let hooks = shared.hooks.subscribe();
        let answered = async move {
            punch::respond(&shared, &ours, &asker, token, clock, request, hooks)
                .await
                .map_err(|e| e.to_string())
        };
        serve_answered(from, "punched", permits, answered, self.stop.clone());
    }

    /// A relay request: answer it, if its address is the signer's own, its
    /// relayed address one a peer may make us send to, and the relay
    /// limits allow it. The answer costs an allocation on our
    /// TURN server, unless STUN found one of our addresses untranslated;
    /// it sends the asker's relayed address nothing but QUIC answers and,
    /// from such an address, one empty datagram that opens our filter.
    fn on_relay(&mut self, from: NodeId, token: &str, addr: &str, theirs: std::net::SocketAddr) {
        let (Ok(asker), Ok(token)) = (addr.parse::<PeerAddr>(), token.parse::<ReverseToken>())
        else {
            tracing::debug!(%from, "relay request malformed");
            return;
        };
        if asker.node_id != from {
            tracing::debug!(%from, "relay request refused: not the signer's address");
            return;
        }
        // Judged, and then used, as the address it is: an IPv4-mapped one
        // is IPv4.
        let theirs = std::net::SocketAddr::new(theirs.ip().to_canonical(), theirs.port());
        let externals: Vec<std::net::IpAddr> = self
            .parts
            .addr
            .borrow()
            .endpoints()
            .map(|e| e.external)
            .collect();
        if theirs.port() == 0 || !reachable(theirs.ip(), is_offline(&externals)) {
            tracing::debug!(%from, %theirs, "relay request refused: not a relayed address");
            return;
        }
        let Some(permits) = self.relay_slots.take(from) else {
            tracing::debug!(%from, "relay refused: too many");
            return;
        };
        let untranslated = self.parts.candidates.untranslated();
        let shared = self.parts.shared.clone();
        let hooks = shared.hooks.subscribe();
        let answered = async move {
            relay::respond(&shared, &untranslated, &asker, token, theirs, hooks)
                .await
                .map_err(|e| e.to_string())
        };
        serve_answered(from, "relayed", permits, answered, self.stop.clone());
    }

    async fn retry_binds(&mut self) {
        let parts = &mut self.parts;
        let newly = parts
            .binds
            .retry(&mut parts.daemon, &mut parts.candidates)
            .await;
        // A link-local address served alone changes the address too.
        self.publish_address();
        if !newly.is_empty() {
            self.map_ports(&newly);
            self.discover(newly, false);
        }
    }

    /// Measures the clock on a task of its own; the result comes back as
    /// [`Command::Clock`].
    fn measure_clock(&self) {
        if !self.parts.shared.config.measures_clock() {
            self.parts
                .status
                .send_modify(|s| s.clock = crate::clock::Clock::Unknown);
            return;
        }
        let names = self.parts.shared.config.ntp_servers.clone();
        let me = self.parts.me.clone();
        let stop = self.stop.clone();
        tokio::spawn(async move {
            let clock = tokio::select! {
                () = stop.cancelled() => return,
                clock = crate::clock::measure(&names) => clock,
            };
            if let Some(me) = me.upgrade() {
                let _ = me.send(Command::Clock(clock)).await;
            }
        });
    }

    /// Runs STUN discovery for some local addresses on a task of its own
    /// (at most [`DISCOVERY_LIMIT`]); the result comes back as
    /// [`Command::Discovered`].
    fn discover(&self, which: Vec<usize>, first: bool) {
        let locals: Vec<(usize, Local)> = which
            .into_iter()
            .filter_map(|n| {
                self.parts
                    .candidates
                    .locals()
                    .get(n)
                    .map(|l| (n, l.clone()))
            })
            .filter(|(_, l)| !l.ip.is_loopback())
            .collect();
        let shared = self.parts.shared.clone();
        let me = self.parts.me.clone();
        let stop = self.stop.clone();
        let gate = self.delta_gate.clone();
        tokio::spawn(async move {
            let run = async {
                let servers = shared.resolve_stun().await;
                if servers.is_empty() || locals.is_empty() {
                    return Vec::new();
                }
                let only: Vec<Local> = locals.iter().map(|(_, l)| l.clone()).collect();
                let options = DiscoveryOptions::default();
                let reports = discovery::discover_each(&only, &servers, &options, &gate).await;
                reports
                    .into_iter()
                    .filter_map(|(i, report)| {
                        let report = report.ok()?;
                        let external = report.external?;
                        let reflexive = Reflexive {
                            external: external.ip(),
                            nat: report.nat,
                            delta: report.delta,
                        };
                        Some((locals[i].0, reflexive))
                    })
                    .collect()
            };
            let found = tokio::select! {
                () = stop.cancelled() => return,
                found = tokio::time::timeout(DISCOVERY_LIMIT, run) => found.unwrap_or_default(),
            };
            if let Some(me) = me.upgrade() {
                let _ = me.send(Command::Discovered { found, first }).await;
            }
        });
    }

    /// Asks the gateways in front of some served local addresses (IPv4,
    /// not loopback) to forward our port, with the configured protocols.
    fn map_ports(&mut self, which: &[usize]) {
        let protocols = self.parts.shared.config.maps_ports();
        if protocols.is_empty() {
            return;
        }
        let port = self.parts.binds.port();
        for &n in which {
            let Some(local) = self.parts.candidates.locals().get(n) else {
                continue;
            };
            if let (std::net::IpAddr::V4(ip), Some(gateway)) = (local.ip, local.gateway_v4)
                && !ip.is_loopback()
            {
                let (me, stop) = (self.parts.me.clone(), self.stop.clone());
                self.portmaps
                    .map(protocols, (n, ip, gateway), port, me, stop);
            }
        }
    }

    fn publish_address(&self) {
        let id = self.parts.shared.identity.id();
        let addr = self.parts.candidates.address(&self.parts.brokers, id);
        self.parts.addr.send_if_modified(|current| {
            let changed = *current != addr;
            *current = addr;
            changed
        });
    }

    async fn shut_down(&mut self) {
        self.stop.cancel();
        // Our mappings go from the gateways before we do.
        self.portmaps.closed().await;
        self.parts.shared.signaling.close();
        // Envelopes already received are opened, for the counts, but not
        // acted on.
        while let Ok(envelope) = self.parts.envelopes.try_recv() {
            let _ = self.inbox.open(unix_ms(), envelope.via, &envelope.bytes);
        }
        let stats = self.inbox.stats();
        self.parts.status.send_modify(|s| s.signals = stats);
        self.parts.daemon.close().await;
        // Whoever waits for the first address is not left waiting.
        self.parts.status.send_modify(|s| s.discovered = true);
    }
}
