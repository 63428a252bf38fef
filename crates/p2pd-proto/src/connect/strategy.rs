//! The ways to open a connection to a peer, by the names users write.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A way to open a connection to a peer (manual 1.2.3).
///
/// Not `#[non_exhaustive]`: a driver must handle every strategy, so a new
/// one should break its build rather than fall into a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Connect to the peer's listen port.
    Direct,
    /// Ask the peer, over signaling, to connect back.
    Reverse,
    /// TCP hole punching with predicted ports.
    Punch,
    /// Relay through a TURN server.
    Relay,
}

impl Strategy {
    /// Every strategy, in the default order of preference.
    pub const ALL: [Strategy; 4] = [
        Strategy::Direct,
        Strategy::Reverse,
        Strategy::Punch,
        Strategy::Relay,
    ];

    /// The name used in config files, on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Direct => "direct",
            Strategy::Reverse => "reverse",
            Strategy::Punch => "punch",
            Strategy::Relay => "relay",
        }
    }

    /// Whether it needs the signaling brokers.
    pub fn signals(self) -> bool {
        match self {
            Strategy::Direct => false,
            Strategy::Reverse | Strategy::Punch | Strategy::Relay => true,
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Strategy {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Strategy::ALL
            .into_iter()
            .find(|st| st.name() == s)
            .ok_or_else(|| UnknownStrategy(s.to_owned()))
    }
}

/// A strategy name that is none of [`Strategy::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown strategy `{0}` (expected direct, reverse, punch or relay)")]
pub struct UnknownStrategy(pub String);

/// How long each strategy may try before it gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// Budget of [`Strategy::Direct`].
    pub direct: Duration,
    /// Budget of [`Strategy::Reverse`], waiting for signaling included.
    pub reverse: Duration,
    /// Budget of [`Strategy::Punch`].
    pub punch: Duration,
    /// Budget of [`Strategy::Relay`].
    pub relay: Duration,
}

impl Budgets {
    /// The budget of one strategy.
    pub fn of(&self, strategy: Strategy) -> Duration {
        match strategy {
            Strategy::Direct => self.direct,
            Strategy::Reverse => self.reverse,
            Strategy::Punch => self.punch,
            Strategy::Relay => self.relay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_others_are_refused_by_name() {
        for strategy in Strategy::ALL {
            assert_eq!(strategy.to_string().parse(), Ok(strategy));
        }
        let err = "teleport".parse::<Strategy>().expect_err("not a strategy");
        assert_eq!(
            err.to_string(),
            "unknown strategy `teleport` (expected direct, reverse, punch or relay)"
        );
    }
}
