//! One module per subcommand.

pub(crate) mod broker;
pub(crate) mod interfaces;
pub(crate) mod nat;
pub(crate) mod stun_server;
