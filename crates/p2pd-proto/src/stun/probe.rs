//! The NAT behaviour discovery plan (RFC 5780 section 4) and the port-delta
//! series for one local IP, as a sans-IO machine: [`NatProbe`].
//!
//! ```text
//!  1. from socket L0, Binding to every server at once  -> external address, RTT,
//!                                                        disagreements, OTHER-ADDRESS
//!  2. mapping:   L0 -> other IP, same port; then other IP and port   (positive tests)
//!     filtering: fresh L1 -> CHANGE-REQUEST ip+port                  (concurrently,
//!                fresh L2 -> CHANGE-REQUEST port                       short deadlines)
//!  3. delta:     fresh sockets one after another -> (local, mapped) ports
//! ```
//!
//! Each filtering test has its own fresh socket: an earlier packet to the
//! other IP would open an address-dependent filter and make a restricted NAT
//! look full-cone. Tests expecting no answer get a deadline of a few RTTs,
//! not RFC 8489's 39.5 s. The machine names the socket of every transmit and
//! asks its driver to open sockets, so the same plan runs over real sockets
//! (`p2pd_net::stun::discovery`) and over a simulated NAT on virtual time.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::behavior::{
    Delta, DeltaType, Filtering, Mapping, NatType, PortPair, classify, classify_delta,
};
use super::binding::{self, BindingError, BindingResponse};
use super::transaction::{Event, RetransmitPolicy, Transactions};
use super::wire::TransactionId;
use crate::Transmit;

/// First retransmission timeout of tests that expect an answer: a LAN
/// answers in well under a millisecond, so a lost datagram is resent soon;
/// it doubles after each send, which spares a far server.
pub const DEFAULT_RTO: Duration = Duration::from_millis(100);
/// How long servers get to answer at all: patient enough for a server
/// across the world with one or two losses.
pub const DEFAULT_FIRST_ANSWER: Duration = Duration::from_millis(1500);
/// Floor of the wait for an answer a filter may rightly drop: 8 RTTs of a
/// LAN are far below the time a busy server takes to answer.
pub const DEFAULT_NEGATIVE_MIN: Duration = Duration::from_millis(150);
/// Ceiling of that wait, so a far server does not make detection slow.
pub const DEFAULT_NEGATIVE_MAX: Duration = Duration::from_secs(1);
/// Mappings in each delta series: enough for a majority of steps to show
/// through one foreign mapping, few enough to stay cheap.
pub const DEFAULT_DELTA_SAMPLES: usize = 6;

/// After the first answer, other servers get 4 RTTs of it plus this.
const GRACE_EXTRA: Duration = Duration::from_millis(100);
/// The shortest retransmission timeout of a negative test: below it a
/// retransmit would only add load.
const NEGATIVE_RTO_MIN: Duration = Duration::from_millis(20);
/// Where the consecutive-port series starts: above the well-known and
/// registered ports services use, below Linux's default ephemeral range's
/// top.
const CONSECUTIVE_BASE: Range<u16> = 20_000..60_000;

/// Timing of discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscoveryOptions {
    /// First retransmission timeout.
    pub rto: Duration,
    /// How long servers get to answer the first request.
    pub first_answer: Duration,
    /// Bounds of the wait for tests that may rightly get no answer.
    pub negative_min: Duration,
    /// See `negative_min`.
    pub negative_max: Duration,
    /// Mappings in the delta series.
    pub delta_samples: usize,
}

impl Default for DiscoveryOptions {
    /// Fast on a LAN, patient enough for a far server: retransmit after
    /// 100 ms (then 200, 400...), give servers 1.5 s, wait 8 RTTs (at least
    /// 150 ms, at most 1 s) for an answer that may not come, 6 mappings.
    fn default() -> Self {
        Self {
            rto: DEFAULT_RTO,
            first_answer: DEFAULT_FIRST_ANSWER,
            negative_min: DEFAULT_NEGATIVE_MIN,
            negative_max: DEFAULT_NEGATIVE_MAX,
            delta_samples: DEFAULT_DELTA_SAMPLES,
        }
    }
}

/// What discovery learnt about one local address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatReport {
    /// The local IP tested.
    pub local_ip: IpAddr,
    /// The external address the first answering server saw.
    pub external: Option<SocketAddr>,
    /// The NAT type.
    pub nat: NatType,
    /// Mapping behaviour, when measured.
    pub mapping: Option<Mapping>,
    /// Filtering behaviour, when measured.
    pub filtering: Option<Filtering>,
    /// Port allocation.
    pub delta: Delta,
    /// Servers whose external IP differs from the first answer's (a
    /// multi-homed NAT, or a lying server).
    pub disagreements: Vec<(SocketAddr, SocketAddr)>,
    /// Servers that did not answer.
    pub unreachable: Vec<SocketAddr>,
    /// Datagrams sent in all.
    pub requests: u32,
    /// Time taken.
    pub elapsed: Duration,
}

/// Names a local UDP socket of the plan: the driver maps it to a real
/// socket (or a simulated one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SocketId(u32);

impl SocketId {
    /// The socket of the first Binding and of the mapping tests.
    pub const L0: SocketId = SocketId(0);
    /// The fresh socket of the CHANGE-REQUEST ip+port filtering test.
    pub const L1: SocketId = SocketId(1);
    /// The fresh socket of the CHANGE-REQUEST port filtering test.
    pub const L2: SocketId = SocketId(2);

    /// The socket of the `n`th delta sample (the spread series first, then
    /// the consecutive one).
    pub fn delta(n: usize) -> SocketId {
        SocketId(3u32.saturating_add(u32::try_from(n).unwrap_or(u32::MAX)))
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            n @ 0..=2 => write!(f, "L{n}"),
            n => write!(f, "D{}", n - 3),
        }
    }
}

/// What the plan asks of its driver, or its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeEvent {
    /// Bind a UDP socket on the local IP at `port` (0: any free port), then
    /// call [`NatProbe::handle_socket_bound`] or
    /// [`NatProbe::handle_bind_failed`].
    OpenSocket {
        /// The socket's name in transmits and inputs.
        socket: SocketId,
        /// The local port; 0 lets the OS pick.
        port: u16,
    },
    /// The plan is done with this socket: close it.
    CloseSocket {
        /// The socket.
        socket: SocketId,
    },
    /// The delta series is next. It must not overlap another probe's series
    /// behind the same NAT (their mappings would interleave and hide the
    /// NAT's counter), so the plan waits for [`NatProbe::handle_delta_turn`]
    /// and the driver decides when that is.
    DeltaSeriesReady,
    /// The verdict. Nothing more follows.
    Done(NatReport),
    /// A socket the plan cannot do without could not be bound. Nothing
    /// more follows.
    Failed {
        /// The socket.
        socket: SocketId,
    },
}

/// Why [`NatProbe::poll_timeout`] asks to be woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutReason {
    /// A request on this socket is due for a resend or gives up.
    Transaction {
        /// The socket.
        socket: SocketId,
    },
    /// The servers slower than the first answer's grace are given up.
    FirstAnswerGrace,
}

/// The RFC 5780 test plan and delta series for one local IP.
///
/// Call order, as for every machine in this crate:
///
/// 1. [`NatProbe::new`] with the servers, options, a seed and `now`;
/// 2. drain [`NatProbe::poll_transmit`] (send each payload from the socket
///    its `src` names), then [`NatProbe::poll_event`]: open and close
///    sockets as asked (answering with [`NatProbe::handle_socket_bound`] or
///    [`NatProbe::handle_bind_failed`]), give the delta series its turn with
///    [`NatProbe::handle_delta_turn`], stop at `Done` or `Failed`;
/// 3. feed datagrams received on any open socket to
///    [`NatProbe::handle_input`], and call [`NatProbe::handle_timeout`] at
///    [`NatProbe::poll_timeout`]; go to 2.
///
/// Every input takes `now`, which must not go backwards; `elapsed` in the
/// verdict is measured on it. The seed drives the transaction ids and the
/// base port of the consecutive series, nothing else.
#[derive(Debug)]
pub struct NatProbe {
    local_ip: IpAddr,
    servers: Vec<SocketAddr>,
    options: DiscoveryOptions,
    rng: StdRng,
    started: Instant,
    phase: Phase,
    sockets: BTreeMap<SocketId, Socket>,
    tests: BTreeMap<TransactionId, (Test, SocketAddr)>,
    basis: Option<Basis>,
    report: NatReport,
    transmits: VecDeque<Transmit<SocketId>>,
    events: VecDeque<ProbeEvent>,
}

impl NatProbe {
    /// A plan for `local_ip` against `servers` (those of the other family
    /// are left out). With no server left the verdict, `blocked`, is ready
    /// at once.
    pub fn new(
        now: Instant,
        local_ip: IpAddr,
        servers: &[SocketAddr],
        options: DiscoveryOptions,
        seed: u64,
    ) -> Self {
        let servers: Vec<SocketAddr> = servers
            .iter()
            .copied()
            .filter(|s| s.is_ipv4() == local_ip.is_ipv4())
            .collect();
        let mut probe = Self {
            local_ip,
            servers,
            options,
            rng: StdRng::seed_from_u64(seed),
            started: now,
            phase: Phase::OpeningL0,
            sockets: BTreeMap::new(),
            tests: BTreeMap::new(),
            basis: None,
            report: NatReport {
                local_ip,
                external: None,
                nat: NatType::Blocked,
                mapping: None,
                filtering: None,
                delta: Delta::NOT_APPLICABLE,
                disagreements: Vec::new(),
                unreachable: Vec::new(),
                requests: 0,
                elapsed: Duration::ZERO,
            },
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        if probe.servers.is_empty() {
            probe.finish(now);
        } else {
            probe.open(SocketId::L0, 0);
        }
        probe
    }

    /// The driver bound `socket` (as asked by [`ProbeEvent::OpenSocket`]) to
    /// local `port`; its test starts.
    pub fn handle_socket_bound(&mut self, now: Instant, socket: SocketId, port: u16) {
        let Some(slot) = self.sockets.get_mut(&socket) else {
            return;
        };
        if slot.port.is_some() {
            return;
        }
        slot.port = Some(port);
        if socket == SocketId::L0 {
            self.start_first(now);
            return;
        }
        let Some(basis) = self.basis else {
            return;
        };
        match (socket, &self.phase) {
            (SocketId::L1, Phase::Behaviour(_)) => self.ask(
                now,
                socket,
                basis.primary,
                Some((true, true)),
                basis.negative,
                Test::FilterChangeBoth,
            ),
            (SocketId::L2, Phase::Behaviour(_)) => self.ask(
                now,
                socket,
                basis.primary,
                Some((false, true)),
                basis.negative,
                Test::FilterChangePort,
            ),
            (_, Phase::Delta(_)) => self.ask(
                now,
                socket,
                basis.primary,
                None,
                basis.positive,
                Test::DeltaSample,
            ),
            (_, _) => {}
        }
    }

    /// The driver could not bind `socket`. A busy port in the consecutive
    /// series is skipped (it only breaks the sequence); any other socket is
    /// needed, and the plan ends with [`ProbeEvent::Failed`].
    pub fn handle_bind_failed(&mut self, now: Instant, socket: SocketId) {
        if self.sockets.remove(&socket).is_none() {
            return;
        }
        if let Phase::Delta(series) = &mut self.phase
            && series.consecutive_base.is_some()
        {
            series.sample += 1;
            self.run_delta(now);
            return;
        }
        self.end();
        self.events.push_back(ProbeEvent::Failed { socket });
    }

    /// The delta series may run now (see [`ProbeEvent::DeltaSeriesReady`]).
    pub fn handle_delta_turn(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::AwaitingDeltaTurn) {
            return;
        }
        self.phase = Phase::Delta(DeltaSeries::default());
        self.run_delta(now);
    }

    /// Feeds a datagram received on `socket` from `from`. Returns whether
    /// it answered one of the plan's requests.
    pub fn handle_input(
        &mut self,
        now: Instant,
        socket: SocketId,
        from: SocketAddr,
        bytes: &[u8],
    ) -> bool {
        let Some(slot) = self.sockets.get_mut(&socket) else {
            return false;
        };
        if !slot.transactions.handle_input(now, from, bytes) {
            return false;
        }
        self.process(now, socket);
        true
    }

    /// Resends, gives up and moves on as due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Phase::First {
            grace_until: Some(at),
            ..
        } = self.phase
            && now >= at
        {
            self.end_first(now);
        }
        let ids: Vec<SocketId> = self.sockets.keys().copied().collect();
        for id in ids {
            if let Some(slot) = self.sockets.get_mut(&id) {
                slot.transactions.handle_timeout(now);
            }
            self.process(now, id);
        }
        self.flush();
    }

    /// The next datagram to send, from the socket `src` names.
    pub fn poll_transmit(&mut self) -> Option<Transmit<SocketId>> {
        self.transmits.pop_front()
    }

    /// The next request to the driver, or the verdict.
    pub fn poll_event(&mut self) -> Option<ProbeEvent> {
        self.events.pop_front()
    }

    /// When [`NatProbe::handle_timeout`] must next be called, and why.
    pub fn poll_timeout(&self) -> Option<(Instant, TimeoutReason)> {
        let mut next = match self.phase {
            Phase::First {
                grace_until: Some(at),
                ..
            } => Some((at, TimeoutReason::FirstAnswerGrace)),
            Phase::OpeningL0
            | Phase::First { .. }
            | Phase::Behaviour(_)
            | Phase::AwaitingDeltaTurn
            | Phase::Delta(_)
            | Phase::Done => None,
        };
        for (id, slot) in &self.sockets {
            let Some(at) = slot.transactions.poll_timeout() else {
                continue;
            };
            if next.is_none_or(|(earliest, _)| at < earliest) {
                next = Some((at, TimeoutReason::Transaction { socket: *id }));
            }
        }
        next
    }

    /// Whether the verdict (or a failure) has been given.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// Step 1: a Binding to every server at once from L0.
    fn start_first(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::OpeningL0) {
            return;
        }
        self.phase = Phase::First {
            answers: vec![None; self.servers.len()],
            grace_until: None,
        };
        let policy = RetransmitPolicy::bounded(self.options.rto, self.options.first_answer);
        for (n, server) in self.servers.clone().into_iter().enumerate() {
            self.ask(now, SocketId::L0, server, None, policy, Test::First(n));
        }
    }

    /// Ends step 1 (every server answered or timed out, or the grace after
    /// the first answer is over) and starts step 2 or 3.
    fn end_first(&mut self, now: Instant) {
        let Phase::First { answers, .. } = std::mem::replace(&mut self.phase, Phase::OpeningL0)
        else {
            return;
        };
        let outstanding: Vec<TransactionId> = self
            .tests
            .iter()
            .filter(|(_, (test, _))| matches!(test, Test::First(_)))
            .map(|(id, _)| *id)
            .collect();
        for id in outstanding {
            self.tests.remove(&id);
            if let Some(l0) = self.sockets.get_mut(&SocketId::L0) {
                l0.transactions.cancel(&id);
            }
        }
        let mut answered: Vec<(SocketAddr, BindingResponse)> = Vec::new();
        for (server, answer) in self.servers.iter().zip(answers) {
            match answer {
                Some(Ok(response)) => answered.push((*server, response)),
                Some(Err(_)) | None => self.report.unreachable.push(*server),
            }
        }
        // The behaviour tests need OTHER-ADDRESS: prefer the first answer
        // that has a usable one, not merely the first.
        let first = answered
            .iter()
            .find(|(_, r)| r.usable_other().is_some())
            .or_else(|| answered.first())
            .map(|(_, r)| r.clone());
        let Some(first) = first else {
            self.finish(now);
            return;
        };
        for (server, response) in &answered {
            if response.mapped.ip() != first.mapped.ip() {
                self.report.disagreements.push((*server, response.mapped));
            }
        }
        self.report.external = Some(first.mapped);
        let translated = first.mapped.ip() != self.local_ip;
        let other = first.usable_other();
        let basis = Basis {
            primary: first.from,
            mapped: first.mapped,
            other,
            translated,
            positive: RetransmitPolicy::bounded(self.options.rto, self.options.first_answer),
            negative: RetransmitPolicy::bounded(
                (first.rtt * 2).max(NEGATIVE_RTO_MIN),
                (first.rtt * 8)
                    .max(self.options.negative_min)
                    .min(self.options.negative_max),
            ),
        };
        self.basis = Some(basis);
        let Some(other) = other else {
            // Without OTHER-ADDRESS only the delta can be measured; the
            // type is the safe guess for punching.
            self.report.nat = if translated {
                NatType::Symmetric
            } else {
                NatType::UdpFirewall
            };
            self.after_behaviour(now);
            return;
        };
        self.phase = Phase::Behaviour(Behaviour {
            mapping: if translated {
                MappingTest::OtherIp
            } else {
                MappingTest::Done(None)
            },
            change_both: FilterTest::Pending,
            change_port: FilterTest::Pending,
        });
        if translated {
            let second = SocketAddr::new(other.ip(), basis.primary.port());
            self.ask(
                now,
                SocketId::L0,
                second,
                None,
                basis.positive,
                Test::MappingOtherIp,
            );
        }
        self.open(SocketId::L1, 0);
        self.open(SocketId::L2, 0);
    }

    /// Step 2's results, once all three tests are in.
    fn end_behaviour(&mut self, now: Instant) {
        let Phase::Behaviour(Behaviour {
            mapping: MappingTest::Done(mapping),
            change_both: FilterTest::Done(both),
            change_port: FilterTest::Done(port),
        }) = &self.phase
        else {
            return;
        };
        let Some(basis) = self.basis else {
            return;
        };
        let primary = basis.primary;
        // A server that ignores CHANGE-REQUEST answers from where it was
        // asked; that proves nothing about the filter, which stays unknown.
        let ignored = both.as_ref().is_some_and(|r| r.from == primary)
            || port.as_ref().is_some_and(|r| r.from == primary);
        let filtering = if ignored {
            None
        } else if both.as_ref().is_some_and(|r| r.from.ip() != primary.ip()) {
            Some(Filtering::EndpointIndependent)
        } else if port
            .as_ref()
            .is_some_and(|r| r.from.port() != primary.port())
        {
            Some(Filtering::AddressDependent)
        } else {
            Some(Filtering::AddressAndPortDependent)
        };
        let mapping = *mapping;
        self.report.mapping = mapping;
        self.report.filtering = filtering;
        // Unknown behaviour is taken as the hardest case, as punching needs:
        // a mapping test that got no answer counts as destination-dependent,
        // an untested filter as address-and-port-dependent.
        self.report.nat = classify(
            Some(basis.translated),
            mapping.unwrap_or(Mapping::AddressAndPortDependent),
            filtering.unwrap_or(Filtering::AddressAndPortDependent),
        );
        self.after_behaviour(now);
    }

    /// Step 3 when there is a NAT whose ports to measure, else the verdict.
    fn after_behaviour(&mut self, now: Instant) {
        let translated = self.basis.is_some_and(|b| b.translated);
        if translated {
            self.phase = Phase::AwaitingDeltaTurn;
            self.events.push_back(ProbeEvent::DeltaSeriesReady);
        } else {
            self.finish(now);
        }
    }

    /// Step 3: opens the current sample's socket, or moves from the spread
    /// series to the consecutive one, or gives the verdict.
    fn run_delta(&mut self, now: Instant) {
        let samples = self.options.delta_samples;
        loop {
            let Phase::Delta(series) = &mut self.phase else {
                return;
            };
            if series.sample < samples {
                let (index, port) = match series.consecutive_base {
                    None => (series.sample, Some(0)),
                    Some(base) => (
                        samples.saturating_add(series.sample),
                        u16::try_from(usize::from(base) + series.sample).ok(),
                    ),
                };
                let Some(port) = port else {
                    // Past the last port: the series ends here.
                    series.sample = samples;
                    continue;
                };
                self.open(SocketId::delta(index), port);
                return;
            }
            if series.consecutive_base.is_some() {
                self.report.delta = classify_delta(&series.spread, &series.consecutive);
                self.finish(now);
                return;
            }
            let decided = classify_delta(&series.spread, &[]);
            if decided.kind != DeltaType::Random {
                self.report.delta = decided;
                self.finish(now);
                return;
            }
            // No pattern among unrelated ports: try consecutive ones, for a
            // NAT whose step only shows when the local port goes up by one.
            series.consecutive_base = Some(self.rng.random_range(CONSECUTIVE_BASE));
            series.sample = 0;
        }
    }

    /// Drains the finished transactions of `socket` into the plan.
    fn process(&mut self, now: Instant, socket: SocketId) {
        while let Some(event) = self
            .sockets
            .get_mut(&socket)
            .and_then(|s| s.transactions.poll_event())
        {
            let (id, answer) = match event {
                Event::Response {
                    id,
                    from,
                    message,
                    rtt,
                } => (id, Some((from, message, rtt))),
                Event::TimedOut { id } => (id, None),
            };
            let Some((test, dst)) = self.tests.remove(&id) else {
                continue;
            };
            let result = match answer {
                Some((from, message, rtt)) => binding::interpret(&message, from, rtt),
                None => Err(BindingError::Timeout(dst)),
            };
            self.on_result(now, socket, test, result);
        }
        self.flush();
    }

    /// One test's result.
    fn on_result(
        &mut self,
        now: Instant,
        socket: SocketId,
        test: Test,
        result: Result<BindingResponse, BindingError>,
    ) {
        if let Test::First(n) = test {
            self.on_first(now, n, result);
            return;
        }
        let Some(basis) = self.basis else {
            return;
        };
        match (test, &mut self.phase) {
            (Test::MappingOtherIp, Phase::Behaviour(b)) => match result {
                Ok(m2) if m2.mapped == basis.mapped => {
                    b.mapping = MappingTest::Done(Some(Mapping::EndpointIndependent));
                    self.end_behaviour(now);
                }
                Ok(m2) => {
                    b.mapping = MappingTest::OtherAddress { m2: m2.mapped };
                    if let Some(other) = basis.other {
                        self.ask(
                            now,
                            SocketId::L0,
                            other,
                            None,
                            basis.positive,
                            Test::MappingOtherAddress,
                        );
                    }
                }
                Err(_) => {
                    b.mapping = MappingTest::Done(None);
                    self.end_behaviour(now);
                }
            },
            (Test::MappingOtherAddress, Phase::Behaviour(b)) => {
                let MappingTest::OtherAddress { m2 } = b.mapping else {
                    return;
                };
                let mapping = match result {
                    Ok(m3) if m3.mapped == m2 => Mapping::AddressDependent,
                    Ok(_) | Err(_) => Mapping::AddressAndPortDependent,
                };
                b.mapping = MappingTest::Done(Some(mapping));
                self.end_behaviour(now);
            }
            (Test::FilterChangeBoth, Phase::Behaviour(b)) => {
                b.change_both = FilterTest::Done(result.ok());
                self.close(socket);
                self.end_behaviour(now);
            }
            (Test::FilterChangePort, Phase::Behaviour(b)) => {
                b.change_port = FilterTest::Done(result.ok());
                self.close(socket);
                self.end_behaviour(now);
            }
            (Test::DeltaSample, Phase::Delta(series)) => {
                let local = self.sockets.get(&socket).and_then(|s| s.port);
                if let (Some(local), Ok(answer)) = (local, result) {
                    let pair = (local, answer.mapped.port());
                    if series.consecutive_base.is_some() {
                        series.consecutive.push(pair);
                    } else {
                        series.spread.push(pair);
                    }
                }
                series.sample += 1;
                self.close(socket);
                self.run_delta(now);
            }
            (_, _) => {}
        }
    }

    /// Step 1's answer from server `n`: the first success starts the grace
    /// for the others.
    fn on_first(&mut self, now: Instant, n: usize, result: Result<BindingResponse, BindingError>) {
        let Phase::First {
            answers,
            grace_until,
        } = &mut self.phase
        else {
            return;
        };
        if let (Ok(answer), None) = (&result, *grace_until) {
            *grace_until = Some(now + grace(answer.rtt, &self.options));
        }
        if let Some(slot) = answers.get_mut(n) {
            *slot = Some(result);
        }
        if answers.iter().all(Option::is_some) {
            self.end_first(now);
        }
    }

    /// Starts a Binding request on `socket`.
    fn ask(
        &mut self,
        now: Instant,
        socket: SocketId,
        dst: SocketAddr,
        change: Option<(bool, bool)>,
        policy: RetransmitPolicy,
        test: Test,
    ) {
        let id = TransactionId(self.rng.random());
        let Some(slot) = self.sockets.get_mut(&socket) else {
            return;
        };
        slot.transactions
            .start(now, dst, &binding::request(id, change), policy);
        self.tests.insert(id, (test, dst));
        self.flush();
    }

    /// Moves the transactions' datagrams to the plan's queue, naming their
    /// socket, and counts them.
    fn flush(&mut self) {
        for (id, slot) in &mut self.sockets {
            while let Some(transmit) = slot.transactions.poll_transmit() {
                self.report.requests += 1;
                self.transmits.push_back(Transmit {
                    src: *id,
                    dst: transmit.dst,
                    payload: transmit.payload,
                });
            }
        }
    }

    fn open(&mut self, socket: SocketId, port: u16) {
        self.sockets.insert(
            socket,
            Socket {
                port: None,
                transactions: Transactions::new(),
            },
        );
        self.events
            .push_back(ProbeEvent::OpenSocket { socket, port });
    }

    fn close(&mut self, socket: SocketId) {
        if self.sockets.remove(&socket).is_some() {
            self.events.push_back(ProbeEvent::CloseSocket { socket });
        }
    }

    /// Gives the verdict.
    fn finish(&mut self, now: Instant) {
        self.flush();
        self.end();
        self.report.elapsed = now.saturating_duration_since(self.started);
        self.events.push_back(ProbeEvent::Done(self.report.clone()));
    }

    /// Drops every socket and test: nothing is sent or awaited any more.
    fn end(&mut self) {
        self.phase = Phase::Done;
        self.sockets.clear();
        self.tests.clear();
    }
}

/// How long to wait for more servers once one has answered.
fn grace(first_rtt: Duration, options: &DiscoveryOptions) -> Duration {
    (first_rtt * 4 + GRACE_EXTRA).min(options.first_answer)
}

/// One plan socket: its bound port once known, and its requests.
#[derive(Debug)]
struct Socket {
    port: Option<u16>,
    transactions: Transactions,
}

/// What a request tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Test {
    /// The first Binding to the server with this index.
    First(usize),
    /// Mapping: to the other IP, the primary port.
    MappingOtherIp,
    /// Mapping: to the other IP and port.
    MappingOtherAddress,
    /// Filtering: CHANGE-REQUEST ip+port.
    FilterChangeBoth,
    /// Filtering: CHANGE-REQUEST port.
    FilterChangePort,
    /// One mapping of the delta series.
    DeltaSample,
}

/// Where the plan is.
#[derive(Debug)]
enum Phase {
    /// Waiting for L0.
    OpeningL0,
    /// Step 1: an answer (or failure) per server, and when to stop
    /// waiting once one has answered.
    First {
        answers: Vec<Option<Result<BindingResponse, BindingError>>>,
        grace_until: Option<Instant>,
    },
    /// Step 2.
    Behaviour(Behaviour),
    /// Between steps 2 and 3, until the driver gives the turn.
    AwaitingDeltaTurn,
    /// Step 3.
    Delta(DeltaSeries),
    /// Verdict given or failed.
    Done,
}

/// Step 2's three tests.
#[derive(Debug)]
struct Behaviour {
    mapping: MappingTest,
    change_both: FilterTest,
    change_port: FilterTest,
}

#[derive(Debug, Clone, Copy)]
enum MappingTest {
    /// Asking the other IP, primary port.
    OtherIp,
    /// Asking the other IP and port; `m2` is what the other IP saw.
    OtherAddress { m2: SocketAddr },
    /// `None`: no answer, behaviour unknown.
    Done(Option<Mapping>),
}

#[derive(Debug, Clone)]
enum FilterTest {
    /// The socket is opening or the request is out.
    Pending,
    /// The answer, if one came.
    Done(Option<BindingResponse>),
}

/// Step 3's samples so far.
#[derive(Debug, Default)]
struct DeltaSeries {
    spread: Vec<PortPair>,
    consecutive: Vec<PortPair>,
    /// Set once the spread series showed no pattern.
    consecutive_base: Option<u16>,
    /// The sample being taken in the current series.
    sample: usize,
}

/// What step 1 decided, for the later steps.
#[derive(Debug, Clone, Copy)]
struct Basis {
    /// The server the behaviour tests ask (where its answer came from).
    primary: SocketAddr,
    /// The external address it saw.
    mapped: SocketAddr,
    /// Its usable OTHER-ADDRESS.
    other: Option<SocketAddr>,
    /// Whether the external IP differs from the local one.
    translated: bool,
    /// Retransmission of tests that expect an answer.
    positive: RetransmitPolicy,
    /// Retransmission of tests that may rightly get none: from the RTT,
    /// within the options' bounds.
    negative: RetransmitPolicy,
}
