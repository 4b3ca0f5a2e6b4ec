//! Checking a rollout that someone else generated: one teacher-forced pass
//! over prompt + completion with the declared adapter, computed the way the
//! engine computed it while generating, so that on the same kernel path
//! every logit has the same bits. Then, position by position: the claimed
//! log-probability against the recomputed one, the seeded sampler replayed
//! (the claimed token must be the one it draws), and the place the rollout
//! stops (an end of turn the sampler draws there, the length limit, a stop
//! string that first appears at the last token, or a full context).
//!
//! Why the bits match. The engine feeds a prompt in chunks of
//! [`PREFILL_CHUNK`] tokens and then one token per step; the matmul kernels
//! give every row the same bits whatever rows sit beside it and however
//! many threads run (tested per kernel path), and attention is computed
//! row by row, each row over its own visible positions, exactly as a
//! decode step does (so a prefix taken from the engine's prefix cache has
//! the bits it would have had).
//! So the replay prefills the prompt in the engine's chunks and then feeds
//! the completion [`REPLAY_ROWS`] tokens at a time with every row's logits
//! kept: a decode step per row, in one forward per chunk.

use crate::engine::{Finish, PREFILL_CHUNK, Runtime};
use crate::error::Result;
use crate::lora::Adapter;
use crate::model::{Logits, SeqStep};
use crate::sampling::{Sampler, SamplingParams, log_prob};
use serde::{Deserialize, Serialize};

/// Completion tokens fed per replay forward (every row's logits are kept,
/// so this bounds the logits held at once).
pub const REPLAY_ROWS: usize = 16;

/// What a worker says it generated.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    pub prompt: &'a [u32],
    /// The completion without the token that ended the turn.
    pub tokens: &'a [u32],
    /// One per token of `tokens`, plus the end token's when `finish` is
    /// [`Finish::EndOfTurn`] (what [`crate::Completion::logprobs`] holds).
    pub logprobs: &'a [f32],
    pub finish: Finish,
    pub end_token: Option<u32>,
    pub params: &'a SamplingParams,
}

/// How close a claim must come.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "tier", rename_all = "snake_case")]
pub enum Tier {
    /// Same kernel path as the checker: every log-probability bit for bit
    /// and every token the one the seeded sampler draws.
    Exact,
    /// Another numeric recipe: log-probabilities within `logprob` nats, and
    /// a token other than the drawn one only at a near tie, at most
    /// `max_near_ties` times. How near, in probability: for a sampled token
    /// the distance of the seeded uniform draw from the claimed token's
    /// interval, for a greedy one the two tokens' probability difference —
    /// at most `near_tie`.
    Tolerant { logprob: f32, near_tie: f32, max_near_ties: usize },
}

/// The first thing found wrong with a claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum Fault {
    /// Lengths or ids that cannot be: checked before any model work.
    Malformed { why: String },
    /// At `at`, the seeded sampler draws `drawn`, the claim says `claimed`.
    Token { at: usize, claimed: u32, drawn: u32 },
    /// At `at`, the claimed log-probability is not the model's.
    Logprob { at: usize, claimed: f32, computed: f32 },
    /// The rollout stops where it could not have.
    Stop { why: String },
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Malformed { why } => write!(f, "malformed: {why}"),
            Fault::Token { at, claimed, drawn } => {
                write!(f, "token {at}: claimed id {claimed}, the seeded sampler draws {drawn}")
            }
            Fault::Logprob { at, claimed, computed } => {
                write!(f, "token {at}: claimed log-probability {claimed}, the model gives {computed}")
            }
            Fault::Stop { why } => write!(f, "stop: {why}"),
        }
    }
}

/// What the replay found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Replay {
    /// None: the claim is what the declared computation gives.
    pub fault: Option<Fault>,
    /// Positions checked (completion tokens plus the end token).
    pub positions: usize,
    /// The largest |claimed − computed| log-probability seen (0 in an
    /// honest exact-tier claim).
    pub max_logprob_diff: f32,
    /// Tokens accepted as near ties (tolerant tier only).
    pub near_ties: usize,
    /// The farthest from a tie (in probability, see [`Tier::Tolerant`])
    /// among the near ties accepted.
    pub max_near_tie_gap: f32,
}

impl Runtime {
    /// The tokens that end a turn.
    pub fn end_of_turn(&self) -> &[u32] {
        &self.end_of_turn
    }

    /// Checks `claim` against the model with `adapter` (see the module's
    /// documentation). An `Err` is a fault of the checker's own (a model
    /// error); every fault of the claim is in [`Replay::fault`].
    pub fn replay(&self, claim: &Claim<'_>, adapter: Option<&Adapter>, tier: Tier) -> Result<Replay> {
        let mut out = Replay { fault: None, positions: 0, max_logprob_diff: 0.0, near_ties: 0, max_near_tie_gap: 0.0 };
        if let Some(why) = self.malformed(claim) {
            out.fault = Some(Fault::Malformed { why });
            return Ok(out);
        }
        let ended = claim.finish == Finish::EndOfTurn;
        // The token drawn at each position: the completion, then the end.
        let drawn_at: Vec<u32> = claim.tokens.iter().copied().chain(claim.end_token.filter(|_| ended)).collect();
        let vocab = self.config().vocab;
        let mut cache = self.model.new_cache();
        let mut first = Vec::new();
        for chunk in claim.prompt.chunks(PREFILL_CHUNK) {
            first = self
                .model
                .forward(&mut [SeqStep { tokens: chunk, cache: &mut cache, adapter, logits: Logits::Last }])?
                .remove(0);
        }
        let mut sampler = Sampler::new(claim.params.clone());
        let mut context: Vec<u32> = claim.prompt.to_vec();
        let temperature = claim.params.temperature;
        let mut check = |at: usize, logits: &[f32], out: &mut Replay| -> Option<Fault> {
            let claimed = drawn_at[at];
            let mut scaled = logits.to_vec();
            if temperature > 0.0 && temperature != 1.0 {
                scaled.iter_mut().for_each(|v| *v /= temperature);
            }
            let computed = log_prob(&scaled, claimed);
            let said = claim.logprobs[at];
            let diff = (said - computed).abs();
            out.max_logprob_diff = out.max_logprob_diff.max(if diff.is_nan() { f32::INFINITY } else { diff });
            let (drawn, tie) = match tier {
                Tier::Exact => (sampler.sample(&mut logits.to_vec(), &context), 0.0),
                Tier::Tolerant { .. } => {
                    let draw = sampler.sample_explained(&mut logits.to_vec(), &context);
                    let tie = if draw.intervals.is_empty() {
                        (log_prob(&scaled, draw.token).exp() - computed.exp()).abs()
                    } else {
                        draw.distance(claimed)
                    };
                    (draw.token, tie)
                }
            };
            context.push(claimed);
            out.positions += 1;
            match tier {
                Tier::Exact => {
                    if drawn != claimed {
                        return Some(Fault::Token { at, claimed, drawn });
                    }
                    if said.to_bits() != computed.to_bits() {
                        return Some(Fault::Logprob { at, claimed: said, computed });
                    }
                }
                Tier::Tolerant { logprob, near_tie, max_near_ties } => {
                    if drawn != claimed {
                        if tie > near_tie || out.near_ties >= max_near_ties {
                            return Some(Fault::Token { at, claimed, drawn });
                        }
                        out.near_ties += 1;
                        out.max_near_tie_gap = out.max_near_tie_gap.max(tie);
                    }
                    if diff.is_nan() || diff > logprob {
                        return Some(Fault::Logprob { at, claimed: said, computed });
                    }
                }
            }
            None
        };
        if let Some(fault) = check(0, &first, &mut out) {
            out.fault = Some(fault);
            return Ok(out);
        }
        // Position p ≥ 1 is scored by the logits after feeding drawn_at[p − 1].
        let fed = &drawn_at[..drawn_at.len() - 1];
        for (c, chunk) in fed.chunks(REPLAY_ROWS).enumerate() {
            let rows = self
                .model
                .forward(&mut [SeqStep { tokens: chunk, cache: &mut cache, adapter, logits: Logits::All }])?
                .remove(0);
            for (i, logits) in rows.chunks_exact(vocab).enumerate() {
                if let Some(fault) = check(1 + c * REPLAY_ROWS + i, logits, &mut out) {
                    out.fault = Some(fault);
                    return Ok(out);
                }
            }
        }
        out.fault = self.stop_fault(claim)?.map(|why| Fault::Stop { why });
        Ok(out)
    }

    /// What makes a claim impossible before any model work.
    fn malformed(&self, claim: &Claim<'_>) -> Option<String> {
        let vocab = self.config().vocab;
        let ended = claim.finish == Finish::EndOfTurn;
        if let Err(why) = claim.params.validate() {
            return Some(format!("sampling settings: {why}"));
        }
        if claim.prompt.is_empty() {
            return Some("the prompt has no tokens".to_owned());
        }
        if let Some(bad) =
            claim.prompt.iter().chain(claim.tokens).chain(&claim.end_token).find(|&&t| t as usize >= vocab)
        {
            return Some(format!("token id {bad} is outside the vocabulary of {vocab}"));
        }
        let total = claim.prompt.len() + claim.tokens.len();
        if total > self.model.max_positions() {
            return Some(format!("{total} tokens; the context holds {}", self.model.max_positions()));
        }
        if claim.tokens.len() > claim.params.max_new_tokens {
            return Some(format!("{} tokens; max_new_tokens is {}", claim.tokens.len(), claim.params.max_new_tokens));
        }
        let want = claim.tokens.len() + usize::from(ended);
        if claim.logprobs.len() != want {
            return Some(format!("{} log-probabilities for {want} drawn tokens", claim.logprobs.len()));
        }
        if let Some(bad) = claim.logprobs.iter().find(|v| !v.is_finite() || **v > 0.0) {
            return Some(format!("log-probability {bad} is not finite and ≤ 0"));
        }
        match (ended, claim.end_token) {
            (true, None) => return Some("an end of turn without its end token".to_owned()),
            (true, Some(t)) if !self.end_of_turn.contains(&t) => {
                return Some(format!("end token {t} does not end a turn"));
            }
            (false, Some(_)) => return Some("an end token without an end of turn".to_owned()),
            _ => {}
        }
        if let Some(t) = claim.tokens.iter().find(|t| self.end_of_turn.contains(t)) {
            return Some(format!("token {t} ends a turn but the completion goes on"));
        }
        None
    }

    /// Whether the rollout could stop where it does, as the engine decides.
    fn stop_fault(&self, claim: &Claim<'_>) -> Result<Option<String>> {
        let stops = &claim.params.stop;
        let text_of = |tokens: &[u32]| self.tokenizer.decode(tokens, true);
        let has_stop = |text: &str| stops.iter().any(|s| text.contains(s.as_str()));
        let n = claim.tokens.len();
        // The engine checks after every token: no stop string may appear
        // before the last one (before the end token, none at all).
        let checked = if claim.finish == Finish::EndOfTurn { n } else { n.saturating_sub(1) };
        if !stops.is_empty() && checked > 0 && has_stop(&text_of(&claim.tokens[..checked])?) {
            return Ok(Some("a stop string appears before the rollout stops".to_owned()));
        }
        let full_stop = !stops.is_empty() && n > 0 && has_stop(&text_of(claim.tokens)?);
        let at_length = n >= claim.params.max_new_tokens;
        let at_context = claim.prompt.len() + n >= self.model.max_positions();
        Ok(match claim.finish {
            Finish::EndOfTurn => None,
            Finish::Stop if !full_stop => Some("finish is \"stop\" but no stop string appears".to_owned()),
            Finish::Stop => None,
            _ if full_stop => Some("a stop string appears but the finish is not \"stop\"".to_owned()),
            Finish::Length if !at_length => {
                Some(format!("finish is \"length\" after {n} of {} tokens", claim.params.max_new_tokens))
            }
            Finish::Length => None,
            Finish::Context if at_length => Some("finish is \"context\" at the length limit".to_owned()),
            Finish::Context if !at_context => Some("finish is \"context\" but the context is not full".to_owned()),
            Finish::Context => None,
        })
    }
}
