//! The actor's mailbox: what handles, accepted connections and the node's
//! own tasks ask of the task that owns the node's state. Its own module, so
//! those senders need not import the actor.

use std::net::SocketAddr;

use p2pd_net::pipe::Pipe;
use p2pd_proto::addr::NodeId;
use p2pd_proto::connect::ReverseToken;
use tokio::sync::{mpsc, oneshot};

use crate::candidates::Reflexive;

/// What the actor is asked to do.
pub(crate) enum Command {
    /// Remember a reverse request of ours to `peer`; its connection goes
    /// to `reply`.
    AwaitReverse {
        token: ReverseToken,
        peer: NodeId,
        reply: oneshot::Sender<Pipe>,
    },
    /// Remember a punch of ours with `peer`; its answers go to `reply`
    /// (until it is dropped).
    AwaitPunch {
        token: ReverseToken,
        peer: NodeId,
        reply: mpsc::Sender<p2pd_proto::punch::Message>,
    },
    /// Remember a relay of ours with `peer`; its answer goes to `reply`
    /// (until it is dropped).
    AwaitRelay {
        token: ReverseToken,
        peer: NodeId,
        reply: mpsc::Sender<RelayAnswer>,
    },
    /// An accepted connection's handshake, proven to come from `from`,
    /// carried a reverse token: if it answers one of our requests to that
    /// peer, hand it over and say so.
    Claim {
        token: ReverseToken,
        from: NodeId,
        conn: Pipe,
        claimed: oneshot::Sender<bool>,
    },
    /// What discovery found (local address index, what STUN saw); `first`
    /// for the round that starts with the node.
    Discovered {
        found: Vec<(usize, Reflexive)>,
        first: bool,
    },
    /// What the gateway forwards to local address `local`'s port now
    /// (`None`: nothing any more).
    Mapped {
        local: usize,
        external: Option<std::net::SocketAddr>,
    },
    /// What the clock measurement found.
    Clock(crate::clock::Clock),
    /// Stop everything; `done` is answered once the servers are closed.
    Close { done: oneshot::Sender<()> },
}

/// The peer's answer to one of our relay requests.
#[derive(Debug)]
pub(crate) enum RelayAnswer {
    /// Its relayed address.
    Relayed(SocketAddr),
    /// It will not relay, and why.
    Refused(String),
}
