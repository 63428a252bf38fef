//! The strategies the driver runs whole, punch and relay: wait for
//! signaling, then hand the strategy to the driver, which runs its own
//! sans-IO machine ([`crate::punch::Session`], [`crate::turn::Client`])
//! and reports one connection or why not.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::machine::{Machine, Output};
use super::{Action, AttemptId, AttemptIds, StrategyError};

/// Which strategy the driver runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Punch,
    Relay,
}

impl Kind {
    fn action(self, attempt: AttemptId) -> Action {
        match self {
            Kind::Punch => Action::Punch { attempt },
            Kind::Relay => Action::Relay { attempt },
        }
    }

    fn failed(self, reason: String) -> StrategyError {
        match self {
            Kind::Punch => StrategyError::Punch(reason),
            Kind::Relay => StrategyError::Relay(reason),
        }
    }

    fn out_of_time(self, budget: Duration) -> StrategyError {
        match self {
            Kind::Punch => StrategyError::NoPunch { budget },
            Kind::Relay => StrategyError::NoRelay { budget },
        }
    }
}

/// One punch or relay, from waiting for signaling to its connection.
#[derive(Debug)]
pub(super) struct Handed {
    kind: Kind,
    /// The wait for signaling.
    wait: AttemptId,
    /// The strategy's own attempt, whose connection wins.
    attempt: AttemptId,
    budget: Duration,
    deadline: Instant,
    state: State,
    outputs: VecDeque<Output>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    WaitingSignaling,
    Running,
    Done,
}

impl Handed {
    pub(super) fn new(kind: Kind, now: Instant, budget: Duration, ids: &mut AttemptIds) -> Self {
        let wait = ids.next();
        let attempt = ids.next();
        Self {
            kind,
            wait,
            attempt,
            budget,
            deadline: now + budget,
            state: State::WaitingSignaling,
            outputs: VecDeque::from([Output::Act(Action::WaitSignaling { attempt: wait })]),
        }
    }

    fn fail(&mut self, error: StrategyError) {
        self.stop();
        self.outputs.push_back(Output::Failed(error));
    }

    /// Ends the strategy: the wait is dropped, and the strategy too when it
    /// is running (it has no connection to hand over).
    fn stop(&mut self) {
        let cancel = match self.state {
            State::Done => return,
            State::WaitingSignaling => [Some(self.wait), None],
            State::Running => [Some(self.wait), Some(self.attempt)],
        };
        self.state = State::Done;
        for attempt in cancel.into_iter().flatten() {
            self.outputs
                .push_back(Output::Act(Action::Cancel { attempt }));
        }
    }

    /// Ends the strategy when the driver has finished it.
    fn end(&mut self, verdict: Output) {
        self.state = State::Done;
        self.outputs
            .push_back(Output::Act(Action::Cancel { attempt: self.wait }));
        self.outputs.push_back(verdict);
    }
}

impl Machine for Handed {
    fn outputs(&mut self) -> &mut VecDeque<Output> {
        &mut self.outputs
    }

    fn handle_timeout(&mut self, now: Instant) {
        if now < self.deadline {
            return;
        }
        match self.state {
            State::WaitingSignaling => self.fail(StrategyError::NoSignaling),
            State::Running => self.fail(self.kind.out_of_time(self.budget)),
            State::Done => {}
        }
    }

    fn handle_signaling_ready(&mut self, _now: Instant, attempt: AttemptId) {
        if attempt == self.wait && self.state == State::WaitingSignaling {
            self.state = State::Running;
            self.outputs
                .push_back(Output::Act(self.kind.action(self.attempt)));
        }
    }

    fn handle_signaling_unavailable(&mut self, _now: Instant, attempt: AttemptId) {
        if attempt == self.wait && self.state == State::WaitingSignaling {
            self.fail(StrategyError::NoSignaling);
        }
    }

    fn handle_connected(&mut self, _now: Instant, attempt: AttemptId) {
        if attempt == self.attempt && self.state == State::Running {
            self.end(Output::Won(attempt));
        } else {
            self.outputs
                .push_back(Output::Act(Action::Close { attempt }));
        }
    }

    fn handle_connect_failed(&mut self, _now: Instant, attempt: AttemptId, reason: String) {
        if attempt == self.attempt && self.state == State::Running {
            self.end(Output::Failed(self.kind.failed(reason)));
        }
    }

    fn cancel(&mut self) {
        self.stop();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (self.state != State::Done).then_some(self.deadline)
    }
}
