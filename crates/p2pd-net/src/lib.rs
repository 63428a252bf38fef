//! The OS edge of p2pd: network interfaces and their routes, socket binding,
//! and the tokio drivers that run `p2pd-proto`'s state machines.
//!
//! ```text
//!   interfaces::list() --> Interface { addresses, gateways, routes }
//!   bind::udp / bind::tcp_listener / bind::tcp_socket --> tokio sockets
//!   pipe::Pipe::{connect, listen} --> messages to queues, callbacks, forwards, streams
//!   daemon::Daemon::listen_all --> many server pipes, one set of callbacks
//!   portmap::Mapper::start --> a port on the gateway, renewed until closed
//! ```
#![warn(missing_docs)]

pub mod bind;
pub mod daemon;
pub mod fd_limit;
pub mod handshake;
pub mod interfaces;
pub mod ntp;
pub mod pipe;
pub mod portmap;
pub mod punch;
pub mod relay;
pub mod stun;
pub mod wall_clock;
