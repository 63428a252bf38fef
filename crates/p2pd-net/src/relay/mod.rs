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
pub mod socket;

use std::net::SocketAddr;

pub use allocation::Allocation;
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
    /// The QUIC connection over the relay failed.
    #[error("QUIC over the relay: {0}")]
    Quic(String),
}
