//! A running p2pd peer: its configuration, and (as the node grows) its
//! signaling, connection strategies and ECHO service.
#![warn(missing_docs)]

#[cfg(feature = "embedded-broker")]
pub mod broker;
pub mod config;
