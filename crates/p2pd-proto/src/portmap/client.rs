//! One port mapping on one gateway, NAT-PMP or PCP, as a sans-IO machine.
//!
//! Drive it like every machine here: send what [`Client::poll_transmit`]
//! gives to the gateway (from any socket on `internal`'s IP: the gateway
//! maps the port named in the request), feed what comes back to
//! [`Client::handle_datagram`], tell [`Client::handle_unreachable`] about
//! an ICMP port unreachable, call [`Client::handle_timeout`] at
//! [`Client::poll_timeout`], and read [`Client::poll_event`].
//!
//! ```text
//!  new ─► asking ──grant──► granted ──half the lifetime, or the epoch went back──► renewing
//!           │     (Mapped)     ▲                                                    │   │
//!           │                  └─────────── grant (Mapped if it changed) ───────────┘   │ expiry
//!           ▼ `tries` sends, an error          a bad grant ─► Failed, delete ─► Closed  ▼
//!         Failed                          granted ◄──grant (Mapped)── asking quietly ◄── Lost
//!  close ─► delete (lifetime 0) ─► an answer, or two sends ─► Closed
//! ```
//!
//! Sends go out at 0, 250, 750, 1750 ms ... (RFC 6886 section 3.1: 250 ms,
//! doubling), the wait stopping at 64 s. Asking first: `tries` sends, then
//! their last wait, then [`Event::Failed`]. Renewing: until the expiry,
//! and an error answer meanwhile is what [`Event::Lost`] reports. After a
//! loss the client asks again without end and without events, until a
//! grant brings [`Event::Mapped`]. An epoch that goes back (section 3.6)
//! in any answer means the gateway lost its mappings: asked again at once.
//! So does an announcement ([`Client::handle_announce`]: the driver hears
//! the gateway's multicast to 224.0.0.1:5350; without it, the next
//! renewal's answer shows a restart). A grant
//! refused for what it grants (its external IP, port 0) may be in place on
//! the gateway: it is deleted, and [`Event::Closed`] follows the
//! [`Event::Failed`].
//!
//! NAT-PMP asks for the external address (opcode 0) and the mapping
//! separately, both at once, and again at each renewal; PCP's MAP answer
//! carries both, and its nonce proves it ours.

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::natpmp::{self, Body, Op};
use super::{BadExternal, Protocol, Transport, check_external, pcp};
use crate::Transmit;

/// The first wait for an answer; it doubles after each send.
const FIRST_WAIT: Duration = Duration::from_millis(250);
/// The wait stops doubling after this many sends: 250 ms × 2⁸ = 64 s, the
/// last wait of RFC 6886, so a renewal keeps asking about once a minute.
const MAX_DOUBLINGS: u32 = 8;
/// Sends of a delete before [`Event::Closed`] without an answer.
const CLOSE_TRIES: u32 = 2;
/// Granted lifetimes are held to a day: a renewal at least twice a day
/// whatever a gateway says, and no clock arithmetic near overflow.
const MAX_LIFETIME: Duration = Duration::from_secs(86_400);
/// Announcements renew at most this often (a gateway sends a few, RFC 6886
/// section 3.2.1, within 10 s).
const ANNOUNCE_GAP: Duration = Duration::from_secs(10);
/// RFC 6886 section 3.6: an epoch this far (ms) below the expected one
/// means the gateway restarted.
const EPOCH_SLACK_MS: u64 = 2_000;

/// What one mapping needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Which protocol to speak.
    pub protocol: Protocol,
    /// The gateway (port [`super::GATEWAY_PORT`]); only answers from this
    /// exact address count.
    pub gateway: SocketAddr,
    /// Our local IPv4 and the port to map: PCP sends the IP (a NAT in
    /// between then answers ADDRESS_MISMATCH), both check the port.
    pub internal: SocketAddr,
    /// The transport to map.
    pub transport: Transport,
    /// The lifetime asked for (e.g. 7200 s; at least 1 s is asked); the
    /// gateway may give less.
    pub lifetime: Duration,
    /// Sends before giving up on the first grant (at least 1).
    pub tries: u32,
    /// PCP's mapping nonce: random, kept for renewals and the delete.
    pub nonce: [u8; 12],
}

/// A gateway's result code, by protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A NAT-PMP result code.
    NatPmp(natpmp::ResultCode),
    /// A PCP result code.
    Pcp(pcp::ResultCode),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NatPmp(code) => code.fmt(f),
            Refusal::Pcp(code) => code.fmt(f),
        }
    }
}

/// Why a mapping failed or was lost; each names the gateway and protocol,
/// since a node may try several.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// Nothing answered.
    #[error("{protocol} at {gateway}: no answer after {tries} tries")]
    NoAnswer {
        /// The protocol.
        protocol: Protocol,
        /// The gateway.
        gateway: SocketAddr,
        /// The sends made.
        tries: u32,
    },
    /// The gateway does not speak this protocol: try the other one.
    #[error("{protocol} at {gateway}: unsupported ({why})")]
    Unsupported {
        /// The protocol.
        protocol: Protocol,
        /// The gateway.
        gateway: SocketAddr,
        /// How it said so.
        why: &'static str,
    },
    /// The gateway answered with an error.
    #[error("{protocol} at {gateway}: refused ({code})")]
    Refused {
        /// The protocol.
        protocol: Protocol,
        /// The gateway.
        gateway: SocketAddr,
        /// Its result code.
        code: Refusal,
    },
    /// The external address is of no use to peers.
    #[error("{protocol} at {gateway}: external address {error}")]
    BadExternal {
        /// The protocol.
        protocol: Protocol,
        /// The gateway.
        gateway: SocketAddr,
        /// What is wrong with it.
        error: BadExternal,
    },
    /// A success that grants nothing.
    #[error("{protocol} at {gateway}: a grant with {why}")]
    BadGrant {
        /// The protocol.
        protocol: Protocol,
        /// The gateway.
        gateway: SocketAddr,
        /// What is missing.
        why: &'static str,
    },
    /// No renewal got through before the mapping's lifetime ran out.
    #[error("{protocol} at {gateway}: the mapping expired before a renewal got through")]
    Expired {
        /// The protocol.
        protocol: Protocol,
        /// The gateway.
        gateway: SocketAddr,
    },
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Peers reach us at `external`: the first grant, or a new address or
    /// port (an unchanged renewal is silent).
    Mapped {
        /// The gateway's address and port for us.
        external: SocketAddr,
        /// How long it lasts without renewal (held to a day).
        lifetime: Duration,
    },
    /// The first grant did not come; the client is done, or, when an
    /// answer may have left part of a mapping on the gateway, deletes it
    /// first and then says [`Event::Closed`].
    Failed(MapError),
    /// A granted mapping expired unrenewed (or the gateway went away); the
    /// client asks again quietly, and says [`Event::Mapped`] on a grant.
    Lost(MapError),
    /// A datagram that was not used, and why: for the driver's log.
    Ignored(String),
    /// [`Client::close`] finished.
    Closed,
}

/// A mapping in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Grant {
    external: SocketAddr,
    expires: Instant,
    renew_at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Asking for the first grant: [`Event::Failed`] after `tries` sends.
    First,
    /// Granted; renewing from `renew_at`.
    Granted(Grant),
    /// Lost: asking again without end and without events until a grant.
    Relost,
    /// Deleting.
    Closing,
    /// Failed or closed.
    Done,
}

/// Requests out, and what answered so far.
#[derive(Debug, Clone, Copy)]
struct Round {
    sent: u32,
    next: Instant,
    /// The external IP (NAT-PMP's opcode 0, or PCP's MAP).
    external: Option<IpAddr>,
    /// The external port and lifetime granted.
    map: Option<(u16, u32)>,
}

impl Round {
    fn new(now: Instant) -> Self {
        Self {
            sent: 0,
            next: now,
            external: None,
            map: None,
        }
    }
}

/// A usable part of an answer.
#[derive(Debug, Clone, Copy)]
enum Piece {
    /// NAT-PMP's external address.
    External(IpAddr),
    /// NAT-PMP's mapping.
    Map { port: u16, lifetime: u32 },
    /// PCP's MAP: both.
    Full {
        ip: IpAddr,
        port: u16,
        lifetime: u32,
    },
}

#[derive(Debug, Clone)]
enum Answer {
    Piece(Piece),
    Refused(MapError),
}

/// One mapping of one (protocol, transport, internal address) on one
/// gateway.
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    phase: Phase,
    round: Option<Round>,
    /// The last epoch heard, and when.
    epoch: Option<(u32, Instant)>,
    /// The address last said in [`Event::Mapped`].
    reported: Option<SocketAddr>,
    /// Why the renewal is not getting through, when an answer said: what
    /// [`Event::Lost`] reports at the expiry.
    last_error: Option<MapError>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// When an announcement last renewed.
    announced: Option<Instant>,
}

impl Client {
    /// A client that sends its first request(s) at once.
    pub fn new(now: Instant, config: ClientConfig) -> Self {
        let mut client = Self {
            config,
            phase: Phase::First,
            round: None,
            epoch: None,
            reported: None,
            last_error: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            announced: None,
        };
        client.start_round(now);
        client
    }

    /// Whether the client has nothing more to do: failed, or closed.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Where peers reach us, while a mapping is granted.
    pub fn mapped(&self) -> Option<SocketAddr> {
        match self.phase {
            Phase::Granted(grant) => Some(grant.external),
            _ => None,
        }
    }

    /// The next datagram for the gateway.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Client::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.phase, self.round) {
            (Phase::Done, _) => None,
            (Phase::Granted(grant), Some(round)) => Some(round.next.min(grant.expires)),
            (Phase::Granted(grant), None) => Some(grant.renew_at),
            (_, round) => round.map(|r| r.next),
        }
    }

    /// Resends, renews, gives up or expires what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Phase::Granted(grant) = self.phase
            && now >= grant.expires
        {
            let error = self.last_error.take().unwrap_or(MapError::Expired {
                protocol: self.config.protocol,
                gateway: self.config.gateway,
            });
            self.lose(now, error);
            return;
        }
        if let Some(round) = self.round
            && now >= round.next
        {
            match self.phase {
                Phase::First if round.sent >= self.config.tries.max(1) => {
                    let error = MapError::NoAnswer {
                        protocol: self.config.protocol,
                        gateway: self.config.gateway,
                        tries: round.sent,
                    };
                    self.fail(error);
                }
                Phase::Closing if round.sent >= CLOSE_TRIES => self.finish_close(),
                _ => self.send(now),
            }
        }
        if let Phase::Granted(grant) = self.phase
            && self.round.is_none()
            && now >= grant.renew_at
        {
            self.start_round(now);
        }
    }

    /// Feeds a datagram that arrived from `from`. Whatever it is, the
    /// client goes on; what it does not use comes out as
    /// [`Event::Ignored`].
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let gateway = self.config.gateway;
        if from.port() != gateway.port() || from.ip().to_canonical() != gateway.ip().to_canonical()
        {
            self.ignore(format!("from {from}, not the gateway {gateway}"));
            return;
        }
        let answer = match self.config.protocol {
            Protocol::NatPmp => self.natpmp_answer(bytes),
            Protocol::Pcp => self.pcp_answer(bytes),
        };
        match answer {
            Ok((epoch, answer)) => {
                self.answered(now, epoch, answer);
                if self.round.is_some_and(|r| r.sent == 0) {
                    self.send(now);
                }
            }
            Err(why) => self.ignore(why),
        }
    }

    /// The gateway announced itself (a PCP ANNOUNCE, a NAT-PMP address
    /// announcement, to 224.0.0.1:5350): it has just started, or its
    /// address changed, so a granted mapping is asked for again at once.
    /// At most one renewal per [`ANNOUNCE_GAP`]: anyone on the LAN can
    /// send one with the gateway's address.
    pub fn handle_announce(&mut self, now: Instant) {
        let recent = self
            .announced
            .is_some_and(|at| now.saturating_duration_since(at) < ANNOUNCE_GAP);
        if let Phase::Granted(_) = self.phase
            && self.round.is_none()
            && !recent
        {
            self.announced = Some(now);
            self.start_round(now);
        }
    }

    /// The gateway's port is closed (ICMP port unreachable, ECONNREFUSED):
    /// nothing there speaks the protocol. Fails a first attempt, loses a
    /// mapping, ends a delete.
    pub fn handle_unreachable(&mut self, now: Instant) {
        let error = MapError::Unsupported {
            protocol: self.config.protocol,
            gateway: self.config.gateway,
            why: "port unreachable",
        };
        match self.phase {
            Phase::First => self.fail(error),
            Phase::Granted(_) => self.lose(now, error),
            Phase::Closing => self.finish_close(),
            Phase::Relost | Phase::Done => {}
        }
    }

    /// Deletes the mapping (lifetime 0, two sends), even one still being
    /// asked for, whose grant may be on its way; [`Event::Closed`] follows
    /// an answer or the last wait.
    pub fn close(&mut self, now: Instant) {
        match self.phase {
            Phase::Closing | Phase::Done => {}
            Phase::First | Phase::Granted(_) | Phase::Relost => {
                self.phase = Phase::Closing;
                self.last_error = None;
                self.start_round(now);
            }
        }
    }

    fn start_round(&mut self, now: Instant) {
        self.round = Some(Round::new(now));
        self.send(now);
    }

    /// Sends what the round still waits for, and sets when to again.
    fn send(&mut self, now: Instant) {
        let Some(round) = self.round else {
            return;
        };
        let payloads = match self.config.protocol {
            Protocol::NatPmp => {
                let mut payloads = Vec::with_capacity(2);
                if self.phase != Phase::Closing && round.external.is_none() {
                    payloads.push(natpmp::Request::ExternalAddress.encode());
                }
                if round.map.is_none() {
                    payloads.push(natpmp::Request::Map(self.natpmp_mapping()).encode());
                }
                payloads
            }
            Protocol::Pcp => vec![self.pcp_request().encode()],
        };
        for payload in payloads {
            self.transmits.push_back(Transmit {
                src: None,
                dst: self.config.gateway,
                payload,
            });
        }
        let sent = round.sent.saturating_add(1);
        let wait = FIRST_WAIT * 2u32.pow(sent.saturating_sub(1).min(MAX_DOUBLINGS));
        self.round = Some(Round {
            sent,
            next: now + wait,
            ..round
        });
    }

    /// Seconds to ask for: 0 deletes.
    fn lifetime_secs(&self) -> u32 {
        if self.phase == Phase::Closing {
            return 0;
        }
        u32::try_from(self.config.lifetime.as_secs())
            .unwrap_or(u32::MAX)
            .max(1)
    }

    /// What to suggest: the port (and address) granted, while renewing.
    fn suggested(&self) -> (IpAddr, u16) {
        match self.phase {
            Phase::Granted(grant) => (grant.external.ip(), grant.external.port()),
            Phase::Closing => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            Phase::First | Phase::Relost | Phase::Done => (
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                self.config.internal.port(),
            ),
        }
    }

    fn natpmp_mapping(&self) -> natpmp::Mapping {
        natpmp::Mapping {
            transport: self.config.transport,
            internal_port: self.config.internal.port(),
            external_port: self.suggested().1,
            lifetime: self.lifetime_secs(),
        }
    }

    fn pcp_request(&self) -> pcp::Request {
        let (external_ip, external_port) = self.suggested();
        pcp::Request {
            lifetime: self.lifetime_secs(),
            client: self.config.internal.ip(),
            map: pcp::Map {
                nonce: self.config.nonce,
                transport: self.config.transport,
                internal_port: self.config.internal.port(),
                external_port,
                external_ip,
            },
        }
    }

    fn unsupported(&self, why: &'static str) -> MapError {
        MapError::Unsupported {
            protocol: self.config.protocol,
            gateway: self.config.gateway,
            why,
        }
    }

    fn refused(&self, code: Refusal) -> MapError {
        match code {
            Refusal::NatPmp(natpmp::ResultCode::UnsupportedVersion)
            | Refusal::Pcp(pcp::ResultCode::UnsuppVersion) => self.unsupported("UNSUPP_VERSION"),
            Refusal::NatPmp(natpmp::ResultCode::UnsupportedOpcode)
            | Refusal::Pcp(pcp::ResultCode::UnsuppOpcode) => self.unsupported("UNSUPP_OPCODE"),
            code => MapError::Refused {
                protocol: self.config.protocol,
                gateway: self.config.gateway,
                code,
            },
        }
    }

    /// A NAT-PMP datagram as an answer (with its epoch), or why not.
    fn natpmp_answer(&self, bytes: &[u8]) -> Result<(Option<u32>, Answer), String> {
        let response = match natpmp::Response::decode(bytes) {
            Ok(response) => response,
            Err(natpmp::DecodeError::Unsupported(_)) => {
                let error = self.unsupported("the gateway speaks PCP only");
                return Ok((None, Answer::Refused(error)));
            }
            Err(e) => return Err(format!("not a NAT-PMP response: {e}")),
        };
        let ours = self.config.transport;
        if let Op::Map(transport) = response.body.op()
            && transport != ours
        {
            return Err(format!("a NAT-PMP answer for {transport}, not {ours}"));
        }
        if let Body::Map(mapping) = response.body
            && mapping.internal_port != self.config.internal.port()
        {
            return Err(format!(
                "a NAT-PMP answer for internal port {}, not {}",
                mapping.internal_port,
                self.config.internal.port()
            ));
        }
        let answer = match (response.result, response.body) {
            (natpmp::ResultCode::Success, Body::ExternalAddress(ip)) => {
                Answer::Piece(Piece::External(IpAddr::V4(ip)))
            }
            (natpmp::ResultCode::Success, Body::Map(mapping)) => Answer::Piece(Piece::Map {
                port: mapping.external_port,
                lifetime: mapping.lifetime,
            }),
            (natpmp::ResultCode::Success, Body::Bare(_)) => {
                return Err("a NAT-PMP success without a body".into());
            }
            (code, _) => Answer::Refused(self.refused(Refusal::NatPmp(code))),
        };
        Ok((Some(response.epoch), answer))
    }

    /// A PCP datagram as an answer (with its epoch), or why not.
    fn pcp_answer(&self, bytes: &[u8]) -> Result<(Option<u32>, Answer), String> {
        let response = match pcp::Response::decode(bytes) {
            Ok(response) => response,
            Err(pcp::DecodeError::Unsupported(version)) => {
                let why = if version == natpmp::VERSION {
                    "the gateway speaks NAT-PMP only"
                } else {
                    "the gateway speaks another PCP version"
                };
                return Ok((None, Answer::Refused(self.unsupported(why))));
            }
            Err(e) => return Err(format!("not a PCP MAP response: {e}")),
        };
        if let Some(map) = &response.map {
            if map.nonce != self.config.nonce {
                return Err("a PCP answer with another nonce".into());
            }
            if map.transport != self.config.transport {
                return Err(format!(
                    "a PCP answer for {}, not {}",
                    map.transport, self.config.transport
                ));
            }
            if map.internal_port != self.config.internal.port() {
                return Err(format!(
                    "a PCP answer for internal port {}, not {}",
                    map.internal_port,
                    self.config.internal.port()
                ));
            }
        }
        let answer = match (response.result, response.map) {
            (pcp::ResultCode::Success, Some(map)) => Answer::Piece(Piece::Full {
                ip: map.external_ip,
                port: map.external_port,
                lifetime: response.lifetime,
            }),
            (pcp::ResultCode::Success, None) => {
                return Err("a PCP success without MAP data".into());
            }
            (code, _) => Answer::Refused(self.refused(Refusal::Pcp(code))),
        };
        Ok((Some(response.epoch), answer))
    }

    /// Takes an answer from the gateway; a new round it opens is sent by
    /// the caller.
    fn answered(&mut self, now: Instant, epoch: Option<u32>, answer: Answer) {
        let restarted = epoch.is_some_and(|epoch| self.note_epoch(now, epoch));
        match self.phase {
            Phase::Done => {
                self.ignore("an answer after the end".into());
                return;
            }
            Phase::Closing => {
                match answer {
                    Answer::Refused(_)
                    | Answer::Piece(Piece::Map { lifetime: 0, .. })
                    | Answer::Piece(Piece::Full { lifetime: 0, .. }) => self.finish_close(),
                    Answer::Piece(_) => self.ignore("not the answer to the delete".into()),
                }
                return;
            }
            Phase::First | Phase::Granted(_) | Phase::Relost => {}
        }
        if restarted {
            // The gateway lost its state: earlier answers are stale, and
            // once granted, the mapping is asked for again now.
            match (self.phase, &mut self.round) {
                (Phase::First, Some(round)) => {
                    round.external = None;
                    round.map = None;
                }
                _ => self.round = Some(Round::new(now)),
            }
        }
        let piece = match answer {
            Answer::Piece(piece) => piece,
            Answer::Refused(error) => {
                match (self.phase, self.round) {
                    (Phase::First, _) => self.fail(error),
                    (_, Some(_)) => self.last_error = Some(error),
                    (_, None) => self.ignore(format!("an error while nothing was asked: {error}")),
                }
                return;
            }
        };
        let piece = match self.judge(piece) {
            Ok(piece) => piece,
            Err(error) => {
                match self.phase {
                    // Part of a grant may be in place on the gateway (NAT-PMP
                    // maps while it tells its address): it is deleted.
                    Phase::First => self.fail_and_delete(now, error),
                    _ => self.last_error = Some(error),
                }
                return;
            }
        };
        if self.round.is_none() {
            // Nothing asked: only news counts (a PCP server's unsolicited
            // MAP, a NAT-PMP address announcement); the rest are late
            // duplicates.
            let Phase::Granted(grant) = self.phase else {
                return;
            };
            let news = match piece {
                Piece::External(ip) => ip != grant.external.ip(),
                Piece::Full { ip, port, .. } => SocketAddr::new(ip, port) != grant.external,
                Piece::Map { .. } => false,
            };
            if !news {
                return;
            }
        }
        let round = self.round.get_or_insert_with(|| Round::new(now));
        match piece {
            Piece::External(ip) => round.external = Some(ip),
            Piece::Map { port, lifetime } => round.map = Some((port, lifetime)),
            Piece::Full { ip, port, lifetime } => {
                round.external = Some(ip);
                round.map = Some((port, lifetime));
            }
        }
        if let (Some(ip), Some((port, lifetime))) = (round.external, round.map) {
            self.granted(now, SocketAddr::new(ip, port), lifetime);
        }
    }

    /// A piece of a grant as it is used (the external IP as plain IPv4), if
    /// it is usable.
    fn judge(&self, piece: Piece) -> Result<Piece, MapError> {
        let protocol = self.config.protocol;
        let gateway = self.config.gateway;
        let bad = |error| MapError::BadExternal {
            protocol,
            gateway,
            error,
        };
        let (piece, port, lifetime) = match piece {
            Piece::External(ip) => {
                let ip = check_external(ip).map_err(bad)?;
                (Piece::External(ip.into()), None, None)
            }
            Piece::Map { port, lifetime } => (piece, Some(port), Some(lifetime)),
            Piece::Full { ip, port, lifetime } => {
                let ip = check_external(ip).map_err(bad)?.into();
                (
                    Piece::Full { ip, port, lifetime },
                    Some(port),
                    Some(lifetime),
                )
            }
        };
        let why = match (port, lifetime) {
            (Some(0), _) => "external port 0",
            (_, Some(0)) => "lifetime 0",
            _ => return Ok(piece),
        };
        Err(MapError::BadGrant {
            protocol,
            gateway,
            why,
        })
    }

    fn granted(&mut self, now: Instant, external: SocketAddr, lifetime: u32) {
        let lifetime = Duration::from_secs(u64::from(lifetime)).min(MAX_LIFETIME);
        self.phase = Phase::Granted(Grant {
            external,
            expires: now + lifetime,
            renew_at: now + lifetime / 2,
        });
        self.round = None;
        self.last_error = None;
        if self.reported != Some(external) {
            self.reported = Some(external);
            self.events.push_back(Event::Mapped { external, lifetime });
        }
    }

    /// Records `epoch`; whether it shows a restart (RFC 6886 section 3.6:
    /// below the last one plus 7/8 of the time since, by over 2 s).
    fn note_epoch(&mut self, now: Instant, epoch: u32) -> bool {
        let restarted = self.epoch.is_some_and(|(last, at)| {
            let elapsed_ms =
                u64::try_from(now.saturating_duration_since(at).as_millis()).unwrap_or(u64::MAX);
            let expected_ms = u64::from(last)
                .saturating_mul(1000)
                .saturating_add(elapsed_ms / 8 * 7);
            u64::from(epoch)
                .saturating_mul(1000)
                .saturating_add(EPOCH_SLACK_MS)
                < expected_ms
        });
        self.epoch = Some((epoch, now));
        restarted
    }

    fn lose(&mut self, now: Instant, error: MapError) {
        self.events.push_back(Event::Lost(error));
        self.phase = Phase::Relost;
        self.reported = None;
        self.last_error = None;
        self.start_round(now);
    }

    fn fail(&mut self, error: MapError) {
        self.phase = Phase::Done;
        self.round = None;
        self.events.push_back(Event::Failed(error));
    }

    /// [`Client::fail`] for an answer that may have left a mapping behind
    /// on the gateway: says why at once, then deletes it like
    /// [`Client::close`] (and says [`Event::Closed`]).
    fn fail_and_delete(&mut self, now: Instant, error: MapError) {
        self.events.push_back(Event::Failed(error));
        self.phase = Phase::Closing;
        self.last_error = None;
        self.start_round(now);
    }

    fn finish_close(&mut self) {
        self.phase = Phase::Done;
        self.round = None;
        self.events.push_back(Event::Closed);
    }

    fn ignore(&mut self, why: String) {
        self.events.push_back(Event::Ignored(why));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATEWAY: &str = "192.168.1.1:5351";

    fn config(protocol: Protocol) -> ClientConfig {
        ClientConfig {
            protocol,
            gateway: GATEWAY.parse().expect("literal"),
            internal: "192.168.1.20:4433".parse().expect("literal"),
            transport: Transport::Udp,
            lifetime: Duration::from_secs(7200),
            tries: 4,
            nonce: [7; 12],
        }
    }

    fn gateway() -> SocketAddr {
        GATEWAY.parse().expect("literal")
    }

    fn natpmp_external(epoch: u32, ip: [u8; 4]) -> Vec<u8> {
        natpmp::Response {
            result: natpmp::ResultCode::Success,
            epoch,
            body: Body::ExternalAddress(ip.into()),
        }
        .encode()
    }

    fn natpmp_map(epoch: u32, external_port: u16) -> Vec<u8> {
        natpmp::Response {
            result: natpmp::ResultCode::Success,
            epoch,
            body: Body::Map(natpmp::Mapping {
                transport: Transport::Udp,
                internal_port: 4433,
                external_port,
                lifetime: 7200,
            }),
        }
        .encode()
    }

    fn drain(client: &mut Client) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| client.poll_transmit())
            .map(|t| t.payload)
            .collect()
    }

    #[test]
    fn the_wait_doubles_from_250_ms_and_stops_at_64_s() {
        let t0 = Instant::now();
        let mut at = t0;
        let mut waits = Vec::new();
        let mut cfg = config(Protocol::Pcp);
        cfg.tries = 20;
        let mut client = Client::new(t0, cfg);
        for _ in 0..11 {
            let next = client.poll_timeout().expect("asking");
            waits.push((next - at).as_millis());
            at = next;
            client.handle_timeout(at);
        }
        assert_eq!(
            waits,
            [
                250, 500, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 64000, 64000
            ]
        );
    }

    #[test]
    fn natpmp_maps_once_both_answers_are_in_and_asks_only_for_the_missing_one() {
        let t0 = Instant::now();
        let mut client = Client::new(t0, config(Protocol::NatPmp));
        assert_eq!(drain(&mut client).len(), 2);
        client.handle_datagram(t0, gateway(), &natpmp_external(100, [198, 18, 0, 7]));
        assert_eq!(client.poll_event(), None);
        assert_eq!(client.mapped(), None);
        let at = client.poll_timeout().expect("waiting");
        client.handle_timeout(at);
        let resent = drain(&mut client);
        assert_eq!(resent.len(), 1);
        assert!(matches!(
            natpmp::Request::decode(&resent[0]),
            Ok(natpmp::Request::Map(_))
        ));
        client.handle_datagram(at, gateway(), &natpmp_map(100, 5000));
        let external: SocketAddr = "198.18.0.7:5000".parse().expect("literal");
        assert_eq!(
            client.poll_event(),
            Some(Event::Mapped {
                external,
                lifetime: Duration::from_secs(7200)
            })
        );
        assert_eq!(client.mapped(), Some(external));
    }

    #[test]
    fn an_epoch_within_the_rule_is_no_restart() {
        let t0 = Instant::now();
        let mut client = Client::new(t0, config(Protocol::NatPmp));
        assert!(!client.note_epoch(t0, 1000));
        // 100 s later: expected 1000 + 87.5 = 1087.5; 1086 is within 2 s.
        let later = t0 + Duration::from_secs(100);
        assert!(!client.note_epoch(later, 1086));
        // 100 s after that: expected 1086 + 87.5 = 1173.5; 1171 is not.
        assert!(client.note_epoch(later + Duration::from_secs(100), 1171));
        assert!(client.note_epoch(later + Duration::from_secs(100), 0));
    }

    #[test]
    fn answers_from_a_mapped_ipv6_gateway_address_count() {
        let t0 = Instant::now();
        let mut client = Client::new(t0, config(Protocol::NatPmp));
        let mapped: SocketAddr = "[::ffff:192.168.1.1]:5351".parse().expect("literal");
        client.handle_datagram(t0, mapped, &natpmp_external(1, [198, 18, 0, 7]));
        client.handle_datagram(t0, mapped, &natpmp_map(1, 4433));
        assert!(matches!(client.poll_event(), Some(Event::Mapped { .. })));
        let other_port: SocketAddr = "192.168.1.1:5350".parse().expect("literal");
        client.handle_datagram(t0, other_port, &natpmp_map(1, 4433));
        assert!(matches!(client.poll_event(), Some(Event::Ignored(_))));
    }

    #[test]
    fn unreachable_fails_a_first_attempt_and_loses_a_mapping() {
        let t0 = Instant::now();
        let mut client = Client::new(t0, config(Protocol::Pcp));
        client.handle_unreachable(t0);
        let Some(Event::Failed(error)) = client.poll_event() else {
            panic!("no failure");
        };
        assert_eq!(
            error.to_string(),
            "PCP at 192.168.1.1:5351: unsupported (port unreachable)"
        );
        assert_eq!(client.poll_timeout(), None);

        let mut client = Client::new(t0, config(Protocol::NatPmp));
        client.handle_datagram(t0, gateway(), &natpmp_external(1, [198, 18, 0, 7]));
        client.handle_datagram(t0, gateway(), &natpmp_map(1, 4433));
        drain(&mut client);
        assert!(matches!(client.poll_event(), Some(Event::Mapped { .. })));
        client.handle_unreachable(t0);
        assert!(matches!(
            client.poll_event(),
            Some(Event::Lost(MapError::Unsupported { .. }))
        ));
        assert_eq!(client.mapped(), None);
        assert_eq!(drain(&mut client).len(), 2, "asks again");
    }

    #[test]
    fn a_lifetime_below_a_second_still_asks_for_one() {
        let t0 = Instant::now();
        let mut cfg = config(Protocol::NatPmp);
        cfg.lifetime = Duration::from_millis(10);
        let mut client = Client::new(t0, cfg);
        let sent = drain(&mut client);
        let Ok(natpmp::Request::Map(mapping)) = natpmp::Request::decode(&sent[1]) else {
            panic!("no map request");
        };
        assert_eq!(mapping.lifetime, 1);
    }
}
