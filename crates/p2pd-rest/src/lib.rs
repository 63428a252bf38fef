//! The REST face of p2pd: the original project's HTTP API on
//! 127.0.0.1:12333, served over a `p2pd-node` node (manual 1.3;
//! docs/rest.md).
//!
//! The crate holds no networking logic of its own: [`route`] turns a path
//! into an endpoint, [`access`] decides who may ask, [`api`] does what
//! the endpoint says with the node handle, and [`server`] is the hyper
//! driver around them.
#![warn(missing_docs)]

pub mod access;
pub mod api;
pub mod conns;
pub mod error;
pub mod fuzz;
pub mod openapi;
mod relay;
pub mod route;
pub mod server;
pub mod token;

use std::net::{Ipv4Addr, SocketAddr};

pub use error::ApiError;
pub use server::Server;

/// Where the REST API listens.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 12333);

/// The REST API's configuration (`[rest]` in the config file).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestConfig {
    /// Where it listens: loopback only by default, on the original
    /// project's port.
    pub listen: SocketAddr,
    /// Serve browser requests with `Origin: null` without the token: the
    /// manual's rule, which lets any website's sandboxed iframe in.
    pub allow_null_origin: bool,
}

impl Default for RestConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            allow_null_origin: false,
        }
    }
}
