//! Opening a connection to a peer: a thin driver of the connect race
//! ([`p2pd_proto::connect::Race`]), which decides which strategies run,
//! when each starts and which one wins (see its module doc and
//! docs/connect.md). This driver opens the TCP connections, waits for
//! signaling, sends reverse requests and hands the race what happened.
//!
//! * **direct**: TCP to the peer's listen port, on every address it lists at
//!   once (its external IP; its internal IP too when it shares our external
//!   IP: same LAN or same machine); the first whose handshake proves the
//!   peer's key wins. One that connects but fails the handshake is "not the
//!   peer": that candidate failed.
//! * **reverse**: ask the peer, over signaling, to connect to us, and wait
//!   for the accepted connection that presents our random token.
//! * **punch**: the node runs a TCP hole punch with the peer
//!   (`crate::node::punch`) and hands over its connection.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use p2pd_net::handshake::{self, Asking};
use p2pd_net::pipe::{Pipe, PipeConfig};
use p2pd_proto::addr::PeerAddr;
use p2pd_proto::connect::{
    Action, AttemptId, Outcome, Race, RaceConfig, ReverseToken, StrategyError, candidates_for,
    stagger_for,
};
use p2pd_proto::signal::Identity;
use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::config::{ConnectConfig, Strategy};

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
    /// Each strategy tried and why it gave up.
    pub tried: Vec<(Strategy, StrategyError)>,
}

/// What the driver's tasks report back to the race.
enum Event {
    /// A connect, punch or relay ended: its connection, or why not.
    Connected(AttemptId, Result<Pipe, String>),
    Signaling(AttemptId, bool),
    DialBack(Pipe),
}

/// What the race needs from signaling: the node implements it.
pub(crate) trait Signals {
    /// Resolves to whether a broker is connected within `limit`.
    fn wait_up(&self, limit: Duration) -> impl Future<Output = bool> + Send + 'static;
    /// Registers `token` (its dial-back arrives on the receiver, until the
    /// receiver is dropped) and sends `peer` a reverse request for it;
    /// returns on how many brokers it went out, or `None` when the node is
    /// closed.
    fn ask_reverse(
        &self,
        peer: &PeerAddr,
        token: ReverseToken,
    ) -> impl Future<Output = Option<(usize, oneshot::Receiver<Pipe>)>> + Send;
    /// Punches to `peer` (`crate::node::punch`): the connection, or why
    /// not.
    fn punch(&self, peer: &PeerAddr)
    -> impl Future<Output = Result<Pipe, String>> + Send + 'static;
    /// Relays to `peer` through a TURN server (`crate::node::relay`): the
    /// connection, or why not.
    fn relay(&self, peer: &PeerAddr)
    -> impl Future<Output = Result<Pipe, String>> + Send + 'static;
}

/// Connects to `peer` with `strategies`, in this order of preference.
/// `ours` (our external IPs) and `nets` (our networks) tell which of the
/// peer's internal addresses are worth trying.
pub(crate) async fn connect<S: Signals>(
    signals: &S,
    me: &Identity,
    (ours, nets): (&[IpAddr], &[ipnet::IpNet]),
    peer: &PeerAddr,
    strategies: &[Strategy],
    config: &ConnectConfig,
) -> Result<Connection, ConnectError> {
    let started = Instant::now();
    let race_config = RaceConfig {
        strategies: strategies.to_vec(),
        budgets: config.budgets,
        overall: config.timeout,
        stagger: stagger_for(peer),
    };
    let candidates = candidates_for(ours, nets, peer);
    let token = ReverseToken::from_random(rand::random());
    let race = Race::new(started.into_std(), race_config, candidates, token);
    let asking = Asking {
        encrypt: config.encrypt,
        token: None,
        limit: config.timeout,
    };
    let mut driver = Driver::new(signals, me, peer, race, token, asking);
    let (strategy, pipe) = driver.run().await?;
    let elapsed = started.elapsed();
    let remote = pipe.peer_addr().unwrap_or(pipe.local_addr());
    tracing::info!(%strategy, ?elapsed, %remote, "connected");
    Ok(Connection {
        local: pipe.local_addr(),
        remote,
        pipe,
        strategy,
        elapsed,
    })
}

/// One connect's IO: the tasks the race asked for, and the connections
/// they made until the race says which one wins.
struct Driver<'a, S> {
    signals: &'a S,
    /// Who we prove to be in each connection's handshake.
    me: &'a Identity,
    peer: &'a PeerAddr,
    race: Race,
    /// What our reverse requests ask the peer to present.
    token: ReverseToken,
    tasks: JoinSet<Event>,
    /// The task working for each live attempt.
    running: HashMap<AttemptId, AbortHandle>,
    /// Connections made, waiting for the race to pick or close them.
    connected: HashMap<AttemptId, Pipe>,
    /// What each handshake asks for; its limit bounds each TCP connect
    /// and handshake (the race cancels them sooner when their strategy's
    /// budget ends).
    asking: Asking,
}

impl<'a, S: Signals> Driver<'a, S> {
    fn new(
        signals: &'a S,
        me: &'a Identity,
        peer: &'a PeerAddr,
        race: Race,
        token: ReverseToken,
        asking: Asking,
    ) -> Self {
        Self {
            signals,
            me,
            peer,
            race,
            token,
            tasks: JoinSet::new(),
            running: HashMap::new(),
            connected: HashMap::new(),
            asking,
        }
    }

    async fn run(&mut self) -> Result<(Strategy, Pipe), ConnectError> {
        loop {
            while let Some(action) = self.race.poll_action() {
                self.act(action).await;
            }
            if let Some(outcome) = self.race.poll_outcome() {
                return self.finish(outcome);
            }
            let wake = self
                .race
                .poll_timeout()
                .map(|(at, _)| Instant::from_std(at));
            tokio::select! {
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    // An aborted task was cancelled by the race: nothing to report.
                    if let Ok(event) = joined {
                        self.report(event);
                    }
                }
                () = sleep_until(wake) => {
                    self.race.handle_timeout(Instant::now().into_std());
                }
            }
        }
    }

    async fn act(&mut self, action: Action) {
        match action {
            Action::Connect { attempt, dst } => {
                let mut config = PipeConfig::default();
                config.connect_timeout(self.asking.limit);
                let (me, peer, asking) = (self.me.clone(), self.peer.node_id, self.asking);
                let task = self.tasks.spawn(async move {
                    let result =
                        handshake::dial(dst, None, &config, (&me, &peer), asking, None).await;
                    Event::Connected(attempt, result.map_err(|e| e.to_string()))
                });
                self.running.insert(attempt, task);
            }
            Action::WaitSignaling { attempt } => {
                let up = self.signals.wait_up(self.asking.limit);
                let task = self
                    .tasks
                    .spawn(async move { Event::Signaling(attempt, up.await) });
                self.running.insert(attempt, task);
            }
            Action::SendReverse { attempt, token } => {
                let Some((sent_on, rx)) = self.signals.ask_reverse(self.peer, token).await else {
                    self.race.handle_reverse_sent(now(), attempt, 0);
                    return;
                };
                let task = self.tasks.spawn(async move {
                    match rx.await {
                        Ok(pipe) => Event::DialBack(pipe),
                        // The node closed: the race's budget ends the wait.
                        Err(_) => std::future::pending().await,
                    }
                });
                self.running.insert(attempt, task);
                self.race.handle_reverse_sent(now(), attempt, sent_on);
            }
            Action::Punch { attempt } => {
                let punch = self.signals.punch(self.peer);
                let task = self
                    .tasks
                    .spawn(async move { Event::Connected(attempt, punch.await) });
                self.running.insert(attempt, task);
            }
            Action::Relay { attempt } => {
                let relay = self.signals.relay(self.peer);
                let task = self
                    .tasks
                    .spawn(async move { Event::Connected(attempt, relay.await) });
                self.running.insert(attempt, task);
            }
            Action::Cancel { attempt } => {
                if let Some(task) = self.running.remove(&attempt) {
                    task.abort();
                }
                self.close(attempt);
            }
            Action::Close { attempt } => self.close(attempt),
        }
    }

    fn report(&mut self, event: Event) {
        match event {
            Event::Connected(attempt, result) => {
                self.running.remove(&attempt);
                match result {
                    Ok(pipe) => {
                        self.connected.insert(attempt, pipe);
                        self.race.handle_connected(now(), attempt);
                    }
                    Err(reason) => self.race.handle_connect_failed(now(), attempt, reason),
                }
            }
            Event::Signaling(attempt, up) => {
                self.running.remove(&attempt);
                if up {
                    self.race.handle_signaling_ready(now(), attempt);
                } else {
                    self.race.handle_signaling_unavailable(now(), attempt);
                }
            }
            Event::DialBack(pipe) => {
                // The node hands over only connections that presented our token.
                match self.race.handle_dial_back(now(), self.token) {
                    Some(attempt) => {
                        self.connected.insert(attempt, pipe);
                    }
                    None => close_later(pipe),
                }
            }
        }
    }

    fn close(&mut self, attempt: AttemptId) {
        if let Some(pipe) = self.connected.remove(&attempt) {
            close_later(pipe);
        }
    }

    fn finish(&mut self, outcome: Outcome) -> Result<(Strategy, Pipe), ConnectError> {
        match outcome {
            Outcome::Won { strategy, attempt } => {
                // The race names only attempts whose connection it was
                // handed, and never closes a winner.
                let pipe = self.connected.remove(&attempt);
                pipe.map(|pipe| (strategy, pipe))
                    .ok_or_else(|| ConnectError {
                        tried: vec![(strategy, StrategyError::ConnectTimedOut)],
                    })
            }
            Outcome::Failed { tried } => Err(ConnectError { tried }),
        }
    }
}

impl<S> Drop for Driver<'_, S> {
    /// Whatever the race did not hand out is closed, also when the caller
    /// drops the connect.
    fn drop(&mut self) {
        self.tasks.abort_all();
        for (_, pipe) in self.connected.drain() {
            close_later(pipe);
        }
    }
}

/// The race's clock: tokio's, so paused-time tests drive it too.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn close_later(pipe: Pipe) {
    tokio::spawn(async move { pipe.close().await });
}
