//! Daemons: many server pipes as one (manual 1.4.4).
//!
//! A daemon listens on every combination of addresses, ports and protocols
//! it is given, hands every message of every server to the same callbacks,
//! and closes them all at once.

use std::future::Future;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::sync::Arc;

use crate::interfaces::Interface;
use crate::pipe::{Greeter, Message, Pipe, PipeConfig, PipeError, Protocol};

/// Which address families a daemon listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressFamily {
    /// IPv4 only.
    V4,
    /// IPv6 only (global and link-local addresses).
    V6,
    /// Both.
    Any,
}

impl AddressFamily {
    fn allows(self, ip: IpAddr) -> bool {
        match self {
            AddressFamily::V4 => ip.is_ipv4(),
            AddressFamily::V6 => ip.is_ipv6(),
            AddressFamily::Any => true,
        }
    }
}

/// Ports to listen on: one, or an inclusive range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    /// A single port (0: any free port).
    One(u16),
    /// `first..=last`.
    Range(u16, u16),
}

impl Ports {
    fn iter(self) -> impl Iterator<Item = u16> {
        let (first, last) = match self {
            Ports::One(p) => (p, p),
            Ports::Range(a, b) => (a.min(b), a.max(b)),
        };
        first..=last
    }
}

/// What a daemon listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every address of an interface: its IPv4 addresses, and for IPv6 its
    /// global and link-local addresses (so LAN peers reach it too).
    Interface(Interface),
    /// One address; link-local IPv6 needs the interface index.
    Address {
        /// The IP.
        ip: IpAddr,
        /// Interface index for link-local IPv6, else 0.
        scope_id: u32,
    },
}

impl From<IpAddr> for Target {
    fn from(ip: IpAddr) -> Self {
        Target::Address { ip, scope_id: 0 }
    }
}

type BoxFuture = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;
type MsgCb = Arc<dyn Fn(Message, Pipe) -> BoxFuture + Send + Sync>;
type EndCb = Arc<dyn Fn(Pipe) -> BoxFuture + Send + Sync>;
type AcceptCb = Arc<dyn Fn(&Pipe) + Send + Sync>;

/// A set of server pipes sharing callbacks.
#[derive(Clone, Default)]
pub struct Daemon {
    config: PipeConfig,
    msg_cbs: Vec<MsgCb>,
    end_cbs: Vec<EndCb>,
    accept_cbs: Vec<AcceptCb>,
    greeter: Option<Greeter>,
    pipes: Vec<Pipe>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("pipes", &self.pipes)
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// A daemon whose servers use `config`.
    pub fn new(config: PipeConfig) -> Self {
        Self {
            config,
            msg_cbs: Vec::new(),
            end_cbs: Vec::new(),
            accept_cbs: Vec::new(),
            greeter: None,
            pipes: Vec::new(),
        }
    }

    /// Runs `cb` on every message to any of the daemon's servers, with the
    /// pipe to answer on. Installed on servers opened later too, so install
    /// it before listening to see every message.
    pub fn add_msg_cb<F, Fut>(&mut self, cb: F)
    where
        F: Fn(Message, Pipe) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let cb: MsgCb = Arc::new(move |msg, pipe| Box::pin(cb(msg, pipe)));
        for pipe in &self.pipes {
            let cb = cb.clone();
            pipe.add_msg_cb(move |msg, reply| cb(msg, reply));
        }
        self.msg_cbs.push(cb);
    }

    /// Runs `cb` when a connection to any of the daemon's TCP servers ends
    /// (and when a server itself ends), with that pipe.
    pub fn add_end_cb<F, Fut>(&mut self, cb: F)
    where
        F: Fn(Pipe) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let cb: EndCb = Arc::new(move |pipe| Box::pin(cb(pipe)));
        for pipe in &self.pipes {
            let cb = cb.clone();
            pipe.add_end_cb(move |ended| cb(ended));
        }
        self.end_cbs.push(cb);
    }

    /// Runs `cb` on every connection any of the daemon's TCP servers
    /// accepts, before its first message (see [`Pipe::add_accept_cb`]).
    pub fn add_accept_cb<F>(&mut self, cb: F)
    where
        F: Fn(&Pipe) + Send + Sync + 'static,
    {
        let cb: AcceptCb = Arc::new(cb);
        for pipe in &self.pipes {
            let cb = cb.clone();
            pipe.add_accept_cb(move |conn| cb(conn));
        }
        self.accept_cbs.push(cb);
    }

    /// Has every TCP server of the daemon greet its connections (see
    /// [`Pipe::set_greeter`]), servers opened later too.
    pub fn set_greeter(&mut self, greeter: Greeter) {
        for pipe in self.pipes.iter().filter(|p| p.protocol() == Protocol::Tcp) {
            pipe.set_greeter(greeter.clone());
        }
        self.greeter = Some(greeter);
    }

    /// Listens on every target × port × protocol allowed by `af` (manual:
    /// `listen_all`). If any server cannot start, the ones started by this
    /// call are closed and the error returned.
    pub async fn listen_all(
        &mut self,
        targets: &[Target],
        ports: &[Ports],
        protocols: &[Protocol],
        af: AddressFamily,
    ) -> Result<&[Pipe], PipeError> {
        let mut addrs = Vec::new();
        for target in targets {
            for ip in target_addresses(target)
                .into_iter()
                .filter(|a| af.allows(a.ip()))
            {
                for port in ports.iter().flat_map(|p| p.iter()) {
                    for protocol in protocols {
                        let mut addr = ip;
                        addr.set_port(port);
                        addrs.push((addr, *protocol));
                    }
                }
            }
        }
        self.listen_specific(&addrs).await
    }

    /// Listens on exactly these addresses (manual: `listen_specific`).
    pub async fn listen_specific(
        &mut self,
        targets: &[(SocketAddr, Protocol)],
    ) -> Result<&[Pipe], PipeError> {
        let first_new = self.pipes.len();
        for (addr, protocol) in targets {
            match Pipe::listen(*protocol, *addr, &self.config).await {
                Ok(pipe) => {
                    for cb in &self.msg_cbs {
                        let cb = cb.clone();
                        pipe.add_msg_cb(move |msg, reply| cb(msg, reply));
                    }
                    for cb in &self.end_cbs {
                        let cb = cb.clone();
                        pipe.add_end_cb(move |ended| cb(ended));
                    }
                    for cb in &self.accept_cbs {
                        let cb = cb.clone();
                        pipe.add_accept_cb(move |conn| cb(conn));
                    }
                    if let Some(greeter) = &self.greeter
                        && *protocol == Protocol::Tcp
                    {
                        pipe.set_greeter(greeter.clone());
                    }
                    self.pipes.push(pipe);
                }
                Err(err) => {
                    for pipe in self.pipes.drain(first_new..) {
                        pipe.close().await;
                    }
                    return Err(err);
                }
            }
        }
        Ok(&self.pipes[first_new..])
    }

    /// Every server pipe.
    pub fn pipes(&self) -> &[Pipe] {
        &self.pipes
    }

    /// Closes every server and its connections, freeing every socket.
    pub async fn close(&mut self) {
        for pipe in self.pipes.drain(..) {
            pipe.close().await;
        }
    }
}

fn target_addresses(target: &Target) -> Vec<SocketAddr> {
    match target {
        Target::Address { ip, scope_id } => vec![socket_addr(*ip, *scope_id)],
        Target::Interface(interface) => {
            let mut addrs: Vec<SocketAddr> = interface
                .ipv4
                .iter()
                .map(|n| socket_addr(IpAddr::V4(n.addr()), 0))
                .collect();
            addrs.extend(
                interface
                    .ipv6_global
                    .iter()
                    .map(|n| socket_addr(IpAddr::V6(n.addr()), 0)),
            );
            addrs.extend(
                interface
                    .ipv6_link_local
                    .iter()
                    .map(|l| socket_addr(IpAddr::V6(l.ip), l.scope_id)),
            );
            addrs
        }
    }
}

fn socket_addr(ip: IpAddr, scope_id: u32) -> SocketAddr {
    match ip {
        IpAddr::V4(v4) => SocketAddr::new(v4.into(), 0),
        IpAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(v6, 0, 0, scope_id)),
    }
}
