//! SNTP (RFC 4330): how far this machine's clock is from the servers',
//! so two peers can agree on a moment to punch (manual 1.2.3).
//!
//! Sans-IO: [`Query`] asks several servers at once and retransmits on its
//! own schedule; its driver gives it `now` (monotonic), this machine's wall
//! clock at the start, and the datagrams that arrive. The wall clock is an
//! input, so a test can skew one peer by any amount. The answer is an
//! [`Estimate`]: the offset to add to the local clock, from the server with
//! the shortest round trip among those that agree (outliers dropped).

pub mod packet;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use packet::{Mode, Packet, Timestamp};

use crate::Transmit;

/// Attempts per server.
const ATTEMPTS: u32 = 3;
/// Wait before asking a server again.
const RETRY: Duration = Duration::from_millis(500);
/// Samples within this of the median offset, plus twice the median round
/// trip, agree with it.
const AGREEMENT: Duration = Duration::from_millis(5);

/// One server's answer, on the local clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// The server.
    pub server: SocketAddr,
    /// Add this to the local clock to get the server's (nanoseconds).
    pub offset_ns: i64,
    /// The round trip, minus the server's own processing (nanoseconds).
    pub delay_ns: i64,
}

/// Why an answer was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejected {
    /// Not a packet.
    #[error(transparent)]
    Malformed(#[from] packet::TooShort),
    /// Not a server's answer.
    #[error("not a server answer (mode {0:?})")]
    Mode(Mode),
    /// It does not answer our request.
    #[error("the origin timestamp is not our request's")]
    NotOurs,
    /// The server asks us to go away (stratum 0), with its kiss code.
    #[error("kiss-o'-death {0}")]
    Kiss(String),
    /// The server says its own clock is not synchronised.
    #[error("the server's clock is unsynchronised")]
    Unsynchronised,
    /// Its timestamps make no sense (zero, or a negative round trip).
    #[error("nonsensical timestamps")]
    Nonsense,
}

impl Sample {
    /// The sample an answer gives: `sent` and `received` are the local wall
    /// clock (Unix nanoseconds) when the request left and the answer came;
    /// `nonce` is what the request carried.
    pub fn from_answer(
        server: SocketAddr,
        nonce: u64,
        sent: i128,
        answer: &[u8],
        received: i128,
    ) -> Result<Sample, Rejected> {
        Sample::from_packet(server, nonce, sent, &Packet::decode(answer)?, received)
    }

    /// [`Sample::from_answer`] for an answer already decoded.
    pub fn from_packet(
        server: SocketAddr,
        nonce: u64,
        sent: i128,
        p: &Packet,
        received: i128,
    ) -> Result<Sample, Rejected> {
        if !matches!(p.mode, Mode::Server | Mode::Broadcast) {
            return Err(Rejected::Mode(p.mode));
        }
        if p.origin.0 != nonce {
            return Err(Rejected::NotOurs);
        }
        if p.stratum == 0 {
            return Err(Rejected::Kiss(
                String::from_utf8_lossy(&p.reference_id).into_owned(),
            ));
        }
        if p.leap == 3 || p.stratum > 15 {
            return Err(Rejected::Unsynchronised);
        }
        if p.transmit.0 == 0 || p.receive.0 == 0 {
            return Err(Rejected::Nonsense);
        }
        let (t2, t3) = (p.receive.to_unix_nanos(), p.transmit.to_unix_nanos());
        let offset = ((t2 - sent) + (t3 - received)) / 2;
        let delay = (received - sent) - (t3 - t2);
        if delay < 0 || t3 < t2 {
            return Err(Rejected::Nonsense);
        }
        Ok(Sample {
            server,
            offset_ns: i64::try_from(offset).map_err(|_| Rejected::Nonsense)?,
            delay_ns: i64::try_from(delay).map_err(|_| Rejected::Nonsense)?,
        })
    }
}

/// What the servers agree on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Estimate {
    /// Add this to the local clock (nanoseconds).
    pub offset_ns: i64,
    /// The round trip of the sample it came from.
    pub delay_ns: i64,
    /// The samples that agreed.
    pub agreed: Vec<Sample>,
    /// The samples dropped as outliers.
    pub outliers: Vec<Sample>,
}

/// Combines samples: those within the agreement window of the median
/// offset are kept, and the one with the shortest round trip gives the
/// offset (NTP's clock filter does the same). `None` without samples.
pub fn combine(samples: &[Sample]) -> Option<Estimate> {
    let mut offsets: Vec<i64> = samples.iter().map(|s| s.offset_ns).collect();
    let mut delays: Vec<i64> = samples.iter().map(|s| s.delay_ns).collect();
    if offsets.is_empty() {
        return None;
    }
    offsets.sort_unstable();
    delays.sort_unstable();
    let median = offsets[offsets.len() / 2];
    let window =
        2 * delays[delays.len() / 2] + i64::try_from(AGREEMENT.as_nanos()).unwrap_or(i64::MAX);
    let (agreed, outliers): (Vec<Sample>, Vec<Sample>) = samples
        .iter()
        .partition(|s| (s.offset_ns - median).abs() <= window);
    let best = agreed.iter().min_by_key(|s| s.delay_ns)?;
    Some(Estimate {
        offset_ns: best.offset_ns,
        delay_ns: best.delay_ns,
        agreed: agreed.clone(),
        outliers,
    })
}

/// One server's progress.
struct Asked {
    server: SocketAddr,
    nonce: u64,
    /// Each request sent: its nonce and the local wall time it left, so a
    /// late answer to an earlier attempt is timed from its own request.
    sent: Vec<(u64, i128)>,
    attempts: u32,
    next: Instant,
    done: bool,
}

/// Asks several servers at once.
pub struct Query {
    asked: Vec<Asked>,
    start_mono: Instant,
    start_wall: i128,
    deadline: Instant,
    samples: Vec<Sample>,
    rejected: Vec<(SocketAddr, Rejected)>,
    queue: VecDeque<Transmit>,
}

impl Query {
    /// Starts asking `servers`; `wall` is the local wall clock (Unix
    /// nanoseconds) at `now`, `nonces` one random value per server, and
    /// the query ends at `now + limit` at the latest.
    pub fn new(
        servers: &[SocketAddr],
        nonces: &[u64],
        now: Instant,
        wall: i128,
        limit: Duration,
    ) -> Query {
        let asked = servers
            .iter()
            .zip(nonces)
            .map(|(&server, &nonce)| Asked {
                server,
                nonce,
                sent: Vec::new(),
                attempts: 0,
                next: now,
                done: false,
            })
            .collect();
        let mut query = Query {
            asked,
            start_mono: now,
            start_wall: wall,
            deadline: now + limit,
            samples: Vec::new(),
            rejected: Vec::new(),
            queue: VecDeque::new(),
        };
        query.handle_timeout(now);
        query
    }

    /// The local wall clock at `now`, read from the one reading at start.
    fn wall(&self, now: Instant) -> i128 {
        self.start_wall + now.saturating_duration_since(self.start_mono).as_nanos() as i128
    }

    /// Sends what is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let wall = self.wall(now);
        if now >= self.deadline {
            for a in &mut self.asked {
                a.done = true;
            }
            return;
        }
        for a in &mut self.asked {
            if a.done || now < a.next {
                continue;
            }
            if a.attempts == ATTEMPTS {
                a.done = true;
                continue;
            }
            let nonce = a.nonce.wrapping_add(u64::from(a.attempts));
            a.attempts += 1;
            a.sent.push((nonce, wall));
            a.next = now + RETRY;
            self.queue.push_back(Transmit {
                src: None,
                dst: a.server,
                payload: Packet::request(nonce).encode().to_vec(),
            });
        }
    }

    /// A datagram from `from`. Answers from servers not asked, or to
    /// requests not ours, are ignored (and counted as rejected).
    pub fn handle_input(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let received = self.wall(now);
        let Some(a) = self.asked.iter_mut().find(|a| a.server == from && !a.done) else {
            return;
        };
        // Which request it answers (its origin field), if any of ours.
        let answer = Packet::decode(bytes).ok();
        let asked = answer.as_ref().and_then(|p| {
            a.sent
                .iter()
                .copied()
                .find(|(n, _)| *n == p.origin.0)
                .map(|request| (p, request))
        });
        let Some((answer, (nonce, sent))) = asked else {
            self.rejected.push((from, Rejected::NotOurs));
            return;
        };
        match Sample::from_packet(from, nonce, sent, answer, received) {
            Ok(sample) => {
                a.done = true;
                self.samples.push(sample);
            }
            Err(why) => self.rejected.push((from, why)),
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.queue.pop_front()
    }

    /// When to call [`Query::handle_timeout`] next; `None` once done.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_done() {
            return None;
        }
        self.asked
            .iter()
            .filter(|a| !a.done)
            .map(|a| a.next)
            .min()
            .map(|next| next.min(self.deadline))
    }

    /// Every server has answered or given up.
    pub fn is_done(&self) -> bool {
        self.asked.iter().all(|a| a.done)
    }

    /// What the answers so far agree on.
    pub fn estimate(&self) -> Option<Estimate> {
        combine(&self.samples)
    }

    /// Answers that were not used, and why.
    pub fn rejected(&self) -> &[(SocketAddr, Rejected)] {
        &self.rejected
    }
}

/// A server's answer to `request`, its clock reading `wall` (Unix
/// nanoseconds) both when it received and when it answered. `None` for
/// anything that is not a client's request.
pub fn answer(request: &[u8], wall: i128) -> Option<[u8; packet::LEN]> {
    let req = Packet::decode(request).ok()?;
    if req.mode != Mode::Client {
        return None;
    }
    let now = Timestamp::from_unix_nanos(wall);
    Some(
        Packet {
            leap: 0,
            version: req.version.clamp(1, 4),
            mode: Mode::Server,
            stratum: 1,
            poll: req.poll,
            precision: -20,
            root_delay: 0,
            root_dispersion: 0,
            reference_id: *b"P2PD",
            reference: now,
            origin: req.transmit,
            receive: now,
            transmit: now,
        }
        .encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_fuzz_body_holds_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            crate::fuzz::ntp_packet(&bytes);
        }
    }

    const SEC: i128 = 1_000_000_000;
    const MS: i128 = 1_000_000;

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([198, 18, 0, n], 123))
    }

    /// Runs a query against simulated servers: server `i` has clock
    /// `true + skews[i]`, answers after `one_way` each way; the client's
    /// clock is `true + client_skew`.
    fn simulate(skews: &[i128], client_skew: i128, one_way: Duration, lost_first: bool) -> Query {
        let start = Instant::now();
        let true_start = 1_796_515_200 * SEC;
        let servers: Vec<SocketAddr> = (1..=skews.len() as u8).map(addr).collect();
        let nonces: Vec<u64> = (0..skews.len() as u64)
            .map(|n| 0x1234_5678_0000 + n)
            .collect();
        let mut q = Query::new(
            &servers,
            &nonces,
            start,
            true_start + client_skew,
            Duration::from_secs(3),
        );
        let mut now = start;
        let mut dropped = !lost_first;
        for _ in 0..100 {
            while let Some(t) = q.poll_transmit() {
                if !dropped {
                    dropped = true;
                    continue;
                }
                let i = servers.iter().position(|s| *s == t.dst).expect("asked");
                let at_server = now + one_way;
                let true_then = true_start + at_server.duration_since(start).as_nanos() as i128;
                let reply = answer(&t.payload, true_then + skews[i]).expect("a request");
                q.handle_input(at_server + one_way, t.dst, &reply);
            }
            let Some(next) = q.poll_timeout() else { break };
            now = next;
            q.handle_timeout(now);
        }
        q
    }

    #[test]
    fn a_skewed_client_learns_its_offset() {
        let q = simulate(&[0, 0, 0], 250 * MS, Duration::from_millis(10), false);
        assert!(q.is_done());
        let e = q.estimate().expect("an estimate");
        assert!((i128::from(e.offset_ns) + 250 * MS).abs() < MS, "{e:?}");
        assert_eq!(e.agreed.len(), 3);
        assert!((i128::from(e.delay_ns) - 20 * MS).abs() < MS, "{e:?}");
    }

    #[test]
    fn a_lying_server_is_an_outlier() {
        let q = simulate(
            &[0, 10 * SEC, MS],
            -3 * SEC,
            Duration::from_millis(2),
            false,
        );
        let e = q.estimate().expect("an estimate");
        assert_eq!(e.outliers.len(), 1);
        assert_eq!(e.outliers[0].server, addr(2));
        assert!((i128::from(e.offset_ns) - 3 * SEC).abs() < 2 * MS, "{e:?}");
    }

    #[test]
    fn a_lost_request_is_asked_again() {
        let q = simulate(&[0], 0, Duration::from_millis(1), true);
        let e = q.estimate().expect("the retry was answered");
        assert!(i128::from(e.offset_ns).abs() < MS);
    }

    #[test]
    fn silence_ends_at_the_deadline_without_an_estimate() {
        let start = Instant::now();
        let mut q = Query::new(&[addr(1)], &[7], start, 0, Duration::from_secs(3));
        let mut sent = 0;
        while let Some(next) = q.poll_timeout() {
            while q.poll_transmit().is_some() {
                sent += 1;
            }
            q.handle_timeout(next);
        }
        while q.poll_transmit().is_some() {
            sent += 1;
        }
        assert_eq!(sent, ATTEMPTS);
        assert!(q.is_done() && q.estimate().is_none());
    }

    #[test]
    fn forged_and_kiss_answers_are_rejected() {
        let start = Instant::now();
        let mut q = Query::new(&[addr(1)], &[42], start, 5 * SEC, Duration::from_secs(3));
        let _ = q.poll_transmit();
        let forged = answer(&Packet::request(41).encode(), 5 * SEC).expect("answer");
        q.handle_input(start, addr(1), &forged);
        let mut kiss =
            Packet::decode(&answer(&Packet::request(42).encode(), 5 * SEC).expect("answer"))
                .expect("decode");
        kiss.stratum = 0;
        kiss.reference_id = *b"RATE";
        q.handle_input(start, addr(1), &kiss.encode());
        q.handle_input(
            start,
            addr(9),
            &answer(&Packet::request(42).encode(), 5 * SEC).expect("answer"),
        );
        assert!(q.estimate().is_none());
        assert_eq!(
            q.rejected()
                .iter()
                .map(|(_, r)| r.clone())
                .collect::<Vec<_>>(),
            vec![Rejected::NotOurs, Rejected::Kiss("RATE".into())]
        );
    }
}
