//! STUN over sockets: the client (UDP and TCP), the RFC 5780 server, and
//! NAT behaviour discovery. The protocol itself is `p2pd_proto::stun`; these
//! are its tokio drivers.

pub mod client;
pub mod discovery;
pub mod server;
pub mod tcp_behaviour;

pub use client::{BindingResponse, StunError};
pub use discovery::{DeltaSeriesGate, DiscoveryOptions, NatReport};
pub use server::StunServer;
