//! The connect race's fixed timings.

use std::time::Duration;

/// Head start of each strategy over the next when every endpoint of the
/// peer is open: direct will probably win, and an early reverse would cost
/// a signaling message and a second connection.
pub const STAGGER_OPEN: Duration = Duration::from_millis(250);

/// Head start when the peer is behind a NAT or firewall: its inbound
/// connections are probably dropped, so waiting for direct's whole budget
/// would make every NATed connect slow; 2 ms still lets a same-LAN direct
/// connect win before a signaling message is spent.
pub const STAGGER_NATTED: Duration = Duration::from_millis(2);

/// Head start of the strategies before relay: a relay is slower than a
/// direct path and costs the TURN server's bandwidth, so it starts only
/// when every earlier strategy has failed or after this. A punch takes a
/// few round trips (30 ms in the lab), well within it.
pub const RELAY_HEAD_START: Duration = Duration::from_millis(1000);
