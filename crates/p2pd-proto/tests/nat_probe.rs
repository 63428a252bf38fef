//! The NAT probe against simulated NATs and RFC 5780 servers on virtual
//! time: no sockets, no sleeps. The harness always jumps to the earliest
//! of the probe's timeout and the next datagram's arrival (quinn-proto's
//! `Pair::step`), so a whole detection runs in microseconds.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use p2pd_proto::Transmit;
use p2pd_proto::stun::behavior::{Delta, DeltaType, Filtering, Mapping, NatType};
use p2pd_proto::stun::probe::{DiscoveryOptions, NatProbe, NatReport, ProbeEvent, SocketId};
use p2pd_proto::stun::server::{ServerAddresses, Transport, respond};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const MS: Duration = Duration::from_millis(1);

#[test]
fn no_nat_and_no_filter_is_open() {
    let result = World::new(Nat::none()).run();
    assert_eq!(result.report.nat, NatType::Open);
    assert_eq!(
        result.report.filtering,
        Some(Filtering::EndpointIndependent)
    );
    assert_eq!(result.report.mapping, None, "nothing to map without a NAT");
    assert_eq!(result.report.delta, Delta::NOT_APPLICABLE);
    assert_eq!(
        result.report.external.map(|a| a.ip()),
        Some(PUBLIC_HOST.parse().expect("lit"))
    );
}

#[test]
fn no_nat_behind_a_stateful_firewall_is_udp_firewall() {
    let result = World::new(Nat::udp_firewall()).run();
    assert_eq!(result.report.nat, NatType::UdpFirewall);
    assert_eq!(
        result.report.filtering,
        Some(Filtering::AddressAndPortDependent)
    );
    assert_eq!(result.report.delta, Delta::NOT_APPLICABLE);
}

#[test]
fn endpoint_independent_mapping_and_filtering_is_full_cone() {
    let result = World::new(Nat::cone(Filter::EndpointIndependent, Ports::Preserving)).run();
    assert_detected(
        &result.report,
        NatType::FullCone,
        Some(Mapping::EndpointIndependent),
        Some(Filtering::EndpointIndependent),
        DeltaType::Equal,
        0,
    );
}

#[test]
fn address_dependent_filtering_is_restricted() {
    let result = World::new(Nat::cone(Filter::AddressDependent, Ports::Preserving)).run();
    assert_detected(
        &result.report,
        NatType::Restricted,
        Some(Mapping::EndpointIndependent),
        Some(Filtering::AddressDependent),
        DeltaType::Equal,
        0,
    );
}

#[test]
fn address_and_port_dependent_filtering_is_port_restricted() {
    let result = World::new(Nat::cone(
        Filter::AddressAndPortDependent,
        Ports::Preserving,
    ))
    .run();
    assert_detected(
        &result.report,
        NatType::PortRestricted,
        Some(Mapping::EndpointIndependent),
        Some(Filtering::AddressAndPortDependent),
        DeltaType::Equal,
        0,
    );
}

#[test]
fn symmetric_with_sequential_ports_has_an_independent_delta() {
    for step in [1, 2, 7] {
        let result = World::new(Nat::symmetric(Ports::Sequential { next: 30_000, step })).run();
        assert_detected(
            &result.report,
            NatType::Symmetric,
            Some(Mapping::AddressAndPortDependent),
            Some(Filtering::AddressAndPortDependent),
            DeltaType::Independent,
            i32::from(step),
        );
    }
}

#[test]
fn symmetric_with_random_ports_is_random_after_both_series() {
    let result = World::new(Nat::symmetric(Ports::Random(Box::new(
        StdRng::seed_from_u64(7),
    ))))
    .run();
    assert_detected(
        &result.report,
        NatType::Symmetric,
        Some(Mapping::AddressAndPortDependent),
        Some(Filtering::AddressAndPortDependent),
        DeltaType::Random,
        0,
    );
    let consecutive: Vec<u16> = result
        .opened
        .iter()
        .filter(|(socket, _)| *socket >= SocketId::delta(6))
        .map(|(_, port)| *port)
        .collect();
    assert_eq!(consecutive.len(), 6, "the consecutive series ran");
    assert!(
        consecutive.windows(2).all(|w| w[1] == w[0] + 1),
        "{consecutive:?}"
    );
}

#[test]
fn a_step_that_shows_only_for_consecutive_local_ports_is_dependent() {
    let result = World::new(Nat::symmetric(Ports::Scaled { factor: 3 })).run();
    assert_eq!(
        result.report.delta,
        Delta {
            kind: DeltaType::Dependent,
            value: 3
        },
        "{:?}",
        result.report
    );
}

#[test]
fn address_dependent_mapping_is_symmetric() {
    let mut nat = Nat::cone(Filter::EndpointIndependent, Ports::Preserving);
    nat.mapping = Mapping::AddressDependent;
    nat.ports = Ports::Sequential {
        next: 40_000,
        step: 1,
    };
    let result = World::new(nat).run();
    assert_eq!(result.report.nat, NatType::Symmetric);
    assert_eq!(result.report.mapping, Some(Mapping::AddressDependent));
}

#[test]
fn a_udp_block_is_blocked_after_the_first_answer_timeout() {
    let result = World::new(Nat::blocking()).run();
    assert_eq!(result.report.nat, NatType::Blocked);
    assert_eq!(result.report.external, None);
    assert_eq!(result.report.delta, Delta::NOT_APPLICABLE);
    assert_eq!(result.report.unreachable, vec![full_server().primary]);
    assert_eq!(
        result.report.elapsed,
        DiscoveryOptions::default().first_answer
    );
    assert!(result.report.requests >= 2, "retransmitted");
}

#[test]
fn a_server_without_other_address_gives_address_and_delta_only() {
    let behind_nat = World::new(Nat::symmetric(Ports::Sequential {
        next: 30_000,
        step: 1,
    }))
    .servers(vec![Server::Single(single_server())])
    .run();
    assert_eq!(behind_nat.report.nat, NatType::Symmetric, "the safe guess");
    assert_eq!(
        (behind_nat.report.mapping, behind_nat.report.filtering),
        (None, None)
    );
    assert_eq!(
        behind_nat.report.delta,
        Delta {
            kind: DeltaType::Independent,
            value: 1
        }
    );
    let open = World::new(Nat::none())
        .servers(vec![Server::Single(single_server())])
        .run();
    assert_eq!(open.report.nat, NatType::UdpFirewall);
    assert_eq!(open.report.delta, Delta::NOT_APPLICABLE);
}

#[test]
fn a_server_with_other_address_is_preferred_over_an_earlier_one_without() {
    let result = World::new(Nat::cone(Filter::AddressDependent, Ports::Preserving))
        .servers(vec![
            Server::Single(single_server()),
            Server::Full(full_server()),
        ])
        .run();
    assert_eq!(
        result.report.nat,
        NatType::Restricted,
        "{:?}",
        result.report
    );
}

#[test]
fn a_server_ignoring_change_request_leaves_filtering_unknown() {
    let result = World::new(Nat::cone(Filter::EndpointIndependent, Ports::Preserving))
        .servers(vec![Server::IgnoresChange(full_server())])
        .run();
    assert_eq!(result.report.filtering, None);
    assert_eq!(result.report.mapping, Some(Mapping::EndpointIndependent));
    assert_eq!(
        result.report.nat,
        NatType::PortRestricted,
        "unknown filtering counts as the hardest"
    );
}

#[test]
fn two_dead_servers_cost_one_grace_period_not_a_timeout_each() {
    let nat = || Nat::cone(Filter::EndpointIndependent, Ports::Preserving);
    let alone = World::new(nat()).run();
    let with_dead = World::new(nat())
        .servers(vec![
            Server::Dead(dead_server(1)),
            Server::Full(full_server()),
            Server::Dead(dead_server(2)),
        ])
        .run();
    assert_eq!(with_dead.report.nat, NatType::FullCone);
    assert_eq!(
        with_dead.report.unreachable,
        vec![dead_server(1), dead_server(2)]
    );
    let rtt = 2 * ONE_WAY;
    let grace = rtt * 4 + 100 * MS;
    assert_eq!(
        with_dead.report.elapsed - alone.report.elapsed,
        grace,
        "alone {:?}, with dead servers {:?}",
        alone.report,
        with_dead.report
    );
}

#[test]
fn negative_tests_end_at_their_clamped_deadline() {
    let options = DiscoveryOptions::default();
    for one_way in [25 * MICROSECOND, ONE_WAY, 20 * MS, 100 * MS] {
        let result = World::new(Nat::cone(
            Filter::AddressAndPortDependent,
            Ports::Preserving,
        ))
        .one_way(one_way)
        .run();
        assert_eq!(result.report.nat, NatType::PortRestricted);
        let rtt = 2 * one_way;
        let deadline = (rtt * 8).clamp(options.negative_min, options.negative_max);
        assert_eq!(
            result.delta_ready_after,
            Some(rtt + deadline),
            "one-way {one_way:?}: the first answer, then the filtering tests' deadline"
        );
    }
}

#[test]
fn the_delta_series_waits_for_its_turn() {
    let mut world = World::new(Nat::symmetric(Ports::Sequential {
        next: 30_000,
        step: 1,
    }));
    world.hold_delta_turn = true;
    world.run_until_idle();
    assert!(world.delta_ready_at.is_some(), "step 2 ended");
    assert!(
        !world.opened.iter().any(|(s, _)| *s >= SocketId::delta(0)),
        "no delta socket before the turn"
    );
    assert!(world.result.is_none());
    assert_eq!(world.probe.poll_timeout(), None, "nothing to wake for");

    let later = world.now + Duration::from_secs(5);
    world.now = later;
    world.probe.handle_delta_turn(later);
    world.hold_delta_turn = false;
    let result = world.run();
    assert_eq!(result.report.delta.kind, DeltaType::Independent);
    assert!(result.report.elapsed > Duration::from_secs(5));
}

#[test]
fn a_busy_consecutive_port_is_skipped_but_a_failed_l0_fails() {
    let mut world = World::new(Nat::symmetric(Ports::Random(Box::new(
        StdRng::seed_from_u64(3),
    ))));
    world.refuse_bind = Some(Refuse::EveryOtherFixedPort);
    let result = world.run();
    assert_eq!(result.report.delta.kind, DeltaType::Random);
    let fixed = result
        .opened
        .iter()
        .filter(|(s, _)| *s >= SocketId::delta(6))
        .count();
    assert_eq!(fixed, 3, "3 of 6 consecutive ports were free");

    let mut world = World::new(Nat::none());
    world.refuse_bind = Some(Refuse::Socket(SocketId::L0));
    world.run_until_idle();
    assert_eq!(world.failed, Some(SocketId::L0));
    assert!(world.probe.is_done());
}

#[test]
fn no_server_of_the_family_is_blocked_at_once() {
    let t0 = Instant::now();
    let mut probe = NatProbe::new(
        t0,
        "2001:db8::2".parse().expect("lit"),
        &[full_server().primary],
        DiscoveryOptions::default(),
        1,
    );
    let Some(ProbeEvent::Done(report)) = probe.poll_event() else {
        panic!("expected a verdict");
    };
    assert_eq!((report.nat, report.requests), (NatType::Blocked, 0));
    assert_eq!(probe.poll_transmit(), None);
}

#[test]
fn the_same_seed_gives_the_same_datagrams() {
    let run = |seed| {
        let mut world = World::new(Nat::symmetric(Ports::Random(Box::new(
            StdRng::seed_from_u64(5),
        ))));
        world.seed = seed;
        world.rebuild();
        let result = world.run();
        (result.report, result.payloads)
    };
    let (first, first_payloads) = run(11);
    let (again, again_payloads) = run(11);
    let (_, other_payloads) = run(12);
    assert_eq!(first, again);
    assert_eq!(first_payloads, again_payloads);
    assert_ne!(
        first_payloads, other_payloads,
        "transaction ids follow the seed"
    );
}

#[test]
fn every_transmit_names_an_open_socket() {
    // World::deliver_transmit panics on a transmit from a socket that is not
    // open; a full symmetric run uses every kind of socket.
    let result = World::new(Nat::symmetric(Ports::Random(Box::new(
        StdRng::seed_from_u64(9),
    ))))
    .run();
    let kinds: BTreeSet<String> = result
        .opened
        .iter()
        .map(|(s, _)| s.to_string()[..1].to_owned())
        .collect();
    assert_eq!(kinds, BTreeSet::from(["D".to_owned(), "L".to_owned()]));
    assert_eq!(
        result.opened.len(),
        3 + 12,
        "L0, L1, L2 and both delta series"
    );
}

const MICROSECOND: Duration = Duration::from_micros(1);
/// One-way latency between the host and the servers.
const ONE_WAY: Duration = Duration::from_micros(500);
const PRIVATE_HOST: &str = "10.0.0.2";
const NAT_IP: &str = "203.0.113.7";
const PUBLIC_HOST: &str = "198.51.100.9";

fn assert_detected(
    report: &NatReport,
    nat: NatType,
    mapping: Option<Mapping>,
    filtering: Option<Filtering>,
    delta: DeltaType,
    value: i32,
) {
    assert_eq!(report.nat, nat, "{report:?}");
    assert_eq!(report.mapping, mapping, "{report:?}");
    assert_eq!(report.filtering, filtering, "{report:?}");
    assert_eq!(report.delta, Delta { kind: delta, value }, "{report:?}");
    assert_eq!(
        report.external.map(|a| a.ip()),
        Some(NAT_IP.parse().expect("lit"))
    );
    assert!(report.unreachable.is_empty() && report.disagreements.is_empty());
}

fn full_server() -> ServerAddresses {
    ServerAddresses {
        primary: "198.18.0.2:3478".parse().expect("lit"),
        alternate: Some("198.18.0.3:3479".parse().expect("lit")),
    }
}

fn single_server() -> ServerAddresses {
    ServerAddresses {
        primary: "198.18.0.4:3478".parse().expect("lit"),
        alternate: None,
    }
}

fn dead_server(n: u8) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, 100 + n], 3478))
}

/// A simulated RFC 5780 server.
enum Server {
    /// Honours CHANGE-REQUEST from four sockets.
    Full(ServerAddresses),
    /// One socket, no OTHER-ADDRESS.
    Single(ServerAddresses),
    /// Advertises OTHER-ADDRESS but answers every request from where it
    /// was asked.
    IgnoresChange(ServerAddresses),
    /// Never answers.
    Dead(SocketAddr),
}

impl Server {
    fn answer(
        &self,
        on: SocketAddr,
        client: SocketAddr,
        bytes: &[u8],
    ) -> Option<Transmit<SocketAddr>> {
        match self {
            Server::Full(addrs) | Server::Single(addrs) => {
                if !addrs.sockets().contains(&on) {
                    return None;
                }
                respond(addrs, Transport::Udp, on, client, bytes)
            }
            Server::IgnoresChange(addrs) => {
                if !addrs.sockets().contains(&on) {
                    return None;
                }
                let mut answer = respond(addrs, Transport::Udp, on, client, bytes)?;
                answer.src = on;
                Some(answer)
            }
            Server::Dead(_) => None,
        }
    }
}

/// RFC 4787 filtering of a simulated NAT or firewall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filter {
    EndpointIndependent,
    AddressDependent,
    AddressAndPortDependent,
}

/// How a simulated NAT picks external ports.
enum Ports {
    /// The internal port, when free.
    Preserving,
    /// A NAT-wide counter.
    Sequential { next: u16, step: u16 },
    /// Anywhere, from a seeded RNG.
    Random(Box<StdRng>),
    /// A function of the internal port that steps by `factor` when the
    /// internal port steps by one.
    Scaled { factor: u16 },
}

/// One mapping: an internal socket's external port and who it sent to.
struct Binding {
    internal: SocketAddr,
    external: u16,
    sent_to: BTreeSet<SocketAddr>,
}

/// A simulated NAT (RFC 4787 mapping, filtering, port allocation), or with
/// `translate` off a host with no NAT whose firewall filters alike.
struct Nat {
    external_ip: IpAddr,
    mapping: Mapping,
    filter: Filter,
    ports: Ports,
    blocks_udp: bool,
    /// Keyed by (internal, destination as far as the mapping sees it).
    bindings: BTreeMap<(SocketAddr, Option<SocketAddr>), usize>,
    table: Vec<Binding>,
}

impl Nat {
    fn cone(filter: Filter, ports: Ports) -> Self {
        Self::new(NAT_IP, Mapping::EndpointIndependent, filter, ports)
    }

    fn symmetric(ports: Ports) -> Self {
        Self::new(
            NAT_IP,
            Mapping::AddressAndPortDependent,
            Filter::AddressAndPortDependent,
            ports,
        )
    }

    fn none() -> Self {
        Self::new(
            PUBLIC_HOST,
            Mapping::EndpointIndependent,
            Filter::EndpointIndependent,
            Ports::Preserving,
        )
    }

    fn udp_firewall() -> Self {
        Self::new(
            PUBLIC_HOST,
            Mapping::EndpointIndependent,
            Filter::AddressAndPortDependent,
            Ports::Preserving,
        )
    }

    fn blocking() -> Self {
        let mut nat = Self::none();
        nat.blocks_udp = true;
        nat
    }

    fn new(external_ip: &str, mapping: Mapping, filter: Filter, ports: Ports) -> Self {
        Self {
            external_ip: external_ip.parse().expect("lit"),
            mapping,
            filter,
            ports,
            blocks_udp: false,
            bindings: BTreeMap::new(),
            table: Vec::new(),
        }
    }

    fn local_ip(&self) -> IpAddr {
        if self.external_ip == PUBLIC_HOST.parse::<IpAddr>().expect("lit") {
            self.external_ip
        } else {
            PRIVATE_HOST.parse().expect("lit")
        }
    }

    /// The source address the outside sees, or `None`: dropped.
    fn outbound(&mut self, internal: SocketAddr, dst: SocketAddr) -> Option<SocketAddr> {
        if self.blocks_udp {
            return None;
        }
        let key = match self.mapping {
            Mapping::EndpointIndependent => (internal, None),
            Mapping::AddressDependent => (internal, Some(SocketAddr::new(dst.ip(), 0))),
            Mapping::AddressAndPortDependent => (internal, Some(dst)),
        };
        let index = match self.bindings.get(&key) {
            Some(index) => *index,
            None => {
                let external = self.allocate(internal.port());
                self.table.push(Binding {
                    internal,
                    external,
                    sent_to: BTreeSet::new(),
                });
                self.bindings.insert(key, self.table.len() - 1);
                self.table.len() - 1
            }
        };
        let binding = &mut self.table[index];
        binding.sent_to.insert(dst);
        Some(SocketAddr::new(self.external_ip, binding.external))
    }

    /// The internal socket an inbound datagram reaches, or `None`: filtered.
    fn inbound(&self, from: SocketAddr, to: SocketAddr) -> Option<SocketAddr> {
        if self.blocks_udp || to.ip() != self.external_ip {
            return None;
        }
        let binding = self.table.iter().find(|b| b.external == to.port())?;
        let allowed = match self.filter {
            Filter::EndpointIndependent => true,
            Filter::AddressDependent => binding.sent_to.iter().any(|s| s.ip() == from.ip()),
            Filter::AddressAndPortDependent => binding.sent_to.contains(&from),
        };
        allowed.then_some(binding.internal)
    }

    fn allocate(&mut self, internal_port: u16) -> u16 {
        let taken = |port: u16, table: &[Binding]| table.iter().any(|b| b.external == port);
        match &mut self.ports {
            Ports::Preserving => {
                let mut port = internal_port;
                while taken(port, &self.table) {
                    port = port.wrapping_add(1).max(1024);
                }
                port
            }
            Ports::Sequential { next, step } => {
                let port = *next;
                *next = next.wrapping_add(*step);
                port
            }
            Ports::Scaled { factor } => internal_port.wrapping_mul(*factor),
            Ports::Random(rng) => loop {
                let port = rng.random_range(1024..=u16::MAX);
                if !taken(port, &self.table) {
                    break port;
                }
            },
        }
    }
}

/// A datagram on the wire.
struct Packet {
    arrives: Instant,
    from: SocketAddr,
    to: SocketAddr,
    payload: Vec<u8>,
}

enum Refuse {
    Socket(SocketId),
    EveryOtherFixedPort,
}

/// What a finished run gives.
struct Outcome {
    report: NatReport,
    /// When step 3 was ready, after the start.
    delta_ready_after: Option<Duration>,
    /// Sockets opened, with their local ports, in order.
    opened: Vec<(SocketId, u16)>,
    /// Every payload sent, in order.
    payloads: Vec<Vec<u8>>,
}

/// The probe, a host, its NAT and the servers on one virtual clock.
struct World {
    t0: Instant,
    now: Instant,
    seed: u64,
    probe: NatProbe,
    nat: Nat,
    servers: Vec<Server>,
    one_way: Duration,
    local: BTreeMap<SocketId, SocketAddr>,
    ephemeral: StdRng,
    wire: Vec<Packet>,
    hold_delta_turn: bool,
    refuse_bind: Option<Refuse>,
    fixed_ports_asked: usize,
    delta_ready_at: Option<Instant>,
    opened: Vec<(SocketId, u16)>,
    payloads: Vec<Vec<u8>>,
    result: Option<NatReport>,
    failed: Option<SocketId>,
}

impl World {
    fn new(nat: Nat) -> Self {
        let t0 = Instant::now();
        let probe = NatProbe::new(
            t0,
            nat.local_ip(),
            &[full_server().primary],
            DiscoveryOptions::default(),
            42,
        );
        Self {
            t0,
            now: t0,
            seed: 42,
            probe,
            nat,
            servers: vec![Server::Full(full_server())],
            one_way: ONE_WAY,
            local: BTreeMap::new(),
            ephemeral: StdRng::seed_from_u64(1),
            wire: Vec::new(),
            hold_delta_turn: false,
            refuse_bind: None,
            fixed_ports_asked: 0,
            delta_ready_at: None,
            opened: Vec::new(),
            payloads: Vec::new(),
            result: None,
            failed: None,
        }
    }

    fn servers(mut self, servers: Vec<Server>) -> Self {
        self.servers = servers;
        self.rebuild();
        self
    }

    fn one_way(mut self, one_way: Duration) -> Self {
        self.one_way = one_way;
        self
    }

    /// A fresh probe for the current servers and seed.
    fn rebuild(&mut self) {
        let addrs: Vec<SocketAddr> = self
            .servers
            .iter()
            .map(|s| match s {
                Server::Full(a) | Server::Single(a) | Server::IgnoresChange(a) => a.primary,
                Server::Dead(a) => *a,
            })
            .collect();
        self.probe = NatProbe::new(
            self.t0,
            self.nat.local_ip(),
            &addrs,
            DiscoveryOptions::default(),
            self.seed,
        );
    }

    fn run(mut self) -> Outcome {
        self.run_until_idle();
        let report = self.result.take().expect("a verdict");
        Outcome {
            report,
            delta_ready_after: self.delta_ready_at.map(|at| at - self.t0),
            opened: self.opened,
            payloads: self.payloads,
        }
    }

    /// Steps until the probe is done or waits for nothing this world
    /// would give it.
    fn run_until_idle(&mut self) {
        for _ in 0..100_000 {
            self.drain();
            if self.probe.is_done() {
                return;
            }
            let timeout = self.probe.poll_timeout().map(|(at, _)| at);
            let arrival = self.wire.iter().map(|p| p.arrives).min();
            let Some(next) = [timeout, arrival].into_iter().flatten().min() else {
                return;
            };
            assert!(next >= self.now, "time went backwards");
            self.now = next;
            let (due, later): (Vec<Packet>, Vec<Packet>) =
                self.wire.drain(..).partition(|p| p.arrives <= next);
            self.wire = later;
            for packet in due {
                self.deliver(packet);
            }
            if timeout.is_some_and(|at| at <= next) {
                self.probe.handle_timeout(next);
            }
        }
        panic!("the probe did not finish in 100000 steps");
    }

    /// Sends the probe's transmits and carries out its requests.
    fn drain(&mut self) {
        loop {
            if let Some(transmit) = self.probe.poll_transmit() {
                self.send(transmit);
                continue;
            }
            let Some(event) = self.probe.poll_event() else {
                return;
            };
            match event {
                ProbeEvent::OpenSocket { socket, port } => self.open(socket, port),
                ProbeEvent::CloseSocket { socket } => {
                    self.local.remove(&socket);
                }
                ProbeEvent::DeltaSeriesReady => {
                    self.delta_ready_at = Some(self.now);
                    if !self.hold_delta_turn {
                        self.probe.handle_delta_turn(self.now);
                    }
                }
                ProbeEvent::Done(report) => self.result = Some(report),
                ProbeEvent::Failed { socket } => self.failed = Some(socket),
            }
        }
    }

    fn open(&mut self, socket: SocketId, port: u16) {
        let refused = match &self.refuse_bind {
            Some(Refuse::Socket(s)) => *s == socket,
            Some(Refuse::EveryOtherFixedPort) if port != 0 => {
                self.fixed_ports_asked += 1;
                self.fixed_ports_asked.is_multiple_of(2)
            }
            Some(Refuse::EveryOtherFixedPort) | None => false,
        };
        let port = if port == 0 {
            self.ephemeral.random_range(32_768..61_000)
        } else {
            port
        };
        if refused || self.local.values().any(|a| a.port() == port) {
            self.probe.handle_bind_failed(self.now, socket);
            return;
        }
        self.local
            .insert(socket, SocketAddr::new(self.nat.local_ip(), port));
        self.opened.push((socket, port));
        self.probe.handle_socket_bound(self.now, socket, port);
    }

    fn send(&mut self, transmit: Transmit<SocketId>) {
        let internal = *self
            .local
            .get(&transmit.src)
            .unwrap_or_else(|| panic!("a transmit from {} which is not open", transmit.src));
        self.payloads.push(transmit.payload.clone());
        let Some(from) = self.nat.outbound(internal, transmit.dst) else {
            return;
        };
        self.wire.push(Packet {
            arrives: self.now + self.one_way,
            from,
            to: transmit.dst,
            payload: transmit.payload,
        });
    }

    fn deliver(&mut self, packet: Packet) {
        if let Some(internal) = self.nat.inbound(packet.from, packet.to) {
            let socket = self
                .local
                .iter()
                .find(|(_, a)| **a == internal)
                .map(|(s, _)| *s);
            if let Some(socket) = socket {
                self.probe
                    .handle_input(self.now, socket, packet.from, &packet.payload);
            }
            return;
        }
        let answer = self
            .servers
            .iter()
            .find_map(|s| s.answer(packet.to, packet.from, &packet.payload));
        if let Some(answer) = answer {
            self.wire.push(Packet {
                arrives: self.now + self.one_way,
                from: answer.src,
                to: answer.dst,
                payload: answer.payload,
            });
        }
    }
}
