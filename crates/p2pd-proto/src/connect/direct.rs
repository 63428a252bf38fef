//! The direct strategy: TCP to every candidate destination at once; the
//! first connection wins and the others are cancelled.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::machine::{Machine, Output};
use super::{Action, AttemptId, AttemptIds, DialFailure, StrategyError};

/// Dials every destination at once, within a budget.
#[derive(Debug)]
pub(super) struct Direct {
    budget: Duration,
    deadline: Instant,
    /// Every destination, in the order dialled (for the timeout's message).
    dialled: Vec<SocketAddr>,
    /// Connects the driver is still running, in the order dialled.
    pending: Vec<(AttemptId, SocketAddr)>,
    failures: Vec<DialFailure>,
    done: bool,
    outputs: VecDeque<Output>,
}

impl Direct {
    pub(super) fn new(
        now: Instant,
        budget: Duration,
        ids: &mut AttemptIds,
        candidates: &[SocketAddr],
    ) -> Self {
        let mut outputs = VecDeque::new();
        let pending: Vec<(AttemptId, SocketAddr)> =
            candidates.iter().map(|&dst| (ids.next(), dst)).collect();
        for &(attempt, dst) in &pending {
            outputs.push_back(Output::Act(Action::Connect { attempt, dst }));
        }
        let done = pending.is_empty();
        if done {
            outputs.push_back(Output::Failed(StrategyError::NoEndpoint));
        }
        Self {
            budget,
            deadline: now + budget,
            dialled: candidates.to_vec(),
            pending,
            failures: Vec::new(),
            done,
            outputs,
        }
    }

    /// Cancels every connect still pending and stops.
    fn finish(&mut self, verdict: Option<Output>) {
        for (attempt, _) in self.pending.drain(..) {
            self.outputs
                .push_back(Output::Act(Action::Cancel { attempt }));
        }
        self.outputs.extend(verdict);
        self.done = true;
    }
}

impl Machine for Direct {
    fn outputs(&mut self) -> &mut VecDeque<Output> {
        &mut self.outputs
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.done || now < self.deadline {
            return;
        }
        let error = StrategyError::NoAnswer {
            budget: self.budget,
            dialled: self.dialled.clone(),
        };
        self.finish(Some(Output::Failed(error)));
    }

    fn handle_connected(&mut self, _now: Instant, attempt: AttemptId) {
        let Some(at) = self.pending.iter().position(|(id, _)| *id == attempt) else {
            self.outputs
                .push_back(Output::Act(Action::Close { attempt }));
            return;
        };
        self.pending.remove(at);
        self.finish(Some(Output::Won(attempt)));
    }

    fn handle_connect_failed(&mut self, _now: Instant, attempt: AttemptId, reason: String) {
        let Some(at) = self.pending.iter().position(|(id, _)| *id == attempt) else {
            return;
        };
        let (_, dst) = self.pending.remove(at);
        self.failures.push(DialFailure { dst, reason });
        if self.pending.is_empty() {
            let error = StrategyError::AllDialsFailed(std::mem::take(&mut self.failures));
            self.finish(Some(Output::Failed(error)));
        }
    }

    fn cancel(&mut self) {
        self.finish(None);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (!self.done).then_some(self.deadline)
    }
}
