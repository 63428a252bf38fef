//! Relaying as a node does it, for either side: an allocation on a TURN
//! server from the config, the relayed addresses exchanged over signaling,
//! a channel to the peer's, QUIC between the two allocations, and the
//! connection handshake on its stream, which then becomes a pipe like any
//! other (`p2pd_net::relay` has the layers). An answerer that STUN found
//! untranslated answers from a plain UDP socket of its own in place of B,
//! without an allocation.
//!
//! ```text
//!  asker                                   answerer
//!  allocate ─── relay{relayed A} ──────▶   allocate, bind A
//!  bind B   ◀── relay-answer{relayed B} ─  QUIC server on B
//!  QUIC to B, open the stream, handshake ▶ accept from A, greet: the asker's key and token?
//! ```

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use p2pd_net::handshake::{self, Asking};
use p2pd_net::pipe::{Pipe, PipeConfig};
use p2pd_net::relay::{self, Allocation, RelayError, Unrelayed};
use p2pd_proto::addr::PeerAddr;
use p2pd_proto::connect::ReverseToken;
use p2pd_proto::signal::Body;
use p2pd_proto::turn::{ClientConfig, Family};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout_at};

use super::Shared;
use super::command::RelayAnswer;
use super::inbound::{self, Hooks};
use crate::servers::{TurnServer, TurnTransport};

/// A relay ends within this, whatever the strategy's budget.
pub(crate) const RELAY_LIMIT: Duration = Duration::from_secs(8);
/// Each TURN request gives up after this.
const TURN_TIMEOUT: Duration = Duration::from_secs(3);
/// The allocation lifetime asked for (RFC 8656's default).
const LIFETIME: Duration = Duration::from_secs(600);
/// What a peer hears when we cannot relay for it.
const REFUSAL: &str = "no TURN allocation for this relay";
/// The port of a TURN server whose address names none.
const TURN_PORT: u16 = 3478;

/// Why a relay failed; the text reaches `tried`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RelayFailed {
    #[error("no TURN server is configured")]
    NoServer,
    #[error(transparent)]
    Relay(#[from] RelayError),
    #[error("the peer refused to relay: {0}")]
    PeerRefused(String),
    #[error("the peer did not answer the relay request within {} ms", .0.as_millis())]
    NoAnswer(Duration),
    #[error("not the peer: {0}")]
    NotThePeer(String),
    #[error("the node is closed")]
    Closed,
}

/// A relay ends within the strategy's budget, and within [`RELAY_LIMIT`].
pub(crate) fn limit(shared: &Shared) -> Duration {
    shared.config.connect.budgets.relay.min(RELAY_LIMIT)
}

/// Relays to `peer` as the initiator: registered with the actor under
/// `token`, whose answer arrives on `inbox`.
pub(crate) async fn initiate(
    shared: &Shared,
    ours: &PeerAddr,
    peer: &PeerAddr,
    (token, mut inbox): (ReverseToken, mpsc::Receiver<RelayAnswer>),
) -> Result<Pipe, RelayFailed> {
    let limit = limit(shared);
    let deadline = Instant::now() + limit;
    let late = |_| RelayFailed::NoAnswer(limit);
    let mut allocation = timeout_at(deadline, allocate(shared, Family::V4))
        .await
        .map_err(late)??;
    let body = Body::Relay {
        token: token.to_string(),
        addr: ours.to_string(),
        relayed: allocation.relayed(),
    };
    shared.send_signal(peer, body);
    let theirs = match timeout_at(deadline, inbox.recv()).await {
        Ok(Some(RelayAnswer::Relayed(theirs))) => theirs,
        Ok(Some(RelayAnswer::Refused(reason))) => return Err(RelayFailed::PeerRefused(reason)),
        Ok(None) => return Err(RelayFailed::Closed),
        Err(_) => return Err(RelayFailed::NoAnswer(limit)),
    };
    timeout_at(deadline, allocation.bind(theirs))
        .await
        .map_err(late)??;
    let (mut stream, reading) = timeout_at(deadline, relay::open_stream(allocation, theirs))
        .await
        .map_err(late)??;
    let asking = Asking {
        encrypt: shared.config.connect.encrypt,
        token: Some(token),
        limit: deadline.saturating_duration_since(Instant::now()),
    };
    let layer = handshake::initiate(&mut stream, &shared.identity, &peer.node_id, asking)
        .await
        .map_err(|e| RelayFailed::NotThePeer(e.to_string()))?;
    let pipe = Pipe::from_tcp_stream_layered(stream, &PipeConfig::default(), layer, |_| {})
        .map_err(|e| RelayFailed::NotThePeer(e.to_string()))?;
    Ok(reading_while_open(pipe, reading))
}

/// Keeps the relayed stream's inbound direction open for as long as the
/// pipe lives (its callbacks do); a relay that fails before drops it, and
/// its splice ends at once.
fn reading_while_open(pipe: Pipe, reading: relay::Reading) -> Pipe {
    pipe.add_end_cb(move |_| {
        let _held = &reading;
        async {}
    });
    pipe
}

/// Answers `asker`'s relay request (its allocation relays from
/// `theirs`): the relayed connection, set up to be served as a remote
/// peer's, or why not (a refusal has been sent back).
pub(crate) async fn respond(
    shared: &Shared,
    untranslated: &[IpAddr],
    asker: &PeerAddr,
    token: ReverseToken,
    theirs: SocketAddr,
    hooks: watch::Receiver<Hooks>,
) -> Result<Pipe, RelayFailed> {
    let refuse = |err: RelayFailed| {
        // Our servers and their answers are ours to know: the asker hears
        // only that we cannot.
        let body = Body::RelayRefused {
            token: token.to_string(),
            reason: REFUSAL.to_owned(),
        };
        shared.send_signal(asker, body);
        err
    };
    let limit = limit(shared);
    let deadline = Instant::now() + limit;
    let late = |_| RelayFailed::NoAnswer(limit);
    let answer = |relayed| {
        let body = Body::RelayAnswer {
            token: token.to_string(),
            relayed,
        };
        shared.send_signal(asker, body);
    };
    let accepted = match unrelayed(untranslated, theirs) {
        Some((unrelayed, here)) => {
            answer(here);
            timeout_at(deadline, unrelayed.accept()).await
        }
        None => {
            let allocation = timeout_at(deadline, bound_allocation(shared, theirs))
                .await
                .map_err(late)
                .and_then(|bound| bound)
                .map_err(refuse)?;
            answer(allocation.relayed());
            timeout_at(deadline, relay::accept_stream(allocation, theirs)).await
        }
    };
    let (stream, reading) = accepted.map_err(late)??;
    // Counted against the asker's relayed address, not the loopback.
    let greeted = timeout_at(deadline, shared.acceptor.greet_from(stream, Some(theirs))).await;
    let Ok(Some((stream, layer))) = greeted else {
        return Err(RelayFailed::NotThePeer("no handshake".to_owned()));
    };
    let proved = layer
        .peer
        .as_ref()
        .is_some_and(|p| p.id == asker.node_id && p.token == Some(token));
    if !proved {
        return Err(RelayFailed::NotThePeer(
            "the connection did not prove the asker's key and token".to_owned(),
        ));
    }
    // Served from its first message on: the asker may send at once.
    let pipe =
        Pipe::from_tcp_stream_layered(stream, &PipeConfig::default(), layer, |pipe: &Pipe| {
            inbound::serve_all(pipe, hooks)
        })
        .map_err(|e| RelayFailed::NotThePeer(e.to_string()))?;
    Ok(reading_while_open(pipe, reading))
}

/// An allocation of our own, bound to the asker's relayed address.
async fn bound_allocation(shared: &Shared, theirs: SocketAddr) -> Result<Allocation, RelayFailed> {
    let family = if theirs.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    };
    let mut allocation = allocate(shared, family).await?;
    allocation.bind(theirs).await?;
    Ok(allocation)
}

/// A relay's answering end, and its address, on one of our `untranslated`
/// IPs in the family of `theirs`, if we have one and it binds: the
/// asker's allocation relays to it as it is, so we need none of our own.
fn unrelayed(untranslated: &[IpAddr], theirs: SocketAddr) -> Option<(Unrelayed, SocketAddr)> {
    let ip = *untranslated
        .iter()
        .find(|ip| ip.is_ipv4() == theirs.is_ipv4())?;
    let bound = Unrelayed::bind(ip, theirs).and_then(|unrelayed| {
        let here = unrelayed.local_addr()?;
        Ok((unrelayed, here))
    });
    bound
        .inspect_err(|err| tracing::debug!(%err, %ip, "no unrelayed socket"))
        .ok()
}

/// An allocation on the first configured server that grants one; the last
/// server's error when none does.
async fn allocate(shared: &Shared, family: Family) -> Result<Allocation, RelayFailed> {
    let mut last = RelayFailed::NoServer;
    for server in &shared.config.turn_servers {
        let Some(addr) = resolve(server).await else {
            continue;
        };
        match Allocation::open(client_config(server, addr, family)).await {
            Ok(allocation) => return Ok(allocation),
            Err(err) => {
                tracing::debug!(%err, server = %addr, "no allocation");
                last = err.into();
            }
        }
    }
    Err(last)
}

async fn resolve(server: &TurnServer) -> Option<SocketAddr> {
    let found = crate::servers::resolve(std::slice::from_ref(&server.address), TURN_PORT, "TURN");
    found.await.into_iter().next()
}

fn client_config(server: &TurnServer, addr: SocketAddr, family: Family) -> ClientConfig {
    ClientConfig {
        server: addr,
        stream: server.transport == TurnTransport::Tcp,
        username: server.username.clone(),
        password: server.password.clone(),
        realm: server.realm.clone(),
        family,
        lifetime: LIFETIME,
        timeout: TURN_TIMEOUT,
        refresh_every: None,
    }
}
