//! One module per subcommand.

pub(crate) mod broker;
pub(crate) mod connect;
pub(crate) mod interfaces;
pub(crate) mod nat;
pub(crate) mod node;
pub(crate) mod stun_server;
