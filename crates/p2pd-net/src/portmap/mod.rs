//! Port mapping: asking the gateway in front of an interface to forward a
//! port to us, and keeping the mapping for as long as we want it.
//!
//! ```text
//!  Mapper::start(protocol, target) ──task──▶ gateway
//!     PCP, NAT-PMP: UDP to port 5351, p2pd_proto::portmap's client
//!     UPnP IGD:     SSDP to port 1900, then SOAP over HTTP (igd-next)
//!  Mapper::next  ◀── Mapped / Failed / Lost
//!  Mapper::close ──▶ the mapping is deleted
//! ```
//!
//! Every protocol maps TCP (the node server's port) and renews before the
//! gateway's lifetime runs out.

mod pmp;
mod upnp;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A port-mapping protocol a gateway may speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// Port Control Protocol (RFC 6887), MAP opcode.
    Pcp,
    /// NAT Port Mapping Protocol (RFC 6886).
    NatPmp,
    /// UPnP Internet Gateway Device, v1 or v2.
    Upnp,
}

impl Protocol {
    /// Every protocol, in the order the config's default lists them.
    pub const ALL: [Protocol; 3] = [Protocol::Pcp, Protocol::NatPmp, Protocol::Upnp];

    /// The name the config and the JSON output use.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Pcp => "pcp",
            Protocol::NatPmp => "nat-pmp",
            Protocol::Upnp => "upnp",
        }
    }

    /// The gateway's port for this protocol: where its requests (UPnP: its
    /// discovery) go.
    pub fn gateway_port(self) -> u16 {
        match self {
            Protocol::Pcp | Protocol::NatPmp => p2pd_proto::portmap::GATEWAY_PORT,
            Protocol::Upnp => 1900,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A protocol name that is none of [`Protocol::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown port-mapping protocol {0:?} (known: pcp, nat-pmp, upnp)")]
pub struct UnknownProtocol(pub String);

impl FromStr for Protocol {
    type Err = UnknownProtocol;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownProtocol(s.to_owned()))
    }
}

/// What to map, and where to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The gateway's address for the protocol: its IP and
    /// [`Protocol::gateway_port`] (tests put a stand-in elsewhere).
    pub gateway: SocketAddr,
    /// Our IP on the gateway's network and the TCP port to forward to it;
    /// the same external port is asked for.
    pub internal: SocketAddr,
    /// The lifetime asked for; the mapping is renewed at half of what the
    /// gateway grants.
    pub lifetime: Duration,
}

/// What a mapper reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapEvent {
    /// The gateway forwards `external` to us, for `lifetime` unless renewed
    /// (renewals report again only when the address changes).
    Mapped {
        /// The gateway's external IP and the port it forwards.
        external: SocketAddr,
        /// What the gateway granted.
        lifetime: Duration,
    },
    /// No mapping: the gateway does not speak the protocol, refused, or
    /// answered something we do not accept. The mapper has ended.
    Failed(String),
    /// A granted mapping ran out without a renewal; the mapper goes on
    /// asking.
    Lost(String),
}

/// Events a mapper holds for a reader that is slow to come.
const EVENT_DEPTH: usize = 16;

/// A mapping being made and kept on one gateway by one protocol, until it
/// is closed (or dropped: then it is deleted in the background).
#[derive(Debug)]
pub struct Mapper {
    protocol: Protocol,
    events: mpsc::Receiver<MapEvent>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Mapper {
    /// Starts asking at once; the answers come from [`Mapper::next`].
    pub fn start(protocol: Protocol, target: Target) -> Self {
        let (tx, events) = mpsc::channel(EVENT_DEPTH);
        let stop = CancellationToken::new();
        let task = match protocol {
            Protocol::Pcp | Protocol::NatPmp => {
                tokio::spawn(pmp::run(protocol, target, tx, stop.clone()))
            }
            Protocol::Upnp => tokio::spawn(upnp::run(target, tx, stop.clone())),
        };
        Self {
            protocol,
            events,
            stop,
            task: Some(task),
        }
    }

    /// The protocol this mapper speaks.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The next event; `None` once the mapper has ended.
    pub async fn next(&mut self) -> Option<MapEvent> {
        self.events.recv().await
    }

    /// [`Mapper::next`] for a caller that waits on several mappers at once.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<MapEvent>> {
        self.events.poll_recv(cx)
    }

    /// Deletes the mapping on the gateway, waiting for it at most `limit`.
    pub async fn close(mut self, limit: Duration) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(limit, task).await;
        }
    }
}

impl Drop for Mapper {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// How long a mapper may take to delete its mapping once stopped.
pub const DELETE_LIMIT: Duration = Duration::from_secs(1);

/// What one protocol gave a [`probe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probed {
    /// The protocol asked.
    pub protocol: Protocol,
    /// What it mapped, or why not.
    pub mapped: Result<SocketAddr, String>,
}

/// Asks the gateway at `gateway` with each of `protocols` at once for a
/// mapping of `internal`, reports what each did, and deletes them all: which
/// protocols a gateway offers, and what it maps. Takes at most the longest
/// mapper's own time-outs (under 4 s) and [`DELETE_LIMIT`].
pub async fn probe(protocols: &[Protocol], gateway: IpAddr, internal: SocketAddr) -> Vec<Probed> {
    let asked = protocols.iter().map(|&protocol| async move {
        let target = Target {
            gateway: SocketAddr::new(gateway, protocol.gateway_port()),
            internal,
            lifetime: PROBE_LIFETIME,
        };
        let mut mapper = Mapper::start(protocol, target);
        let mapped = match mapper.next().await {
            Some(MapEvent::Mapped { external, .. }) => Ok(external),
            Some(MapEvent::Failed(why) | MapEvent::Lost(why)) => Err(why),
            None => Err(format!("{protocol}: the mapper ended")),
        };
        mapper.close(DELETE_LIMIT).await;
        Probed { protocol, mapped }
    });
    let mut running: tokio::task::JoinSet<Probed> = asked.collect();
    let mut probed = Vec::new();
    while let Some(done) = running.join_next().await {
        probed.extend(done.ok());
    }
    probed.sort_by_key(|p| p.protocol);
    probed
}

/// A probe's mappings are deleted at once; should that fail, they go soon.
const PROBE_LIFETIME: Duration = Duration::from_secs(120);
