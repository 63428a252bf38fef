//! The child machines of the race, one per strategy.
//!
//! Adding a strategy is a file with a type implementing [`Machine`], a
//! variant of [`Child`] and its arm in [`Child::start`],
//! [`Child::machine`] and [`Child::machine_ref`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::direct::Direct;
use super::handed::{Handed, Kind};
use super::machine::Machine;
use super::reverse::Reverse;
use super::{AttemptIds, ReverseToken, Strategy};

/// A started strategy.
#[derive(Debug)]
pub(super) enum Child {
    /// [`Strategy::Direct`].
    Direct(Direct),
    /// [`Strategy::Reverse`].
    Reverse(Reverse),
    /// [`Strategy::Punch`] and [`Strategy::Relay`].
    Handed(Handed),
}

/// What every child may start from.
#[derive(Debug)]
pub(super) struct StartInput<'a> {
    /// Where direct dials.
    pub(super) candidates: &'a [SocketAddr],
    /// The token reverse sends.
    pub(super) token: ReverseToken,
}

impl Child {
    /// Starts `strategy` at `now`, giving up at `now + budget`.
    pub(super) fn start(
        now: Instant,
        strategy: Strategy,
        budget: Duration,
        ids: &mut AttemptIds,
        input: &StartInput<'_>,
    ) -> Self {
        match strategy {
            Strategy::Direct => Child::Direct(Direct::new(now, budget, ids, input.candidates)),
            Strategy::Reverse => Child::Reverse(Reverse::new(now, budget, ids, input.token)),
            Strategy::Punch => Child::Handed(Handed::new(Kind::Punch, now, budget, ids)),
            Strategy::Relay => Child::Handed(Handed::new(Kind::Relay, now, budget, ids)),
        }
    }

    /// The child as its machine, so the race drives every kind alike.
    pub(super) fn machine(&mut self) -> &mut dyn Machine {
        match self {
            Child::Direct(m) => m,
            Child::Reverse(m) => m,
            Child::Handed(m) => m,
        }
    }

    /// [`Child::machine`] for reading.
    pub(super) fn machine_ref(&self) -> &dyn Machine {
        match self {
            Child::Direct(m) => m,
            Child::Reverse(m) => m,
            Child::Handed(m) => m,
        }
    }
}
