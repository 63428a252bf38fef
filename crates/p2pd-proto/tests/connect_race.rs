//! The connect race on virtual time: every order of failures, successes
//! and timeouts a driver can report, and the outcome each gives.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use Strategy::{Direct, Punch, Relay, Reverse};
use p2pd_proto::addr::PeerAddr;
use p2pd_proto::connect::defaults::{STAGGER_NATTED, STAGGER_OPEN};
use p2pd_proto::connect::{
    Action, AttemptId, Budgets, Outcome, Race, RaceConfig, Reason, ReverseToken, Strategy,
    StrategyError, stagger_for,
};

const MS: Duration = Duration::from_millis(1);

#[test]
fn direct_failing_before_the_head_start_starts_reverse_at_once() {
    let (mut race, t0) = race(&[Direct, Reverse], STAGGER_OPEN);
    let [a, b] = connects(&mut race);
    race.handle_connect_failed(t0 + MS, a, "connection refused".into());
    assert_eq!(actions(&mut race), [], "one destination left");
    race.handle_connect_failed(t0 + 2 * MS, b, "connection refused".into());
    assert!(matches!(
        actions(&mut race)[..],
        [Action::WaitSignaling { .. }]
    ));
    assert!(!race.is_decided());
    assert_eq!(
        race.poll_timeout(),
        Some((t0 + 2 * MS + REVERSE_MS, Reason::Budget(Reverse)))
    );
}

#[test]
fn reverse_starts_at_the_head_start_while_direct_is_pending() {
    let (mut race, t0) = race(&[Direct, Reverse], STAGGER_NATTED);
    connects(&mut race);
    assert_eq!(race.poll_timeout(), Some((t0 + 2 * MS, Reason::HeadStart)));
    race.handle_timeout(t0 + MS);
    assert_eq!(actions(&mut race), [], "too early");
    race.handle_timeout(t0 + 2 * MS);
    assert!(matches!(
        actions(&mut race)[..],
        [Action::WaitSignaling { .. }]
    ));
    assert_eq!(
        race.poll_timeout(),
        Some((t0 + DIRECT_MS, Reason::Budget(Direct))),
        "nothing left to start"
    );
}

#[test]
fn both_failing_lists_both_in_order_of_failure() {
    let (mut race, t0) = race(&[Direct, Reverse], STAGGER_NATTED);
    let [a, b] = connects(&mut race);
    let reverse = start_reverse(&mut race, t0 + 2 * MS);
    race.handle_signaling_unavailable(t0 + 3 * MS, reverse);
    assert_eq!(actions(&mut race), [Action::Cancel { attempt: reverse }]);
    race.handle_connect_failed(t0 + 4 * MS, b, "connection refused".into());
    race.handle_connect_failed(t0 + 5 * MS, a, "no route to host".into());
    assert_eq!(
        tried(&mut race),
        [
            (Reverse, "no signaling broker is reachable".to_owned()),
            (
                Direct,
                "192.168.1.3:4000: connection refused; 198.18.2.1:4000: no route to host"
                    .to_owned()
            ),
        ]
    );
    assert_eq!(race.poll_timeout(), None);
}

#[test]
fn the_overall_timeout_reports_every_running_strategy_in_order_of_start() {
    let (mut race, t0) = race_with(&[Direct, Reverse, Punch], STAGGER_NATTED, |c| {
        c.overall = 1000 * MS;
    });
    let [a, b] = connects(&mut race);
    let reverse = start_reverse(&mut race, t0 + 2 * MS);
    race.handle_signaling_ready(t0 + 3 * MS, reverse);
    actions(&mut race);
    race.handle_reverse_sent(t0 + 3 * MS, reverse, 2);
    // Punch starts at its head start and waits for signaling.
    race.handle_timeout(t0 + 5 * MS);
    let [Action::WaitSignaling { attempt: punch }] = actions(&mut race)[..] else {
        panic!("punch waits for signaling")
    };
    assert_eq!(race.poll_timeout(), Some((t0 + 1000 * MS, Reason::Overall)));
    race.handle_timeout(t0 + 1000 * MS);
    assert_eq!(
        actions(&mut race),
        [
            Action::Cancel { attempt: a },
            Action::Cancel { attempt: b },
            Action::Cancel { attempt: reverse },
            Action::Cancel { attempt: punch },
        ]
    );
    assert_eq!(
        tried(&mut race),
        [
            (Direct, "the whole connect timed out".to_owned()),
            (Reverse, "the whole connect timed out".to_owned()),
            (Punch, "the whole connect timed out".to_owned()),
        ]
    );
}

#[test]
fn a_strategys_own_budget_ends_it_and_the_race_goes_on() {
    let (mut race, t0) = race(&[Direct, Reverse], STAGGER_NATTED);
    let [a, b] = connects(&mut race);
    let reverse = start_reverse(&mut race, t0 + 2 * MS);
    race.handle_timeout(t0 + DIRECT_MS);
    assert_eq!(
        actions(&mut race),
        [Action::Cancel { attempt: a }, Action::Cancel { attempt: b }]
    );
    assert!(!race.is_decided());
    race.handle_signaling_ready(t0 + 2100 * MS, reverse);
    actions(&mut race);
    race.handle_reverse_sent(t0 + 2100 * MS, reverse, 1);
    assert_eq!(
        race.poll_timeout(),
        Some((t0 + 2 * MS + REVERSE_MS, Reason::Budget(Reverse)))
    );
    race.handle_timeout(t0 + 2 * MS + REVERSE_MS);
    assert_eq!(
        tried(&mut race),
        [
            (
                Direct,
                "no answer within 2000 ms from 198.18.2.1:4000, 192.168.1.3:4000".to_owned()
            ),
            (
                Reverse,
                "the peer did not connect back within 3000 ms".to_owned()
            ),
        ]
    );
}

#[test]
fn a_budget_ending_with_the_overall_timeout_counts_as_the_overall_timeout() {
    let (mut race, t0) = race_with(&[Direct], STAGGER_NATTED, |c| c.overall = DIRECT_MS);
    connects(&mut race);
    race.handle_timeout(t0 + DIRECT_MS);
    assert_eq!(
        tried(&mut race),
        [(Direct, "the whole connect timed out".to_owned())]
    );
}

#[test]
fn the_second_strategy_winning_cancels_the_first() {
    let (mut race, t0) = race(&[Direct, Reverse], STAGGER_NATTED);
    let [a, b] = connects(&mut race);
    let reverse = start_reverse(&mut race, t0 + 2 * MS);
    race.handle_signaling_ready(t0 + 3 * MS, reverse);
    assert_eq!(
        actions(&mut race),
        [Action::SendReverse {
            attempt: reverse,
            token: token()
        }]
    );
    race.handle_reverse_sent(t0 + 3 * MS, reverse, 1);
    let connection = race
        .handle_dial_back(t0 + 5 * MS, token())
        .expect("our token");
    assert_eq!(
        race.poll_outcome(),
        Some(Outcome::Won {
            strategy: Reverse,
            attempt: connection
        })
    );
    assert_eq!(race.poll_outcome(), None, "given once");
    assert_eq!(
        actions(&mut race),
        [
            Action::Cancel { attempt: reverse },
            Action::Cancel { attempt: a },
            Action::Cancel { attempt: b },
        ]
    );
    assert_eq!(race.poll_timeout(), None);
}

#[test]
fn the_first_connection_wins_and_later_ones_are_closed() {
    let (mut race, t0) = race(&[Direct, Reverse], STAGGER_NATTED);
    let [a, b] = connects(&mut race);
    race.handle_connected(t0 + MS, b);
    assert_eq!(actions(&mut race), [Action::Cancel { attempt: a }]);
    assert_eq!(
        race.poll_outcome(),
        Some(Outcome::Won {
            strategy: Direct,
            attempt: b
        })
    );
    race.handle_connected(t0 + 2 * MS, a);
    assert_eq!(actions(&mut race), [Action::Close { attempt: a }]);
    race.handle_timeout(t0 + 2 * MS);
    assert_eq!(actions(&mut race), [], "nothing starts after the decision");
}

#[test]
fn a_dial_back_after_the_decision_is_closed() {
    let (mut race, t0) = race(&[Reverse, Direct], STAGGER_OPEN);
    let reverse = wait_signaling(&mut race);
    race.handle_signaling_ready(t0, reverse);
    actions(&mut race);
    race.handle_reverse_sent(t0, reverse, 1);
    let [_, b] = connects_at(&mut race, t0 + STAGGER_OPEN);
    race.handle_connected(t0 + 251 * MS, b);
    actions(&mut race);
    assert!(matches!(
        race.poll_outcome(),
        Some(Outcome::Won {
            strategy: Direct,
            ..
        })
    ));
    let late = race
        .handle_dial_back(t0 + 252 * MS, token())
        .expect("still our token");
    assert_eq!(actions(&mut race), [Action::Close { attempt: late }]);
}

#[test]
fn a_second_dial_back_is_closed_without_touching_the_winner() {
    let (mut race, t0) = race(&[Reverse], STAGGER_OPEN);
    let reverse = wait_signaling(&mut race);
    race.handle_signaling_ready(t0, reverse);
    actions(&mut race);
    // The dial-back may overtake the driver's report of the send.
    let first = race.handle_dial_back(t0 + MS, token()).expect("ours");
    let second = race.handle_dial_back(t0 + MS, token()).expect("ours");
    assert_ne!(first, second);
    assert_eq!(
        actions(&mut race),
        [
            Action::Cancel { attempt: reverse },
            Action::Close { attempt: second }
        ]
    );
    assert_eq!(
        race.poll_outcome(),
        Some(Outcome::Won {
            strategy: Reverse,
            attempt: first
        })
    );
}

#[test]
fn a_result_reported_after_its_budget_loses_to_the_budget() {
    let (mut race, t0) = race(&[Direct], STAGGER_NATTED);
    let [a, _] = connects(&mut race);
    race.handle_connected(t0 + DIRECT_MS + MS, a);
    assert_eq!(
        tried(&mut race),
        [(
            Direct,
            "no answer within 2000 ms from 198.18.2.1:4000, 192.168.1.3:4000".to_owned()
        )]
    );
    assert!(actions(&mut race).contains(&Action::Close { attempt: a }));
}

#[test]
fn an_empty_strategy_list_fails_at_once_with_nothing_tried() {
    let (mut race, _) = race(&[], STAGGER_NATTED);
    assert_eq!(actions(&mut race), []);
    assert_eq!(race.poll_outcome(), Some(Outcome::Failed { tried: vec![] }));
    assert_eq!(race.poll_timeout(), None);
}

#[test]
fn relay_waits_for_signaling_then_hands_the_relay_to_the_driver() {
    let (mut race, t0) = race(&[Relay], STAGGER_OPEN);
    let [Action::WaitSignaling { attempt }] = actions(&mut race)[..] else {
        panic!("relay waits for signaling")
    };
    race.handle_signaling_ready(t0 + MS, attempt);
    let [Action::Relay { attempt: relay }] = actions(&mut race)[..] else {
        panic!("the driver relays")
    };
    race.handle_connected(t0 + 2 * MS, relay);
    assert_eq!(
        race.poll_outcome(),
        Some(Outcome::Won {
            strategy: Relay,
            attempt: relay
        })
    );
}

#[test]
fn relay_starts_after_a_long_head_start_or_when_the_others_failed() {
    let (mut race, t0) = race(&[Direct, Relay], STAGGER_NATTED);
    let [a, b] = connects(&mut race);
    let (at, _) = race.poll_timeout().expect("a head start");
    assert_eq!(at - t0, p2pd_proto::connect::defaults::RELAY_HEAD_START);
    race.handle_connect_failed(t0 + 5 * MS, a, "connection refused".into());
    assert_eq!(actions(&mut race), []);
    race.handle_connect_failed(t0 + 5 * MS, b, "connection refused".into());
    assert!(
        matches!(actions(&mut race)[..], [Action::WaitSignaling { .. }]),
        "relay starts as soon as direct has failed"
    );
}

#[test]
fn a_relay_that_fails_reports_why_and_one_out_of_time_says_so() {
    let (mut failing, t0) = race(&[Relay], STAGGER_OPEN);
    let [Action::WaitSignaling { attempt }] = actions(&mut failing)[..] else {
        panic!("relay waits for signaling")
    };
    failing.handle_signaling_ready(t0 + MS, attempt);
    let [Action::Relay { attempt: relay }] = actions(&mut failing)[..] else {
        panic!("the driver relays")
    };
    failing.handle_connect_failed(t0 + 2 * MS, relay, "no TURN server is configured".into());
    assert_eq!(
        tried(&mut failing),
        [(Relay, "no TURN server is configured".to_owned())]
    );
    let (mut slow, t0) = race(&[Relay], STAGGER_OPEN);
    let [Action::WaitSignaling { attempt }] = actions(&mut slow)[..] else {
        panic!("relay waits for signaling")
    };
    slow.handle_signaling_ready(t0 + MS, attempt);
    let _ = actions(&mut slow);
    let (at, _) = slow.poll_timeout().expect("its budget");
    slow.handle_timeout(at);
    let tried = tried(&mut slow);
    assert_eq!(tried[0].0, Relay);
    assert!(
        tried[0].1.starts_with("the relay did not connect within"),
        "{tried:?}"
    );
}

#[test]
fn punch_waits_for_signaling_then_hands_the_punch_to_the_driver() {
    let (mut failing, t0) = race(&[Punch], STAGGER_OPEN);
    let [Action::WaitSignaling { attempt }] = actions(&mut failing)[..] else {
        panic!("punch waits for signaling")
    };
    failing.handle_signaling_ready(t0 + MS, attempt);
    let [Action::Punch { attempt: punch }] = actions(&mut failing)[..] else {
        panic!("the driver punches")
    };
    failing.handle_connect_failed(t0 + 2 * MS, punch, "the peer refused: no".into());
    assert_eq!(actions(&mut failing), [Action::Cancel { attempt }]);
    assert_eq!(
        tried(&mut failing),
        [(Punch, "the peer refused: no".to_owned())]
    );

    let (mut winning, t0) = race(&[Punch, Direct], STAGGER_OPEN);
    let [Action::WaitSignaling { attempt }] = actions(&mut winning)[..] else {
        panic!("punch waits for signaling")
    };
    winning.handle_signaling_ready(t0 + MS, attempt);
    let [Action::Punch { attempt: punch }] = actions(&mut winning)[..] else {
        panic!("the driver punches")
    };
    winning.handle_connected(t0 + 2 * MS, punch);
    assert_eq!(
        winning.poll_outcome(),
        Some(Outcome::Won {
            strategy: Punch,
            attempt: punch
        })
    );
}

#[test]
fn no_destination_to_dial_fails_direct_at_once() {
    let t0 = Instant::now();
    let mut race = Race::new(
        t0,
        config(&[Direct, Reverse], STAGGER_OPEN),
        vec![],
        token(),
    );
    assert!(matches!(
        actions(&mut race)[..],
        [Action::WaitSignaling { .. }]
    ));
    race.handle_timeout(t0 + REVERSE_MS);
    assert_eq!(
        tried(&mut race),
        [
            (Direct, "the address lists no reachable endpoint".to_owned()),
            (Reverse, "no signaling broker is reachable".to_owned()),
        ]
    );
}

#[test]
fn one_refused_destination_leaves_the_others_dialling() {
    let (mut race, t0) = race(&[Direct], STAGGER_NATTED);
    let [a, b] = connects(&mut race);
    race.handle_connect_failed(t0 + MS, a, "connection refused".into());
    race.handle_connected(t0 + 2 * MS, b);
    assert_eq!(actions(&mut race), [], "nothing left to cancel");
    assert_eq!(
        race.poll_outcome(),
        Some(Outcome::Won {
            strategy: Direct,
            attempt: b
        })
    );
}

#[test]
fn the_head_start_is_long_only_when_every_endpoint_is_open() {
    let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let open = format!("-[0,198.18.2.1,198.18.2.1,4000,1,1,0]-[0,fd00::2,fe80::2,4000,1,1,0]-{id}");
    let mixed =
        format!("-[0,198.18.2.1,198.18.2.1,4000,1,1,0]-[0,fd00::2,fe80::2,4000,5,2,0]-{id}");
    let natted = format!("-[0,198.18.2.1,192.168.2.2,4000,6,6,0]-0-{id}");
    let peer = |text: &str| text.parse::<PeerAddr>().expect("valid address");
    assert_eq!(stagger_for(&peer(&open)), STAGGER_OPEN);
    assert_eq!(stagger_for(&peer(&mixed)), STAGGER_NATTED);
    assert_eq!(stagger_for(&peer(&natted)), STAGGER_NATTED);
    assert_eq!(STAGGER_OPEN, 250 * MS);
    assert_eq!(STAGGER_NATTED, 2 * MS);
}

#[test]
fn reverse_waiting_for_signaling_past_its_budget_says_no_broker_is_reachable() {
    let (mut race, t0) = race(&[Reverse], STAGGER_NATTED);
    let reverse = wait_signaling(&mut race);
    race.handle_timeout(t0 + REVERSE_MS - MS);
    assert!(!race.is_decided());
    race.handle_timeout(t0 + REVERSE_MS);
    assert_eq!(actions(&mut race), [Action::Cancel { attempt: reverse }]);
    assert_eq!(
        tried(&mut race),
        [(Reverse, "no signaling broker is reachable".to_owned())]
    );
}

#[test]
fn reverse_sent_on_no_broker_fails_at_once() {
    let (mut race, t0) = race(&[Reverse], STAGGER_NATTED);
    let reverse = wait_signaling(&mut race);
    race.handle_signaling_ready(t0 + MS, reverse);
    actions(&mut race);
    race.handle_reverse_sent(t0 + MS, reverse, 0);
    assert_eq!(
        tried(&mut race),
        [(
            Reverse,
            "none of the brokers the peer's address lists is connected".to_owned()
        )]
    );
}

#[test]
fn a_dial_back_with_another_token_is_ignored() {
    let (mut race, t0) = race(&[Reverse], STAGGER_NATTED);
    let reverse = wait_signaling(&mut race);
    race.handle_signaling_ready(t0 + MS, reverse);
    actions(&mut race);
    race.handle_reverse_sent(t0 + MS, reverse, 1);
    let other = ReverseToken::from_random(7);
    assert_eq!(race.handle_dial_back(t0 + 2 * MS, other), None);
    assert_eq!(actions(&mut race), []);
    assert!(!race.is_decided());
    let mine = race.handle_dial_back(t0 + 3 * MS, token()).expect("ours");
    assert_eq!(
        race.poll_outcome(),
        Some(Outcome::Won {
            strategy: Reverse,
            attempt: mine
        })
    );
}

#[test]
fn reports_about_unknown_or_finished_attempts_change_nothing() {
    let (mut race, t0) = race(&[Direct, Reverse], STAGGER_OPEN);
    let [a, _] = connects(&mut race);
    race.handle_signaling_ready(t0 + MS, a);
    race.handle_reverse_sent(t0 + MS, a, 3);
    race.handle_connect_failed(t0 + MS, a, "refused".into());
    race.handle_connect_failed(t0 + MS, a, "refused twice".into());
    assert_eq!(actions(&mut race), []);
    assert!(!race.is_decided());
}

// Helpers.

const DIRECT_MS: Duration = Duration::from_millis(2000);
const REVERSE_MS: Duration = Duration::from_millis(3000);

fn config(strategies: &[Strategy], stagger: Duration) -> RaceConfig {
    RaceConfig {
        strategies: strategies.to_vec(),
        budgets: Budgets {
            direct: DIRECT_MS,
            reverse: REVERSE_MS,
            punch: 3000 * MS,
            relay: 8000 * MS,
        },
        overall: 15_000 * MS,
        stagger,
    }
}

fn race(strategies: &[Strategy], stagger: Duration) -> (Race, Instant) {
    race_with(strategies, stagger, |_| {})
}

fn race_with(
    strategies: &[Strategy],
    stagger: Duration,
    tweak: impl FnOnce(&mut RaceConfig),
) -> (Race, Instant) {
    let mut config = config(strategies, stagger);
    tweak(&mut config);
    let t0 = Instant::now();
    (Race::new(t0, config, destinations(), token()), t0)
}

fn destinations() -> Vec<SocketAddr> {
    vec![
        "198.18.2.1:4000".parse().expect("literal"),
        "192.168.1.3:4000".parse().expect("literal"),
    ]
}

fn token() -> ReverseToken {
    ReverseToken::from_random(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff)
}

fn actions(race: &mut Race) -> Vec<Action> {
    std::iter::from_fn(|| race.poll_action()).collect()
}

/// The two connects direct has just asked for, checking their destinations.
fn connects(race: &mut Race) -> [AttemptId; 2] {
    match actions(race)[..] {
        [
            Action::Connect {
                attempt: a,
                dst: da,
            },
            Action::Connect {
                attempt: b,
                dst: db,
            },
        ] => {
            assert_eq!(vec![da, db], destinations());
            [a, b]
        }
        ref other => panic!("expected two connects, got {other:?}"),
    }
}

/// Direct's connects once its head start at `at` has come.
fn connects_at(race: &mut Race, at: Instant) -> [AttemptId; 2] {
    assert_eq!(race.poll_timeout(), Some((at, Reason::HeadStart)));
    race.handle_timeout(at);
    connects(race)
}

/// The reverse attempt, once its head start at `at` has come.
fn start_reverse(race: &mut Race, at: Instant) -> AttemptId {
    assert_eq!(race.poll_timeout(), Some((at, Reason::HeadStart)));
    race.handle_timeout(at);
    wait_signaling(race)
}

fn wait_signaling(race: &mut Race) -> AttemptId {
    match actions(race)[..] {
        [Action::WaitSignaling { attempt }] => attempt,
        ref other => panic!("expected a wait for signaling, got {other:?}"),
    }
}

/// The `tried` list of a failed race, as the texts users see.
fn tried(race: &mut Race) -> Vec<(Strategy, String)> {
    match race.poll_outcome() {
        Some(Outcome::Failed { tried }) => tried
            .into_iter()
            .map(|(s, e): (Strategy, StrategyError)| (s, e.to_string()))
            .collect(),
        other => panic!("expected a failed race, got {other:?}"),
    }
}

/// A driver that reports results in random orders at random times, and the
/// invariants every race keeps whatever it is told.
mod random_orders {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::collection::vec;
    use proptest::prelude::{Just, any, prop_assert, prop_assert_eq, prop_oneof, proptest};
    use proptest::strategy::Strategy as _;

    use super::*;

    proptest! {
        #[test]
        fn every_race_ends_once_in_time_and_accounts_for_every_attempt(
            strategies in Just(Strategy::ALL.to_vec()).prop_shuffle(),
            started in 0usize..=4,
            budgets in [1u32..4000, 1u32..4000, 1u32..4000, 1u32..4000],
            overall in 1u32..6000,
            stagger in prop_oneof![Just(0u32), Just(2), Just(250)],
            dsts in 0usize..=3,
            steps in vec(step(), 0..40),
        ) {
            let strategies = strategies[..started].to_vec();
            let config = RaceConfig {
                strategies: strategies.clone(),
                budgets: Budgets {
                    direct: MS * budgets[0],
                    reverse: MS * budgets[1],
                    punch: MS * budgets[2],
                    relay: MS * budgets[3],
                },
                overall: MS * overall,
                stagger: MS * stagger,
            };
            let mut sim = Sim::new(config, dsts);
            for step in steps {
                sim.apply(step);
            }
            for _ in 0..1000 {
                if sim.race.poll_timeout().is_none() {
                    break;
                }
                sim.advance(u32::from(u16::MAX));
            }

            prop_assert!(sim.violations.is_empty(), "{:?}", sim.violations);
            prop_assert_eq!(sim.outcomes.len(), 1, "exactly one outcome");
            let (decided_at, outcome) = sim.outcomes[0].clone();
            prop_assert!(decided_at <= sim.deadline, "decided past the overall timeout");
            let winner = match &outcome {
                Outcome::Won { attempt, .. } => Some(*attempt),
                Outcome::Failed { tried } => {
                    let timed_out = tried.iter().any(|(_, e)| *e == StrategyError::ConnectTimedOut);
                    prop_assert!(!timed_out || decided_at == sim.deadline);
                    prop_assert_eq!(tried.is_empty(), strategies.is_empty());
                    // Started strategies are a prefix of the preference
                    // order, each reported once.
                    let mut reported: Vec<Strategy> = tried.iter().map(|(s, _)| *s).collect();
                    reported.sort();
                    let mut prefix = strategies[..tried.len()].to_vec();
                    prefix.sort();
                    prop_assert_eq!(reported, prefix);
                    None
                }
            };
            match outcome {
                Outcome::Won { strategy: Direct, attempt } => {
                    prop_assert!(sim.connects.contains(&attempt));
                    prop_assert!(sim.connected.contains(&attempt));
                }
                Outcome::Won { strategy: Reverse, attempt } => {
                    prop_assert!(sim.dial_backs.contains(&attempt));
                }
                Outcome::Won { strategy: Punch | Relay, attempt } => {
                    prop_assert!(sim.connects.contains(&attempt));
                    prop_assert!(sim.connected.contains(&attempt));
                }
                Outcome::Failed { .. } => {}
            }
            for &id in sim.connects.iter().chain(&sim.dial_backs) {
                let cancels = sim.cancels.get(&id).copied().unwrap_or(0);
                let closed = sim.closed.contains(&id);
                if Some(id) == winner {
                    prop_assert!(cancels == 0 && !closed, "the winner is kept");
                } else if sim.connected.contains(&id) {
                    prop_assert!(closed, "{id}: an unwanted connection is closed");
                } else if !sim.failed.contains(&id) {
                    prop_assert_eq!(cancels, 1, "{} is cancelled once", id);
                }
            }
            for id in &sim.requests {
                prop_assert_eq!(sim.cancels.get(id).copied(), Some(1), "{} is cancelled once", id);
            }
            for id in &sim.closed {
                prop_assert!(sim.connected.contains(id), "{id}: only connections are closed");
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        Wait(u16),
        Connected(u8),
        ConnectFailed(u8),
        SignalingReady,
        SignalingUnavailable,
        Sent(u8),
        DialBack,
        WrongDialBack,
        LateConnected(u8),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        prop_oneof![
            4 => (0u16..3000).prop_map(Step::Wait),
            2 => any::<u8>().prop_map(Step::Connected),
            3 => any::<u8>().prop_map(Step::ConnectFailed),
            1 => Just(Step::SignalingReady),
            1 => Just(Step::SignalingUnavailable),
            1 => (0u8..3).prop_map(Step::Sent),
            1 => Just(Step::DialBack),
            1 => Just(Step::WrongDialBack),
            1 => any::<u8>().prop_map(Step::LateConnected),
        ]
    }

    /// The driver's view of one race, and everything the race told it.
    struct Sim {
        race: Race,
        now: Instant,
        deadline: Instant,
        /// Connects asked for and not yet reported or cancelled.
        pending: Vec<AttemptId>,
        /// Every connect asked for.
        connects: Vec<AttemptId>,
        /// Reverse attempts waiting for signaling.
        waiting: Vec<AttemptId>,
        /// Reverse attempts whose request is being sent.
        sending: Vec<AttemptId>,
        /// Whether a request went out, so the peer may dial back.
        token_out: bool,
        /// Every reverse attempt.
        requests: Vec<AttemptId>,
        dial_backs: Vec<AttemptId>,
        /// Attempts reported connected, dial-backs included.
        connected: BTreeSet<AttemptId>,
        failed: BTreeSet<AttemptId>,
        cancels: BTreeMap<AttemptId, usize>,
        closed: BTreeSet<AttemptId>,
        outcomes: Vec<(Instant, Outcome)>,
        violations: Vec<String>,
    }

    impl Sim {
        fn new(config: RaceConfig, dsts: usize) -> Self {
            let now = Instant::now();
            let deadline = now + config.overall;
            let mut candidates = destinations();
            candidates.push("203.0.113.7:4000".parse().expect("literal"));
            candidates.truncate(dsts);
            let mut sim = Self {
                race: Race::new(now, config, candidates, token()),
                now,
                deadline,
                pending: Vec::new(),
                connects: Vec::new(),
                waiting: Vec::new(),
                sending: Vec::new(),
                token_out: false,
                requests: Vec::new(),
                dial_backs: Vec::new(),
                connected: BTreeSet::new(),
                failed: BTreeSet::new(),
                cancels: BTreeMap::new(),
                closed: BTreeSet::new(),
                outcomes: Vec::new(),
                violations: Vec::new(),
            };
            sim.pump();
            sim
        }

        fn apply(&mut self, step: Step) {
            let now = self.now;
            match step {
                Step::Wait(ms) => self.advance(u32::from(ms)),
                Step::Connected(pick) => {
                    if let Some(id) = take(&mut self.pending, pick) {
                        self.connected.insert(id);
                        self.race.handle_connected(now, id);
                    }
                }
                Step::ConnectFailed(pick) => {
                    if let Some(id) = take(&mut self.pending, pick) {
                        self.failed.insert(id);
                        self.race.handle_connect_failed(now, id, "refused".into());
                    }
                }
                Step::SignalingReady => {
                    if let Some(id) = take(&mut self.waiting, 0) {
                        self.race.handle_signaling_ready(now, id);
                    }
                }
                Step::SignalingUnavailable => {
                    if let Some(id) = take(&mut self.waiting, 0) {
                        self.race.handle_signaling_unavailable(now, id);
                    }
                }
                Step::Sent(brokers) => {
                    if let Some(id) = take(&mut self.sending, 0) {
                        self.race.handle_reverse_sent(now, id, brokers.into());
                    }
                }
                Step::DialBack => {
                    if self.token_out {
                        match self.race.handle_dial_back(now, token()) {
                            Some(id) => {
                                self.dial_backs.push(id);
                                self.connected.insert(id);
                            }
                            None => self.violations.push("our token refused".into()),
                        }
                    }
                }
                Step::WrongDialBack => {
                    if self
                        .race
                        .handle_dial_back(now, ReverseToken::from_random(7))
                        .is_some()
                    {
                        self.violations.push("a wrong token taken".into());
                    }
                }
                Step::LateConnected(pick) => {
                    let done: Vec<AttemptId> = self
                        .connects
                        .iter()
                        .filter(|id| !self.pending.contains(id) && !self.connected.contains(id))
                        .copied()
                        .collect();
                    if let Some(&id) = done.get(usize::from(pick) % done.len().max(1)) {
                        self.connected.insert(id);
                        self.race.handle_connected(now, id);
                    }
                }
            }
            self.pump();
        }

        /// Moves the clock `ms` on, waking the race at each deadline on the way.
        fn advance(&mut self, ms: u32) {
            let target = self.now + MS * ms;
            while let Some((at, _)) = self.race.poll_timeout() {
                if at > target {
                    break;
                }
                if at < self.now {
                    self.violations
                        .push(format!("a deadline in the past: {at:?}"));
                }
                self.now = at;
                self.race.handle_timeout(at);
                self.pump();
            }
            if !self.race.is_decided() {
                self.now = target;
            }
        }

        /// Does what the race asks, as a driver would, and takes its outcome.
        fn pump(&mut self) {
            let decided = !self.outcomes.is_empty();
            while let Some(action) = self.race.poll_action() {
                match action {
                    Action::Connect { attempt, .. }
                    | Action::Punch { attempt }
                    | Action::Relay { attempt } => {
                        self.pending.push(attempt);
                        self.connects.push(attempt);
                    }
                    Action::WaitSignaling { attempt } => {
                        self.waiting.push(attempt);
                        self.requests.push(attempt);
                    }
                    Action::SendReverse {
                        attempt,
                        token: sent,
                    } => {
                        self.sending.push(attempt);
                        self.token_out = true;
                        if sent != token() {
                            self.violations.push("another token sent".into());
                        }
                    }
                    Action::Cancel { attempt } => {
                        *self.cancels.entry(attempt).or_default() += 1;
                        for list in [&mut self.pending, &mut self.waiting, &mut self.sending] {
                            list.retain(|id| *id != attempt);
                        }
                    }
                    Action::Close { attempt } => {
                        self.closed.insert(attempt);
                    }
                }
                let starts = matches!(
                    action,
                    Action::Connect { .. }
                        | Action::WaitSignaling { .. }
                        | Action::SendReverse { .. }
                        | Action::Punch { .. }
                        | Action::Relay { .. }
                );
                if decided && starts {
                    self.violations
                        .push(format!("{action:?} after the decision"));
                }
            }
            if let Some((at, _)) = self.race.poll_timeout()
                && at > self.deadline
            {
                self.violations
                    .push("a deadline past the overall timeout".into());
            }
            if let Some(outcome) = self.race.poll_outcome() {
                self.outcomes.push((self.now, outcome));
            }
        }
    }

    fn take(list: &mut Vec<AttemptId>, pick: u8) -> Option<AttemptId> {
        if list.is_empty() {
            return None;
        }
        let at = usize::from(pick) % list.len();
        Some(list.remove(at))
    }
}
