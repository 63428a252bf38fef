//! TURN (RFC 8656), the client side, sans-IO: relaying through a server
//! when no direct path exists.
//!
//! * [`client`]: one allocation, its permissions and channels, refreshed
//!   on an injected clock;
//! * [`channel`]: the ChannelData framing, and cutting a TCP stream from
//!   the server into messages;
//! * [`data`]: the ConnectionBind that makes a TCP connection to the server
//!   the data connection of one relayed TCP connection (RFC 6062);
//! * [`error`]: why any of it failed, naming the server.
//!
//! The attributes (LIFETIME, XOR-RELAYED-ADDRESS, ...) live with the other
//! STUN attributes in [`crate::stun::attribute`].

pub mod channel;
pub mod client;
pub mod data;
pub mod error;

pub use client::{Client, ClientConfig, Event, Family, Input};
pub use data::{BindAnswer, DataBind};
pub use error::TurnError;

/// Allocate.
pub const ALLOCATE: u16 = 0x003;
/// Refresh.
pub const REFRESH: u16 = 0x004;
/// Send indication.
pub const SEND: u16 = 0x006;
/// Data indication.
pub const DATA: u16 = 0x007;
/// CreatePermission.
pub const CREATE_PERMISSION: u16 = 0x008;
/// ChannelBind.
pub const CHANNEL_BIND: u16 = 0x009;
/// Connect (RFC 6062).
pub const CONNECT: u16 = 0x00A;
/// ConnectionBind (RFC 6062).
pub const CONNECTION_BIND: u16 = 0x00B;
/// ConnectionAttempt indication (RFC 6062).
pub const CONNECTION_ATTEMPT: u16 = 0x00C;
/// REQUESTED-TRANSPORT's value for UDP.
pub const UDP: u8 = 17;
/// REQUESTED-TRANSPORT's value for TCP (RFC 6062).
pub const TCP: u8 = 6;
