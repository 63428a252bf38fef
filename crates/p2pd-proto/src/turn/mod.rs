//! TURN (RFC 8656), the client side, sans-IO: relaying through a server
//! when no direct path exists.
//!
//! * [`client`]: one allocation, its permissions and channels, refreshed
//!   on an injected clock;
//! * [`channel`]: the ChannelData framing, and cutting a TCP stream from
//!   the server into messages.
//!
//! The attributes (LIFETIME, XOR-RELAYED-ADDRESS, ...) live with the other
//! STUN attributes in [`crate::stun::attribute`].

pub mod channel;
pub mod client;

pub use client::{Client, ClientConfig, Event, Family, Input, TurnError};

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
/// REQUESTED-TRANSPORT's value for UDP.
pub const UDP: u8 = 17;
