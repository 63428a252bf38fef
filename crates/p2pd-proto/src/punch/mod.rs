//! TCP hole punching (docs/punching.md): two peers behind NATs open a
//! direct TCP connection by connecting to each other at the same moment,
//! from ports whose external mapping each side predicted.
//!
//! ```text
//!  initiator                    signaling                    responder
//!  reserve ports, probe ──── Request{offer, sent} ───▶  reserve, probe
//!                      ◀──── Answer{offer, meet} ────   (or Refused{why})
//!  at meet: SYNs from predicted ports ◀──────────▶ at meet: SYNs
//!  handshake (initiator role) on one connection ──▶ answers; keeps it
//! ```
//!
//! * [`predict`]: the external ports a NAT will give, and which NAT pairs
//!   cannot be punched at all.
//! * [`offer`]: what each side tells the other and the connections the two
//!   offers imply.
//! * [`session`]: the sans-IO machine of one punch, on either side.

pub mod offer;
pub mod predict;
pub mod session;

pub use offer::{Offer, Probe};
pub use predict::{Behaviour, Observed, Refusal, Unpredictable, feasible, predict};
pub use session::{Action, ConnId, Message, Outcome, PunchError, Session, Side, Synced};
