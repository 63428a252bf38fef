//! The reverse strategy: wait for signaling, ask the peer over it to
//! connect back, and wait for the connection that presents our token.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::machine::{Machine, Output};
use super::{Action, AttemptId, AttemptIds, ReverseToken, StrategyError};

/// One reverse request, from waiting for signaling to the dial-back.
#[derive(Debug)]
pub(super) struct Reverse {
    attempt: AttemptId,
    token: ReverseToken,
    budget: Duration,
    /// Waiting for signaling counts against the budget too: the user asked
    /// for the strategy to end within it, whatever it was waiting for.
    deadline: Instant,
    state: State,
    outputs: VecDeque<Output>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The driver waits for a broker to be connected.
    WaitingSignaling,
    /// The driver sends the request and has not said on how many brokers.
    Sending,
    /// The request went out; the peer may dial back.
    AwaitingDialBack,
    /// Won, failed or cancelled.
    Done,
}

impl Reverse {
    pub(super) fn new(
        now: Instant,
        budget: Duration,
        ids: &mut AttemptIds,
        token: ReverseToken,
    ) -> Self {
        let attempt = ids.next();
        Self {
            attempt,
            token,
            budget,
            deadline: now + budget,
            state: State::WaitingSignaling,
            outputs: VecDeque::from([Output::Act(Action::WaitSignaling { attempt })]),
        }
    }

    /// Stops, telling the driver to drop the wait or the registered token
    /// (also on a win: the dial-back is a connection of its own), then
    /// gives `verdict`.
    fn finish(&mut self, verdict: Option<Output>) {
        if self.state == State::Done {
            return;
        }
        self.state = State::Done;
        self.outputs.push_back(Output::Act(Action::Cancel {
            attempt: self.attempt,
        }));
        self.outputs.extend(verdict);
    }
}

impl Machine for Reverse {
    fn outputs(&mut self) -> &mut VecDeque<Output> {
        &mut self.outputs
    }

    fn handle_timeout(&mut self, now: Instant) {
        if now < self.deadline {
            return;
        }
        let error = match self.state {
            State::WaitingSignaling => StrategyError::NoSignaling,
            State::Sending | State::AwaitingDialBack => StrategyError::NoDialBack {
                budget: self.budget,
            },
            State::Done => return,
        };
        self.finish(Some(Output::Failed(error)));
    }

    fn handle_signaling_ready(&mut self, _now: Instant, attempt: AttemptId) {
        if attempt != self.attempt || self.state != State::WaitingSignaling {
            return;
        }
        self.state = State::Sending;
        self.outputs.push_back(Output::Act(Action::SendReverse {
            attempt,
            token: self.token,
        }));
    }

    fn handle_signaling_unavailable(&mut self, _now: Instant, attempt: AttemptId) {
        if attempt != self.attempt || self.state != State::WaitingSignaling {
            return;
        }
        self.finish(Some(Output::Failed(StrategyError::NoSignaling)));
    }

    fn handle_reverse_sent(&mut self, _now: Instant, attempt: AttemptId, brokers: usize) {
        if attempt != self.attempt || self.state != State::Sending {
            return;
        }
        if brokers == 0 {
            self.finish(Some(Output::Failed(StrategyError::NoSharedBroker)));
        } else {
            self.state = State::AwaitingDialBack;
        }
    }

    fn handle_dial_back(
        &mut self,
        _now: Instant,
        token: ReverseToken,
        ids: &mut AttemptIds,
    ) -> Option<AttemptId> {
        if token != self.token {
            return None;
        }
        // Each dial-back is a connection of its own, so a second one with
        // the token can be closed without naming the winner's.
        let connection = ids.next();
        match self.state {
            // The peer can only know the token once it was handed out to be
            // sent; its dial-back may overtake the driver's "sent" report.
            State::Sending | State::AwaitingDialBack => {
                self.finish(Some(Output::Won(connection)));
            }
            State::WaitingSignaling | State::Done => {
                self.outputs.push_back(Output::Act(Action::Close {
                    attempt: connection,
                }));
            }
        }
        Some(connection)
    }

    fn cancel(&mut self) {
        self.finish(None);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (self.state != State::Done).then_some(self.deadline)
    }
}
