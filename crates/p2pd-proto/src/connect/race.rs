//! The parent machine: starts strategies in turn, drains their children and
//! decides the outcome.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::child::{Child, StartInput};
use super::defaults::RELAY_HEAD_START;
use super::machine::Output;
use super::{
    Action, AttemptId, AttemptIds, Budgets, Outcome, Reason, ReverseToken, Strategy, StrategyError,
};

/// What a race is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaceConfig {
    /// Strategies to try, most preferred first.
    pub strategies: Vec<Strategy>,
    /// Each strategy's own budget, counted from its start.
    pub budgets: Budgets,
    /// The whole connect's budget, counted from [`Race::new`].
    pub overall: Duration,
    /// Head start of each strategy over the next: see
    /// [`stagger_for`](super::stagger_for).
    pub stagger: Duration,
}

/// One connect to a peer: the strategies racing, staggered.
///
/// The first strategy starts at once. Each next one starts when every
/// running one has failed, or when the last one started has had
/// [`RaceConfig::stagger`] to itself (before relay: at least
/// [`RELAY_HEAD_START`]), whichever comes first. Each gives up
/// within its own budget, and the whole race at [`RaceConfig::overall`],
/// reporting every strategy still running as
/// [`StrategyError::ConnectTimedOut`]. The first connection wins: every
/// other attempt is cancelled, and connections that still come in are
/// closed.
///
/// # Method groups, in the order to call them
///
/// 1. [`Race::new`] starts the race (and its first strategy) at `now`.
/// 2. Drain [`Race::poll_action`] until it gives `None`, and do each
///    [`Action`]; then take [`Race::poll_outcome`]: once it gives the
///    [`Outcome`], the race is over for the driver's user.
/// 3. Sleep until [`Race::poll_timeout`], or until the driver has a result
///    for an action, and feed exactly one input:
///    * [`Race::handle_timeout`] at the deadline;
///    * [`Race::handle_connected`], [`Race::handle_connect_failed`] for an
///      [`Action::Connect`];
///    * [`Race::handle_signaling_ready`], [`Race::handle_signaling_unavailable`]
///      for an [`Action::WaitSignaling`];
///    * [`Race::handle_reverse_sent`] for an [`Action::SendReverse`], and
///      [`Race::handle_dial_back`] for each connection that presents a
///      handshake.
/// 4. Go to 2. After the outcome, keep feeding connections that still
///    complete, or drop the race and close them: either way they are
///    unwanted.
///
/// Every input first applies the timers due at `now`, so a result that
/// arrives after a budget or the overall timeout has ended loses to it
/// whatever order the driver noticed them in.
#[derive(Debug)]
pub struct Race {
    config: RaceConfig,
    /// The overall timeout.
    deadline: Instant,
    candidates: Vec<SocketAddr>,
    token: ReverseToken,
    ids: AttemptIds,
    /// Index into `config.strategies` of the next strategy to start.
    next: usize,
    last_start: Instant,
    /// Started strategies, in order of start; never removed, so indexes in
    /// `owners` stay valid.
    slots: Vec<Slot>,
    /// Which slot started each attempt, to route the driver's reports.
    owners: BTreeMap<AttemptId, usize>,
    tried: Vec<(Strategy, StrategyError)>,
    actions: VecDeque<Action>,
    decided: bool,
    /// The outcome until the driver takes it.
    outcome: Option<Outcome>,
}

#[derive(Debug)]
struct Slot {
    strategy: Strategy,
    child: Child,
    running: bool,
}

impl Race {
    /// Starts a race at `now` towards a peer that direct dials at
    /// `candidates` (see [`candidates_for`](super::candidates_for)) and that
    /// reverse asks to present `token`. An empty strategy list fails at
    /// once, with nothing tried.
    pub fn new(
        now: Instant,
        config: RaceConfig,
        candidates: Vec<SocketAddr>,
        token: ReverseToken,
    ) -> Self {
        let mut race = Self {
            deadline: now + config.overall,
            config,
            candidates,
            token,
            ids: AttemptIds::default(),
            next: 0,
            last_start: now,
            slots: Vec::new(),
            owners: BTreeMap::new(),
            tried: Vec::new(),
            actions: VecDeque::new(),
            decided: false,
            outcome: None,
        };
        race.settle(now);
        race
    }

    /// Applies every timer due at `now`: strategies' budgets (in the order
    /// they end), the next head start, the overall timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.decided {
            return;
        }
        self.expire_budgets(now);
        if self.decided {
            return;
        }
        if now >= self.deadline {
            self.time_out();
            return;
        }
        if self.next_start().is_some_and(|at| now >= at) {
            self.start_next(now);
        }
        self.settle(now);
    }

    /// The TCP connect of `attempt` is established. It wins if its strategy
    /// still wants it; else an [`Action::Close`] for it follows.
    pub fn handle_connected(&mut self, now: Instant, attempt: AttemptId) {
        self.handle_timeout(now);
        match self.owners.get(&attempt) {
            Some(&slot) => self.slots[slot]
                .child
                .machine()
                .handle_connected(now, attempt),
            None => self.actions.push_back(Action::Close { attempt }),
        }
        self.settle(now);
    }

    /// The TCP connect of `attempt` failed; `reason` is what the OS said.
    pub fn handle_connect_failed(&mut self, now: Instant, attempt: AttemptId, reason: String) {
        self.handle_timeout(now);
        if let Some(&slot) = self.owners.get(&attempt) {
            self.slots[slot]
                .child
                .machine()
                .handle_connect_failed(now, attempt, reason);
        }
        self.settle(now);
    }

    /// A signaling broker is connected, for the wait of `attempt`.
    pub fn handle_signaling_ready(&mut self, now: Instant, attempt: AttemptId) {
        self.handle_timeout(now);
        if let Some(&slot) = self.owners.get(&attempt) {
            self.slots[slot]
                .child
                .machine()
                .handle_signaling_ready(now, attempt);
        }
        self.settle(now);
    }

    /// Signaling cannot come up for `attempt` (no broker is configured):
    /// its strategy fails at once instead of waiting out its budget.
    pub fn handle_signaling_unavailable(&mut self, now: Instant, attempt: AttemptId) {
        self.handle_timeout(now);
        if let Some(&slot) = self.owners.get(&attempt) {
            self.slots[slot]
                .child
                .machine()
                .handle_signaling_unavailable(now, attempt);
        }
        self.settle(now);
    }

    /// The reverse request of `attempt` went out on `brokers` brokers; 0
    /// means none the peer listens on was connected.
    pub fn handle_reverse_sent(&mut self, now: Instant, attempt: AttemptId, brokers: usize) {
        self.handle_timeout(now);
        if let Some(&slot) = self.owners.get(&attempt) {
            self.slots[slot]
                .child
                .machine()
                .handle_reverse_sent(now, attempt, brokers);
        }
        self.settle(now);
    }

    /// A connection came in presenting `token` in its handshake.
    /// Gives the id the race names that connection by, when the token is
    /// this race's: the connection then wins, or an [`Action::Close`] for
    /// it follows. `None`: the connection is not this race's, and the race
    /// did nothing.
    pub fn handle_dial_back(&mut self, now: Instant, token: ReverseToken) -> Option<AttemptId> {
        self.handle_timeout(now);
        let connection = self.slots.iter_mut().find_map(|slot| {
            slot.child
                .machine()
                .handle_dial_back(now, token, &mut self.ids)
        })?;
        self.settle(now);
        Some(connection)
    }

    /// The next thing for the driver to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// How the race ended: given once, when it is decided.
    pub fn poll_outcome(&mut self) -> Option<Outcome> {
        self.outcome.take()
    }

    /// Whether the race has an outcome (taken or not).
    pub fn is_decided(&self) -> bool {
        self.decided
    }

    /// When to call [`Race::handle_timeout`] next, and why; `None` once the
    /// race is decided. Never later than the overall timeout.
    pub fn poll_timeout(&self) -> Option<(Instant, Reason)> {
        if self.decided {
            return None;
        }
        let overall = std::iter::once((self.deadline, Reason::Overall));
        let head_start = self.next_start().map(|at| (at, Reason::HeadStart));
        let budgets = self.slots.iter().filter(|s| s.running).filter_map(|s| {
            let at = s.child.machine_ref().poll_timeout()?;
            Some((at, Reason::Budget(s.strategy)))
        });
        overall
            .chain(head_start)
            .chain(budgets)
            .min_by_key(|(at, _)| *at)
    }

    /// Fails the strategies whose own budget ended by `now`, earliest
    /// first. A budget that ends with the overall timeout or after it is
    /// left to [`Race::time_out`]: the user's overall limit is what cut it.
    fn expire_budgets(&mut self, now: Instant) {
        let mut due: Vec<(Instant, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.running)
            .filter_map(|(i, s)| Some((s.child.machine_ref().poll_timeout()?, i)))
            .filter(|&(at, _)| at <= now && at < self.deadline)
            .collect();
        due.sort_unstable();
        for (_, slot) in due {
            self.slots[slot].child.machine().handle_timeout(now);
            self.drain();
        }
    }

    /// Ends the race at the overall timeout: every strategy still running
    /// is cancelled and reported as cut off, in order of start.
    fn time_out(&mut self) {
        for slot in self.slots.iter_mut().filter(|s| s.running) {
            slot.child.machine().cancel();
            slot.running = false;
            self.tried
                .push((slot.strategy, StrategyError::ConnectTimedOut));
        }
        self.drain();
        self.fail();
    }

    /// Drains the children, then starts the next strategy while none is
    /// running, and fails the race when none is left to start.
    fn settle(&mut self, now: Instant) {
        loop {
            self.drain();
            if self.decided || self.slots.iter().any(|s| s.running) {
                return;
            }
            if self.next == self.config.strategies.len() {
                self.fail();
                return;
            }
            self.start_next(now);
        }
    }

    /// When the next strategy starts unless those running fail first:
    /// relay, the slowest and the one that costs a server, leaves the
    /// others [`RELAY_HEAD_START`] at least.
    fn next_start(&self) -> Option<Instant> {
        let next = *self.config.strategies.get(self.next)?;
        let head_start = if next == Strategy::Relay {
            self.config.stagger.max(RELAY_HEAD_START)
        } else {
            self.config.stagger
        };
        Some(self.last_start + head_start)
    }

    fn start_next(&mut self, now: Instant) {
        let strategy = self.config.strategies[self.next];
        self.next += 1;
        self.last_start = now;
        let input = StartInput {
            candidates: &self.candidates,
            token: self.token,
        };
        let budget = self.config.budgets.of(strategy);
        let child = Child::start(now, strategy, budget, &mut self.ids, &input);
        self.slots.push(Slot {
            strategy,
            child,
            running: true,
        });
    }

    /// Translates every child's outputs until none has any left: a win
    /// cancels the other children, whose cancels must be drained too.
    fn drain(&mut self) {
        let mut progressed = true;
        while progressed {
            progressed = false;
            for i in 0..self.slots.len() {
                while let Some(output) = self.slots[i].child.machine().poll_output() {
                    progressed = true;
                    self.translate(i, output);
                }
            }
        }
    }

    fn translate(&mut self, slot: usize, output: Output) {
        match output {
            Output::Act(action) => {
                self.owners.entry(action.attempt()).or_insert(slot);
                self.actions.push_back(action);
            }
            Output::Won(attempt) if self.decided => {
                self.actions.push_back(Action::Close { attempt });
            }
            Output::Won(attempt) => {
                let strategy = self.slots[slot].strategy;
                self.slots[slot].running = false;
                for other in self.slots.iter_mut().filter(|s| s.running) {
                    other.child.machine().cancel();
                    other.running = false;
                }
                self.decide(Outcome::Won { strategy, attempt });
            }
            Output::Failed(error) => {
                self.slots[slot].running = false;
                if !self.decided {
                    self.tried.push((self.slots[slot].strategy, error));
                }
            }
        }
    }

    fn fail(&mut self) {
        let tried = std::mem::take(&mut self.tried);
        self.decide(Outcome::Failed { tried });
    }

    fn decide(&mut self, outcome: Outcome) {
        self.decided = true;
        self.outcome = Some(outcome);
    }
}
