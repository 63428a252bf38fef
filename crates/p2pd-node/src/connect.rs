//! Opening a connection to a peer: the strategies and how they race.
//!
//! * **direct**: TCP to the peer's listen port, on every address it lists at
//!   once (its external IP; its internal IP too when it shares our external
//!   IP: same LAN or same machine); the first to connect wins.
//! * **reverse**: ask the peer, over signaling, to connect to us, and wait
//!   for the accepted connection that presents our random token.
//!
//! Strategies race, staggered: each starts when the previous ones have
//! failed or after a head start, whichever is first. The head start is
//! short when the peer's address says it is behind a NAT or firewall
//! (inbound connections to it will likely be dropped, so waiting for
//! direct to time out would only add its whole budget), and longer when it
//! says the peer is open (direct will likely win, and reverse would cost a
//! signaling message and a second connection). Each strategy gives up
//! within its own budget; the whole connect within `timeout_ms`.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use p2pd_net::pipe::{Pipe, PipeConfig, Protocol};
use p2pd_proto::addr::PeerAddr;
use p2pd_proto::reverse::Token;
use p2pd_proto::signal::Body;
use p2pd_proto::stun::behavior::NatType;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::config::Strategy;
use crate::node::{Command, Node};

/// Head start of each strategy over the next when the peer is open.
const STAGGER_OPEN: Duration = Duration::from_millis(250);
/// Head start when the peer is behind a NAT or firewall.
const STAGGER_NATTED: Duration = Duration::from_millis(2);

/// An open connection to a peer.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The connection.
    pub pipe: Pipe,
    /// The strategy that made it.
    pub strategy: Strategy,
    /// Our end.
    pub local: SocketAddr,
    /// The peer's end.
    pub remote: SocketAddr,
    /// From the start of `connect` to the connected socket.
    pub elapsed: Duration,
}

/// Why no connection was made.
#[derive(Debug, Clone, thiserror::Error)]
#[error("every strategy failed")]
pub struct ConnectError {
    /// What each strategy tried said.
    pub tried: Vec<(Strategy, String)>,
}

impl Node {
    /// Connects to `peer` with `strategies` (in this order of preference).
    /// The connection is this node's user's: no ECHO is served on it.
    pub async fn connect(
        &self,
        peer: &PeerAddr,
        strategies: &[Strategy],
    ) -> Result<Connection, ConnectError> {
        let started = Instant::now();
        if strategies.is_empty() {
            return Err(ConnectError { tried: Vec::new() });
        }
        let config = &self.shared.config.connect;
        let stagger = if peer.endpoints().all(|e| e.nat == NatType::Open) {
            STAGGER_OPEN
        } else {
            STAGGER_NATTED
        };
        let mut running: JoinSet<(Strategy, Result<Pipe, String>)> = JoinSet::new();
        let mut tried = Vec::new();
        let mut next = 0;
        let overall = tokio::time::sleep(config.timeout);
        tokio::pin!(overall);
        loop {
            if next < strategies.len() && (running.is_empty() || next == 0) {
                let strategy = strategies[next];
                running.spawn(self.clone().run(strategy, peer.clone()));
                next += 1;
                continue;
            }
            let head_start = tokio::time::sleep(if next < strategies.len() {
                stagger
            } else {
                Duration::MAX / 4
            });
            tokio::select! {
                joined = running.join_next(), if !running.is_empty() => {
                    let Some(Ok((strategy, result))) = joined else {
                        // A strategy task that panicked counts as failed.
                        if running.is_empty() && next >= strategies.len() {
                            return Err(ConnectError { tried });
                        }
                        continue;
                    };
                    match result {
                        Ok(pipe) => {
                            running.abort_all();
                            let elapsed = started.elapsed();
                            let remote = pipe.peer_addr().unwrap_or(pipe.local_addr());
                            tracing::info!(%strategy, ?elapsed, %remote, "connected");
                            return Ok(Connection { local: pipe.local_addr(), remote, pipe, strategy, elapsed });
                        }
                        Err(err) => {
                            tracing::debug!(%strategy, %err, "strategy failed");
                            tried.push((strategy, err));
                            if running.is_empty() && next >= strategies.len() {
                                return Err(ConnectError { tried });
                            }
                        }
                    }
                }
                () = head_start, if next < strategies.len() => {
                    let strategy = strategies[next];
                    running.spawn(self.clone().run(strategy, peer.clone()));
                    next += 1;
                }
                () = &mut overall => {
                    running.abort_all();
                    let failed: Vec<Strategy> = tried.iter().map(|(s, _)| *s).collect();
                    for strategy in strategies[..next].iter().filter(|s| !failed.contains(s)) {
                        tried.push((*strategy, "the whole connect timed out".into()));
                    }
                    return Err(ConnectError { tried });
                }
            }
            if running.is_empty() && next >= strategies.len() {
                return Err(ConnectError { tried });
            }
        }
    }

    async fn run(self, strategy: Strategy, peer: PeerAddr) -> (Strategy, Result<Pipe, String>) {
        let budget = self.shared.config.connect.budget(strategy);
        let result = match strategy {
            Strategy::Direct => {
                let ours: Vec<IpAddr> = self.addr().endpoints().map(|e| e.external).collect();
                dial(&ours, &self.shared.lan_nets, &peer, budget).await
            }
            Strategy::Reverse => reverse(&self, &peer, budget).await,
            Strategy::Punch | Strategy::Relay => {
                Err(format!("{strategy} is not available in this version"))
            }
        };
        (strategy, result)
    }
}

/// Connects to every address `peer` lists at once, within `budget`; the
/// first connection wins, the others are closed. `ours` (our external
/// IPs) and `nets` (our networks) tell which of the peer's internal
/// addresses are worth trying.
pub(crate) async fn dial(
    ours: &[IpAddr],
    nets: &[ipnet::IpNet],
    peer: &PeerAddr,
    budget: Duration,
) -> Result<Pipe, String> {
    let candidates = candidates_for(ours, nets, peer);
    if candidates.is_empty() {
        return Err("the address lists no reachable endpoint".into());
    }
    let mut config = PipeConfig::default();
    config.connect_timeout(budget);
    let mut attempts = JoinSet::new();
    for dest in candidates.clone() {
        let config = config.clone();
        attempts.spawn(async move {
            (
                dest,
                Pipe::connect(Protocol::Tcp, dest, None, &config).await,
            )
        });
    }
    let mut errors = Vec::new();
    let deadline = tokio::time::sleep(budget);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            joined = attempts.join_next() => {
                let Some(joined) = joined else {
                    return Err(errors.join("; "));
                };
                let Ok((dest, result)) = joined else {
                    continue;
                };
                match result {
                    Ok(pipe) => {
                        attempts.abort_all();
                        return Ok(pipe);
                    }
                    Err(err) => errors.push(format!("{dest}: {err}")),
                }
            }
            () = &mut deadline => {
                attempts.abort_all();
                return Err(format!("no answer within {} ms from {}", budget.as_millis(),
                    candidates.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")));
            }
        }
    }
}

/// Where to dial `peer`: its external addresses, and its internal ones when
/// it shares an external address with us (behind the same NAT, or the same
/// machine) or its internal address is on one of our networks (same LAN).
fn candidates_for(
    our_external: &[IpAddr],
    our_nets: &[ipnet::IpNet],
    peer: &PeerAddr,
) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for e in peer.endpoints() {
        let reachable = !(e.internal.is_ipv6() && is_link_local(e.internal));
        let near =
            our_external.contains(&e.external) || our_nets.iter().any(|n| n.contains(&e.internal));
        if reachable && near {
            out.push(SocketAddr::new(e.internal, e.port));
        }
        out.push(SocketAddr::new(e.external, e.port));
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|a| seen.insert(*a));
    out
}

fn is_link_local(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

/// Asks `peer` to connect back and waits for that connection.
async fn reverse(node: &Node, peer: &PeerAddr, budget: Duration) -> Result<Pipe, String> {
    let started = Instant::now();
    if !node.shared.signaling.wait_connected(budget).await {
        return Err("no signaling broker is reachable".into());
    }
    let token = Token(rand::random());
    // The node forgets the request once `rx` is dropped, however this
    // ends (also when a faster strategy cancels this one).
    let (reply, rx) = oneshot::channel();
    let registered = node
        .commands
        .send(Command::AwaitReverse { token, reply })
        .await;
    if registered.is_err() {
        return Err("the node is closed".into());
    }
    let body = Body::Reverse {
        token: token.to_string(),
        addr: node.addr().to_string(),
    };
    let sent_on = node.send_signal(peer, body);
    if sent_on == 0 {
        return Err("none of the brokers the peer's address lists is connected".into());
    }
    let left = budget.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, rx).await {
        Ok(Ok(pipe)) => Ok(pipe),
        Ok(Err(_)) | Err(_) => Err(format!(
            "the peer did not connect back within {} ms",
            budget.as_millis()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(text: &str) -> PeerAddr {
        text.parse().expect("valid address")
    }

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_peer_elsewhere_is_dialled_on_its_external_address_only() {
        let p = peer(&format!("-[0,198.18.2.1,192.168.2.2,4000,5,2,0]-0-{ID}"));
        let ours = ["198.18.1.1".parse().expect("ip")];
        let nets = ["192.168.1.0/24".parse().expect("net")];
        assert_eq!(
            candidates_for(&ours, &nets, &p),
            vec!["198.18.2.1:4000".parse().expect("addr")]
        );
    }

    #[test]
    fn a_peer_on_our_lan_is_dialled_on_its_lan_address_first() {
        let p = peer(&format!("-[0,198.18.1.1,192.168.1.3,4000,5,2,0]-0-{ID}"));
        let before_discovery = ["192.168.1.2".parse().expect("ip")];
        let nets = ["192.168.1.0/24".parse().expect("net")];
        let got = candidates_for(&before_discovery, &nets, &p);
        assert_eq!(got[0], "192.168.1.3:4000".parse().expect("addr"));
        let behind_same_nat = ["198.18.1.1".parse().expect("ip")];
        assert_eq!(
            candidates_for(&behind_same_nat, &[], &p)[0],
            "192.168.1.3:4000".parse().expect("addr")
        );
    }

    #[test]
    fn link_local_internals_are_not_dialled() {
        let p = peer(&format!("-0-[0,fd00:2::2,fe80::1,4000,2,1,0]-{ID}"));
        let nets = ["fe80::/10".parse().expect("net")];
        assert_eq!(
            candidates_for(&[], &nets, &p),
            vec!["[fd00:2::2]:4000".parse().expect("addr")]
        );
    }
}
