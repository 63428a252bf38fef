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
