//! A strategy this version does not implement: it fails as it starts, so
//! asking for it shows in `tried` instead of being dropped silently.

use std::collections::VecDeque;
use std::time::Instant;

use super::machine::{Machine, Output};
use super::{Strategy, StrategyError};

/// Relay, until it exists.
#[derive(Debug)]
pub(super) struct Unavailable {
    outputs: VecDeque<Output>,
}

impl Unavailable {
    pub(super) fn new(strategy: Strategy) -> Self {
        Self {
            outputs: VecDeque::from([Output::Failed(StrategyError::NotAvailable(strategy))]),
        }
    }
}

impl Machine for Unavailable {
    fn outputs(&mut self) -> &mut VecDeque<Output> {
        &mut self.outputs
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn cancel(&mut self) {}

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}
