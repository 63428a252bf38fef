//! How far this machine's clock is from the NTP servers': measured once
//! at start, in the background, so two peers can agree on a moment (the
//! punch strategy's meet time).

use std::time::Duration;

use p2pd_proto::punch::Synced;

use crate::servers::{self, HostPort};

/// NTP's port, for servers given without one.
pub const NTP_PORT: u16 = 123;
/// How long the measurement may take, resolving names included.
pub const CLOCK_LIMIT: Duration = Duration::from_secs(3);

/// The measured offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockOffset {
    /// Add this to the local clock to get the servers' (nanoseconds).
    pub offset_ns: i64,
    /// The round trip of the answer it came from (nanoseconds).
    pub delay_ns: i64,
    /// Servers whose answers agreed.
    pub agreed: usize,
    /// Servers whose answers were dropped as outliers.
    pub outliers: usize,
}

/// Where the measurement stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Clock {
    /// Not finished yet.
    #[default]
    Measuring,
    /// The servers agree on this.
    Measured(ClockOffset),
    /// No server is configured, or none answered usably in time.
    Unknown,
}

/// How far an unmeasured clock is taken to be off.
const UNKNOWN_ERROR_MS: u64 = 50;

impl Clock {
    /// The synchronised clock read now: the wall clock with the measured
    /// offset, and how far it may be off (half the answer's round trip).
    pub(crate) fn synced(self) -> Synced {
        let now_ns = p2pd_net::wall_clock::unix_nanos();
        let (offset_ns, error_ms) = match self {
            Clock::Measured(m) => (
                i128::from(m.offset_ns),
                u64::try_from(m.delay_ns / 2_000_000).unwrap_or(0) + 1,
            ),
            Clock::Measuring | Clock::Unknown => (0, UNKNOWN_ERROR_MS),
        };
        Synced {
            at: tokio::time::Instant::now().into_std(),
            unix_ms: u64::try_from((now_ns + offset_ns) / 1_000_000).unwrap_or(0),
            error_ms,
        }
    }
}

/// Measures against `servers`, within [`CLOCK_LIMIT`].
///
/// Cancel-safe.
pub async fn measure(servers: &[HostPort]) -> Clock {
    let run = async {
        let addrs = servers::resolve(servers, NTP_PORT, "NTP").await;
        if addrs.is_empty() {
            return Clock::Unknown;
        }
        match p2pd_net::ntp::query(&addrs, CLOCK_LIMIT).await {
            Ok(estimate) => match estimate {
                Some(e) => Clock::Measured(ClockOffset {
                    offset_ns: e.offset_ns,
                    delay_ns: e.delay_ns,
                    agreed: e.agreed.len(),
                    outliers: e.outliers.len(),
                }),
                None => Clock::Unknown,
            },
            Err(err) => {
                tracing::debug!(%err, "no NTP socket");
                Clock::Unknown
            }
        }
    };
    tokio::time::timeout(CLOCK_LIMIT, run)
        .await
        .unwrap_or(Clock::Unknown)
}
