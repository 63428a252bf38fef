//! Answering reverse requests: which addresses a stranger may make this
//! node dial, how many dial-backs run at once, and the dial-back itself.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use p2pd_net::handshake::{self, Asking, Setup};
use p2pd_net::pipe::{Pipe, PipeConfig};
use p2pd_proto::addr::{NodeId, PeerAddr};
use p2pd_proto::connect::{ReverseToken, candidates_for};
use p2pd_proto::signal::Identity;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::inbound::{self, Hooks};

/// Dial-back connections a node keeps at once, and per asking peer: a
/// signed request names the asker, but the asker picks the address, so a
/// stranger must not be able to make a node open connections without
/// bound.
const MAX_DIALBACKS: usize = 64;
const MAX_DIALBACKS_PER_PEER: usize = 4;

/// Counts live dial-backs; a dial-back holds its permits until its
/// connection (or the attempt) ends.
#[derive(Debug)]
pub(crate) struct Admission {
    total: Arc<Semaphore>,
    per_peer: HashMap<NodeId, Arc<Semaphore>>,
}

/// A dial-back's share of [`Admission`]; dropping it frees the slots.
#[derive(Debug)]
pub(crate) struct Permits {
    _total: OwnedSemaphorePermit,
    _peer: OwnedSemaphorePermit,
}

impl Admission {
    pub(crate) fn new() -> Self {
        Self {
            total: Arc::new(Semaphore::new(MAX_DIALBACKS)),
            per_peer: HashMap::new(),
        }
    }

    /// Slots for one more dial-back to `peer`, if both the node's and the
    /// peer's limits allow it.
    pub(crate) fn admit(&mut self, peer: NodeId) -> Option<Permits> {
        // Peers with no live dial-back are forgotten, so the map stays as
        // small as the number of peers being answered.
        self.per_peer
            .retain(|_, s| s.available_permits() < MAX_DIALBACKS_PER_PEER);
        let mine = self
            .per_peer
            .entry(peer)
            .or_insert_with(|| Arc::new(Semaphore::new(MAX_DIALBACKS_PER_PEER)))
            .clone();
        let peer = mine.try_acquire_owned().ok()?;
        let total = self.total.clone().try_acquire_owned().ok()?;
        Some(Permits {
            _total: total,
            _peer: peer,
        })
    }
}

/// Whether a reverse request may make us dial `asker`'s address: never
/// multicast, broadcast or unspecified addresses, and loopback only when
/// this node itself is on loopback alone (`offline`: same machine);
/// otherwise a stranger could point us at services on this host.
pub(crate) fn dialable(asker: &PeerAddr, offline: bool) -> bool {
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

/// What a dial-back needs.
pub(crate) struct DialBack {
    /// Who we prove to be in the dial-back's handshake.
    pub(crate) me: Identity,
    /// Whether we ask for the stream to be encrypted.
    pub(crate) encrypt: bool,
    pub(crate) asker: PeerAddr,
    pub(crate) token: ReverseToken,
    pub(crate) permits: Permits,
    /// Our external IPs and networks, to pick the asker's addresses.
    pub(crate) ours: Vec<IpAddr>,
    pub(crate) nets: Vec<ipnet::IpNet>,
    pub(crate) budget: Duration,
    pub(crate) hooks: watch::Receiver<Hooks>,
    pub(crate) stop: CancellationToken,
}

impl DialBack {
    /// Connects to the asker on every address it lists at once, each
    /// handshake carrying the token, then serves ECHO and the hooks on each
    /// connection the asker keeps (the asker wanted it) until it ends or the
    /// node stops. The asker keeps the first that reaches it and closes the
    /// rest, so which one wins is its choice, not a race on this side.
    pub(crate) async fn run(self) {
        let asking = Asking {
            encrypt: self.encrypt,
            token: Some(self.token),
            limit: self.budget,
        };
        let mut config = PipeConfig::default();
        config.connect_timeout(self.budget);
        // Served from its first message on: the asker may send at once.
        let hooks = self.hooks.clone();
        let serve: Setup = Arc::new(move |pipe: &Pipe| inbound::serve_all(pipe, hooks.clone()));
        let mut dials = JoinSet::new();
        for dst in candidates_for(&self.ours, &self.nets, &self.asker) {
            let (me, asker, config) = (self.me.clone(), self.asker.node_id, config.clone());
            let serve = serve.clone();
            dials.spawn(async move {
                handshake::dial(dst, None, &config, (&me, &asker), asking, Some(serve)).await
            });
        }
        let mut held = Vec::new();
        loop {
            tokio::select! {
                () = self.stop.cancelled() => break,
                joined = dials.join_next() => match joined {
                    Some(Ok(Ok(pipe))) => {
                        tracing::info!(to = %self.asker.node_id, local = %pipe.local_addr(), "dialled back for a reverse connect");
                        held.push(pipe);
                    }
                    Some(Ok(Err(err))) => tracing::debug!(to = %self.asker.node_id, %err, "dial back failed"),
                    Some(Err(_)) => {}
                    None => break,
                },
            }
        }
        dials.abort_all();
        for pipe in held {
            hold(pipe, self.stop.clone()).await;
        }
        drop(self.permits);
    }
}

/// Waits until `pipe` ends, closing it if the node stops first.
async fn hold(pipe: Pipe, stop: CancellationToken) {
    tokio::select! {
        () = stop.cancelled() => pipe.close().await,
        () = pipe.closed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn addr(ip: &str) -> PeerAddr {
        format!("-[0,{ip},{ip},4000,1,1,0]-0-{ID}")
            .parse()
            .expect("valid")
    }

    #[test]
    fn reverse_requests_may_not_point_at_this_host_or_at_groups() {
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
    fn admission_bounds_each_peer_and_the_node() {
        let mut admission = Admission::new();
        let peer = |n: u8| NodeId([n; 32]);
        let mine: Vec<Permits> = (0..MAX_DIALBACKS_PER_PEER)
            .map(|_| admission.admit(peer(0)).expect("within the peer's limit"))
            .collect();
        assert!(admission.admit(peer(0)).is_none(), "the peer's limit");
        drop(mine);
        assert!(admission.admit(peer(0)).is_some(), "slots come back");

        let mut held = Vec::new();
        for n in 1..=u8::MAX {
            match admission.admit(peer(n)) {
                Some(p) => held.push(p),
                None => break,
            }
        }
        assert_eq!(held.len(), MAX_DIALBACKS, "the node's limit");
        assert!(
            admission.per_peer.len() <= MAX_DIALBACKS + 1,
            "only peers with live dial-backs are remembered"
        );
    }
}
