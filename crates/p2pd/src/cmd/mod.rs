//! One module per subcommand.

pub(crate) mod broker;
pub(crate) mod connect;
pub(crate) mod demo;
pub(crate) mod interfaces;
pub(crate) mod nat;
pub(crate) mod node;
pub(crate) mod ntp_server;
pub(crate) mod rest;
pub(crate) mod stun_server;

/// Bad input on the command line, found after parsing (a peer address, a
/// value out of range): exits 2, as clap's own errors do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Usage(pub(crate) String);
