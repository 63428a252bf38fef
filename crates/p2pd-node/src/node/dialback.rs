//! Answering reverse requests: which addresses a stranger may make this
//! node dial, how many dial-backs run at once, and the dial-back itself.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use p2pd_net::handshake::{self, Asking, Setup};
use p2pd_net::pipe::{Pipe, PipeConfig};
use p2pd_proto::addr::{NodeId, PeerAddr};
use p2pd_proto::connect::ReverseToken;
use p2pd_proto::signal::Identity;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::inbound::{self, Hooks};
use super::limits::{Keyed, network};

/// Dial-back connections a node keeps at once, per asking peer, and per
/// network dialled: a signed request names the asker, but the asker picks
/// the address and keys cost nothing, so neither a stranger nor a crowd of
/// throwaway keys behind one address may hold the node's slots.
const MAX_DIALBACKS: usize = 64;
const MAX_DIALBACKS_PER_PEER: usize = 4;
const MAX_DIALBACKS_PER_NET: usize = 8;
/// Dial-backs toward this host or its LAN at once, in all and per asker:
/// two nodes on one machine or LAN need one each, and a stranger must not
/// turn the node into a scanner of its own network.
const MAX_LOCAL_DIALBACKS: usize = 8;
const MAX_LOCAL_DIALBACKS_PER_PEER: usize = 1;
/// How long a dialled-back token is remembered: longer than a request
/// stays fresh (the signaling window, both ways).
const ANSWERED_MEMORY: Duration = Duration::from_millis(2 * p2pd_proto::signal::WINDOW_MS);
/// Tokens remembered at most.
const MAX_ANSWERED: usize = 4096;
/// A dial-back whose handshake has not proved the asker's key by then is
/// closed, whatever the asker's budget.
const DIALBACK_DEADLINE: Duration = Duration::from_secs(3);

/// Counts live dial-backs; a dial-back holds its permits until its
/// connection (or the attempt) ends.
#[derive(Debug)]
pub(crate) struct Admission {
    total: Arc<Semaphore>,
    local: Arc<Semaphore>,
    per_peer: Keyed<NodeId>,
    per_net: Keyed<IpAddr>,
    local_per_peer: Keyed<NodeId>,
}

/// A dial-back's share of [`Admission`]; dropping it frees the slots.
#[derive(Debug)]
pub(crate) struct Permits {
    _held: Vec<OwnedSemaphorePermit>,
}

/// What a dial-back may dial: this host's addresses and networks, against
/// which the asker's addresses are judged near (this host or its LAN).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Here<'a> {
    pub(crate) host: &'a [IpAddr],
    pub(crate) lans: &'a [ipnet::IpNet],
}

impl Here<'_> {
    /// This host, its networks, and every range that only leads to
    /// someone's own or internal networks (private, link-local, shared
    /// CGNAT space, unique-local), wherever a route may take it.
    fn is_local(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let internal = match ip {
            IpAddr::V4(v4) => {
                let cgnat = v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64;
                v4.is_private() || v4.is_link_local() || cgnat
            }
            IpAddr::V6(v6) => v6.is_unique_local() || v6.is_unicast_link_local(),
        };
        internal
            || ip.is_loopback()
            || self.host.contains(&ip)
            || self.lans.iter().any(|n| n.contains(&ip))
    }
}

impl Admission {
    pub(crate) fn new() -> Self {
        Self {
            total: Arc::new(Semaphore::new(MAX_DIALBACKS)),
            local: Arc::new(Semaphore::new(MAX_LOCAL_DIALBACKS)),
            per_peer: Keyed::new(MAX_DIALBACKS_PER_PEER),
            per_net: Keyed::new(MAX_DIALBACKS_PER_NET),
            local_per_peer: Keyed::new(MAX_LOCAL_DIALBACKS_PER_PEER),
        }
    }

    /// Slots for one more dial-back by `peer`, and which of `dsts` it may
    /// dial, each with the slot of its network (freed when that dial ends
    /// without a connection): those whose network still has room (a crowd
    /// behind one address does not block the asker's other addresses), and
    /// those near `here` only within the local limits. `None` when nothing
    /// may be dialled.
    pub(crate) fn admit(
        &mut self,
        peer: NodeId,
        dsts: &[SocketAddr],
        here: Here<'_>,
    ) -> Option<(Permits, Vec<(SocketAddr, Permits)>)> {
        let mut held = vec![
            self.per_peer.acquire(peer)?,
            self.total.clone().try_acquire_owned().ok()?,
        ];
        let mut local_ok = None;
        let mut admitted = Vec::new();
        for dst in dsts {
            let near_ok = !here.is_local(dst.ip())
                || *local_ok.get_or_insert_with(|| {
                    let permits = self
                        .local_per_peer
                        .acquire(peer)
                        .zip(self.local.clone().try_acquire_owned().ok());
                    permits.map(|(a, b)| held.extend([a, b])).is_some()
                });
            if !near_ok {
                continue;
            }
            if let Some(net) = self.per_net.acquire(network(dst.ip())) {
                admitted.push((*dst, Permits { _held: vec![net] }));
            }
        }
        (!admitted.is_empty()).then(|| (Permits { _held: held }, admitted))
    }
}

/// Whether a node whose external IPs are `externals` is offline: it has
/// an address, all on loopback (one that has none yet is not). Offline,
/// loopback addresses of others may be dialled.
pub(crate) fn is_offline(externals: &[IpAddr]) -> bool {
    !externals.is_empty() && externals.iter().all(|ip| ip.is_loopback())
}

/// Reverse tokens dialled back lately: an asker resends its request, and
/// every copy after the first is answered by the first dial-back. Past its
/// bound the oldest is forgotten, which costs at most a second dial-back
/// (the inbox has already refused replays), never a refusal of others.
#[derive(Debug, Default)]
pub(crate) struct Answered {
    seen: std::collections::HashSet<(NodeId, ReverseToken)>,
    order: std::collections::VecDeque<(tokio::time::Instant, (NodeId, ReverseToken))>,
}

impl Answered {
    /// Whether `from` had `token` dialled back within the memory.
    pub(crate) fn contains(
        &mut self,
        now: tokio::time::Instant,
        from: NodeId,
        token: ReverseToken,
    ) -> bool {
        while let Some((at, key)) = self.order.front() {
            if now.duration_since(*at) < ANSWERED_MEMORY {
                break;
            }
            self.seen.remove(key);
            self.order.pop_front();
        }
        self.seen.contains(&(from, token))
    }

    /// Remembers a token dialled back at `now`.
    pub(crate) fn insert(&mut self, now: tokio::time::Instant, from: NodeId, token: ReverseToken) {
        if self.order.len() >= MAX_ANSWERED
            && let Some((_, oldest)) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        if self.seen.insert((from, token)) {
            self.order.push_back((now, (from, token)));
        }
    }
}

/// Whether a reverse request may make us dial `asker`'s address: see
/// [`reachable`].
pub(crate) fn dialable(asker: &PeerAddr, offline: bool) -> bool {
    asker
        .endpoints()
        .all(|e| reachable(e.external, offline) && reachable(e.internal, offline))
}

/// Whether a peer may make us send to `ip`: never multicast, broadcast or
/// unspecified addresses, and loopback only when this node itself is on
/// loopback alone (`offline`: same machine); otherwise a stranger could
/// point us at services on this host. IPv4-mapped IPv6 addresses are
/// judged as the IPv4 address they are.
pub(crate) fn reachable(ip: IpAddr, offline: bool) -> bool {
    let ip = ip.to_canonical();
    !ip.is_unspecified()
        && !ip.is_multicast()
        && ip != IpAddr::from([255, 255, 255, 255])
        && (offline || !ip.is_loopback())
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
    /// The asker's addresses to dial, each with its network's slot.
    pub(crate) dsts: Vec<(SocketAddr, Permits)>,
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
        let limit = self.budget.min(DIALBACK_DEADLINE);
        let asking = Asking {
            encrypt: self.encrypt,
            token: Some(self.token),
            limit,
        };
        let mut config = PipeConfig::default();
        config.connect_timeout(limit);
        // Served from its first message on: the asker may send at once.
        let hooks = self.hooks.clone();
        let serve: Setup = Arc::new(move |pipe: &Pipe| inbound::serve_all(pipe, hooks.clone()));
        let mut dials = JoinSet::new();
        for (dst, slot) in self.dsts {
            let (me, asker, config) = (self.me.clone(), self.asker.node_id, config.clone());
            let serve = serve.clone();
            dials.spawn(async move {
                let dialled =
                    handshake::dial(dst, None, &config, (&me, &asker), asking, Some(serve)).await;
                (dialled, slot)
            });
        }
        // Each kept connection holds its network's slot until it ends; a
        // failed dial frees its slot at once.
        let mut held = JoinSet::new();
        loop {
            tokio::select! {
                () = self.stop.cancelled() => break,
                joined = dials.join_next() => match joined {
                    Some(Ok((Ok(pipe), slot))) => {
                        tracing::info!(to = %self.asker.node_id, local = %pipe.local_addr(), "dialled back for a reverse connect");
                        held.spawn(hold(pipe, slot, self.stop.clone()));
                    }
                    Some(Ok((Err(err), _))) => tracing::debug!(to = %self.asker.node_id, %err, "dial back failed"),
                    Some(Err(_)) => {}
                    None => break,
                },
            }
        }
        dials.abort_all();
        while held.join_next().await.is_some() {}
        drop(self.permits);
    }
}

/// Waits until `pipe` ends, closing it if the node stops first; `slot` is
/// freed then.
async fn hold(pipe: Pipe, slot: Permits, stop: CancellationToken) {
    tokio::select! {
        () = stop.cancelled() => pipe.close().await,
        () = pipe.closed() => {}
    }
    drop(slot);
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
    fn relayed_addresses_are_judged_as_dial_backs_are() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(reachable(ip("192.168.2.2"), false), "a lab's TURN relay");
        assert!(reachable(ip("2001:db8::7"), false));
        assert!(!reachable(ip("::ffff:127.0.0.1"), false));
        assert!(reachable(ip("::1"), true));
        assert!(!reachable(ip("::"), true));
        assert!(!reachable(ip("ff02::1"), false));
        assert!(!reachable(ip("::ffff:255.255.255.255"), false));
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

    const NOWHERE: Here<'static> = Here {
        host: &[],
        lans: &[],
    };

    fn far(n: u8) -> Vec<SocketAddr> {
        vec![SocketAddr::from(([198, 18, 1, n], 4000))]
    }

    #[test]
    fn internal_ranges_count_as_local_wherever_they_route() {
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(NOWHERE.is_local(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["198.18.0.7", "100.128.0.1", "2001:db8::1"] {
            assert!(!NOWHERE.is_local(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn answered_tokens_are_forgotten_oldest_first_not_refused() {
        let mut answered = Answered::default();
        let now = tokio::time::Instant::now();
        let token = |n: u128| ReverseToken::from_random(n);
        let peer = NodeId([1; 32]);
        for n in 0..=MAX_ANSWERED as u128 {
            answered.insert(now, peer, token(n));
        }
        assert!(!answered.contains(now, peer, token(0)), "the oldest went");
        assert!(answered.contains(now, peer, token(1)));
        assert!(
            !answered.contains(now, NodeId([2; 32]), token(1)),
            "per asker"
        );
        assert!(
            !answered.contains(now + ANSWERED_MEMORY, peer, token(1)),
            "and all expire"
        );
    }

    #[test]
    fn ipv4_mapped_addresses_are_judged_as_ipv4() {
        let v6 = |ip: &str| -> PeerAddr {
            format!("-0-[0,{ip},{ip},4000,1,1,0]-{ID}")
                .parse()
                .expect("valid")
        };
        assert!(!dialable(&v6("::ffff:127.0.0.1"), false));
        assert!(!dialable(&v6("::ffff:0.0.0.0"), true));
        assert!(!dialable(&v6("::ffff:224.0.0.1"), false));
        assert!(dialable(&v6("::ffff:198.18.0.7"), false));
    }

    #[test]
    fn admission_bounds_each_peer_and_the_node() {
        let mut admission = Admission::new();
        let peer = |n: u8| NodeId([n; 32]);
        let mine: Vec<_> = (0..MAX_DIALBACKS_PER_PEER)
            .map(|_| {
                admission
                    .admit(peer(0), &far(0), NOWHERE)
                    .expect("within the peer's limit")
            })
            .collect();
        assert!(
            admission.admit(peer(0), &far(1), NOWHERE).is_none(),
            "the peer's limit"
        );
        drop(mine);
        assert!(
            admission.admit(peer(0), &far(0), NOWHERE).is_some(),
            "slots come back"
        );

        let mut held = Vec::new();
        for n in 1..=u8::MAX {
            match admission.admit(peer(n), &far(n), NOWHERE) {
                Some(p) => held.push(p),
                None => break,
            }
        }
        assert_eq!(held.len(), MAX_DIALBACKS, "the node's limit");
        assert!(
            admission.per_peer.len() <= 2 * (MAX_DIALBACKS + 1),
            "only peers with live dial-backs are remembered"
        );
    }

    #[test]
    fn many_keys_behind_one_address_share_its_limit() {
        let mut admission = Admission::new();
        let v6 = |last: u16| SocketAddr::from(([0x2001, 0xdb8, 0, 1, 0, 0, 0, last], 4000));
        let held: Vec<_> = (0..=u8::MAX)
            .map_while(|n| admission.admit(NodeId([n; 32]), &[v6(u16::from(n))], NOWHERE))
            .collect();
        assert_eq!(held.len(), MAX_DIALBACKS_PER_NET, "a /64 is one network");
        let both = [v6(999), far(10)[0]];
        let (_, dialled) = admission
            .admit(NodeId([1; 32]), &both, NOWHERE)
            .expect("the other address still gets in");
        let dialled: Vec<SocketAddr> = dialled.into_iter().map(|(dst, _)| dst).collect();
        assert_eq!(dialled, far(10), "the full network is left out");
    }

    #[test]
    fn dial_backs_to_this_host_or_lan_are_few_and_one_per_asker() {
        let host = [IpAddr::from([192, 168, 1, 5])];
        let lans: Vec<ipnet::IpNet> = vec!["192.168.1.0/24".parse().expect("net")];
        let here = Here {
            host: &host,
            lans: &lans,
        };
        let to = |last: u8| vec![SocketAddr::from(([192, 168, 1, last], 80))];
        let mut admission = Admission::new();
        let first = admission.admit(NodeId([1; 32]), &to(5), here).expect("one");
        assert!(
            admission.admit(NodeId([1; 32]), &to(6), here).is_none(),
            "one local dial-back per asker"
        );
        let others: Vec<_> = (2..=u8::MAX)
            .map_while(|n| admission.admit(NodeId([n; 32]), &to(n), here))
            .collect();
        assert_eq!(others.len() + 1, MAX_LOCAL_DIALBACKS);
        assert!(
            admission.admit(NodeId([200; 32]), &far(3), here).is_some(),
            "far dial-backs are not held up"
        );
        drop(first);
    }
}
