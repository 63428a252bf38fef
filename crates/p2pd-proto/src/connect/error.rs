//! Why a strategy gave up, and why text is not a reverse token.
//!
//! A [`StrategyError`]'s text reaches users as a `tried` entry of
//! `p2pd connect --json` (DESIGN.md "Machine-readable output"), so each
//! variant keeps the wording users and scripts already see.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Why one strategy of a connect gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StrategyError {
    /// Direct: the peer's address gave nothing to dial.
    #[error("the address lists no reachable endpoint")]
    NoEndpoint,
    /// Direct: every destination refused or failed, in order of failure.
    #[error("{}", join(.0, "; "))]
    AllDialsFailed(Vec<DialFailure>),
    /// Direct: destinations were still silent when the budget ended.
    #[error("no answer within {} ms from {}", .budget.as_millis(), join(.dialled, ", "))]
    NoAnswer {
        /// The strategy's budget.
        budget: Duration,
        /// Every destination dialled, in the order they were dialled.
        dialled: Vec<SocketAddr>,
    },
    /// Reverse: no broker was connected within the budget, or none is
    /// configured.
    #[error("no signaling broker is reachable")]
    NoSignaling,
    /// Reverse: brokers are up, but none the peer listens on.
    #[error("none of the brokers the peer's address lists is connected")]
    NoSharedBroker,
    /// Reverse: the request went out but no connection with its token came.
    #[error("the peer did not connect back within {} ms", .budget.as_millis())]
    NoDialBack {
        /// The strategy's budget.
        budget: Duration,
    },
    /// Punch: the punch failed, and why (its own reasons, such as a pair
    /// of NATs that cannot be punched, refused before any packet).
    #[error("{0}")]
    Punch(String),
    /// Punch: still going when its budget ended.
    #[error("the punch did not connect within {} ms", .budget.as_millis())]
    NoPunch {
        /// The strategy's budget.
        budget: Duration,
    },
    /// Relay: relaying failed, and why (no TURN server configured, the
    /// server refused, the peer refused).
    #[error("{0}")]
    Relay(String),
    /// Relay: still going when its budget ended.
    #[error("the relay did not connect within {} ms", .budget.as_millis())]
    NoRelay {
        /// The strategy's budget.
        budget: Duration,
    },
    /// The strategy was still trying when the whole connect's timeout ended.
    #[error("the whole connect timed out")]
    ConnectTimedOut,
}

/// One failed TCP connect of the direct strategy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialFailure {
    /// Where it went.
    pub dst: SocketAddr,
    /// What the driver's OS said; opaque here, since it comes from IO.
    pub reason: String,
}

impl fmt::Display for DialFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.dst, self.reason)
    }
}

/// A reverse token that is not 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a reverse token is 32 hex digits")]
pub struct BadToken;

fn join<T: fmt::Display>(items: &[T], sep: &str) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(sep)
}
