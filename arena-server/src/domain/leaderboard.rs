//! A Space's leaderboard as numbers: the Bradley–Terry fit over every
//! pairwise result of its settled matches, with bootstrap 95% intervals
//! (FastChat's method: resample the battles with replacement, refit, take
//! the 2.5th and 97.5th percentiles).

use super::ids::{AgentId, MatchId};
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Bootstrap rounds.
pub const ROUNDS: usize = 100;
/// How long a fit is served before it is recomputed.
pub const REFRESH_S: u64 = 60;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub agent_id: AgentId,
    pub name: String,
    pub owner: String,
    /// Online rating points (40·μ).
    pub rating: f64,
    /// Rating points of μ − 3σ: the rating the agent has almost surely earned.
    pub conservative: f64,
    pub mu: f64,
    pub sigma: f64,
    pub matches: i32,
    /// Bradley–Terry rating on the Elo scale (1000 = average), with its
    /// bootstrap 95% interval; None before the agent has a result.
    pub bt: Option<f64>,
    pub bt_low: Option<f64>,
    pub bt_high: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Leaderboard {
    pub rows: Vec<Row>,
    /// Pairwise results the fit used.
    pub battles: usize,
    pub bootstrap_rounds: usize,
    pub computed_at: chrono::DateTime<chrono::Utc>,
    /// Head-to-head records among the best-rated agents (see `head_to_head`).
    #[serde(default)]
    pub head_to_head: Vec<HeadToHead>,
}

/// Agents ranked by the leaderboard only after this many matches.
pub const MIN_MATCHES: i32 = 5;

/// How agent `a` did against agent `b`: `wins` counts a tie as a half.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeadToHead {
    pub a: AgentId,
    pub b: AgentId,
    pub wins: f64,
    pub games: u32,
}

/// Head-to-head records between the agents at `keep` (indices into the
/// battles' agents, with their ids), in both directions.
pub fn head_to_head(battles: &[Battle], keep: &[(usize, AgentId)]) -> Vec<HeadToHead> {
    let at: HashMap<usize, AgentId> = keep.iter().copied().collect();
    let mut records: HashMap<(AgentId, AgentId), (f64, u32)> = HashMap::new();
    for b in battles {
        if let (Some(&a), Some(&other)) = (at.get(&b.a), at.get(&b.b)) {
            let one = records.entry((a, other)).or_default();
            one.0 += b.outcome;
            one.1 += 1;
            let two = records.entry((other, a)).or_default();
            two.0 += 1.0 - b.outcome;
            two.1 += 1;
        }
    }
    let mut out: Vec<HeadToHead> =
        records.into_iter().map(|((a, b), (wins, games))| HeadToHead { a, b, wins, games }).collect();
    out.sort_by_key(|h| (h.a, h.b));
    out
}

/// One pairwise result: a beat b (outcome 1), lost (0) or tied (0.5).
#[derive(Debug, Clone, Copy)]
pub struct Battle {
    pub a: usize,
    pub b: usize,
    pub outcome: f64,
}

/// Bradley–Terry strengths (natural log scale, mean zero) by the MM
/// algorithm. Every agent also plays one virtual draw against a fixed
/// average opponent, which keeps an unbeaten agent's strength finite.
pub fn fit(n: usize, battles: &[Battle]) -> Vec<f64> {
    let mut wins = vec![0.5f64; n];
    let mut games: HashMap<(usize, usize), f64> = HashMap::new();
    for b in battles {
        wins[b.a] += b.outcome;
        wins[b.b] += 1.0 - b.outcome;
        let key = (b.a.min(b.b), b.a.max(b.b));
        *games.entry(key).or_default() += 1.0;
    }
    let mut p = vec![1.0f64; n];
    for _ in 0..500 {
        // The virtual draw against an opponent of strength 1.
        let mut denom: Vec<f64> = p.iter().map(|pi| 1.0 / (pi + 1.0)).collect();
        for (&(i, j), &g) in &games {
            let d = g / (p[i] + p[j]);
            denom[i] += d;
            denom[j] += d;
        }
        let mut change = 0.0f64;
        for i in 0..n {
            let next = wins[i] / denom[i];
            change = change.max((next.ln() - p[i].ln()).abs());
            p[i] = next;
        }
        if change < 1e-9 {
            break;
        }
    }
    let logs: Vec<f64> = p.iter().map(|x| x.ln()).collect();
    let mean = logs.iter().sum::<f64>() / n.max(1) as f64;
    logs.iter().map(|x| x - mean).collect()
}

/// Natural-log strength to the Elo scale.
pub fn elo(theta: f64) -> f64 {
    1000.0 + 400.0 / std::f64::consts::LN_10 * theta
}

/// Point estimates and percentile intervals.
pub fn bootstrap(n: usize, battles: &[Battle], rounds: usize, seed: u64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let point = fit(n, battles);
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); n];
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..rounds {
        let resample: Vec<Battle> = (0..battles.len()).map(|_| battles[rng.random_range(0..battles.len())]).collect();
        for (i, theta) in fit(n, &resample).into_iter().enumerate() {
            samples[i].push(theta);
        }
    }
    let pct = |v: &mut Vec<f64>, q: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q).round() as usize]
    };
    let low = samples.iter_mut().map(|v| if v.is_empty() { f64::NAN } else { pct(v, 0.025) }).collect();
    let high = samples.iter_mut().map(|v| if v.is_empty() { f64::NAN } else { pct(v, 0.975) }).collect();
    (point, low, high)
}

/// One seat of a settled match as the fit reads it.
#[derive(Debug, Clone, Copy)]
pub struct Placing {
    pub match_id: MatchId,
    pub agent_id: AgentId,
    pub rank: i32,
}

/// Every pairwise result within each match of `placings` (grouped by
/// match, in order), between agents `index` knows.
pub fn battles(placings: &[Placing], index: &HashMap<AgentId, usize>) -> Vec<Battle> {
    let mut battles = Vec::new();
    for seats in placings.chunk_by(|a, b| a.match_id == b.match_id) {
        for (x, a) in seats.iter().enumerate() {
            for b in &seats[x + 1..] {
                if let (Some(&ia), Some(&ib)) = (index.get(&a.agent_id), index.get(&b.agent_id)) {
                    let outcome = match a.rank.cmp(&b.rank) {
                        std::cmp::Ordering::Less => 1.0,
                        std::cmp::Ordering::Greater => 0.0,
                        std::cmp::Ordering::Equal => 0.5,
                    };
                    battles.push(Battle { a: ia, b: ib, outcome });
                }
            }
        }
    }
    battles
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_recovers_the_order_of_known_strengths() {
        // Agent i beats agent j with probability sigmoid(s_i - s_j).
        let strengths: [f64; 4] = [1.5, 0.5, 0.0, -1.0];
        let mut rng = StdRng::seed_from_u64(7);
        let mut battles = Vec::new();
        for _ in 0..3000 {
            let a = rng.random_range(0..4);
            let b = (a + rng.random_range(1..4)) % 4;
            let p = 1.0 / (1.0 + (strengths[b] - strengths[a]).exp());
            battles.push(Battle { a, b, outcome: if rng.random::<f64>() < p { 1.0 } else { 0.0 } });
        }
        let (point, low, high) = bootstrap(4, &battles, 50, 1);
        for i in 0..3 {
            assert!(point[i] > point[i + 1], "{point:?}");
        }
        for i in 0..4 {
            assert!(low[i] <= point[i] && point[i] <= high[i]);
        }
        // Differences near the truth (the virtual draws shrink them a little).
        assert!(((point[0] - point[3]) - 2.5).abs() < 0.3, "{point:?}");
    }

    #[test]
    fn every_pair_of_a_match_is_one_battle() {
        let (m1, m2) = (MatchId::new(), MatchId::new());
        let agents: Vec<AgentId> = (0..3).map(|_| AgentId::new()).collect();
        let index: HashMap<AgentId, usize> = agents.iter().enumerate().map(|(i, a)| (*a, i)).collect();
        let placings = [
            Placing { match_id: m1, agent_id: agents[0], rank: 1 },
            Placing { match_id: m1, agent_id: agents[1], rank: 2 },
            Placing { match_id: m1, agent_id: agents[2], rank: 2 },
            Placing { match_id: m2, agent_id: agents[2], rank: 1 },
            Placing { match_id: m2, agent_id: AgentId::new(), rank: 2 },
        ];
        let b = battles(&placings, &index);
        assert_eq!(b.len(), 3, "three pairs in the first match; the second has an unknown agent");
        assert_eq!((b[0].a, b[0].b, b[0].outcome), (0, 1, 1.0));
        assert_eq!((b[2].a, b[2].b, b[2].outcome), (1, 2, 0.5));
    }

    #[test]
    fn an_unbeaten_agent_stays_finite() {
        let battles: Vec<Battle> = (0..20).map(|_| Battle { a: 0, b: 1, outcome: 1.0 }).collect();
        let theta = fit(2, &battles);
        assert!(theta.iter().all(|t| t.is_finite()) && theta[0] > theta[1]);
    }
}
