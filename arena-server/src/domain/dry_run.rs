//! What a Space's dry run reports (`work::dry_run` plays it): each sample
//! match, and the summary a designer reads before players pay.

use serde::Serialize;
use std::collections::BTreeMap;

/// One sample match.
#[derive(Debug, Clone, Serialize)]
pub struct DryMatch {
    pub prompt: String,
    pub reference: Option<String>,
    /// Seat id ("0", "1", …) → the baseline's name.
    pub agents: BTreeMap<String, String>,
    pub outputs: BTreeMap<String, String>,
    pub tokens: usize,
    pub seconds: f64,
    pub verdict: judge::Verdict,
    /// A multi-turn Space's game: how it went.
    pub game: Option<DryGame>,
}

/// A sample game: the referee's outcome, its steps, illegal moves per seat.
#[derive(Debug, Clone, Serialize)]
pub struct DryGame {
    pub reason: String,
    /// Seat id → its score (empty when the judge decides).
    pub scores: BTreeMap<String, f64>,
    pub steps: usize,
    /// Answers given (a retry is an answer too).
    pub answers: usize,
    pub illegal: Vec<u32>,
}

/// What the dry run says about the rules.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub matches: usize,
    /// Per verifier (and guard): the share of answers that passed.
    pub verifier_pass_rate: BTreeMap<String, f64>,
    /// Share of matches with at least one preference pair at the Space's margin.
    pub pair_yield: f64,
    pub pairs_per_match: f64,
    /// Mean of the verdicts' confidence: 0 is coin flips, 1 decided.
    pub judge_decisiveness: f64,
    pub tokens_per_match: f64,
    /// Generation and judging, per match, as run here (matches batched).
    pub seconds_per_match: f64,
    /// From the dry run's wall time (its matches ran concurrently).
    pub matches_per_hour: f64,
    /// Always 0: nothing is paid in a dry run.
    pub credits_moved: i64,
    /// A multi-turn Space: steps per game, and the share of the answers
    /// given that were illegal moves.
    pub steps_per_game: Option<f64>,
    pub illegal_move_rate: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub summary: Summary,
    pub matches: Vec<DryMatch>,
}

/// The summary of finished sample matches run in `wall` seconds.
pub fn summarise(matches: &[DryMatch], wall: f64) -> Summary {
    let n = matches.len().max(1) as f64;
    let mut passes: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for m in matches {
        for results in m.verdict.verifiers.values() {
            for r in results {
                let e = passes.entry(r.name.clone()).or_default();
                e.0 += r.passed as usize;
                e.1 += 1;
            }
        }
    }
    let pairs: usize = matches.iter().map(|m| m.verdict.pairs.len()).sum();
    let played: Vec<&DryGame> = matches.iter().filter_map(|m| m.game.as_ref()).collect();
    let games = |f: fn(&DryGame) -> f64| {
        (!played.is_empty()).then(|| played.iter().map(|g| f(g)).sum::<f64>() / played.len() as f64)
    };
    Summary {
        matches: matches.len(),
        verifier_pass_rate: passes.into_iter().map(|(k, (p, t))| (k, p as f64 / t.max(1) as f64)).collect(),
        pair_yield: matches.iter().filter(|m| !m.verdict.pairs.is_empty()).count() as f64 / n,
        pairs_per_match: pairs as f64 / n,
        judge_decisiveness: matches.iter().map(|m| m.verdict.confidence).sum::<f64>() / n,
        tokens_per_match: matches.iter().map(|m| m.tokens).sum::<usize>() as f64 / n,
        seconds_per_match: matches.iter().map(|m| m.seconds).sum::<f64>() / n,
        matches_per_hour: if wall > 0.0 { matches.len() as f64 * 3600.0 / wall } else { 0.0 },
        credits_moved: 0,
        steps_per_game: games(|g| g.steps as f64),
        illegal_move_rate: {
            let illegal: u32 = matches.iter().filter_map(|m| m.game.as_ref()).flat_map(|g| &g.illegal).sum();
            let answers: usize = played.iter().map(|g| g.answers).sum();
            (answers > 0).then(|| f64::from(illegal) / answers as f64)
        },
    }
}
