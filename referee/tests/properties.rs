//! Property tests: random answers — legal moves, illegal ones, junk — under
//! every built-in referee and illegal-move policy never panic, never make
//! the referee fail, and always end the game within its bound.

use proptest::prelude::*;
use referee::grid::{Grid, GridKind};
use referee::negotiation::Negotiation;
use referee::{Illegal, OnLimit, Order, Referee, Rules, Turns, View};

fn rules(kind: u8) -> (Rules, u32, OnLimit) {
    match kind % 4 {
        0 => (Rules::Grid(Grid::new(GridKind::TicTacToe)), 9, OnLimit::Rules),
        1 => (Rules::Grid(Grid::new(GridKind::ConnectFour)), 42, OnLimit::Rules),
        2 => (Rules::Negotiation(Negotiation { pot: 100 }), 8, OnLimit::Rules),
        _ => (
            Rules::Debate(referee::debate::Debate { positions: vec!["for".into(), "against".into()] }),
            4,
            OnLimit::Judge,
        ),
    }
}

fn policy(kind: u8) -> Illegal {
    match kind % 3 {
        0 => Illegal::Forfeit,
        1 => Illegal::Penalty { points: 0.25, max: 2 },
        _ => Illegal::Retry { retries: 2 },
    }
}

/// An answer: a bare number, a keyword move, an offer, an acceptance,
/// junk, or nothing.
fn answer() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..12).prop_map(|n| n.to_string()),
        (0u64..12).prop_map(|n| format!("I think move: {n} is best")),
        (0u64..130).prop_map(|n| format!("OFFER {n}")),
        Just("I accept".to_owned()),
        Just("I will not accept".to_owned()),
        ".{0,40}",
        Just(String::new()),
        Just("9999999999999999999 and 12345678901".to_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn random_answers_never_panic_and_games_always_end(
        kind in 0u8..4,
        illegal in 0u8..3,
        answers in proptest::collection::vec(answer(), 200),
    ) {
        let (rules, max_turns, on_limit) = rules(kind);
        let referee = Referee {
            turns: Turns { order: Order::RoundRobin, max_turns, view: View::Referee, max_tokens: 32, on_limit },
            rules,
            illegal: policy(illegal),
            seats: 2,
        };
        let mut state = referee.start("A game.").expect("starts");
        // A bound on steps: every turn, plus every retry of every turn.
        let bound = max_turns as usize * 3;
        let mut steps = 0;
        let mut it = answers.iter().cycle();
        while state.outcome.is_none() {
            prop_assert!(steps <= bound, "no end after {steps} steps");
            let seats = referee.to_move(&state).expect("to move");
            prop_assert_eq!(seats.len(), 1);
            for &seat in &seats {
                let view = referee.view(&state, "A game.", seat).expect("view");
                prop_assert!(!view.is_empty());
            }
            let moves: Vec<(usize, String)> = seats.iter().map(|&s| (s, it.next().cloned().unwrap_or_default())).collect();
            let next = referee.play(&state, &moves).expect("plays");
            prop_assert!(next.turn >= state.turn);
            prop_assert_eq!(next.transcript.len(), state.transcript.len() + 1);
            state = next;
            steps += 1;
        }
        let outcome = state.outcome.as_ref().expect("ended");
        prop_assert!(outcome.judged || outcome.scores.len() == 2);
        prop_assert!(referee.to_move(&state).expect("over").is_empty());
        prop_assert!(referee.play(&state, &[]).is_err());
        // A stored state replays: JSON round trip is exact.
        let json = serde_json::to_string(&state).expect("serialises");
        let back: referee::State = serde_json::from_str(&json).expect("parses");
        prop_assert_eq!(back, state);
    }
}
