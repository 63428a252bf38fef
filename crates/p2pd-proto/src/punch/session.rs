//! One punch, on either side: the sans-IO machine that reserves ports,
//! exchanges offers, meets the peer at the agreed moment and keeps one
//! connection.
//!
//! The side that asked (the initiator) sends its offer first; the other
//! (the responder) answers with its own and the meet time, on the clock
//! both synchronised. At the meet time both make their connections at
//! once: a SYN that reaches the other NAT before that NAT's own SYN has
//! left is dropped, and the other side's SYN, matching the mapping the
//! first one made, then completes the connection (a TCP simultaneous open
//! when the SYNs cross). Each side also listens on its reserved ports,
//! which catches SYNs from a NAT that filters nothing.
//!
//! Both sides end up with the same connection: the initiator runs the
//! connection handshake, in its initiator role, on one established
//! connection at a time and keeps the first that completes it, closing
//! the rest; the responder answers every handshake, and only that one can
//! complete.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::offer::{Offer, Probe, connections, preparation};
use super::predict::{Behaviour, Observed, Refusal, feasible};

/// The least time both sides keep waiting for their connections after the
/// meet time: enough for one SYN retransmission (Linux's first is after
/// 1 s).
pub const MIN_WINDOW: Duration = Duration::from_millis(1_500);
/// The most a side waits for the meet time, whatever its clock says.
pub const MAX_WAIT: Duration = Duration::from_secs(2);
/// Added to the meet time for scheduling jitter.
const SLACK: Duration = Duration::from_millis(2);
/// A side whose ports are unpredictable re-sends its SYNs at most this
/// often: the first may reach a filter before the peer's SYN opened it.
const MIN_REFIRE: Duration = Duration::from_millis(20);
/// And at most this many times per connection.
const MAX_REFIRES: u32 = 8;

/// The synchronised clock, read once: at `at`, it said `unix_ms`, give or
/// take `error_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    /// When it was read.
    pub at: Instant,
    /// Unix milliseconds then, corrected by the measured offset.
    pub unix_ms: u64,
    /// How far it may be off.
    pub error_ms: u64,
}

impl Synced {
    fn unix_ms_at(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.at).as_millis();
        self.unix_ms
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }

    fn instant_of(&self, unix_ms: u64) -> Instant {
        let ahead = unix_ms.saturating_sub(self.unix_ms);
        self.at + Duration::from_millis(ahead)
    }
}

/// What our side is: its NAT's behaviour and where its ports are bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Side {
    /// The NAT of the interface we punch from.
    pub behaviour: Behaviour,
    /// That interface's IP.
    pub local_ip: IpAddr,
}

/// What goes over signaling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The initiator's offer, sent at `sent_ms` on its synchronised clock.
    Request {
        /// Its offer.
        offer: Offer,
        /// When it was sent.
        sent_ms: u64,
        /// Its clock's error.
        error_ms: u64,
    },
    /// The responder's offer and the meet time.
    Answer {
        /// Its offer.
        offer: Offer,
        /// When both connect, on the synchronised clock.
        meet_ms: u64,
    },
    /// The responder will not punch.
    Refused {
        /// Why.
        reason: String,
    },
}

/// Names one connection of the punch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u32);

/// What the driver is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Bind `count` local ports on our interface (reusable, each with a
    /// listener beside), then learn the external address as `probe` says,
    /// and report with [`Session::handle_reserved`] or
    /// [`Session::handle_probe_failed`]. Accepted connections go to
    /// [`Session::handle_accepted`] until [`Action::Release`].
    Reserve {
        /// How many ports.
        count: usize,
        /// How to learn their mapping.
        probe: Probe,
    },
    /// Send this to the peer over signaling.
    Send(Message),
    /// Connect from our reserved port `local` to `dst`, right away and in
    /// the order given; report with [`Session::handle_established`] or
    /// [`Session::handle_connect_failed`].
    Connect {
        /// Names it.
        conn: ConnId,
        /// Our reserved port.
        local: u16,
        /// The peer's predicted address.
        dst: SocketAddr,
    },
    /// Run the connection handshake on `conn` (as our role says); report
    /// with [`Session::handle_authenticated`] or
    /// [`Session::handle_handshake_failed`].
    Handshake {
        /// The connection.
        conn: ConnId,
    },
    /// Close `conn`, or stop connecting it.
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// Drop the reserved ports and their listeners: the punch is over.
    Release,
}

/// Why a punch did not connect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PunchError {
    /// The two NATs cannot be punched: refused before any packet.
    #[error("{0}")]
    Impossible(#[from] Refusal),
    /// The two addresses share no address family to punch on.
    #[error("no IPv4 endpoint on both sides to punch between")]
    NoCommonEndpoint,
    /// The peer refused.
    #[error("the peer refused: {0}")]
    PeerRefused(String),
    /// The peer's offer breaks the rules.
    #[error("the peer sent a malformed offer")]
    BadOffer,
    /// Our external port could not be learnt.
    #[error("no TCP mapping: {0}")]
    Probe(String),
    /// The peer did not answer the request in time.
    #[error("the peer did not answer the punch request within {} ms", .0.as_millis())]
    NoAnswer(Duration),
    /// No connection came from the predicted ports.
    #[error("no connection through the NATs within {} ms of the meet time ({tried} tried)", .window.as_millis())]
    NoConnection {
        /// How long both sides tried.
        window: Duration,
        /// Connections made.
        tried: usize,
    },
    /// Connections came, but none proved the peer's key.
    #[error("not the peer: {0}")]
    NotThePeer(String),
    /// The punch's own time limit ended.
    #[error("the punch timed out after {} ms", .0.as_millis())]
    TimedOut(Duration),
}

/// How a punch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// This connection is the punch's: the driver hands it over.
    Won(ConnId),
    /// No connection.
    Failed(PunchError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Initiator,
    Responder,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Reserving,
    /// The initiator's request went out at `sent`.
    Asking {
        sent: Instant,
    },
    /// Both offers known; waiting for the meet time.
    Waiting,
    /// Connections are out.
    Connecting {
        until: Instant,
    },
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    /// Connecting from `local` to `dst`, re-fired `refires` times.
    Pending {
        local: u16,
        dst: SocketAddr,
        refires: u32,
    },
    /// Established; its handshake not started (the initiator runs one at
    /// a time).
    Queued,
    Handshaking,
}

/// One punch.
#[derive(Debug)]
pub struct Session {
    role: Role,
    ours: Side,
    clock: Synced,
    deadline: Instant,
    limit: Duration,
    state: State,
    locals: Vec<u16>,
    offer: Option<Offer>,
    theirs: Option<Offer>,
    /// The peer's clock error, from its request (responder).
    their_error_ms: u64,
    /// One-way signaling latency, as measured.
    latency: Duration,
    meet: Option<Instant>,
    conns: BTreeMap<ConnId, Conn>,
    next_conn: u32,
    /// When pending connections are re-fired (unpredictable side only).
    refire_at: Option<Instant>,
    tried: usize,
    /// Why the last handshake failed, if one did.
    not_the_peer: Option<String>,
    /// Whether ports were asked for, so they are released at the end.
    reserved: bool,
    actions: VecDeque<Action>,
    outcome: Option<Outcome>,
}

impl Session {
    /// Starts a punch towards a peer whose NAT behaves as `peer` (its
    /// address says), giving up at `now + limit`.
    pub fn initiate(
        now: Instant,
        clock: Synced,
        ours: Side,
        peer: &Behaviour,
        limit: Duration,
    ) -> Self {
        let mut session = Self::new(Role::Initiator, now, clock, ours, limit);
        match feasible(&ours.behaviour, peer) {
            Ok(()) => session.reserve(),
            Err(refusal) => session.fail(PunchError::Impossible(refusal)),
        }
        session
    }

    /// Answers a peer's request, giving up at `now + limit`. A request that
    /// cannot work is refused at once, with the reason sent back.
    pub fn respond(
        now: Instant,
        clock: Synced,
        ours: Side,
        request: &Message,
        limit: Duration,
    ) -> Self {
        let mut session = Self::new(Role::Responder, now, clock, ours, limit);
        let Message::Request {
            offer,
            sent_ms,
            error_ms,
        } = request
        else {
            session.fail(PunchError::BadOffer);
            return session;
        };
        let verdict = offer
            .behaviour()
            .map_err(|_| PunchError::BadOffer)
            .and_then(|theirs| feasible(&theirs, &ours.behaviour).map_err(PunchError::from));
        if let Err(err) = verdict {
            session.actions.push_back(Action::Send(Message::Refused {
                reason: err.to_string(),
            }));
            session.fail(err);
            return session;
        }
        let one_way = clock.unix_ms_at(now).saturating_sub(*sent_ms);
        session.latency = Duration::from_millis(one_way.min(MAX_WAIT.as_millis() as u64));
        session.their_error_ms = *error_ms;
        session.theirs = Some(offer.clone());
        session.reserve();
        session
    }

    fn new(role: Role, now: Instant, clock: Synced, ours: Side, limit: Duration) -> Self {
        Self {
            role,
            ours,
            clock,
            deadline: now + limit,
            limit,
            state: State::Reserving,
            locals: Vec::new(),
            offer: None,
            theirs: None,
            their_error_ms: 0,
            latency: Duration::ZERO,
            meet: None,
            conns: BTreeMap::new(),
            next_conn: 0,
            refire_at: None,
            tried: 0,
            not_the_peer: None,
            reserved: false,
            actions: VecDeque::new(),
            outcome: None,
        }
    }

    fn reserve(&mut self) {
        let (count, probe) = preparation(&self.ours.behaviour);
        self.reserved = true;
        self.actions.push_back(Action::Reserve { count, probe });
    }

    /// The ports are bound and probed: `probed` is the external IP and
    /// the mapping the probe saw (none for [`Probe::None`]).
    pub fn handle_reserved(
        &mut self,
        now: Instant,
        locals: Vec<u16>,
        probed: Option<(IpAddr, Observed)>,
    ) {
        self.handle_timeout(now);
        if self.state != State::Reserving {
            return;
        }
        let offer = Offer::new(&self.ours.behaviour, self.ours.local_ip, &locals, probed);
        self.locals = locals;
        self.offer = Some(offer.clone());
        match self.role {
            Role::Initiator => {
                self.actions.push_back(Action::Send(Message::Request {
                    offer,
                    sent_ms: self.clock.unix_ms_at(now),
                    error_ms: self.clock.error_ms,
                }));
                self.state = State::Asking { sent: now };
            }
            Role::Responder => {
                let errors = self.clock.error_ms + self.their_error_ms;
                let margin = self.latency * 2 + Duration::from_millis(errors) + SLACK;
                let meet_ms = self.clock.unix_ms_at(now) + margin.as_millis() as u64;
                self.actions
                    .push_back(Action::Send(Message::Answer { offer, meet_ms }));
                self.schedule(now, meet_ms);
            }
        }
    }

    /// The ports could not be bound or probed.
    pub fn handle_probe_failed(&mut self, now: Instant, reason: String) {
        self.handle_timeout(now);
        if self.state == State::Reserving {
            if self.role == Role::Responder {
                self.actions.push_back(Action::Send(Message::Refused {
                    reason: format!("no TCP mapping: {reason}"),
                }));
            }
            self.fail(PunchError::Probe(reason));
        }
    }

    /// A message from the peer (initiator: its answer).
    pub fn handle_message(&mut self, now: Instant, message: Message) {
        self.handle_timeout(now);
        let State::Asking { sent } = self.state else {
            return;
        };
        match message {
            Message::Answer { offer, meet_ms } => {
                if offer.behaviour().is_err() {
                    self.fail(PunchError::BadOffer);
                    return;
                }
                self.latency = now.saturating_duration_since(sent) / 2;
                self.theirs = Some(offer);
                self.schedule(now, meet_ms);
            }
            Message::Refused { reason } => self.fail(PunchError::PeerRefused(reason)),
            Message::Request { .. } => {}
        }
    }

    /// Waits for the meet time, or connects at once when it has passed.
    fn schedule(&mut self, now: Instant, meet_ms: u64) {
        let meet = self.clock.instant_of(meet_ms).clamp(now, now + MAX_WAIT);
        self.meet = Some(meet);
        self.state = State::Waiting;
        self.handle_timeout(now);
    }

    fn connect_all(&mut self, now: Instant) {
        let (Some(ours), Some(theirs)) = (&self.offer, &self.theirs) else {
            return;
        };
        let plan = connections(ours, &self.locals, theirs);
        for (local, dst) in plan {
            let conn = self.conn_id();
            self.conns.insert(
                conn,
                Conn::Pending {
                    local,
                    dst,
                    refires: 0,
                },
            );
            self.actions.push_back(Action::Connect { conn, local, dst });
            self.tried += 1;
        }
        let errors = Duration::from_millis(self.clock.error_ms + self.their_error_ms);
        let window = (self.latency * 8 + errors * 2).max(MIN_WINDOW);
        let until = (now + window).min(self.deadline);
        self.state = State::Connecting { until };
        if self.unpredictable() {
            self.refire_at = Some(now + self.refire_every());
        }
    }

    /// Our connections' external ports are random: the peer cannot aim at
    /// them, so ours must get through its filter after its SYN opened it.
    fn unpredictable(&self) -> bool {
        self.offer.as_ref().is_some_and(|o| o.ports.is_empty())
    }

    fn refire_every(&self) -> Duration {
        (self.latency * 2).max(MIN_REFIRE)
    }

    fn conn_id(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    /// A connection of ours is established.
    pub fn handle_established(&mut self, now: Instant, conn: ConnId) {
        self.handle_timeout(now);
        if !matches!(self.conns.get(&conn), Some(Conn::Pending { .. })) || self.state == State::Done
        {
            self.actions.push_back(Action::Close { conn });
            self.conns.remove(&conn);
            return;
        }
        self.established(conn);
    }

    /// A listener accepted a connection from `from`: the id it goes by, or
    /// `None` when nobody wants it (the driver closes it).
    pub fn handle_accepted(&mut self, now: Instant, from: SocketAddr) -> Option<ConnId> {
        self.handle_timeout(now);
        let expected = self.theirs.as_ref().map(|t| t.ip);
        if !matches!(self.state, State::Waiting | State::Connecting { .. })
            || expected != Some(from.ip())
        {
            return None;
        }
        let conn = self.conn_id();
        self.established(conn);
        Some(conn)
    }

    fn established(&mut self, conn: ConnId) {
        let busy = self.conns.values().any(|c| *c == Conn::Handshaking);
        if self.role == Role::Initiator && busy {
            self.conns.insert(conn, Conn::Queued);
        } else {
            self.conns.insert(conn, Conn::Handshaking);
            self.actions.push_back(Action::Handshake { conn });
        }
    }

    /// A connection of ours failed (refused, or unreachable): a pair
    /// that cannot work; an unpredictable side re-fires it with the rest.
    pub fn handle_connect_failed(&mut self, now: Instant, conn: ConnId) {
        self.handle_timeout(now);
        if let Some(Conn::Pending { .. }) = self.conns.get(&conn) {
            if self.unpredictable() {
                // Re-fired with the others.
                return;
            }
            self.conns.remove(&conn);
        }
    }

    /// The handshake on `conn` proved the peer.
    pub fn handle_authenticated(&mut self, now: Instant, conn: ConnId) {
        self.handle_timeout(now);
        if self.conns.get(&conn) != Some(&Conn::Handshaking) {
            self.actions.push_back(Action::Close { conn });
            return;
        }
        self.conns.remove(&conn);
        self.finish(Outcome::Won(conn));
    }

    /// The handshake on `conn` failed.
    pub fn handle_handshake_failed(&mut self, now: Instant, conn: ConnId, reason: String) {
        self.handle_timeout(now);
        if self.conns.remove(&conn).is_none() {
            return;
        }
        self.actions.push_back(Action::Close { conn });
        self.not_the_peer = Some(reason);
        if self.role == Role::Initiator {
            let next = self
                .conns
                .iter()
                .find(|(_, c)| **c == Conn::Queued)
                .map(|(id, _)| *id);
            if let Some(next) = next {
                self.conns.insert(next, Conn::Handshaking);
                self.actions.push_back(Action::Handshake { conn: next });
            }
        }
    }

    /// Applies the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Done {
            return;
        }
        if now >= self.deadline {
            let err = match self.state {
                State::Asking { .. } => PunchError::NoAnswer(self.limit),
                _ => PunchError::TimedOut(self.limit),
            };
            self.fail(err);
            return;
        }
        if self.state == State::Waiting && self.meet.is_some_and(|m| now >= m) {
            self.connect_all(now);
        }
        if let State::Connecting { until } = self.state {
            if now >= until {
                let window = until.saturating_duration_since(self.meet.unwrap_or(until));
                let err = match self.not_the_peer.take() {
                    Some(reason) => PunchError::NotThePeer(reason),
                    None => PunchError::NoConnection {
                        window,
                        tried: self.tried,
                    },
                };
                self.fail(err);
                return;
            }
            if self.refire_at.is_some_and(|at| now >= at) {
                self.refire(now);
            }
        }
    }

    /// Connects every pending connection again, from the same port.
    fn refire(&mut self, now: Instant) {
        let pending: Vec<(ConnId, u16, SocketAddr, u32)> = self
            .conns
            .iter()
            .filter_map(|(id, c)| match *c {
                Conn::Pending {
                    local,
                    dst,
                    refires,
                } if refires < MAX_REFIRES => Some((*id, local, dst, refires)),
                _ => None,
            })
            .collect();
        for (old, local, dst, refires) in pending {
            self.conns.remove(&old);
            self.actions.push_back(Action::Close { conn: old });
            let conn = self.conn_id();
            self.conns.insert(
                conn,
                Conn::Pending {
                    local,
                    dst,
                    refires: refires + 1,
                },
            );
            self.actions.push_back(Action::Connect { conn, local, dst });
        }
        let more = self
            .conns
            .values()
            .any(|c| matches!(c, Conn::Pending { refires, .. } if *refires < MAX_REFIRES));
        self.refire_at = more.then(|| now + self.refire_every());
    }

    fn fail(&mut self, err: PunchError) {
        self.finish(Outcome::Failed(err));
    }

    fn finish(&mut self, outcome: Outcome) {
        if self.state == State::Done {
            return;
        }
        self.state = State::Done;
        for conn in std::mem::take(&mut self.conns).into_keys() {
            self.actions.push_back(Action::Close { conn });
        }
        if self.reserved {
            self.actions.push_back(Action::Release);
        }
        self.outcome = Some(outcome);
    }

    /// The next thing for the driver to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// How the punch ended, once.
    pub fn poll_outcome(&mut self) -> Option<Outcome> {
        self.outcome.take()
    }

    /// When to call [`Session::handle_timeout`] next; `None` once done.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let next = match self.state {
            State::Done => return None,
            State::Waiting => self.meet,
            State::Connecting { until } => Some(self.refire_at.map_or(until, |r| r.min(until))),
            State::Reserving | State::Asking { .. } => None,
        };
        Some(next.map_or(self.deadline, |at| at.min(self.deadline)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::behavior::{Delta, DeltaType, NatType};

    const LIMIT: Duration = Duration::from_secs(5);

    fn behaviour(nat: NatType, kind: DeltaType, value: i32) -> Behaviour {
        Behaviour {
            nat,
            delta: Delta { kind, value },
        }
    }

    fn side(b: Behaviour, ip: &str) -> Side {
        Side {
            behaviour: b,
            local_ip: ip.parse().expect("ip"),
        }
    }

    fn synced(at: Instant, unix_ms: u64) -> Synced {
        Synced {
            at,
            unix_ms,
            error_ms: 1,
        }
    }

    fn drain(s: &mut Session) -> Vec<Action> {
        std::iter::from_fn(|| s.poll_action()).collect()
    }

    fn sent(actions: &[Action]) -> Message {
        actions
            .iter()
            .find_map(|a| match a {
                Action::Send(m) => Some(m.clone()),
                _ => None,
            })
            .expect("a message")
    }

    fn connects(actions: &[Action]) -> Vec<(ConnId, u16, SocketAddr)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Connect { conn, local, dst } => Some((*conn, *local, *dst)),
                _ => None,
            })
            .collect()
    }

    /// An initiator at `t0` that has reserved port 5000 and probed
    /// `mapped` (none: no probe); its request is drained.
    fn asking(t0: Instant, ours: Behaviour, peer: &Behaviour, mapped: Option<u16>) -> Session {
        let mut a = Session::initiate(t0, synced(t0, 0), side(ours, "192.168.1.2"), peer, LIMIT);
        drain(&mut a);
        let probed = mapped.map(|mapped| {
            let ip = "198.18.1.1".parse().expect("ip");
            (
                ip,
                Observed {
                    local: 5000,
                    mapped,
                },
            )
        });
        a.handle_reserved(t0, vec![5000], probed);
        a
    }

    /// The peer's offer: one port, 6000, with NAT type `nat`.
    fn peer_offer(nat: u8) -> Offer {
        Offer {
            ip: "198.18.2.1".parse().expect("ip"),
            ports: vec![6000],
            fallback: 6000,
            nat,
            delta: 2,
            step: 0,
        }
    }

    fn sequential(delta: i32) -> Behaviour {
        behaviour(NatType::Symmetric, DeltaType::Independent, delta)
    }

    /// Two sequential NATs: offers, the meet, and one connection kept by
    /// both, with everything else closed and the ports released.
    #[test]
    fn two_sequential_nats_meet_and_keep_one_connection() {
        let t0 = Instant::now();
        let a_ext: IpAddr = "198.18.1.1".parse().expect("ip");
        let b_ext: IpAddr = "198.18.2.1".parse().expect("ip");
        let mut a = Session::initiate(
            t0,
            synced(t0, 1_000_000),
            side(sequential(1), "192.168.1.2"),
            &sequential(2),
            LIMIT,
        );
        assert_eq!(
            drain(&mut a),
            vec![Action::Reserve {
                count: 2,
                probe: Probe::Fresh
            }]
        );
        a.handle_reserved(
            t0,
            vec![6000, 6001],
            Some((
                a_ext,
                Observed {
                    local: 5999,
                    mapped: 20_005,
                },
            )),
        );
        let request = sent(&drain(&mut a));
        // The request takes 3 ms; B's clock is 500 ms ahead but corrected.
        let t1 = t0 + Duration::from_millis(3);
        let mut b = Session::respond(
            t1,
            synced(t1, 1_000_003),
            side(sequential(2), "192.168.2.2"),
            &request,
            LIMIT,
        );
        assert_eq!(
            drain(&mut b),
            vec![Action::Reserve {
                count: 2,
                probe: Probe::Fresh
            }]
        );
        b.handle_reserved(
            t1,
            vec![7000, 7001],
            Some((
                b_ext,
                Observed {
                    local: 6999,
                    mapped: 20_100,
                },
            )),
        );
        let b_out = drain(&mut b);
        let answer = sent(&b_out);
        let Message::Answer { meet_ms, ref offer } = answer else {
            panic!("{answer:?}")
        };
        assert_eq!(offer.ports, vec![20_102, 20_104]);
        // The meet allows for both ways of signaling and both clocks' error.
        assert_eq!(meet_ms, 1_000_003 + 6 + 2 + 2);
        let b_meet = b.poll_timeout().expect("waits");
        let t2 = t1 + Duration::from_millis(3);
        a.handle_message(t2, answer);
        let a_meet = a.poll_timeout().expect("waits");
        assert_eq!(a_meet, b_meet, "both meet at the same moment");
        a.handle_timeout(a_meet);
        b.handle_timeout(b_meet);
        let (a_out, b_out) = (connects(&drain(&mut a)), connects(&drain(&mut b)));
        assert_eq!(
            a_out.iter().map(|c| (c.1, c.2)).collect::<Vec<_>>(),
            vec![
                (6000, SocketAddr::new(b_ext, 20_102)),
                (6001, SocketAddr::new(b_ext, 20_104))
            ]
        );
        assert_eq!(
            b_out.iter().map(|c| (c.1, c.2)).collect::<Vec<_>>(),
            vec![
                (7000, SocketAddr::new(a_ext, 20_006)),
                (7001, SocketAddr::new(a_ext, 20_007))
            ]
        );
        // Both pairs connect; the initiator handshakes on one at a time.
        let now = a_meet + Duration::from_millis(1);
        a.handle_established(now, a_out[1].0);
        a.handle_established(now, a_out[0].0);
        assert_eq!(drain(&mut a), vec![Action::Handshake { conn: a_out[1].0 }]);
        b.handle_established(now, b_out[0].0);
        b.handle_established(now, b_out[1].0);
        assert_eq!(
            drain(&mut b).len(),
            2,
            "the responder answers every handshake"
        );
        a.handle_authenticated(now, a_out[1].0);
        b.handle_authenticated(now, b_out[1].0);
        assert_eq!(a.poll_outcome(), Some(Outcome::Won(a_out[1].0)));
        assert_eq!(b.poll_outcome(), Some(Outcome::Won(b_out[1].0)));
        assert_eq!(
            drain(&mut a),
            vec![Action::Close { conn: a_out[0].0 }, Action::Release]
        );
        assert_eq!(
            drain(&mut b),
            vec![Action::Close { conn: b_out[0].0 }, Action::Release]
        );
        assert_eq!(a.poll_timeout(), None);
    }

    #[test]
    fn impossible_pairs_fail_before_any_packet() {
        let t0 = Instant::now();
        let random = behaviour(NatType::Symmetric, DeltaType::Random, 0);
        let port_filter = behaviour(NatType::PortRestricted, DeltaType::Equal, 0);
        let mut a = Session::initiate(
            t0,
            synced(t0, 0),
            side(random, "192.168.1.2"),
            &port_filter,
            LIMIT,
        );
        assert_eq!(drain(&mut a), vec![]);
        let Some(Outcome::Failed(PunchError::Impossible(_))) = a.poll_outcome() else {
            panic!("refused")
        };
        // The responder refuses a request it cannot meet, saying why.
        let mut cone = Session::initiate(
            t0,
            synced(t0, 0),
            side(port_filter, "192.168.1.2"),
            &port_filter,
            LIMIT,
        );
        drain(&mut cone);
        cone.handle_reserved(
            t0,
            vec![5000],
            Some((
                "198.18.1.1".parse().expect("ip"),
                Observed {
                    local: 5000,
                    mapped: 5000,
                },
            )),
        );
        let request = sent(&drain(&mut cone));
        let mut b = Session::respond(
            t0,
            synced(t0, 0),
            side(random, "192.168.2.2"),
            &request,
            LIMIT,
        );
        let Message::Refused { reason } = sent(&drain(&mut b)) else {
            panic!("refused")
        };
        assert_eq!(
            reason,
            "the responder side maps ports at random and the initiator side filters by port: no port to aim at"
        );
        cone.handle_message(
            t0,
            Message::Refused {
                reason: reason.clone(),
            },
        );
        assert_eq!(
            cone.poll_outcome(),
            Some(Outcome::Failed(PunchError::PeerRefused(reason)))
        );
        assert_eq!(drain(&mut cone), vec![Action::Release]);
    }

    #[test]
    fn a_punch_without_connections_gives_up_after_its_window() {
        let t0 = Instant::now();
        let cone = behaviour(NatType::PortRestricted, DeltaType::Equal, 0);
        let mut a = asking(t0, cone, &cone, Some(5000));
        drain(&mut a);
        let offer = peer_offer(5);
        a.handle_message(t0, Message::Answer { offer, meet_ms: 10 });
        a.handle_timeout(t0 + Duration::from_millis(10));
        let conns = connects(&drain(&mut a));
        assert_eq!(conns.len(), 1);
        let end = a.poll_timeout().expect("a window");
        assert_eq!(end, t0 + Duration::from_millis(10) + MIN_WINDOW);
        a.handle_timeout(end);
        assert_eq!(
            a.poll_outcome(),
            Some(Outcome::Failed(PunchError::NoConnection {
                window: MIN_WINDOW,
                tried: 1
            }))
        );
        assert_eq!(
            drain(&mut a),
            vec![Action::Close { conn: conns[0].0 }, Action::Release]
        );
    }

    #[test]
    fn a_silent_peer_or_a_stranger_loses_within_the_limit() {
        let t0 = Instant::now();
        let cone = behaviour(NatType::FullCone, DeltaType::Equal, 0);
        let mut a = asking(t0, cone, &cone, None);
        drain(&mut a);
        assert_eq!(a.poll_timeout(), Some(t0 + LIMIT));
        a.handle_timeout(t0 + LIMIT);
        assert_eq!(
            a.poll_outcome(),
            Some(Outcome::Failed(PunchError::NoAnswer(LIMIT)))
        );
        // A stranger's connection to a listener is not taken.
        let mut b = asking(t0, cone, &cone, None);
        let offer = peer_offer(3);
        b.handle_message(t0, Message::Answer { offer, meet_ms: 0 });
        assert_eq!(
            b.handle_accepted(t0, "198.18.9.9:1".parse().expect("addr")),
            None
        );
        let conn = b
            .handle_accepted(t0, "198.18.2.1:6000".parse().expect("addr"))
            .expect("the peer");
        assert!(drain(&mut b).contains(&Action::Handshake { conn }));
        b.handle_handshake_failed(t0, conn, "wrong key".into());
        b.handle_timeout(t0 + MIN_WINDOW);
        assert_eq!(
            b.poll_outcome(),
            Some(Outcome::Failed(PunchError::NotThePeer("wrong key".into())))
        );
    }

    #[test]
    fn an_unpredictable_side_refires_a_bounded_number_of_times() {
        let t0 = Instant::now();
        let random = behaviour(NatType::Symmetric, DeltaType::Random, 0);
        let restricted = behaviour(NatType::Restricted, DeltaType::Equal, 0);
        let mut a = asking(t0, random, &restricted, Some(31_337));
        let Message::Request { offer, .. } = sent(&drain(&mut a)) else {
            panic!("request")
        };
        assert!(offer.ports.is_empty());
        assert_eq!(offer.fallback, 31_337);
        let theirs = peer_offer(4);
        a.handle_message(
            t0,
            Message::Answer {
                offer: theirs,
                meet_ms: 0,
            },
        );
        let mut connects_made = connects(&drain(&mut a)).len();
        let mut now = t0;
        while let Some(at) = a.poll_timeout() {
            now = at;
            a.handle_timeout(now);
            connects_made += connects(&drain(&mut a)).len();
        }
        assert_eq!(connects_made, 1 + MAX_REFIRES as usize);
        assert!(now <= t0 + LIMIT);
        assert!(matches!(
            a.poll_outcome(),
            Some(Outcome::Failed(PunchError::NoConnection { .. }))
        ));
    }
}
