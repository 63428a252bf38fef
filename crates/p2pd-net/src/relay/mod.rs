//! Relaying through a TURN server, for peers no direct path reaches.
//!
//! ```text
//!  pipe ── handshake ── loopback TCP ══ bridge ══ QUIC stream
//!                                                    │ datagrams
//!                                       RelaySocket (AsyncUdpSocket)
//!                                                    │ ChannelData
//!                                       Allocation ── UDP or TCP ── TURN server ── peer's relayed address
//! ```
//!
//! * [`allocation`]: one allocation, driven on tokio;
//! * [`socket`]: the allocation as a datagram socket for quinn;
//! * [`quic`]: the endpoints and the one stream, over any datagram socket;
//! * [`bridge`]: the QUIC stream spliced onto a loopback TCP connection.

pub mod allocation;
pub mod bridge;
pub mod quic;
mod shared;
pub mod socket;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpStream, UdpSocket};

use crate::bind::{self, BindError, BindOptions};

pub use allocation::Allocation;
pub use bridge::Reading;
pub use socket::RelaySocket;

use p2pd_proto::turn::TurnError;

/// Why relaying failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The TURN server refused or did not answer.
    #[error(transparent)]
    Turn(#[from] TurnError),
    /// The server cannot be reached at all.
    #[error("cannot reach TURN server {server}: {source}")]
    Connect {
        /// The server.
        server: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The link to the server ended.
    #[error("the link to TURN server {server} closed")]
    Closed {
        /// The server.
        server: SocketAddr,
    },
    /// No socket for the relayed datagrams.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The QUIC connection over the relay failed.
    #[error("QUIC over the relay: {0}")]
    Quic(String),
}

/// Socket buffers of the datagram sockets under QUIC: a transport's bursts
/// fit (the kernel caps them at its own maximum).
const UDP_BUFFER: usize = 4 << 20;

/// After a relayed stream ends, how long its close frame and the deletion
/// of its allocation may take.
const CLOSE_LIMIT: Duration = Duration::from_secs(1);

/// The relayed stream to `peer`'s relayed address (bound on `allocation`)
/// as a TCP stream: QUIC as the client, its one stream spliced on. The
/// allocation lives as long as the stream, and is deleted after; hold the
/// [`Reading`] for as long as the stream is read.
pub async fn open_stream(
    mut allocation: Allocation,
    peer: SocketAddr,
) -> Result<(TcpStream, Reading), RelayError> {
    let socket = allocation.socket().ok_or(RelayError::Closed {
        server: allocation.server(),
    })?;
    let endpoint = quic::client(socket)?;
    let (connection, send, recv) = quic::open(&endpoint, peer).await?;
    splice(connection, (send, recv), endpoint, Some(allocation)).await
}

/// [`open_stream`] for the answering side: QUIC as the server, taking the
/// connection from `peer` alone. Datagrams that came before this call
/// wait for it.
pub async fn accept_stream(
    mut allocation: Allocation,
    peer: SocketAddr,
) -> Result<(TcpStream, Reading), RelayError> {
    let socket = allocation.socket().ok_or(RelayError::Closed {
        server: allocation.server(),
    })?;
    let endpoint = quic::server(socket)?;
    let (connection, send, recv) = quic::accept(&endpoint, peer).await?;
    splice(connection, (send, recv), endpoint, Some(allocation)).await
}

/// The answering side of a relay without an allocation of its own, for an
/// answerer whose address needs no translation: the peer's allocation
/// relays between its relayed address and this plain UDP socket, whose
/// address the peer is told. One pass through the TURN server instead of
/// two, and the kernel's UDP offloads on our side.
#[derive(Debug)]
pub struct Unrelayed {
    endpoint: quinn::Endpoint,
    peer: SocketAddr,
}

impl Unrelayed {
    /// A QUIC server on a new socket on `ip`, for `peer`'s relayed address
    /// alone. Built before the peer hears of it, so a failure is known
    /// while the peer can still be told. One empty datagram to `peer`
    /// opens a stateful filter in front of us; the TURN server drops it
    /// (no permission yet).
    pub fn bind(ip: IpAddr, peer: SocketAddr) -> Result<Self, RelayError> {
        let socket = datagram_socket(SocketAddr::new(ip, 0))?;
        let _ = socket.try_send_to(&[], peer);
        let socket = socket
            .into_std()
            .and_then(|socket| quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, socket))
            .map_err(|e| RelayError::Quic(format!("the UDP socket: {e}")))?;
        let endpoint = quic::server(socket)?;
        Ok(Self { endpoint, peer })
    }

    /// The address to tell the peer.
    pub fn local_addr(&self) -> Result<SocketAddr, RelayError> {
        self.endpoint
            .local_addr()
            .map_err(|e| RelayError::Quic(format!("the UDP socket: {e}")))
    }

    /// [`accept_stream`] on this socket: the connection from the peer's
    /// relayed address alone.
    pub async fn accept(self) -> Result<(TcpStream, Reading), RelayError> {
        let (connection, send, recv) = quic::accept(&self.endpoint, self.peer).await?;
        splice(connection, (send, recv), self.endpoint, None).await
    }
}

/// A UDP socket on `addr` for QUIC's datagrams, to a TURN server or (for
/// [`Unrelayed`]) from a peer's allocation, with room for bursts.
fn datagram_socket(addr: SocketAddr) -> Result<UdpSocket, BindError> {
    let socket = bind::udp(addr, &BindOptions::default())?;
    let sock = socket2::SockRef::from(&socket);
    // Best effort: a smaller buffer drops more of a burst, nothing worse.
    sock.set_recv_buffer_size(UDP_BUFFER).ok();
    sock.set_send_buffer_size(UDP_BUFFER).ok();
    Ok(socket)
}

async fn splice(
    connection: quinn::Connection,
    streams: (quinn::SendStream, quinn::RecvStream),
    endpoint: quinn::Endpoint,
    allocation: Option<Allocation>,
) -> Result<(TcpStream, Reading), RelayError> {
    let closed = |(endpoint, allocation): (quinn::Endpoint, Option<Allocation>)| async move {
        // The close frame goes out before the allocation goes.
        let _ = tokio::time::timeout(CLOSE_LIMIT, endpoint.wait_idle()).await;
        if let Some(allocation) = allocation {
            allocation.close(CLOSE_LIMIT).await;
        }
    };
    bridge::splice(connection, streams, (endpoint, allocation), closed)
        .await
        .map_err(|e| RelayError::Quic(format!("splicing the stream: {e}")))
}
