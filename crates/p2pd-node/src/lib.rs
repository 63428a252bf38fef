//! A running p2pd peer: its signaling, connection strategies and ECHO
//! service, configured with typed values.
#![warn(missing_docs)]

pub mod broker;
mod candidates;
pub mod clock;
pub mod config;
pub mod connect;
pub mod defaults;
pub mod discovery;
pub mod identity;
pub mod locals;
pub mod node;
pub mod servers;
pub mod signaling;

pub use connect::{ConnectError, Connection};
pub use node::Node;
