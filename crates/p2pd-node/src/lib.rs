//! A running p2pd peer: its configuration, and (as the node grows) its
//! signaling, connection strategies and ECHO service.
#![warn(missing_docs)]

#[cfg(feature = "embedded-broker")]
pub mod broker;
pub mod config;
pub mod connect;
pub mod identity;
pub mod node;
pub mod signaling;

pub use connect::{ConnectError, Connection};
pub use node::Node;
