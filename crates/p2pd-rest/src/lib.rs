//! The REST face of p2pd: the original project's HTTP API on
//! 127.0.0.1:12333, served over a `p2pd-node` node.
//!
//! This crate holds no networking logic of its own; it translates HTTP
//! requests into node commands. The routes arrive with the REST issue; until
//! then the crate fixes its place in the layering (rest → node → net →
//! proto) and the configuration it takes.
#![warn(missing_docs)]

use std::net::{Ipv4Addr, SocketAddr};

/// Where the REST API listens.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 12333);

/// The REST API's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestConfig {
    /// Where it listens: loopback only by default, on the original
    /// project's port.
    pub listen: SocketAddr,
}

impl Default for RestConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
        }
    }
}
