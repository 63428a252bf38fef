//! Sans-IO building blocks of p2pd: codecs and state machines that never touch
//! a socket, a clock or a runtime.
//!
//! ```text
//!   p2pd-net (tokio drivers) --bytes, now--> p2pd-proto --transmits, events, timeouts--> p2pd-net
//! ```
//!
//! Everything here is deterministic: callers pass the current time and the
//! bytes they received, and get back what to send and when to call again. That
//! makes every protocol testable with virtual time, property tests and fuzzers.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod addr;
pub mod connect;
#[doc(hidden)]
pub mod fuzz;
pub mod handshake;
pub mod ntp;
pub mod portmap;
pub mod punch;
pub mod route;
pub mod signal;
pub mod stun;
pub mod transmit;
pub mod turn;

pub use transmit::Transmit;
