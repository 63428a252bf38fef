//! STUN (RFC 8489) with the NAT behaviour discovery attributes of RFC 5780
//! and the classic RFC 3489 form, sans-IO.
//!
//! * [`message`]: the codec: header, attributes, MESSAGE-INTEGRITY(-SHA256),
//!   FINGERPRINT, and TCP framing; [`attribute`] and [`wire`] (the
//!   transaction id and the decode error both codecs share) below it;
//! * [`transaction`]: request/response matching and retransmission on an
//!   injected clock;
//! * [`server`]: the stateless answer of an RFC 5780 server;
//! * [`binding`]: the Binding request and what a response means;
//! * [`probe`]: the RFC 5780 test plan and delta series as a machine;
//! * [`behavior`]: NAT type and port-delta classification from test results.
//!
//! Parsing is total: any bytes give a message or an error, never a panic,
//! and nothing is allocated beyond the size of the input.

pub mod attribute;
pub mod behavior;
pub mod binding;
pub mod message;
pub mod probe;
pub mod server;
pub mod transaction;
pub mod wire;

pub use attribute::Attribute;
pub use message::{Class, Message};
pub use wire::{DecodeError, TransactionId};

/// The RFC 5389+ magic cookie; a message without it is classic RFC 3489.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// The Binding method, the only one NAT discovery uses.
pub const BINDING: u16 = 0x0001;
/// The STUN header size.
pub const HEADER_LEN: usize = 20;
