//! The node's default timings, each with the reason for its value.

use std::time::Duration;

/// A whole connect: every strategy's budget fits in it with room for the
/// head starts between them.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Direct connect: a SYN and a couple of its retries on a slow mobile link.
pub const DIRECT_BUDGET: Duration = Duration::from_secs(2);
/// Reverse connect: a signaling round trip through a public broker plus
/// the peer's dial back.
pub const REVERSE_BUDGET: Duration = Duration::from_secs(3);
/// TCP hole punching: signaling, the agreed start time and a few rounds of
/// SYNs.
pub const PUNCH_BUDGET: Duration = Duration::from_secs(3);
/// A connection that began a handshake finishes it within this, or is
/// dropped: a handshake is one round trip, so this is for slow links, and
/// a stranger cannot hold a client slot longer.
pub const HANDSHAKE_LIMIT: Duration = Duration::from_secs(5);
/// Relay: a TURN allocation plus a signaling round trip.
pub const RELAY_BUDGET: Duration = Duration::from_secs(8);
