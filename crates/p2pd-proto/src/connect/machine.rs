//! The trait every strategy's machine implements, and what a machine tells
//! the race. A new kind of driver input is a [`Machine`] method with a
//! default that ignores it, so machines that do not use it stay as they
//! are.

use std::collections::VecDeque;
use std::time::Instant;

use super::{Action, AttemptId, AttemptIds, ReverseToken, StrategyError};

/// What a child tells the race.
#[derive(Debug)]
pub(super) enum Output {
    /// Work for the driver, passed on as it is.
    Act(Action),
    /// The strategy made this connection.
    Won(AttemptId),
    /// The strategy gave up; the child has already cancelled its attempts.
    Failed(StrategyError),
}

/// One strategy's sans-IO machine. Inputs name attempts the race routes to
/// the child that started them; a child closes connections it no longer
/// wants itself, so the race need not know its states.
pub(super) trait Machine {
    /// Gives up when the child's budget has ended.
    fn handle_timeout(&mut self, now: Instant);

    /// The child's queue of outputs, which [`Machine::poll_output`] drains.
    fn outputs(&mut self) -> &mut VecDeque<Output>;

    /// A TCP connect of this child succeeded; a child that never connects
    /// closes it, since nobody can want it.
    fn handle_connected(&mut self, _now: Instant, attempt: AttemptId) {
        self.outputs()
            .push_back(Output::Act(Action::Close { attempt }));
    }

    /// A TCP connect of this child failed.
    fn handle_connect_failed(&mut self, _now: Instant, _attempt: AttemptId, _reason: String) {}

    /// Signaling is up.
    fn handle_signaling_ready(&mut self, _now: Instant, _attempt: AttemptId) {}

    /// Signaling cannot come up.
    fn handle_signaling_unavailable(&mut self, _now: Instant, _attempt: AttemptId) {}

    /// The reverse request went out on `brokers` brokers.
    fn handle_reverse_sent(&mut self, _now: Instant, _attempt: AttemptId, _brokers: usize) {}

    /// A dial-back presented `token`: if this child issued the token, the
    /// id it gives the connection (from `ids`).
    fn handle_dial_back(
        &mut self,
        _now: Instant,
        _token: ReverseToken,
        _ids: &mut AttemptIds,
    ) -> Option<AttemptId> {
        None
    }

    /// Stops without a verdict (another strategy won, or the whole connect
    /// timed out): cancels every attempt still with the driver.
    fn cancel(&mut self);

    /// The end of the child's budget, while it is still trying.
    fn poll_timeout(&self) -> Option<Instant>;

    /// The next output, until there is none.
    fn poll_output(&mut self) -> Option<Output> {
        self.outputs().pop_front()
    }
}
