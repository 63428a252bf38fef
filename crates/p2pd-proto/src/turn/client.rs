//! A TURN client (RFC 8656) as a sans-IO machine: one allocation on one
//! server, its permissions and channels, kept alive on an injected clock.
//!
//! Drive it like every machine here: send what [`Client::poll_transmit`]
//! gives to the server, feed everything the server sends to
//! [`Client::handle_input`] (which hands back peer data), call
//! [`Client::handle_timeout`] at [`Client::poll_timeout`], and read
//! [`Client::poll_event`].
//!
//! ```text
//!  Allocate ──► 401 (realm, nonce) ──► Allocate + MESSAGE-INTEGRITY ──► relayed address
//!      (438 stale nonce: the same request again with the new nonce, once)
//!  Refresh at half the lifetime (a minute before it, for long ones);
//!  ChannelBind / CreatePermission again every 4 minutes (they last 5 and 10).
//! ```

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::channel::{self, FIRST_CHANNEL, LAST_CHANNEL};
use super::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, REFRESH, SEND, UDP};
use crate::Transmit;
use crate::stun::message::{Integrity, check_integrity};
use crate::stun::transaction::{Event as TxEvent, RetransmitPolicy, Transactions};
use crate::stun::{Attribute, Class, Message, TransactionId};

/// Permissions last 5 minutes on the server (RFC 8656 section 9) and
/// channels 10: both are renewed after this.
pub const PEER_REFRESH: Duration = Duration::from_secs(240);
/// The lifetime a server gives when its answer names none.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
/// First retransmission over UDP; it doubles up to the request's timeout.
const UDP_RTO: Duration = Duration::from_millis(250);

/// Which relayed address family to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// An IPv4 relayed address (the default of every server).
    V4,
    /// An IPv6 relayed address (REQUESTED-ADDRESS-FAMILY, RFC 8656 section 18.7).
    V6,
}

/// What one allocation needs.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The server's address.
    pub server: SocketAddr,
    /// The link to the server is a byte stream (TCP): requests are sent
    /// once, and ChannelData is padded to 4 bytes.
    pub stream: bool,
    /// Long-term credential user name.
    pub username: String,
    /// Long-term credential password.
    pub password: String,
    /// The realm expected; empty takes the server's.
    pub realm: String,
    /// The relayed address family.
    pub family: Family,
    /// The lifetime asked for; the server may give less.
    pub lifetime: Duration,
    /// Each request gives up after this.
    pub timeout: Duration,
    /// Refresh at least this often, whatever the lifetime: keeps a NAT's
    /// mapping to the server open on a quiet allocation (servers such as
    /// coturn give no lifetime under 10 minutes). `None`: by the lifetime.
    pub refresh_every: Option<Duration>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("server", &self.server)
            .field("stream", &self.stream)
            .field("username", &self.username)
            .field("realm", &self.realm)
            .field("family", &self.family)
            .field("lifetime", &self.lifetime)
            .field("refresh_every", &self.refresh_every)
            .finish_non_exhaustive()
    }
}

/// Why an allocation, or a peer's permission, failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TurnError {
    /// The server refused the user name or password.
    #[error("TURN server {server} refused the credentials ({reason})")]
    Unauthorized {
        /// The server.
        server: SocketAddr,
        /// Its reason phrase.
        reason: String,
    },
    /// The server refused the request for another reason.
    #[error("TURN server {server} refused: {code} {reason}")]
    Refused {
        /// The server.
        server: SocketAddr,
        /// The error code (RFC 8656 section 19).
        code: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// No answer in time.
    #[error("TURN server {server} did not answer within {} ms", .after.as_millis())]
    TimedOut {
        /// The server.
        server: SocketAddr,
        /// The request's timeout.
        after: Duration,
    },
    /// The answer lacks what it must carry.
    #[error("TURN server {server} sent a malformed answer: {why}")]
    Malformed {
        /// The server.
        server: SocketAddr,
        /// What is missing or wrong.
        why: &'static str,
    },
    /// The server is in another realm than the configured one.
    #[error("TURN server {server} is in realm `{theirs}`, not the configured `{ours}`")]
    Realm {
        /// The server.
        server: SocketAddr,
        /// The server's realm.
        theirs: String,
        /// The configured realm.
        ours: String,
    },
    /// The allocation's lifetime ran out before a refresh got through.
    #[error("the allocation on TURN server {server} expired")]
    Expired {
        /// The server.
        server: SocketAddr,
    },
    /// Asked for something that needs an allocation before it exists, or
    /// after it ended.
    #[error("no allocation on TURN server {server}")]
    NotAllocated {
        /// The server.
        server: SocketAddr,
    },
    /// Data for a peer with neither a channel nor a permission.
    #[error("no permission for peer {0}")]
    NoPermission(SocketAddr),
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The allocation exists.
    Allocated {
        /// Where peers reach us.
        relayed: SocketAddr,
        /// Where the server saw us come from.
        mapped: Option<SocketAddr>,
        /// How long it lasts without a refresh.
        lifetime: Duration,
    },
    /// A refresh got through.
    Refreshed {
        /// The new lifetime.
        lifetime: Duration,
    },
    /// Data from `peer` is let through.
    PermissionCreated {
        /// The peer's IP.
        peer: IpAddr,
    },
    /// Data to and from `peer` goes over `channel`.
    ChannelBound {
        /// The peer.
        peer: SocketAddr,
        /// The channel number.
        channel: u16,
    },
    /// A permission or channel for `peer` failed; the allocation stays.
    PeerFailed {
        /// The peer's IP.
        peer: IpAddr,
        /// Why.
        error: TurnError,
    },
    /// The allocation failed or was lost; the client is done.
    Failed(TurnError),
    /// [`Client::close`] finished: the allocation is deleted.
    Closed,
}

/// What a datagram from the server was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input<'a> {
    /// Data from a peer (ChannelData, borrowed; or a Data indication).
    Peer {
        /// The peer.
        peer: SocketAddr,
        /// Its bytes.
        data: Cow<'a, [u8]>,
    },
    /// An answer to one of our requests, now handled.
    Control,
    /// Nothing for us: malformed, unknown, or a forged answer.
    Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Allocate,
    Refresh(u32),
    Permission(IpAddr),
    Channel(SocketAddr, u16),
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    request: Request,
    authenticated: bool,
    stale_retried: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Allocating,
    Allocated {
        relayed: SocketAddr,
        expires: Instant,
        refresh_at: Instant,
    },
    Closing,
    Done,
}

#[derive(Debug, Clone)]
struct Auth {
    realm: String,
    nonce: String,
    key: [u8; 16],
}

#[derive(Debug, Clone, Copy)]
struct Channel {
    number: u16,
    bound: bool,
    refresh_at: Instant,
}

/// One allocation and what hangs on it.
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    rng: StdRng,
    transactions: Transactions,
    pending: HashMap<TransactionId, Pending>,
    auth: Option<Auth>,
    state: State,
    /// Permissions by peer IP, with when to renew them.
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<SocketAddr, Channel>,
    peers_by_channel: HashMap<u16, SocketAddr>,
    next_channel: u16,
    events: VecDeque<Event>,
}

/// The long-term credential key (RFC 8489 section 9.2.2): MD5 of
/// `username:realm:password`.
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update(format!("{username}:{realm}:{password}").as_bytes());
    md5.finalize().into()
}

impl Client {
    /// A client that asks for its allocation at once; `seed` drives the
    /// transaction ids.
    pub fn new(now: Instant, config: ClientConfig, seed: u64) -> Self {
        let mut client = Self {
            config,
            rng: StdRng::seed_from_u64(seed),
            transactions: Transactions::new(),
            pending: HashMap::new(),
            auth: None,
            state: State::Allocating,
            permissions: HashMap::new(),
            channels: HashMap::new(),
            peers_by_channel: HashMap::new(),
            next_channel: FIRST_CHANNEL,
            events: VecDeque::new(),
        };
        client.request(now, Request::Allocate, false);
        client
    }

    /// The server.
    pub fn server(&self) -> SocketAddr {
        self.config.server
    }

    /// The relayed address, once allocated.
    pub fn relayed(&self) -> Option<SocketAddr> {
        match self.state {
            State::Allocated { relayed, .. } => Some(relayed),
            _ => None,
        }
    }

    /// Whether the client has ended (failed, or closed).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Lets data from `peer` in (CreatePermission).
    pub fn create_permission(&mut self, now: Instant, peer: IpAddr) -> Result<(), TurnError> {
        self.require_allocated()?;
        self.request(now, Request::Permission(peer), false);
        Ok(())
    }

    /// Binds a channel to `peer` (which also lets its data in) and returns
    /// its number; a peer already bound keeps its channel.
    pub fn bind_channel(&mut self, now: Instant, peer: SocketAddr) -> Result<u16, TurnError> {
        self.require_allocated()?;
        if let Some(channel) = self.channels.get(&peer) {
            return Ok(channel.number);
        }
        let number = self.next_channel;
        // A client binds far fewer than 4096 peers; wrapping reuses the
        // oldest numbers only after that.
        self.next_channel = if number == LAST_CHANNEL {
            FIRST_CHANNEL
        } else {
            number + 1
        };
        self.channels.insert(
            peer,
            Channel {
                number,
                bound: false,
                refresh_at: now + PEER_REFRESH,
            },
        );
        self.request(now, Request::Channel(peer, number), false);
        Ok(number)
    }

    /// Appends to `out` what carries `payload` to `peer` through the
    /// server: ChannelData on a bound channel, else a Send indication.
    pub fn wrap(
        &self,
        peer: SocketAddr,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), TurnError> {
        if let Some(channel) = self.channels.get(&peer).filter(|c| c.bound) {
            channel::encode(channel.number, payload, self.config.stream, out);
            return Ok(());
        }
        if !self.permissions.contains_key(&peer.ip()) {
            return Err(TurnError::NoPermission(peer));
        }
        let id = TransactionId(rand::rng().random());
        let message = Message::new(Class::Indication, SEND, id)
            .with(Attribute::XorPeerAddress(peer))
            .with(Attribute::Data(payload.to_vec()));
        out.extend_from_slice(&message.encode());
        Ok(())
    }

    /// Deletes the allocation (a Refresh with lifetime 0); [`Event::Closed`]
    /// follows.
    pub fn close(&mut self, now: Instant) {
        match self.state {
            State::Allocated { .. } => {
                self.state = State::Closing;
                self.request(now, Request::Refresh(0), false);
            }
            State::Allocating => {
                self.state = State::Done;
                self.events.push_back(Event::Closed);
            }
            State::Closing | State::Done => {}
        }
    }

    /// Feeds bytes the server sent (one datagram, or one frame of the
    /// stream).
    pub fn handle_input<'a>(&mut self, now: Instant, bytes: &'a [u8]) -> Input<'a> {
        if channel::is_channel_data(bytes) {
            let Ok(data) = channel::decode(bytes) else {
                return Input::Ignored;
            };
            return match self.peers_by_channel.get(&data.channel) {
                Some(peer) => Input::Peer {
                    peer: *peer,
                    data: Cow::Borrowed(data.payload),
                },
                None => Input::Ignored,
            };
        }
        let Ok(message) = Message::decode(bytes) else {
            return Input::Ignored;
        };
        match message.class {
            Class::Indication if message.method == DATA => data_indication(message),
            Class::Success | Class::Error => {
                // An answer to an authenticated request must prove the key;
                // a 401 or 438 cannot, and only makes us sign again.
                if message.class == Class::Success
                    && let Some(auth) = &self.auth
                    && !check_integrity(bytes, &auth.key)
                {
                    return Input::Ignored;
                }
                if !self
                    .transactions
                    .handle_input(now, self.config.server, bytes)
                {
                    return Input::Ignored;
                }
                self.drain(now);
                Input::Control
            }
            _ => Input::Ignored,
        }
    }

    /// Resends, refreshes or gives up on what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.transactions.handle_timeout(now);
        self.drain(now);
        let State::Allocated {
            relayed,
            expires,
            refresh_at,
        } = self.state
        else {
            return;
        };
        if now >= expires {
            self.fail_allocation(TurnError::Expired {
                server: self.config.server,
            });
            return;
        }
        if now >= refresh_at {
            // Asked again only if this one fails to answer before expiry.
            self.state = State::Allocated {
                relayed,
                expires,
                refresh_at: expires,
            };
            let secs = self.lifetime_secs();
            self.request(now, Request::Refresh(secs), false);
        }
        let due: Vec<SocketAddr> = self
            .channels
            .iter()
            .filter(|(_, c)| c.bound && now >= c.refresh_at)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in due {
            if let Some(channel) = self.channels.get_mut(&peer) {
                channel.refresh_at = now + PEER_REFRESH;
                let number = channel.number;
                self.request(now, Request::Channel(peer, number), false);
            }
        }
        let due: Vec<IpAddr> = self
            .permissions
            .iter()
            .filter(|(_, at)| now >= **at)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in due {
            self.permissions.insert(ip, now + PEER_REFRESH);
            self.request(now, Request::Permission(ip), false);
        }
    }

    /// The next datagram for the server.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transactions.poll_transmit()
    }

    /// When [`Client::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut at = self.transactions.poll_timeout();
        let mut consider = |t: Instant| at = Some(at.map_or(t, |a| a.min(t)));
        if let State::Allocated {
            expires,
            refresh_at,
            ..
        } = self.state
        {
            consider(expires.min(refresh_at));
            self.permissions.values().copied().for_each(&mut consider);
            self.channels
                .values()
                .filter(|c| c.bound)
                .for_each(|c| consider(c.refresh_at));
        }
        at
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn require_allocated(&self) -> Result<(), TurnError> {
        match self.state {
            State::Allocated { .. } => Ok(()),
            _ => Err(TurnError::NotAllocated {
                server: self.config.server,
            }),
        }
    }

    /// When to refresh an allocation of `lifetime`: a minute early for long
    /// ones, half-way for short ones, and at most `refresh_every` on.
    fn refresh_after(&self, lifetime: Duration) -> Duration {
        let by_lifetime = if lifetime > Duration::from_secs(120) {
            lifetime - Duration::from_secs(60)
        } else {
            lifetime / 2
        };
        self.config
            .refresh_every
            .map_or(by_lifetime, |every| every.min(by_lifetime))
    }

    fn lifetime_secs(&self) -> u32 {
        u32::try_from(self.config.lifetime.as_secs()).unwrap_or(u32::MAX)
    }

    fn request(&mut self, now: Instant, request: Request, stale_retried: bool) {
        let id = TransactionId(self.rng.random());
        let (method, attributes) = match request {
            Request::Allocate => {
                let mut attributes = vec![
                    Attribute::RequestedTransport(UDP),
                    Attribute::Lifetime(self.lifetime_secs()),
                ];
                if self.config.family == Family::V6 {
                    attributes.push(Attribute::RequestedAddressFamily(0x02));
                }
                (ALLOCATE, attributes)
            }
            Request::Refresh(secs) => (REFRESH, vec![Attribute::Lifetime(secs)]),
            Request::Permission(ip) => (
                CREATE_PERMISSION,
                vec![Attribute::XorPeerAddress(SocketAddr::new(ip, 0))],
            ),
            Request::Channel(peer, number) => (
                CHANNEL_BIND,
                vec![
                    Attribute::ChannelNumber(number),
                    Attribute::XorPeerAddress(peer),
                ],
            ),
        };
        let mut message = Message::new(Class::Request, method, id);
        message.attributes = attributes;
        let bytes = match &self.auth {
            Some(auth) => {
                message.attributes.extend([
                    Attribute::Username(self.config.username.clone()),
                    Attribute::Realm(auth.realm.clone()),
                    Attribute::Nonce(auth.nonce.clone()),
                ]);
                message.encode_signed(Some(Integrity::Sha1(&auth.key)), false)
            }
            None => message.encode(),
        };
        let policy = if self.config.stream {
            RetransmitPolicy::once(self.config.timeout)
        } else {
            RetransmitPolicy::bounded(UDP_RTO, self.config.timeout)
        };
        self.transactions
            .start_encoded(now, self.config.server, id, bytes, policy);
        self.pending.insert(
            id,
            Pending {
                request,
                authenticated: self.auth.is_some(),
                stale_retried,
            },
        );
    }

    fn drain(&mut self, now: Instant) {
        while let Some(event) = self.transactions.poll_event() {
            match event {
                TxEvent::Response { id, message, .. } => {
                    if let Some(pending) = self.pending.remove(&id) {
                        self.answered(now, pending, &message);
                    }
                }
                TxEvent::TimedOut { id } => {
                    if let Some(pending) = self.pending.remove(&id) {
                        let error = TurnError::TimedOut {
                            server: self.config.server,
                            after: self.config.timeout,
                        };
                        self.failed(pending.request, error);
                    }
                }
            }
        }
    }

    fn answered(&mut self, now: Instant, pending: Pending, message: &Message) {
        let server = self.config.server;
        if message.class == Class::Error {
            let (code, reason) = match message.get(crate::stun::attribute::code::ERROR_CODE) {
                Some(Attribute::ErrorCode { code, reason }) => (*code, reason.clone()),
                _ => (0, String::from("no ERROR-CODE")),
            };
            match code {
                401 if !pending.authenticated => self.challenged(now, pending.request, message),
                438 if !pending.stale_retried => {
                    if let (Some(auth), Some(nonce)) = (self.auth.as_mut(), text(message, Nonce)) {
                        auth.nonce = nonce;
                    }
                    self.request(now, pending.request, true);
                }
                401 => self.failed(pending.request, TurnError::Unauthorized { server, reason }),
                _ => self.failed(
                    pending.request,
                    TurnError::Refused {
                        server,
                        code,
                        reason,
                    },
                ),
            }
            return;
        }
        match pending.request {
            Request::Allocate => {
                let relayed = message.attributes.iter().find_map(|a| match a {
                    Attribute::XorRelayedAddress(addr) => Some(*addr),
                    _ => None,
                });
                let Some(relayed) = relayed else {
                    let why = "no XOR-RELAYED-ADDRESS";
                    self.fail_allocation(TurnError::Malformed { server, why });
                    return;
                };
                if self.state != State::Allocating {
                    return;
                }
                let lifetime = lifetime(message);
                self.state = State::Allocated {
                    relayed,
                    expires: now + lifetime,
                    refresh_at: now + self.refresh_after(lifetime),
                };
                self.events.push_back(Event::Allocated {
                    relayed,
                    mapped: message.mapped_address(),
                    lifetime,
                });
            }
            Request::Refresh(0) => {
                self.state = State::Done;
                self.events.push_back(Event::Closed);
            }
            Request::Refresh(_) => {
                if let State::Allocated { relayed, .. } = self.state {
                    let lifetime = lifetime(message);
                    self.state = State::Allocated {
                        relayed,
                        expires: now + lifetime,
                        refresh_at: now + self.refresh_after(lifetime),
                    };
                    self.events.push_back(Event::Refreshed { lifetime });
                }
            }
            Request::Permission(ip) => {
                let first = self.permissions.insert(ip, now + PEER_REFRESH).is_none();
                if first {
                    self.events.push_back(Event::PermissionCreated { peer: ip });
                }
            }
            Request::Channel(peer, number) => {
                let Some(channel) = self.channels.get_mut(&peer) else {
                    return;
                };
                channel.refresh_at = now + PEER_REFRESH;
                if !channel.bound {
                    channel.bound = true;
                    self.peers_by_channel.insert(number, peer);
                    self.events.push_back(Event::ChannelBound {
                        peer,
                        channel: number,
                    });
                }
            }
        }
    }

    /// A 401 to an unsigned request: learn the realm and nonce, then sign
    /// it.
    fn challenged(&mut self, now: Instant, request: Request, message: &Message) {
        let server = self.config.server;
        let (Some(realm), Some(nonce)) = (text(message, Realm), text(message, Nonce)) else {
            let why = "a 401 without REALM and NONCE";
            self.failed(request, TurnError::Malformed { server, why });
            return;
        };
        if !self.config.realm.is_empty() && self.config.realm != realm {
            let ours = self.config.realm.clone();
            self.failed(
                request,
                TurnError::Realm {
                    server,
                    theirs: realm,
                    ours,
                },
            );
            return;
        }
        let key = long_term_key(&self.config.username, &realm, &self.config.password);
        self.auth = Some(Auth { realm, nonce, key });
        self.request(now, request, false);
    }

    fn failed(&mut self, request: Request, error: TurnError) {
        match request {
            Request::Allocate => self.fail_allocation(error),
            Request::Refresh(0) => {
                self.state = State::Done;
                self.events.push_back(Event::Closed);
            }
            // A refresh that fails leaves the allocation until it expires,
            // unless the server says it is gone.
            Request::Refresh(_) => {
                if matches!(error, TurnError::Refused { code: 437, .. }) {
                    self.fail_allocation(error);
                }
            }
            Request::Permission(ip) => {
                self.permissions.remove(&ip);
                self.events.push_back(Event::PeerFailed { peer: ip, error });
            }
            Request::Channel(peer, number) => {
                if self.channels.get(&peer).is_some_and(|c| !c.bound) {
                    self.channels.remove(&peer);
                    self.peers_by_channel.remove(&number);
                }
                self.events.push_back(Event::PeerFailed {
                    peer: peer.ip(),
                    error,
                });
            }
        }
    }

    fn fail_allocation(&mut self, error: TurnError) {
        if self.state != State::Done {
            self.state = State::Done;
            self.events.push_back(Event::Failed(error));
        }
    }
}

#[derive(Clone, Copy)]
enum TextAttr {
    Realm,
    Nonce,
}
use TextAttr::{Nonce, Realm};

fn text(message: &Message, which: TextAttr) -> Option<String> {
    message.attributes.iter().find_map(|a| match (a, which) {
        (Attribute::Realm(s), Realm) | (Attribute::Nonce(s), Nonce) => Some(s.clone()),
        _ => None,
    })
}

fn lifetime(message: &Message) -> Duration {
    message
        .attributes
        .iter()
        .find_map(|a| match a {
            Attribute::Lifetime(secs) => Some(Duration::from_secs(u64::from(*secs))),
            _ => None,
        })
        .unwrap_or(DEFAULT_LIFETIME)
}

fn data_indication(message: Message) -> Input<'static> {
    let mut peer = None;
    let mut data = None;
    for attribute in message.attributes {
        match attribute {
            Attribute::XorPeerAddress(addr) => peer = Some(addr),
            Attribute::Data(bytes) => data = Some(bytes),
            _ => {}
        }
    }
    match (peer, data) {
        (Some(peer), Some(data)) => Input::Peer {
            peer,
            data: Cow::Owned(data),
        },
        _ => Input::Ignored,
    }
}
