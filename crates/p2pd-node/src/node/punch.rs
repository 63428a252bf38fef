//! Punching as a node does it: the driver of [`Session`], for either side.
//! It binds the reserved ports, probes their mapping with STUN over TCP,
//! sends the session's messages over signaling, makes its connects in the
//! order given and runs the connection handshake on the connections that
//! come, until the session keeps one.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use p2pd_net::handshake::{self, Acceptor, Asking};
use p2pd_net::pipe::{Layer, Pipe, PipeConfig};
use p2pd_net::punch::{connect_now, established, reserve};
use p2pd_net::stun::client::query_tcp_from;
use p2pd_proto::addr::{NodeId, PeerAddr};
use p2pd_proto::connect::ReverseToken;
use p2pd_proto::punch::{
    Action, Behaviour, ConnId, Message, Observed, Outcome, Probe, PunchError, Session, Side,
};
use p2pd_proto::signal::{Body, Identity};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use super::Shared;
use super::inbound::{self, Hooks};
use crate::clock::Clock;

/// A punch ends within this, whatever the strategy's budget.
pub(crate) const PUNCH_LIMIT: Duration = Duration::from_secs(5);
/// Each STUN server gets this long to answer the probe.
const PROBE_LIMIT: Duration = Duration::from_millis(700);
/// STUN servers tried for the probe, at most.
const PROBE_SERVERS: usize = 2;

/// The interface to punch from and the peer's NAT: the first IPv4
/// endpoint of each address (the NAT tests run on IPv4).
fn sides(ours: &PeerAddr, theirs: &PeerAddr) -> Option<(Side, Behaviour)> {
    let mine = ours.ipv4.first()?;
    let side = Side {
        behaviour: Behaviour::from(mine),
        local_ip: mine.internal,
    };
    Some((side, Behaviour::from(theirs.ipv4.first()?)))
}

/// Who a punch is with and what it may use.
struct Punching {
    identity: Identity,
    peer: NodeId,
    token: ReverseToken,
    encrypt: bool,
    local_ip: IpAddr,
    /// STUN servers for the probe (TCP).
    stun: Vec<SocketAddr>,
    /// The responder answers handshakes with the node's acceptor (its
    /// replay guard); the initiator has none.
    acceptor: Option<Arc<Acceptor>>,
}

impl Punching {
    async fn new(
        shared: &Shared,
        peer: NodeId,
        token: ReverseToken,
        local_ip: IpAddr,
        responder: bool,
    ) -> Self {
        Self {
            identity: shared.identity.clone(),
            peer,
            token,
            encrypt: shared.config.connect.encrypt,
            local_ip,
            stun: shared.stun_servers().await,
            acceptor: responder.then(|| shared.acceptor.clone()),
        }
    }
}

/// A punch ends within the strategy's budget, and within [`PUNCH_LIMIT`].
fn limit(shared: &Shared) -> Duration {
    shared.config.connect.budgets.punch.min(PUNCH_LIMIT)
}

/// Punches to `peer` as the initiator: registered with the actor under
/// `token`, whose answers arrive on `inbox`.
pub(crate) async fn initiate(
    shared: &Shared,
    ours: &PeerAddr,
    peer: &PeerAddr,
    (token, inbox): (ReverseToken, mpsc::Receiver<Message>),
    clock: Clock,
) -> Result<Pipe, PunchError> {
    let Some((side, theirs)) = sides(ours, peer) else {
        return Err(PunchError::NoCommonEndpoint);
    };
    let now = Instant::now().into_std();
    let session = Session::initiate(now, clock.synced(), side, &theirs, limit(shared));
    let io = Punching::new(shared, peer.node_id, token, side.local_ip, false).await;
    let addr = ours.to_string();
    let send = |message| {
        if let Message::Request {
            offer,
            sent_ms,
            error_ms,
        } = message
        {
            let body = Body::Punch {
                token: token.to_string(),
                addr: addr.clone(),
                offer,
                sent_ms,
                error_ms,
            };
            shared.send_signal(peer, body);
        }
    };
    let (stream, layer) = run(session, io, send, inbox).await?;
    into_pipe(stream, layer, |_| {})
}

/// Answers `asker`'s punch request: the punched connection, set up to be
/// served as a remote peer's, or why not (a refusal has been sent back).
pub(crate) async fn respond(
    shared: &Shared,
    ours: &PeerAddr,
    asker: &PeerAddr,
    token: ReverseToken,
    clock: Clock,
    request: Message,
    hooks: watch::Receiver<Hooks>,
) -> Result<Pipe, PunchError> {
    let send = |message| {
        let body = match message {
            Message::Answer { offer, meet_ms } => Body::PunchAnswer {
                token: token.to_string(),
                offer,
                meet_ms,
            },
            Message::Refused { reason } => Body::PunchRefused {
                token: token.to_string(),
                reason,
            },
            Message::Request { .. } => return,
        };
        shared.send_signal(asker, body);
    };
    let Some((side, _)) = sides(ours, asker) else {
        send(Message::Refused {
            reason: PunchError::NoCommonEndpoint.to_string(),
        });
        return Err(PunchError::NoCommonEndpoint);
    };
    let now = Instant::now().into_std();
    let session = Session::respond(now, clock.synced(), side, &request, limit(shared));
    let io = Punching::new(shared, asker.node_id, token, side.local_ip, true).await;
    // Nothing more comes from the asker after its request.
    let (_, inbox) = mpsc::channel(1);
    let (stream, layer) = run(session, io, send, inbox).await?;
    // Served from its first message on: the asker may send at once.
    into_pipe(stream, layer, |pipe: &Pipe| inbound::serve_all(pipe, hooks))
}

/// The punched connection as a pipe; `setup` runs before its first message.
fn into_pipe(
    stream: TcpStream,
    layer: Layer,
    setup: impl FnOnce(&Pipe),
) -> Result<Pipe, PunchError> {
    Pipe::from_tcp_stream_layered(stream, &PipeConfig::default(), layer, setup)
        .map_err(|e| PunchError::NotThePeer(e.to_string()))
}

/// What the driver's tasks report.
enum Io {
    Established(ConnId, std::io::Result<TcpStream>),
    Handshaken(ConnId, Result<(TcpStream, Layer), String>),
}

/// Runs `session` to its end: the connection it kept and its handshake's
/// layer. `send` puts a message on signaling; `inbox` brings the peer's.
async fn run(
    mut session: Session,
    io: Punching,
    send: impl Fn(Message),
    mut inbox: mpsc::Receiver<Message>,
) -> Result<(TcpStream, Layer), PunchError> {
    let mut tasks: JoinSet<Io> = JoinSet::new();
    let mut running: HashMap<ConnId, AbortHandle> = HashMap::new();
    let mut streams: HashMap<ConnId, TcpStream> = HashMap::new();
    let mut won: HashMap<ConnId, (TcpStream, Layer)> = HashMap::new();
    let mut listeners: JoinSet<()> = JoinSet::new();
    let (accepted_tx, mut accepted) = mpsc::channel(16);
    let mut inbox_open = true;
    loop {
        while let Some(action) = session.poll_action() {
            match action {
                Action::Reserve { count, probe } => {
                    let now = Instant::now().into_std();
                    match prepare(&io, count, probe).await {
                        Ok((bound, locals, probed)) => {
                            for listener in bound {
                                let tx = accepted_tx.clone();
                                listeners.spawn(async move {
                                    loop {
                                        let got = listener.accept().await;
                                        let failed = got.is_err();
                                        if tx.send(got).await.is_err() || failed {
                                            return;
                                        }
                                    }
                                });
                            }
                            session.handle_reserved(now, locals, probed);
                        }
                        Err(reason) => session.handle_probe_failed(now, reason),
                    }
                }
                Action::Send(message) => send(message),
                Action::Connect { conn, local, dst } => {
                    let started = connect_now(SocketAddr::new(io.local_ip, local), dst);
                    let task = tasks.spawn(async move {
                        let result = match started {
                            Ok(stream) => established(&stream).await.map(|()| stream),
                            Err(err) => Err(err),
                        };
                        Io::Established(conn, result)
                    });
                    running.insert(conn, task);
                }
                Action::Handshake { conn } => {
                    if let Some(stream) = streams.remove(&conn) {
                        let task = tasks.spawn(handshake_on(conn, stream, &io));
                        running.insert(conn, task);
                    }
                }
                Action::Close { conn } => {
                    if let Some(task) = running.remove(&conn) {
                        task.abort();
                    }
                    streams.remove(&conn);
                    won.remove(&conn);
                }
                Action::Release => listeners.abort_all(),
            }
        }
        if let Some(outcome) = session.poll_outcome() {
            return match outcome {
                Outcome::Won(conn) => won.remove(&conn).ok_or(PunchError::TimedOut(PUNCH_LIMIT)),
                Outcome::Failed(err) => Err(err),
            };
        }
        let wake = session.poll_timeout().map(Instant::from_std);
        tokio::select! {
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                let Ok(event) = joined else { continue };
                let now = Instant::now().into_std();
                match event {
                    Io::Established(conn, Ok(stream)) => {
                        running.remove(&conn);
                        streams.insert(conn, stream);
                        session.handle_established(now, conn);
                    }
                    Io::Established(conn, Err(err)) => {
                        running.remove(&conn);
                        tracing::debug!(%err, "punch connect failed");
                        session.handle_connect_failed(now, conn);
                    }
                    Io::Handshaken(conn, Ok(done)) => {
                        running.remove(&conn);
                        won.insert(conn, done);
                        session.handle_authenticated(now, conn);
                    }
                    Io::Handshaken(conn, Err(reason)) => {
                        running.remove(&conn);
                        session.handle_handshake_failed(now, conn, reason);
                    }
                }
            }
            Some(got) = accepted.recv() => {
                if let Ok((stream, from)) = got
                    && let Some(conn) = session.handle_accepted(Instant::now().into_std(), from)
                {
                    streams.insert(conn, stream);
                }
            }
            message = inbox.recv(), if inbox_open => match message {
                Some(message) => session.handle_message(Instant::now().into_std(), message),
                None => inbox_open = false,
            },
            () = sleep_until(wake) => session.handle_timeout(Instant::now().into_std()),
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

type Prepared = (
    Vec<tokio::net::TcpListener>,
    Vec<u16>,
    Option<(IpAddr, Observed)>,
);

/// Binds the reserved ports and probes as asked.
async fn prepare(io: &Punching, count: usize, probe: Probe) -> Result<Prepared, String> {
    let bound = reserve(io.local_ip, count).map_err(|e| e.to_string())?;
    let locals: Vec<u16> = bound
        .iter()
        .filter_map(|l| l.local_addr().ok().map(|a| a.port()))
        .collect();
    let from = match probe {
        Probe::None => return Ok((bound, locals, None)),
        Probe::FromReserved => SocketAddr::new(io.local_ip, locals.first().copied().unwrap_or(0)),
        Probe::Fresh => SocketAddr::new(io.local_ip, 0),
    };
    let mut last = String::from("no STUN server is configured");
    for server in io.stun.iter().take(PROBE_SERVERS) {
        match query_tcp_from(from, *server, PROBE_LIMIT).await {
            Ok((response, bound_at)) => {
                let seen = Observed {
                    local: bound_at.port(),
                    mapped: response.mapped.port(),
                };
                return Ok((bound, locals, Some((response.mapped.ip(), seen))));
            }
            Err(err) => last = err.to_string(),
        }
    }
    Err(last)
}

/// The connection handshake on a punched connection, in our role: the
/// initiator proves itself and checks the peer's key; the responder
/// answers and checks that the peer and the punch's token are the ones
/// it agreed to.
fn handshake_on(
    conn: ConnId,
    mut stream: TcpStream,
    io: &Punching,
) -> impl std::future::Future<Output = Io> + Send + 'static {
    let (me, peer, token, encrypt) = (io.identity.clone(), io.peer, io.token, io.encrypt);
    let acceptor = io.acceptor.clone();
    async move {
        let result = match acceptor {
            None => {
                let asking = Asking {
                    encrypt,
                    token: Some(token),
                    limit: PUNCH_LIMIT,
                };
                handshake::initiate(&mut stream, &me, &peer, asking)
                    .await
                    .map(|layer| (stream, layer))
                    .map_err(|e| e.to_string())
            }
            Some(acceptor) => match acceptor.greet(stream).await {
                Some((stream, layer))
                    if layer
                        .peer
                        .as_ref()
                        .is_some_and(|p| p.id == peer && p.token == Some(token)) =>
                {
                    Ok((stream, layer))
                }
                _ => Err("the connection did not prove the asker's key and token".to_owned()),
            },
        };
        Io::Handshaken(conn, result)
    }
}
