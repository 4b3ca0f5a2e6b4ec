//! The `[turns]` and `[referee]` tables of a multi-turn Space, checked into
//! a [`referee::Referee`]. Every error carries its span, like the rest of
//! the Space format.

use judge::files::{SpaceFiles, check_name};
use judge::spec::{SpecError, int_in};
use referee::grid::{Grid, GridKind};
use referee::script::{Limits, MAX_MS, MAX_OPERATIONS, Script};
use referee::{Illegal, MAX_SEATS, MAX_TURNS, OnLimit, Order, Referee, Rules, Turns, View};
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TurnsFile {
    order: Option<Spanned<String>>,
    max_turns: Option<Spanned<i64>>,
    rounds: Option<Spanned<i64>>,
    view: Option<Spanned<String>>,
    max_tokens_per_turn: Option<Spanned<i64>>,
    on_limit: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RefereeFile {
    kind: Spanned<String>,
    illegal: Option<Spanned<String>>,
    retries: Option<Spanned<i64>>,
    penalty: Option<Spanned<f64>>,
    max_illegal: Option<Spanned<i64>>,
    pot: Option<Spanned<i64>>,
    positions: Option<Spanned<Vec<String>>>,
    script: Option<Spanned<String>>,
    max_operations: Option<Spanned<i64>>,
    max_ms: Option<Spanned<i64>>,
}

/// Which keys each kind reads; any other is an error (a designer who
/// writes `pot` for a grid game learns it does nothing).
fn allowed(kind: &str) -> &'static [&'static str] {
    match kind {
        "tic-tac-toe" | "connect-four" => &[],
        "negotiation" => &["pot"],
        "debate" => &["positions"],
        "script" => &["script", "max_operations", "max_ms"],
        _ => &[],
    }
}

fn choice<T: Copy>(
    v: &Option<Spanned<String>>,
    what: &str,
    options: &[(&str, T)],
    default: T,
    errors: &mut Vec<SpecError>,
) -> T {
    let Some(v) = v else { return default };
    match options.iter().find(|(name, _)| name == v.get_ref()) {
        Some((_, t)) => *t,
        None => {
            let names: Vec<String> = options.iter().map(|(n, _)| format!("{n:?}")).collect();
            errors
                .push(SpecError::new(v.span(), format!("{what} {:?} is not one of {}", v.get_ref(), names.join(", "))));
            default
        }
    }
}

/// Checks the two tables together (each names what the other must agree
/// with): the referee's kind and its keys, the turn protocol, the policy
/// for illegal moves, the rules themselves, and that every prompt opens a
/// game.
pub(super) fn check(
    turns: Option<&Spanned<TurnsFile>>,
    referee: Option<&Spanned<RefereeFile>>,
    seats: u32,
    max_new_tokens: u32,
    files: &SpaceFiles,
    prompts: &[super::prompts::PromptItem],
    errors: &mut Vec<SpecError>,
) -> Option<Referee> {
    let (t, r) = match (turns, referee) {
        (None, None) => return None,
        (Some(t), None) => {
            errors.push(SpecError::new(t.span(), "[turns] needs a [referee] table (kind = \"tic-tac-toe\", …)"));
            return None;
        }
        (None, Some(r)) => {
            errors.push(SpecError::new(r.span(), "[referee] needs a [turns] table (the turn protocol)"));
            return None;
        }
        (Some(t), Some(r)) => (t, r),
    };
    let before = errors.len();
    let (t, r) = (t.get_ref(), r.get_ref());
    let seats = seats as usize;
    let kind = check_kind(r, seats, errors)?;
    let turns = check_protocol(t, kind, seats, max_new_tokens, errors);
    let illegal = check_illegal(t, r, turns.order, errors);
    let rules = check_rules(r, kind, seats, files, errors)?;
    if errors.len() > before {
        return None;
    }
    let built = Referee { turns, rules, illegal, seats };
    check_openings(&built, prompts, errors)?;
    Some(built)
}

/// The referee's kind (None when unknown), with the keys that do not apply
/// to it and a seat count it cannot seat reported.
fn check_kind<'a>(r: &'a RefereeFile, seats: usize, errors: &mut Vec<SpecError>) -> Option<&'a str> {
    let kind = r.kind.get_ref().as_str();
    let known = ["tic-tac-toe", "connect-four", "negotiation", "debate", "script"];
    if !known.contains(&kind) {
        errors.push(SpecError::new(
            r.kind.span(),
            format!("referee.kind {kind:?} is not one of \"tic-tac-toe\", \"connect-four\", \"negotiation\", \"debate\", \"script\""),
        ));
        return None;
    }
    for (key, present, span) in [
        ("pot", r.pot.is_some(), r.pot.as_ref().map(|v| v.span())),
        ("positions", r.positions.is_some(), r.positions.as_ref().map(|v| v.span())),
        ("script", r.script.is_some(), r.script.as_ref().map(|v| v.span())),
        ("max_operations", r.max_operations.is_some(), r.max_operations.as_ref().map(|v| v.span())),
        ("max_ms", r.max_ms.is_some(), r.max_ms.as_ref().map(|v| v.span())),
    ] {
        if present && !allowed(kind).contains(&key) {
            errors.push(SpecError::new(span.unwrap_or(0..0), format!("referee.{key} does not apply to kind {kind:?}")));
        }
    }
    if matches!(kind, "tic-tac-toe" | "connect-four" | "negotiation") && seats != 2 {
        errors.push(SpecError::new(r.kind.span(), format!("a {kind} match has 2 seats; agents_per_match is {seats}")));
    }
    if seats > MAX_SEATS {
        errors.push(SpecError::new(r.kind.span(), format!("at most {MAX_SEATS} seats")));
    }
    Some(kind)
}

/// The turn protocol: order, view, what happens at the turn limit, the
/// limit, and tokens per turn.
fn check_protocol(t: &TurnsFile, kind: &str, seats: usize, max_new_tokens: u32, errors: &mut Vec<SpecError>) -> Turns {
    let order = choice(
        &t.order,
        "turns.order",
        &[("round-robin", Order::RoundRobin), ("simultaneous", Order::Simultaneous)],
        Order::RoundRobin,
        errors,
    );
    if order == Order::Simultaneous && matches!(kind, "tic-tac-toe" | "connect-four" | "negotiation") {
        let span = t.order.as_ref().map(|o| o.span()).unwrap_or(0..0);
        errors.push(SpecError::new(span, format!("a {kind} game is played in turns: order must be \"round-robin\"")));
    }
    let default_view = if kind == "debate" { View::Transcript } else { View::Referee };
    let view = choice(
        &t.view,
        "turns.view",
        &[("transcript", View::Transcript), ("referee", View::Referee)],
        default_view,
        errors,
    );
    let default_limit = if kind == "debate" { OnLimit::Judge } else { OnLimit::Rules };
    let on_limit = choice(
        &t.on_limit,
        "turns.on_limit",
        &[("rules", OnLimit::Rules), ("judge", OnLimit::Judge)],
        default_limit,
        errors,
    );
    if kind == "debate" && on_limit != OnLimit::Judge {
        let span = t.on_limit.as_ref().map(|o| o.span()).unwrap_or(0..0);
        errors.push(SpecError::new(span, "a debate is decided by the judge: on_limit must be \"judge\""));
    }
    let per_round = if order == Order::RoundRobin { seats as i64 } else { 1 };
    let grid_cells = match kind {
        "tic-tac-toe" => 9,
        "connect-four" => 42,
        _ => 0,
    };
    let default_turns = match kind {
        "tic-tac-toe" | "connect-four" => grid_cells,
        "negotiation" => 10,
        "debate" => 3 * per_round,
        _ => 20,
    };
    let max_turns = match (&t.max_turns, &t.rounds) {
        (Some(m), Some(_)) => {
            errors.push(SpecError::new(m.span(), "give turns.max_turns or turns.rounds, not both"));
            default_turns
        }
        (Some(_), None) => int_in(&t.max_turns, "turns.max_turns", 1, MAX_TURNS as i64, default_turns, errors),
        (None, Some(r)) => {
            let rounds = int_in(&t.rounds, "turns.rounds", 1, MAX_TURNS as i64, 1, errors);
            let turns = rounds * per_round;
            if turns > MAX_TURNS as i64 {
                errors
                    .push(SpecError::new(r.span(), format!("{rounds} rounds make {turns} turns; at most {MAX_TURNS}")));
            }
            turns.min(MAX_TURNS as i64)
        }
        (None, None) => default_turns,
    } as u32;
    let max_tokens = int_in(
        &t.max_tokens_per_turn,
        "turns.max_tokens_per_turn",
        1,
        max_new_tokens as i64,
        max_new_tokens as i64,
        errors,
    ) as u32;
    Turns { order, max_turns, view, max_tokens, on_limit }
}

/// What an illegal move costs, and the keys that go with another policy.
fn check_illegal(t: &TurnsFile, r: &RefereeFile, order: Order, errors: &mut Vec<SpecError>) -> Illegal {
    let illegal_kind = t_illegal(r, errors);
    let illegal = match illegal_kind {
        "penalty" => {
            let points = match &r.penalty {
                None => 0.5,
                Some(p) if p.get_ref().is_finite() && (0.0..=10.0).contains(p.get_ref()) => *p.get_ref(),
                Some(p) => {
                    errors.push(SpecError::new(p.span(), format!("referee.penalty {} is outside 0..=10", p.get_ref())));
                    0.5
                }
            };
            let max = int_in(&r.max_illegal, "referee.max_illegal", 0, MAX_TURNS as i64, 3, errors) as u32;
            Illegal::Penalty { points, max }
        }
        "retry" => {
            if order != Order::RoundRobin {
                let span = t.order.as_ref().map(|o| o.span()).unwrap_or(0..0);
                errors.push(SpecError::new(span, "illegal = \"retry\" needs order = \"round-robin\""));
            }
            Illegal::Retry { retries: int_in(&r.retries, "referee.retries", 1, 5, 1, errors) as u32 }
        }
        _ => Illegal::Forfeit,
    };
    for (key, given, wanted) in [
        ("penalty", r.penalty.as_ref().map(|v| v.span()), "penalty"),
        ("max_illegal", r.max_illegal.as_ref().map(|v| v.span()), "penalty"),
        ("retries", r.retries.as_ref().map(|v| v.span()), "retry"),
    ] {
        if let Some(span) = given
            && illegal_kind != wanted
        {
            errors.push(SpecError::new(span, format!("referee.{key} goes with illegal = {wanted:?}")));
        }
    }
    illegal
}

/// The rules of `kind`: a grid, a negotiation's pot, a debate's positions,
/// or a designer's script compiled from the Space's files.
fn check_rules(
    r: &RefereeFile,
    kind: &str,
    seats: usize,
    files: &SpaceFiles,
    errors: &mut Vec<SpecError>,
) -> Option<Rules> {
    let rules = match kind {
        "tic-tac-toe" => Rules::Grid(Grid::new(GridKind::TicTacToe)),
        "connect-four" => Rules::Grid(Grid::new(GridKind::ConnectFour)),
        "negotiation" => Rules::Negotiation(referee::negotiation::Negotiation {
            pot: int_in(&r.pot, "referee.pot", 1, 1_000_000, 100, errors) as u64,
        }),
        "debate" => {
            let positions = match &r.positions {
                None if seats == 2 => vec!["for the motion".to_owned(), "against the motion".to_owned()],
                None => (1..=seats).map(|k| format!("position {k}")).collect(),
                Some(p) => {
                    let list = p.get_ref().clone();
                    if list.len() != seats {
                        errors.push(SpecError::new(
                            p.span(),
                            format!("referee.positions has {} entries for {seats} seats", list.len()),
                        ));
                    }
                    if list.iter().any(|x| x.trim().is_empty() || x.chars().count() > 200) {
                        errors.push(SpecError::new(p.span(), "each position is 1-200 characters"));
                    }
                    list
                }
            };
            Rules::Debate(referee::debate::Debate { positions })
        }
        _ => {
            let limits = Limits {
                max_operations: int_in(
                    &r.max_operations,
                    "referee.max_operations",
                    1,
                    MAX_OPERATIONS as i64,
                    200_000,
                    errors,
                ) as u64,
                max_ms: int_in(&r.max_ms, "referee.max_ms", 1, MAX_MS as i64, 200, errors) as u64,
            };
            let Some(name) = &r.script else {
                errors.push(SpecError::new(r.kind.span(), "a script referee needs referee.script (the .rhai file)"));
                return None;
            };
            let source = match check_name(name.get_ref()).map(|()| files.get(name.get_ref())) {
                Err(e) => {
                    errors.push(SpecError::new(name.span(), format!("referee.script: {e}")));
                    return None;
                }
                Ok(None) => {
                    errors.push(SpecError::new(
                        name.span(),
                        format!(
                            "referee script {:?} is not among the Space's files (send it in `files`)",
                            name.get_ref()
                        ),
                    ));
                    return None;
                }
                Ok(Some(source)) => source,
            };
            match Script::compile(name.get_ref(), source, limits) {
                Ok(script) => Rules::Script(script),
                Err(why) => {
                    errors.push(SpecError::new(name.span(), format!("referee.script: {why}")));
                    return None;
                }
            }
        }
    };
    Some(rules)
}

/// Every prompt must start a game (a grid game's opening is checked here,
/// not when a match meets it). Scripts are checked when a match starts:
/// their `init` may be costly, and its errors refund the match.
fn check_openings(built: &Referee, prompts: &[super::prompts::PromptItem], errors: &mut Vec<SpecError>) -> Option<()> {
    if matches!(built.rules, Rules::Grid(_)) {
        for (k, p) in prompts.iter().enumerate() {
            if let Err(e) = built.start(&p.prompt) {
                errors.push(SpecError::new(0..0, format!("prompt {}: {e}", k + 1)));
                return None;
            }
        }
    }
    Some(())
}

fn t_illegal<'a>(r: &'a RefereeFile, errors: &mut Vec<SpecError>) -> &'a str {
    match &r.illegal {
        None => "forfeit",
        Some(v) if ["forfeit", "penalty", "retry"].contains(&v.get_ref().as_str()) => v.get_ref(),
        Some(v) => {
            errors.push(SpecError::new(
                v.span(),
                format!("referee.illegal {:?} is not one of \"forfeit\", \"penalty\", \"retry\"", v.get_ref()),
            ));
            "forfeit"
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::space::Space;
    use judge::files::SpaceFiles;
    use std::path::Path;

    fn space(game: &str) -> String {
        format!(
            "name = \"game\"\nagents_per_match = 2\n\n[prompts]\ninline = [\"Play.\", \"opening: 5\"]\n\n{game}\n\n[judge]\nmode = \"none\"\n"
        )
    }

    /// (line, column, message) of every error.
    fn errors(text: &str, files: &SpaceFiles) -> Vec<(usize, usize, String)> {
        match Space::parse(text, files, Path::new(".")) {
            Ok(_) => Vec::new(),
            Err(errs) => errs
                .iter()
                .map(|e| {
                    let (l, c) = e.line_col(text);
                    (l, c, e.message.clone())
                })
                .collect(),
        }
    }

    #[test]
    fn a_game_space_parses_with_its_defaults() {
        let text = space("[turns]\n\n[referee]\nkind = \"connect-four\"");
        let game = Space::parse(&text, &SpaceFiles::new(), Path::new(".")).expect("valid").game.expect("a game");
        assert_eq!(game.turns.max_turns, 42);
        assert_eq!(game.turns.order, referee::Order::RoundRobin);
        assert_eq!(game.turns.view, referee::View::Referee);
        assert_eq!(game.illegal, referee::Illegal::Forfeit);
        // Without a referee a judge with nothing to rank is still refused.
        assert!(!errors(&space(""), &SpaceFiles::new()).is_empty());
    }

    #[test]
    fn every_game_error_is_placed_and_named() {
        let files = SpaceFiles::new();
        let cases: Vec<(String, (usize, usize), &str)> = vec![
            (space("[turns]\nmax_turns = 3"), (7, 1), "[turns] needs a [referee] table"),
            (space("[referee]\nkind = \"chess\"\n[turns]"), (8, 8), "referee.kind \"chess\" is not one of"),
            (
                space("[turns]\norder = \"simultaneous\"\n[referee]\nkind = \"tic-tac-toe\""),
                (8, 9),
                "order must be \"round-robin\"",
            ),
            (
                space("[turns]\nmax_turns = 500\n[referee]\nkind = \"negotiation\""),
                (8, 13),
                "turns.max_turns 500 is outside 1..=200",
            ),
            (space("[turns]\nrounds = 2\nmax_turns = 4\n[referee]\nkind = \"debate\""), (9, 13), "not both"),
            (space("[turns]\n[referee]\nkind = \"tic-tac-toe\"\npot = 5"), (10, 7), "referee.pot does not apply"),
            (
                space("[turns]\n[referee]\nkind = \"tic-tac-toe\"\nillegal = \"shrug\""),
                (10, 11),
                "referee.illegal \"shrug\"",
            ),
            (
                space("[turns]\n[referee]\nkind = \"tic-tac-toe\"\nretries = 2"),
                (10, 11),
                "goes with illegal = \"retry\"",
            ),
            (space("[turns]\non_limit = \"rules\"\n[referee]\nkind = \"debate\""), (8, 12), "decided by the judge"),
            (space("[turns]\n[referee]\nkind = \"debate\"\npositions = [\"for\"]"), (10, 13), "1 entries for 2 seats"),
            (space("[turns]\n[referee]\nkind = \"script\"\nscript = \"../etc/passwd\""), (10, 10), "relative path"),
            (
                space("[turns]\n[referee]\nkind = \"script\"\nscript = \"missing.rhai\""),
                (10, 10),
                "not among the Space's files",
            ),
            (
                space("[turns]\nmax_tokens_per_turn = 4096\n[referee]\nkind = \"negotiation\""),
                (8, 23),
                "max_tokens_per_turn",
            ),
        ];
        for (text, (line, col), message) in cases {
            let errs = errors(&text, &files);
            assert!(
                errs.iter().any(|(l, c, m)| (*l, *c) == (line, col) && m.contains(message)),
                "expected {line}:{col} {message:?} in {errs:?}\n{text}"
            );
        }
        // A grid opening that cannot be played is named by its prompt.
        let text = space("[turns]\n[referee]\nkind = \"tic-tac-toe\"").replace("opening: 5", "opening: 5 5");
        let errs = errors(&text, &files);
        assert!(errs.iter().any(|(_, _, m)| m.contains("prompt 2") && m.contains("cell 5 is taken")), "{errs:?}");
        // A script that does not compile is placed at its key, the script's
        // own line and column in the message.
        let files: SpaceFiles = [("r.rhai".to_owned(), "fn init(a, b) { 1 +".to_owned())].into();
        let text = space("[turns]\n[referee]\nkind = \"script\"\nscript = \"r.rhai\"");
        let errs = errors(&text, &files);
        assert!(errs.iter().any(|(l, c, m)| (*l, *c) == (10, 10) && m.contains("r.rhai:1:")), "{errs:?}");
    }

    #[test]
    fn the_example_games_parse_and_nim_s_script_plays() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spaces");
        for name in ["tic-tac-toe", "negotiation", "debate", "nim", "rock-paper-scissors"] {
            let read = judge::files::read_space(&root.join(format!("{name}.toml"))).expect("readable");
            let space = Space::parse(&read.source, &read.files, &root).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            let game = space.game.expect("a game");
            for prompt in &space.prompts {
                game.start(&prompt.prompt).expect("every prompt starts a game");
            }
            if name == "nim" {
                let mut state = game.start("stones: 5").expect("starts");
                let mut seat = 0;
                for take in ["take 2", "I take 9", "3"] {
                    state = game.play(&state, &[(seat, take.to_owned())]).expect("plays");
                    seat = game.to_move(&state).expect("next").first().copied().unwrap_or(seat);
                }
                // 5 - 2 = 3; "9" is illegal (penalty, the turn passes); 3 takes the last.
                let outcome = state.outcome.expect("over");
                assert_eq!(state.illegal, vec![0, 1]);
                assert!(outcome.reason.contains("Player 1 took the last stone"), "{}", outcome.reason);
            }
            if name == "rock-paper-scissors" {
                // Both seats answer each round, from one view.
                let mut state = game.start("rounds: 3").expect("starts");
                for (a, b) in [("rock", "Scissors!"), ("paper, I think", "hmm"), ("scissors", "rock")] {
                    assert_eq!(game.to_move(&state).unwrap(), vec![0, 1]);
                    assert_eq!(game.view(&state, "", 0).unwrap(), game.view(&state, "", 1).unwrap(), "one view");
                    state = game.play(&state, &[(0, a.to_owned()), (1, b.to_owned())]).expect("plays");
                }
                // Rock beats scissors; "hmm" is void (seat 0 takes the
                // round); rock beats scissors for seat 1: 2-1.
                let outcome = state.outcome.expect("over after three rounds");
                assert_eq!((outcome.scores.clone(), state.illegal.clone()), (vec![1.0, 0.0], vec![0, 1]));
                assert_eq!(outcome.reason, "2-1 after 3 rounds");
            }
        }
    }
}
