//! Binding sockets to a chosen local address (manual 1.4.1, "bind").
//!
//! p2pd binds every socket to one local IP (a route's NIC address, or an IPv6
//! link-local address with its scope id), often to a fixed port shared by
//! several sockets for hole punching. tokio's own builders lack IPV6_V6ONLY,
//! so sockets are made with socket2 and handed to tokio.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, UdpSocket};

use crate::interfaces::is_link_local;

/// Socket options applied before binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindOptions {
    /// SO_REUSEADDR: rebind a port still in TIME_WAIT; lets a TCP client
    /// socket share its port with a listener.
    pub reuse_address: bool,
    /// SO_REUSEPORT: several live sockets on one ip:port, as TCP hole
    /// punching needs.
    pub reuse_port: bool,
    /// IPV6_V6ONLY: an IPv6 socket does not also take IPv4-mapped traffic.
    /// Ignored for IPv4.
    pub v6_only: bool,
    /// Listen backlog for TCP listeners.
    pub backlog: u32,
}

impl Default for BindOptions {
    /// No address sharing, IPv6 sockets stay IPv6-only (p2pd binds one
    /// address per family), a backlog of 1024.
    fn default() -> Self {
        Self {
            reuse_address: false,
            reuse_port: false,
            v6_only: true,
            backlog: 1024,
        }
    }
}

impl BindOptions {
    /// Options for sockets that share one local port, as hole punching does.
    pub fn shared_port() -> Self {
        Self {
            reuse_address: true,
            reuse_port: true,
            ..Self::default()
        }
    }
}

/// Why a socket could not be bound.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// An IPv6 link-local address is ambiguous without its interface index.
    #[error("link-local address {0} needs a scope id (the interface index)")]
    MissingScope(SocketAddr),
    /// tokio sockets can only be made inside a tokio runtime.
    #[error("binding {0} needs a running tokio runtime")]
    NoRuntime(SocketAddr),
    /// The OS refused to create, configure or bind the socket.
    #[error("cannot bind {addr}: {source}")]
    Io {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: io::Error,
    },
}

impl BindError {
    /// Whether the address is the host's but not usable yet: an IPv6
    /// address is tentative for a second or so after its link comes up
    /// (duplicate address detection), and binding it fails until then.
    pub fn is_not_ready(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == io::ErrorKind::AddrNotAvailable)
    }
}

/// Binds a UDP socket to `addr` (port 0 picks a free port).
pub fn udp(addr: SocketAddr, options: &BindOptions) -> Result<UdpSocket, BindError> {
    let socket = bound_socket(addr, Type::DGRAM, Protocol::UDP, options)?;
    UdpSocket::from_std(socket.into()).map_err(|source| BindError::Io { addr, source })
}

/// Binds a TCP listener to `addr` and starts listening.
pub fn tcp_listener(addr: SocketAddr, options: &BindOptions) -> Result<TcpListener, BindError> {
    let socket = bound_socket(addr, Type::STREAM, Protocol::TCP, options)?;
    let backlog = i32::try_from(options.backlog).unwrap_or(i32::MAX);
    socket
        .listen(backlog)
        .map_err(|source| BindError::Io { addr, source })?;
    TcpListener::from_std(socket.into()).map_err(|source| BindError::Io { addr, source })
}

/// Binds a TCP socket to `addr` without connecting it, so an outbound
/// connection leaves from a chosen local address and port.
pub fn tcp_socket(addr: SocketAddr, options: &BindOptions) -> Result<TcpSocket, BindError> {
    let socket = bound_socket(addr, Type::STREAM, Protocol::TCP, options)?;
    Ok(TcpSocket::from_std_stream(socket.into()))
}

fn bound_socket(
    addr: SocketAddr,
    kind: Type,
    protocol: Protocol,
    options: &BindOptions,
) -> Result<Socket, BindError> {
    if let SocketAddr::V6(v6) = addr
        && is_link_local(*v6.ip())
        && v6.scope_id() == 0
    {
        return Err(BindError::MissingScope(addr));
    }
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(BindError::NoRuntime(addr));
    }
    let io_err = |source| BindError::Io { addr, source };
    let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol)).map_err(io_err)?;
    if addr.is_ipv6() {
        socket.set_only_v6(options.v6_only).map_err(io_err)?;
    }
    socket
        .set_reuse_address(options.reuse_address)
        .map_err(io_err)?;
    socket.set_reuse_port(options.reuse_port).map_err(io_err)?;
    socket.set_nonblocking(true).map_err(io_err)?;
    socket.bind(&SockAddr::from(addr)).map_err(io_err)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

    use super::*;

    const LOOPBACK_V4: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

    #[tokio::test]
    async fn port_zero_picks_a_free_port() {
        let socket = udp(LOOPBACK_V4, &BindOptions::default()).expect("bind");
        let local = socket.local_addr().expect("local addr");
        assert_eq!(local.ip(), LOOPBACK_V4.ip());
        assert_ne!(local.port(), 0);
    }

    #[tokio::test]
    async fn udp_sockets_exchange_a_datagram() {
        let a = udp(LOOPBACK_V4, &BindOptions::default()).expect("bind a");
        let b = udp(LOOPBACK_V4, &BindOptions::default()).expect("bind b");
        let b_addr = b.local_addr().expect("addr");
        a.send_to(b"hi", b_addr).await.expect("send");
        let mut buf = [0u8; 8];
        let (n, from) = b.recv_from(&mut buf).await.expect("recv");
        assert_eq!(&buf[..n], b"hi");
        assert_eq!(from, a.local_addr().expect("addr"));
    }

    #[tokio::test]
    async fn a_taken_port_is_refused_without_reuse() {
        let first = tcp_listener(LOOPBACK_V4, &BindOptions::default()).expect("bind");
        let taken = first.local_addr().expect("addr");
        let err = tcp_listener(taken, &BindOptions::default()).expect_err("port is taken");
        let BindError::Io { source, .. } = err else {
            panic!("expected an io error, got {err}");
        };
        assert_eq!(source.kind(), io::ErrorKind::AddrInUse);
    }

    #[tokio::test]
    async fn shared_port_lets_a_client_socket_leave_from_a_listening_port() {
        let listener = tcp_listener(LOOPBACK_V4, &BindOptions::shared_port()).expect("listen");
        let port = listener.local_addr().expect("addr");
        let target = tcp_listener(LOOPBACK_V4, &BindOptions::default()).expect("target");
        let target_addr = target.local_addr().expect("addr");
        let client = tcp_socket(port, &BindOptions::shared_port()).expect("bind on listening port");
        let (stream, accepted) = tokio::join!(client.connect(target_addr), target.accept());
        let stream = stream.expect("connect");
        assert_eq!(stream.local_addr().expect("addr"), port);
        assert_eq!(accepted.expect("accept").1, port);
    }

    #[tokio::test]
    async fn v6_only_socket_refuses_ipv4_mapped_peers() {
        let any6 = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0);
        let Ok(socket) = udp(any6, &BindOptions::default()) else {
            eprintln!("skipped: this host has no IPv6");
            return;
        };
        let mapped = SocketAddr::new(Ipv4Addr::LOCALHOST.to_ipv6_mapped().into(), 9);
        let err = socket.send_to(b"x", mapped).await.expect_err("v6-only");
        assert_eq!(err.kind(), io::ErrorKind::NetworkUnreachable);
    }

    #[tokio::test]
    async fn link_local_without_scope_is_refused_before_the_os_sees_it() {
        let addr = SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().expect("lit"), 0, 0, 0));
        assert!(matches!(
            udp(addr, &BindOptions::default()),
            Err(BindError::MissingScope(_))
        ));
    }

    #[test]
    fn binding_outside_a_runtime_is_an_error_not_a_panic() {
        assert!(matches!(
            udp(LOOPBACK_V4, &BindOptions::default()),
            Err(BindError::NoRuntime(_))
        ));
    }
}
