//! Per-sequence sampling: greedy, temperature, top-k, top-p, repetition
//! penalty, stop strings, and a seeded generator so the same seed gives the
//! same text.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// 0 is greedy.
    pub temperature: f32,
    /// 0 keeps every token.
    pub top_k: usize,
    /// 1.0 keeps every token.
    pub top_p: f32,
    /// 1.0 is none (the default, as in llama.cpp and transformers); >1
    /// makes tokens already in the context less likely — the prompt's
    /// tokens included, so it also works against copying from the prompt.
    pub repetition_penalty: f32,
    /// How many of the last tokens the penalty looks at.
    pub repetition_window: usize,
    pub max_new_tokens: usize,
    /// Generation ends when the text contains one of these; it is cut off.
    pub stop: Vec<String>,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> SamplingParams {
        SamplingParams {
            temperature: 0.7,
            top_k: 40,
            top_p: 0.95,
            repetition_penalty: 1.0,
            repetition_window: 64,
            max_new_tokens: 128,
            stop: Vec::new(),
            seed: 0,
        }
    }
}

impl SamplingParams {
    pub fn greedy(max_new_tokens: usize) -> SamplingParams {
        SamplingParams { temperature: 0.0, repetition_penalty: 1.0, max_new_tokens, ..Default::default() }
    }

    /// A description of the first unusable value, if any.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature.is_finite() && (0.0..=10.0).contains(&self.temperature)) {
            return Err(format!("temperature {} is outside 0..=10", self.temperature));
        }
        if !(self.top_p.is_finite() && self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p {} is outside (0, 1]", self.top_p));
        }
        if !(self.repetition_penalty.is_finite() && (0.5..=5.0).contains(&self.repetition_penalty)) {
            return Err(format!("repetition_penalty {} is outside 0.5..=5", self.repetition_penalty));
        }
        if self.max_new_tokens == 0 {
            return Err("max_new_tokens must be at least 1".to_owned());
        }
        if self.stop.iter().any(String::is_empty) {
            return Err("a stop string is empty".to_owned());
        }
        Ok(())
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Sampler {
        let rng = ChaCha8Rng::seed_from_u64(params.seed);
        Sampler { params, rng }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token from `logits`, given the tokens so far.
    pub fn sample(&mut self, logits: &mut [f32], context: &[u32]) -> u32 {
        match self.candidates(logits, context) {
            None => argmax(logits),
            Some((candidates, probs)) => {
                let u: f32 = self.rng.random();
                walk(&candidates, &probs, u)
            }
        }
    }

    /// What [`Sampler::sample`] draws, explained (the same arithmetic, the
    /// same random number used): for checking another machine's draw.
    pub fn sample_explained(&mut self, logits: &mut [f32], context: &[u32]) -> Draw {
        let Some((candidates, probs)) = self.candidates(logits, context) else {
            return Draw { token: argmax(logits), u: 0.0, intervals: Vec::new() };
        };
        let u: f32 = self.rng.random();
        let mut intervals = Vec::with_capacity(probs.len());
        let mut at = 0f32;
        for (c, &q) in candidates.iter().zip(&probs) {
            intervals.push((c.0, at, at + q));
            at += q;
        }
        Draw { token: walk(&candidates, &probs, u), u, intervals }
    }

    /// Applies the repetition penalty to `logits`; then, unless decoding is
    /// greedy (`None`), the kept candidates, highest first, and their
    /// probabilities after temperature, top-k and top-p.
    fn candidates(&self, logits: &mut [f32], context: &[u32]) -> Option<Kept> {
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            let window = &context[context.len().saturating_sub(p.repetition_window)..];
            let mut seen: Vec<u32> = window.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for &t in &seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 { *l / p.repetition_penalty } else { *l * p.repetition_penalty };
                }
            }
        }
        if p.temperature == 0.0 {
            return None;
        }
        let mut candidates: Vec<(u32, f32)> =
            logits.iter().enumerate().map(|(i, &l)| (i as u32, l / p.temperature)).collect();
        // Highest first; ties by id so the order is deterministic.
        let k = if p.top_k == 0 { candidates.len() } else { p.top_k.min(candidates.len()) };
        if k < candidates.len() {
            candidates.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            candidates.truncate(k);
        }
        candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let max = candidates[0].1;
        let mut probs: Vec<f32> = candidates.iter().map(|c| (c.1 - max).exp()).collect();
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|v| *v /= total);
        if p.top_p < 1.0 {
            let mut cumulative = 0.0;
            let mut keep = probs.len();
            for (i, &q) in probs.iter().enumerate() {
                cumulative += q;
                if cumulative >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            let total: f32 = probs.iter().sum();
            probs.iter_mut().for_each(|v| *v /= total);
        }
        Some((candidates, probs))
    }
}

/// The kept candidates (token, scaled logit), highest first, and their probabilities.
type Kept = (Vec<(u32, f32)>, Vec<f32>);

/// The candidate `u` falls on, walking the probabilities in order.
fn walk(candidates: &[(u32, f32)], probs: &[f32], mut u: f32) -> u32 {
    for (c, &q) in candidates.iter().zip(probs) {
        if u < q {
            return c.0;
        }
        u -= q;
    }
    candidates[probs.len() - 1].0
}

/// A draw explained: the token, the uniform number it came from, and every
/// kept candidate's interval of [0, 1) (none for greedy decoding).
#[derive(Debug, Clone)]
pub struct Draw {
    pub token: u32,
    pub u: f32,
    pub intervals: Vec<(u32, f32, f32)>,
}

impl Draw {
    /// How far `u` lies from `token`'s interval (0 inside; 1 when the
    /// token was not a candidate).
    pub fn distance(&self, token: u32) -> f32 {
        match self.intervals.iter().find(|(t, _, _)| *t == token) {
            Some(&(_, lo, _)) if self.u < lo => lo - self.u,
            Some(&(_, _, hi)) if self.u >= hi => self.u - hi,
            Some(_) => 0.0,
            None => 1.0,
        }
    }
}

pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Log-softmax of one position's logits at `token`.
pub fn log_prob(logits: &[f32], token: u32) -> f32 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    (f64::from(logits[token as usize] - max) - sum.ln()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_largest() {
        let mut s = Sampler::new(SamplingParams::greedy(1));
        assert_eq!(s.sample(&mut [0.1, 3.0, -1.0, 2.9], &[]), 1);
    }

    #[test]
    fn same_seed_same_choices_and_different_seeds_differ() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let draw = |seed| {
            let mut s =
                Sampler::new(SamplingParams { seed, top_k: 0, top_p: 1.0, temperature: 1.0, ..Default::default() });
            (0..50).map(|_| s.sample(&mut logits.clone(), &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_k_one_is_greedy_and_top_p_keeps_the_head() {
        let mut logits = vec![1.0, 5.0, 4.9, 0.0];
        let mut s =
            Sampler::new(SamplingParams { top_k: 1, temperature: 1.5, repetition_penalty: 1.0, ..Default::default() });
        for _ in 0..20 {
            assert_eq!(s.sample(&mut logits.clone(), &[]), 1);
        }
        let mut s = Sampler::new(SamplingParams {
            top_k: 0,
            top_p: 0.5,
            temperature: 1.0,
            repetition_penalty: 1.0,
            ..Default::default()
        });
        for _ in 0..20 {
            assert_eq!(s.sample(&mut logits, &[]), 1, "top-p 0.5 keeps only the most likely token here");
        }
    }

    #[test]
    fn repetition_penalty_demotes_seen_tokens() {
        let mut s = Sampler::new(SamplingParams { repetition_penalty: 2.0, ..SamplingParams::greedy(1) });
        assert_eq!(s.sample(&mut [0.0, 3.0, 2.0], &[1]), 2);
    }

    #[test]
    fn an_explained_draw_is_the_draw() {
        let logits: Vec<f32> = (0..200).map(|i| ((i * 37) % 23) as f32 * 0.2).collect();
        for params in [
            SamplingParams { seed: 3, temperature: 0.8, top_k: 40, top_p: 0.9, ..Default::default() },
            SamplingParams {
                seed: 4,
                temperature: 1.3,
                top_k: 0,
                top_p: 1.0,
                repetition_penalty: 1.2,
                ..Default::default()
            },
            SamplingParams::greedy(1),
        ] {
            let (mut a, mut b) = (Sampler::new(params.clone()), Sampler::new(params));
            for step in 0..200u32 {
                let context = [step % 200, (step * 7) % 200];
                let drawn = a.sample(&mut logits.clone(), &context);
                let explained = b.sample_explained(&mut logits.clone(), &context);
                assert_eq!(drawn, explained.token);
                if !explained.intervals.is_empty() {
                    assert!(explained.distance(drawn) < 1e-5, "the drawn token's interval holds u");
                }
            }
        }
    }

    #[test]
    fn log_prob_is_a_log_softmax() {
        let l = [1.0f32, 2.0, 3.0];
        let total: f32 = (0..3).map(|t| log_prob(&l, t).exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
    }
}
