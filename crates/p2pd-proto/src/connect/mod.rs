//! The connect race: which strategies open a connection to a peer, when
//! each starts, and which one wins (DESIGN.md "Strategies, and why they
//! race").
//!
//! ```text
//!  driver (node actor)                         Race (parent)
//!  ─────────────────                           ──────────────────────────────
//!  connect results, signaling, dial-backs ──►  handle_*(now, ..) ─► child machines
//!  sockets, signaling messages          ◄──   poll_action()        direct.rs, reverse.rs,
//!  sleep until                          ◄──   poll_timeout()       handed.rs (punch, relay)
//!  the connection, or `tried`           ◄──   poll_outcome()
//! ```
//!
//! [`Race`] is the parent; each started strategy runs as a child machine
//! that it drains inside its own handlers, turning a child's success into
//! the outcome plus cancels for every other child. The driver only opens
//! the sockets and sends the messages it is told to, and reports back.
//! [`candidates_for`] computes where direct dials, [`stagger_for`] the head
//! start; the dial-back carries its [`ReverseToken`] in the connection
//! handshake (`crate::handshake`).
//!
//! A driver loop, here with a network where every connect is refused and
//! no broker is configured:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use p2pd_proto::connect::{Action, Budgets, Outcome, Race, RaceConfig, ReverseToken, Strategy};
//!
//! let budget = Duration::from_secs(2);
//! let config = RaceConfig {
//!     strategies: vec![Strategy::Direct, Strategy::Reverse],
//!     budgets: Budgets { direct: budget, reverse: budget, punch: budget, relay: budget },
//!     overall: Duration::from_secs(15),
//!     stagger: p2pd_proto::connect::defaults::STAGGER_NATTED,
//! };
//! let mut now = Instant::now();
//! let candidates = vec!["198.18.2.1:4000".parse()?];
//! let mut race = Race::new(now, config, candidates, ReverseToken::from_random(42));
//! let outcome = loop {
//!     while let Some(action) = race.poll_action() {
//!         match action {
//!             Action::Connect { attempt, .. } => {
//!                 race.handle_connect_failed(now, attempt, "connection refused".into())
//!             }
//!             Action::WaitSignaling { attempt } => race.handle_signaling_unavailable(now, attempt),
//!             Action::SendReverse { attempt, .. } => race.handle_reverse_sent(now, attempt, 0),
//!             Action::Punch { attempt } | Action::Relay { attempt } => {
//!                 race.handle_connect_failed(now, attempt, "not here".into())
//!             }
//!             Action::Cancel { .. } | Action::Close { .. } => {}
//!         }
//!     }
//!     if let Some(outcome) = race.poll_outcome() {
//!         break outcome;
//!     }
//!     let Some((at, _reason)) = race.poll_timeout() else { unreachable!("undecided") };
//!     now = at; // a real driver sleeps until `at` or the next IO result
//!     race.handle_timeout(now);
//! };
//! let Outcome::Failed { tried } = outcome else { unreachable!("all refused") };
//! assert_eq!(tried[0].1.to_string(), "198.18.2.1:4000: connection refused");
//! assert_eq!(tried[1].1.to_string(), "no signaling broker is reachable");
//! # Ok::<(), std::net::AddrParseError>(())
//! ```

mod candidates;
mod child;
pub mod defaults;
mod direct;
mod error;
mod handed;
mod machine;
mod race;
mod reverse;
mod strategy;
mod token;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

pub use candidates::candidates_for;
pub use error::{BadToken, DialFailure, StrategyError};
pub use race::{Race, RaceConfig};
pub use strategy::{Budgets, Strategy, UnknownStrategy};
pub use token::ReverseToken;

use crate::addr::PeerAddr;
use crate::stun::behavior::NatType;

/// The head start for connecting to `peer`: [`defaults::STAGGER_OPEN`] when
/// every endpoint its address lists is open (no NAT, no filter), else
/// [`defaults::STAGGER_NATTED`].
pub fn stagger_for(peer: &PeerAddr) -> Duration {
    if peer.endpoints().all(|e| e.nat == NatType::Open) {
        defaults::STAGGER_OPEN
    } else {
        defaults::STAGGER_NATTED
    }
}

/// One piece of work the race hands to the driver: a TCP connect, or a
/// strategy's use of signaling. Ids are never reused within a race.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttemptId(u64);

impl fmt::Display for AttemptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attempt#{}", self.0)
    }
}

/// Hands out [`AttemptId`]s, so ids stay unique across all children.
#[derive(Debug, Default)]
struct AttemptIds {
    next: u64,
}

impl AttemptIds {
    fn next(&mut self) -> AttemptId {
        self.next += 1;
        AttemptId(self.next)
    }
}

/// What the driver is asked to do.
///
/// Not `#[non_exhaustive]`: a driver that silently skipped a new kind of
/// work would hang the race until its timeout, so a new variant should
/// break the driver's build instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to `dst`, then report it with
    /// [`Race::handle_connected`] or [`Race::handle_connect_failed`]. No
    /// timeout is needed: the race cancels it when its budget ends.
    Connect {
        /// Names the connect in reports and in a later cancel.
        attempt: AttemptId,
        /// Where to.
        dst: SocketAddr,
    },
    /// Report when signaling is up, with [`Race::handle_signaling_ready`],
    /// or that it cannot be ([`Race::handle_signaling_unavailable`]: no
    /// broker configured). The race gives up waiting itself.
    WaitSignaling {
        /// The reverse attempt that waits.
        attempt: AttemptId,
    },
    /// Send the peer a reverse request carrying `token` on every broker its
    /// address lists, report on how many with [`Race::handle_reverse_sent`],
    /// and hand connections that present `token` to
    /// [`Race::handle_dial_back`], which names each by an id of its own.
    SendReverse {
        /// The reverse attempt.
        attempt: AttemptId,
        /// Goes into the request; the dial-back's handshake carries it back.
        token: ReverseToken,
    },
    /// Run a punch to the peer (`crate::punch`), then report its
    /// connection with [`Race::handle_connected`] or why it failed with
    /// [`Race::handle_connect_failed`].
    Punch {
        /// The punch attempt.
        attempt: AttemptId,
    },
    /// Relay to the peer through a TURN server (`crate::turn`), then
    /// report its connection with [`Race::handle_connected`] or why it
    /// failed with [`Race::handle_connect_failed`].
    Relay {
        /// The relay attempt.
        attempt: AttemptId,
    },
    /// Stop `attempt` and drop whatever the driver holds for it (a pending
    /// connect, a wait, a registered token). The race asks nothing more
    /// about it.
    Cancel {
        /// The attempt to stop.
        attempt: AttemptId,
    },
    /// Close the connection `attempt` made: it came after the race or its
    /// strategy was decided, and nobody wants it.
    Close {
        /// The connection's attempt.
        attempt: AttemptId,
    },
}

impl Action {
    /// The attempt the action is about.
    pub fn attempt(&self) -> AttemptId {
        match self {
            Action::Connect { attempt, .. }
            | Action::WaitSignaling { attempt }
            | Action::SendReverse { attempt, .. }
            | Action::Punch { attempt }
            | Action::Relay { attempt }
            | Action::Cancel { attempt }
            | Action::Close { attempt } => *attempt,
        }
    }
}

/// How a race ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `strategy` made the connection of `attempt`; every other attempt has
    /// been cancelled.
    Won {
        /// The winning strategy.
        strategy: Strategy,
        /// The connection: an [`Action::Connect`]'s, or the id
        /// [`Race::handle_dial_back`] gave a dial-back.
        attempt: AttemptId,
    },
    /// Every started strategy gave up, or the whole connect timed out.
    Failed {
        /// Each started strategy and why it gave up: in order of failure,
        /// then those cut off by the overall timeout in order of start.
        /// Strategies never started are not listed.
        tried: Vec<(Strategy, StrategyError)>,
    },
}

/// Why the race wants to be woken, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The whole connect's timeout.
    Overall,
    /// The next strategy's head start ends.
    HeadStart,
    /// A running strategy's own budget ends.
    Budget(Strategy),
}
