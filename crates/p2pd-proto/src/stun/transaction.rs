//! Client transactions: matching responses to requests and retransmitting
//! on an injected clock (RFC 8489 section 6.2.1).
//!
//! [`Transactions`] holds any number of outstanding requests. Drive it like
//! every sans-IO machine here:
//!
//! 1. [`Transactions::start`] a request;
//! 2. send everything [`Transactions::poll_transmit`] gives;
//! 3. feed received datagrams to [`Transactions::handle_input`] and call
//!    [`Transactions::handle_timeout`] at [`Transactions::poll_timeout`];
//! 4. take results from [`Transactions::poll_event`].

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::message::{Class, Message};
use super::wire::TransactionId;
use crate::Transmit;

/// When to resend a request and when to give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetransmitPolicy {
    /// First retransmission timeout; it doubles after each send.
    pub rto: Duration,
    /// Sends in all (RFC 8489's Rc); 1 means no retransmission (TCP).
    pub max_sends: u32,
    /// After the last send, wait `last_wait × rto` more (RFC 8489's Rm).
    pub last_wait: u32,
    /// Give up at this long after the start whatever the schedule says.
    pub deadline: Option<Duration>,
}

impl RetransmitPolicy {
    /// RFC 8489's UDP defaults: RTO 500 ms, Rc 7, Rm 16 (39.5 s in all).
    pub const RFC8489: RetransmitPolicy = RetransmitPolicy {
        rto: Duration::from_millis(500),
        max_sends: 7,
        last_wait: 16,
        deadline: None,
    };

    /// One send, then wait `timeout` (reliable transports: TCP).
    pub fn once(timeout: Duration) -> Self {
        Self {
            rto: timeout,
            max_sends: 1,
            last_wait: 1,
            deadline: Some(timeout),
        }
    }

    /// Resends every `rto` (doubling), giving up after `deadline`: for tests
    /// that may rightly get no answer, which must not wait 39.5 s.
    pub fn bounded(rto: Duration, deadline: Duration) -> Self {
        Self {
            rto,
            max_sends: 7,
            last_wait: 16,
            deadline: Some(deadline),
        }
    }

    /// When the transaction times out if nothing answers.
    fn give_up_after(&self) -> Duration {
        let mut total = Duration::ZERO;
        let mut rto = self.rto;
        for _ in 1..self.max_sends.max(1) {
            total += rto;
            rto *= 2;
        }
        total += self.rto * self.last_wait.max(1);
        self.deadline.map_or(total, |d| d.min(total))
    }
}

/// What happened to a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A response (success or error) arrived.
    Response {
        /// The transaction.
        id: TransactionId,
        /// Who sent the response.
        from: SocketAddr,
        /// The response.
        message: Message,
        /// Time from the first send to the response.
        rtt: Duration,
    },
    /// No response within the policy.
    TimedOut {
        /// The transaction.
        id: TransactionId,
    },
}

#[derive(Debug)]
struct Pending {
    dst: SocketAddr,
    payload: Vec<u8>,
    policy: RetransmitPolicy,
    started: Instant,
    sends: u32,
    next_send: Option<Instant>,
    give_up: Instant,
}

/// Outstanding client transactions.
#[derive(Debug, Default)]
pub struct Transactions {
    pending: BTreeMap<TransactionId, Pending>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// Datagrams that were not a response to anything outstanding.
    pub ignored: u64,
}

impl Transactions {
    /// No transactions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a request (its transaction id must be fresh and random); the
    /// first send is queued at once.
    pub fn start(
        &mut self,
        now: Instant,
        dst: SocketAddr,
        request: &Message,
        policy: RetransmitPolicy,
    ) {
        self.start_encoded(now, dst, request.transaction, request.encode(), policy);
    }

    /// [`Transactions::start`] for a request already encoded, such as one
    /// signed with MESSAGE-INTEGRITY.
    pub fn start_encoded(
        &mut self,
        now: Instant,
        dst: SocketAddr,
        id: TransactionId,
        payload: Vec<u8>,
        policy: RetransmitPolicy,
    ) {
        let mut pending = Pending {
            dst,
            payload,
            policy,
            started: now,
            sends: 0,
            next_send: Some(now),
            give_up: now + policy.give_up_after(),
        };
        self.send_due(now, &mut pending);
        self.pending.insert(id, pending);
    }

    /// Feeds a received datagram. Returns whether it answered an
    /// outstanding request (and was consumed).
    pub fn handle_input(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> bool {
        let Ok(message) = Message::decode(bytes) else {
            self.ignored += 1;
            return false;
        };
        if !matches!(message.class, Class::Success | Class::Error) {
            self.ignored += 1;
            return false;
        }
        let Some(pending) = self.pending.remove(&message.transaction) else {
            self.ignored += 1;
            return false;
        };
        self.events.push_back(Event::Response {
            id: message.transaction,
            from,
            message,
            rtt: now.saturating_duration_since(pending.started),
        });
        true
    }

    /// Resends or gives up on what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let ids: Vec<TransactionId> = self.pending.keys().copied().collect();
        for id in ids {
            let Some(mut pending) = self.pending.remove(&id) else {
                continue;
            };
            if now >= pending.give_up {
                self.events.push_back(Event::TimedOut { id });
                continue;
            }
            self.send_due(now, &mut pending);
            self.pending.insert(id, pending);
        }
    }

    /// Abandons a transaction without an event.
    pub fn cancel(&mut self, id: &TransactionId) {
        self.pending.remove(id);
    }

    /// The next datagram to send (`src` is `None`: the socket this machine
    /// is driven on).
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next result.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Transactions::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending
            .values()
            .map(|p| p.next_send.map_or(p.give_up, |s| s.min(p.give_up)))
            .min()
    }

    /// Whether requests are outstanding.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    fn send_due(&mut self, now: Instant, pending: &mut Pending) {
        let Some(at) = pending.next_send else {
            return;
        };
        if now < at {
            return;
        }
        self.transmits.push_back(Transmit {
            src: None,
            dst: pending.dst,
            payload: pending.payload.clone(),
        });
        pending.sends += 1;
        pending.next_send = if pending.sends < pending.policy.max_sends {
            let interval = pending.policy.rto * 2u32.saturating_pow(pending.sends - 1);
            Some(now + interval)
        } else {
            None
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::BINDING;

    const MS: Duration = Duration::from_millis(1);

    fn dst() -> SocketAddr {
        "198.18.0.2:3478".parse().expect("lit")
    }

    fn request(n: u8) -> Message {
        Message::new(Class::Request, BINDING, TransactionId([n; 12]))
    }

    fn drain(t: &mut Transactions) -> usize {
        std::iter::from_fn(|| t.poll_transmit()).count()
    }

    #[test]
    fn rfc8489_schedule_sends_seven_times_and_gives_up_at_39_5_s() {
        let t0 = Instant::now();
        let mut t = Transactions::new();
        t.start(t0, dst(), &request(1), RetransmitPolicy::RFC8489);
        assert_eq!(drain(&mut t), 1);
        let mut sends_at = vec![Duration::ZERO];
        while let Some(at) = t.poll_timeout() {
            t.handle_timeout(at);
            if drain(&mut t) == 1 {
                sends_at.push(at - t0);
            }
            if let Some(event) = t.poll_event() {
                assert_eq!(
                    event,
                    Event::TimedOut {
                        id: TransactionId([1; 12])
                    }
                );
                assert_eq!(at - t0, 39_500 * MS);
                break;
            }
        }
        let expected: Vec<Duration> = [0, 500, 1500, 3500, 7500, 15500, 31500]
            .iter()
            .map(|ms| *ms * MS)
            .collect();
        assert_eq!(sends_at, expected);
        assert!(t.is_idle());
    }

    #[test]
    fn a_response_ends_the_transaction_with_its_rtt() {
        let t0 = Instant::now();
        let mut t = Transactions::new();
        let req = request(2);
        t.start(t0, dst(), &req, RetransmitPolicy::RFC8489);
        drain(&mut t);
        let resp = Message::response_to(&req, Class::Success).encode();
        assert!(t.handle_input(t0 + 30 * MS, dst(), &resp));
        let Some(Event::Response { rtt, from, .. }) = t.poll_event() else {
            panic!("expected a response");
        };
        assert_eq!((rtt, from), (30 * MS, dst()));
        assert!(t.is_idle() && t.poll_timeout().is_none());
        assert!(
            !t.handle_input(t0 + 31 * MS, dst(), &resp),
            "a late duplicate is ignored"
        );
    }

    #[test]
    fn strangers_and_requests_are_ignored() {
        let t0 = Instant::now();
        let mut t = Transactions::new();
        t.start(t0, dst(), &request(3), RetransmitPolicy::RFC8489);
        let other = Message::response_to(&request(4), Class::Success).encode();
        assert!(!t.handle_input(t0, dst(), &other));
        assert!(!t.handle_input(t0, dst(), &request(3).encode()));
        assert!(!t.handle_input(t0, dst(), b"garbage"));
        assert_eq!(t.ignored, 3);
        assert!(!t.is_idle());
    }

    #[test]
    fn bounded_policy_gives_up_at_its_deadline() {
        let t0 = Instant::now();
        let mut t = Transactions::new();
        t.start(
            t0,
            dst(),
            &request(5),
            RetransmitPolicy::bounded(20 * MS, 100 * MS),
        );
        let mut sends = drain(&mut t);
        loop {
            let at = t.poll_timeout().expect("pending");
            t.handle_timeout(at);
            sends += drain(&mut t);
            if t.poll_event().is_some() {
                assert_eq!(at - t0, 100 * MS);
                break;
            }
        }
        assert_eq!(sends, 3, "at 0, 20 and 60 ms");
    }

    #[test]
    fn once_policy_sends_once() {
        let t0 = Instant::now();
        let mut t = Transactions::new();
        t.start(t0, dst(), &request(6), RetransmitPolicy::once(2000 * MS));
        assert_eq!(drain(&mut t), 1);
        assert_eq!(t.poll_timeout(), Some(t0 + 2000 * MS));
        t.handle_timeout(t0 + 2000 * MS);
        assert_eq!(drain(&mut t), 0);
        assert!(matches!(t.poll_event(), Some(Event::TimedOut { .. })));
    }
}
