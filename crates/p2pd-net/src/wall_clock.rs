//! The wall clock, which the freshness windows of signaling envelopes and
//! handshakes and the NTP offset are measured on (proto takes it as an
//! input, never reads it).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 for a clock set before it).
pub fn unix_ms() -> u64 {
    u64::try_from((unix_nanos() / 1_000_000).max(0)).unwrap_or(u64::MAX)
}

/// Nanoseconds since the Unix epoch (negative for a clock set before it).
pub fn unix_nanos() -> i128 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(before) => -i128::try_from(before.duration().as_nanos()).unwrap_or(i128::MAX),
    }
}
