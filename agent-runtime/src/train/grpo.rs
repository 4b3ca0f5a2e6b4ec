//! GRPO: group-relative policy optimisation of a LoRA adapter (Shao et al.
//! 2024, DeepSeekMath; Dr. GRPO, Liu et al. 2025, as an option).
//!
//! A step samples a group of `group` completions for each of
//! `prompts_per_step` prompts from the current policy on the runtime's
//! engine (continuous batching, the policy's adapter per sequence, each
//! token's log-probability recorded as it is drawn), scores every
//! completion with a reward the caller supplies (the Space's judge), and
//! normalises the rewards within each group into advantages. Groups whose
//! rewards are all equal carry no gradient: they are skipped and counted.
//! Then `iterations` optimizer steps run over the same rollouts, each
//! minimising the token-level clipped surrogate
//!
//! ```text
//! L = −(1/N) Σ_{i,t} [ min(ρ·A_i, clip(ρ, 1−ε, 1+ε_high)·A_i) − β·KL_t ]
//! ρ = π_θ(o_t | q, o_<t) / π_old(o_t | q, o_<t)
//! KL_t = π_ref/π_θ − log(π_ref/π_θ) − 1       (k3, per token, ≥ 0)
//! ```
//!
//! where π_old is the policy that sampled (its log-probabilities are the
//! trainer's own forward at the first iteration, when θ has not moved: the
//! trainer re-scores only after the policy moved, and the sampler's
//! recorded values measure how far the engine's arithmetic is from the
//! trainer's), π_ref the parent version (computed once per step, only when
//! β > 0), and N the step's completion tokens (GRPO) or completions ×
//! `max_new_tokens` (Dr. GRPO, whose advantages are not divided by the
//! group's standard deviation either).
//!
//! Prompts are drawn by a [`Curriculum`]: by their recent pass rate for
//! this policy (most weight where it is neither 0 nor 1, where groups are
//! least often all-equal) and, when the prompts carry difficulty tiers,
//! from the easiest tier up, the next tier opened when the policy passes
//! the open ones often enough. With the same seed, thread count and
//! machine, a run gives the same adapter bytes; its rollouts are recorded,
//! so a run can be replayed without the sampler or the judge.

use super::net::{Base, Batch, LoraWeights};
use super::{AdamW, TrainConfig, TrainError, learning_rate, to_adapter};
use crate::chat::Message;
use crate::engine::{Engine, Prompt, Request, Runtime};
use crate::sampling::SamplingParams;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// How rewards become advantages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdvantageKind {
    /// (r − mean) / std within the group; the loss averages over tokens.
    Grpo,
    /// r − mean (no std division); the loss divides by completions ×
    /// `max_new_tokens`, a constant, so no length bias (Dr. GRPO).
    DrGrpo,
}

/// GRPO's own settings (the adapter and optimizer settings are the
/// [`TrainConfig`]'s: rank, alpha, targets, learning rate, schedule,
/// weight decay, gradient clipping, seed, threads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpoSettings {
    /// Completions per prompt (G).
    pub group: usize,
    /// Prompts (groups) per step.
    pub prompts_per_step: usize,
    /// Rollout steps.
    pub steps: usize,
    /// Optimizer steps over each step's rollouts (μ; ≥ 2 makes the ratio
    /// and the clipping matter).
    pub iterations: usize,
    /// The KL penalty's coefficient (0: no reference pass at all).
    pub beta: f64,
    /// The clip range below 1 (and above 1 unless `epsilon_high` is set).
    pub epsilon: f64,
    /// The clip range above 1 ("clip higher", DAPO); `None` is `epsilon`.
    pub epsilon_high: Option<f64>,
    pub advantage: AdvantageKind,
    /// Sampling temperature of the rollouts (no top-k, no top-p, no
    /// repetition penalty: the ratio's π_old is exactly what sampled).
    pub temperature: f32,
    pub max_new_tokens: usize,
    /// Prompts longer than this keep their last tokens.
    pub max_prompt_length: usize,
    /// Draw prompts by their recent pass rate and walk up difficulty
    /// tiers; off: uniformly over every prompt.
    pub curriculum: bool,
    /// The recent pass rate on the open tiers at which the next opens.
    pub promote_at: f64,
    /// Groups per forward/backward (memory: about G × completion length ×
    /// vocabulary × 4 bytes per group).
    pub groups_per_micro_batch: usize,
}

impl Default for GrpoSettings {
    fn default() -> GrpoSettings {
        GrpoSettings {
            group: 8,
            prompts_per_step: 4,
            steps: 50,
            iterations: 2,
            beta: 0.04,
            epsilon: 0.2,
            epsilon_high: None,
            advantage: AdvantageKind::Grpo,
            temperature: 1.0,
            max_new_tokens: 64,
            max_prompt_length: 256,
            curriculum: true,
            promote_at: 0.5,
            groups_per_micro_batch: 2,
        }
    }
}

impl GrpoSettings {
    /// Checks every value; the message names the setting.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if !(2..=64).contains(&self.group) {
            return bad(format!("group must be 2..=64 completions, not {}", self.group));
        }
        if !(1..=256).contains(&self.prompts_per_step) {
            return bad(format!("prompts_per_step must be 1..=256, not {}", self.prompts_per_step));
        }
        if !(1..=100_000).contains(&self.steps) {
            return bad(format!("steps must be 1..=100000, not {}", self.steps));
        }
        if !(1..=16).contains(&self.iterations) {
            return bad(format!("iterations must be 1..=16, not {}", self.iterations));
        }
        if !(self.beta.is_finite() && (0.0..=10.0).contains(&self.beta)) {
            return bad(format!("beta must be in [0, 10], not {}", self.beta));
        }
        if !(self.epsilon > 0.0 && self.epsilon < 1.0) {
            return bad(format!("epsilon must be in (0, 1), not {}", self.epsilon));
        }
        if let Some(high) = self.epsilon_high
            && !(high >= self.epsilon && high <= 10.0)
        {
            return bad(format!("epsilon_high must be in [epsilon, 10], not {high}"));
        }
        if !(self.temperature > 0.0 && self.temperature <= 2.0) {
            return bad(format!("temperature must be in (0, 2], not {}", self.temperature));
        }
        if !(1..=2048).contains(&self.max_new_tokens) || !(1..=4096).contains(&self.max_prompt_length) {
            return bad(format!(
                "max_new_tokens ({}) must be 1..=2048 and max_prompt_length ({}) 1..=4096",
                self.max_new_tokens, self.max_prompt_length
            ));
        }
        if !(self.promote_at > 0.0 && self.promote_at <= 1.0) {
            return bad(format!("promote_at must be in (0, 1], not {}", self.promote_at));
        }
        if !(1..=64).contains(&self.groups_per_micro_batch) {
            return bad(format!("groups_per_micro_batch must be 1..=64, not {}", self.groups_per_micro_batch));
        }
        Ok(())
    }

    fn epsilon_high(&self) -> f64 {
        self.epsilon_high.unwrap_or(self.epsilon)
    }
}

/// A training prompt as the arena plays it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrpoPrompt {
    /// Its place in the caller's list (the Space's prompt file).
    pub index: usize,
    pub system: Option<String>,
    pub prompt: String,
    pub reference: Option<String>,
    /// Difficulty tier (0 the easiest).
    pub tier: u32,
}

/// One completion's reward.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reward {
    pub value: f64,
    /// Whether it passed (the Space's hard checks): what the curriculum's
    /// pass rate counts.
    pub passed: bool,
}

/// One sampled completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub seed: u64,
    /// The sampled tokens, the end-of-turn token included when the turn
    /// ended (it is trained on: ending is an action).
    pub tokens: Vec<u32>,
    /// Each token's log-probability as the sampler drew it.
    pub sampler_logprobs: Vec<f32>,
    pub reward: f64,
    pub passed: bool,
    pub text: String,
}

/// One prompt's group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub prompt_index: usize,
    pub tier: u32,
    /// The curriculum's weight when the prompt was drawn.
    pub weight: f64,
    pub prompt: Vec<u32>,
    pub samples: Vec<Sample>,
}

/// A step's rollouts, as sampled or as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRollouts {
    pub step: usize,
    pub groups: Vec<Group>,
    /// The highest open tier when the step drew its prompts.
    pub open_tier: u32,
    #[serde(default)]
    pub sample_seconds: f64,
    #[serde(default)]
    pub reward_seconds: f64,
}

/// Where a step's rollouts come from: the engine and the judge
/// ([`EngineRollouts`]), or a recorded run ([`Recorded`]).
pub trait RolloutSource {
    fn rollouts(&mut self, step: usize, policy: &LoraWeights) -> Result<StepRollouts, TrainError>;
}

/// Advantages of a group's rewards; `None` when the rewards are all equal
/// (no gradient).
pub fn advantages(rewards: &[f64], kind: AdvantageKind) -> Option<Vec<f64>> {
    let n = rewards.len();
    if n < 2 {
        return None;
    }
    let mean = rewards.iter().sum::<f64>() / n as f64;
    let spread = rewards.iter().fold(0f64, |m, r| m.max((r - mean).abs()));
    if spread < 1e-9 {
        return None;
    }
    match kind {
        AdvantageKind::DrGrpo => Some(rewards.iter().map(|r| r - mean).collect()),
        AdvantageKind::Grpo => {
            // The sample standard deviation, as TRL's torch.std.
            let std = (rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
            Some(rewards.iter().map(|r| (r - mean) / (std + 1e-4)).collect())
        }
    }
}

/// One token's part of the loss, and the loss's derivative with respect
/// to the token's log-probability under θ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenTerm {
    pub loss: f64,
    pub grad: f64,
    /// The clipped branch was the smaller: no gradient through the ratio.
    pub clipped: bool,
    pub kl: f64,
}

/// The clipped surrogate with the k3 KL penalty for one token (before the
/// loss's normalisation).
pub fn token_term(
    logp: f64,
    old: f64,
    reference: Option<f64>,
    advantage: f64,
    eps_low: f64,
    eps_high: f64,
    beta: f64,
) -> TokenTerm {
    let ratio = (logp - old).exp();
    let unclipped = ratio * advantage;
    let clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high) * advantage;
    let (objective, d_objective, was_clipped) =
        if unclipped <= clipped { (unclipped, unclipped, false) } else { (clipped, 0.0, true) };
    let (kl, d_kl) = match reference {
        Some(r) if beta > 0.0 => {
            let e = (r - logp).exp();
            (e - (r - logp) - 1.0, 1.0 - e)
        }
        _ => (0.0, 0.0),
    };
    TokenTerm { loss: -objective + beta * kl, grad: -d_objective + beta * d_kl, clipped: was_clipped, kl }
}

/// One rollout step's figures. Those of the forward (loss, KL, clipping,
/// entropy, sampler mismatch, gradient norm) are 0 at a step whose every
/// group was skipped: no forward ran.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GrpoStepMetrics {
    pub step: usize,
    pub steps: usize,
    /// The surrogate loss at the step's first iteration.
    pub loss: f64,
    pub reward_mean: f64,
    pub reward_std: f64,
    /// Share of completions that passed.
    pub pass_rate: f64,
    pub groups: usize,
    pub groups_skipped: usize,
    pub skipped_share: f64,
    /// Mean per-token KL (k3) to the reference at the first iteration
    /// (0 when β = 0: no reference pass).
    pub kl: f64,
    /// Share of tokens whose clipped branch was taken, over every
    /// iteration (0 at the first, where the ratio is 1).
    pub clip_fraction: f64,
    /// Mean per-token entropy of the policy over the completions (nats).
    pub entropy: f64,
    pub completion_length: f64,
    /// Mean |sampler log-prob − trainer log-prob| per token at the first
    /// iteration: the engine's arithmetic against the trainer's.
    pub sampler_mismatch: f64,
    pub learning_rate: f64,
    /// Before clipping, at the last iteration.
    pub grad_norm: f64,
    pub open_tier: u32,
    pub sample_seconds: f64,
    pub reward_seconds: f64,
    pub train_seconds: f64,
    /// Completion tokens sampled per second.
    pub sample_tokens_per_second: f64,
    /// Rows through the forward and backward per second.
    pub train_tokens_per_second: f64,
    pub seconds: f64,
}

/// What a run produced.
pub struct GrpoTrained {
    pub lora: LoraWeights,
    pub metrics: Vec<GrpoStepMetrics>,
    pub rollouts: Vec<StepRollouts>,
}

/// A GRPO run.
pub struct GrpoRun<'a, 'm> {
    pub base: &'a Base<'m>,
    pub cfg: &'a TrainConfig,
    pub grpo: &'a GrpoSettings,
    /// The parent version's factors: the start, and the KL reference.
    pub parent: Option<&'a LoraWeights>,
}

/// The per-row data of one micro-batch.
struct Micro {
    batch: Batch,
    /// Per scored row: the advantage of its completion.
    advantage: Vec<f64>,
    /// Per scored row: the sampler's log-probability.
    sampler: Vec<f32>,
}

impl Micro {
    /// A micro-batch of whole or partial groups: per group, the samples
    /// it takes (by index) with their advantages.
    fn new(parts: &[(&Group, Vec<usize>, Vec<f64>)], temperature: f32) -> Micro {
        let shapes: Vec<(&[u32], Vec<&[u32]>)> = parts
            .iter()
            .map(|(g, picked, _)| (&g.prompt[..], picked.iter().map(|&k| &g.samples[k].tokens[..]).collect()))
            .collect();
        let mut batch = Batch::shared(&shapes);
        batch.temperature = temperature;
        let mut advantage = Vec::with_capacity(batch.scored_tokens());
        let mut sampler = Vec::with_capacity(batch.scored_tokens());
        for (g, picked, adv) in parts {
            for (&k, &a) in picked.iter().zip(adv) {
                let s = &g.samples[k];
                advantage.extend(std::iter::repeat_n(a, s.tokens.len()));
                sampler.extend((0..s.tokens.len()).map(|i| s.sampler_logprobs.get(i).copied().unwrap_or(0.0)));
            }
        }
        Micro { batch, advantage, sampler }
    }

    /// Packs the kept groups into micro-batches of at most
    /// `groups_per_micro_batch` groups and [`MAX_MICRO_ROWS`] scored rows
    /// (the backward keeps a vocabulary-wide row per scored token); a group
    /// larger than that is split across micro-batches (its prompt is then
    /// computed once per part).
    fn pack(kept: &[(&Group, Vec<f64>)], groups_per_micro_batch: usize, temperature: f32) -> Vec<Micro> {
        let mut micros = Vec::new();
        let mut parts: Vec<(&Group, Vec<usize>, Vec<f64>)> = Vec::new();
        let mut rows = 0usize;
        for (g, adv) in kept {
            let mut opened = false;
            for (k, s) in g.samples.iter().enumerate() {
                let full = parts.len() >= groups_per_micro_batch && !opened;
                if !parts.is_empty() && (rows + s.tokens.len() > MAX_MICRO_ROWS || full) {
                    micros.push(Micro::new(&parts, temperature));
                    parts.clear();
                    rows = 0;
                    opened = false;
                }
                if !opened {
                    parts.push((g, Vec::new(), Vec::new()));
                    opened = true;
                }
                if let Some(last) = parts.last_mut() {
                    last.1.push(k);
                    last.2.push(adv[k]);
                }
                rows += s.tokens.len();
            }
        }
        if !parts.is_empty() {
            micros.push(Micro::new(&parts, temperature));
        }
        micros
    }
}

/// The most scored rows one forward/backward keeps (about 800 MB of
/// softmax rows for a 49,152-token vocabulary).
pub const MAX_MICRO_ROWS: usize = 4096;

/// The loss of one micro-batch given θ's log-probabilities, and (with
/// `grad`) its per-row gradient; `(loss, clipped rows, Σ kl)`.
#[allow(clippy::too_many_arguments)]
fn micro_terms(
    logp: &[f32],
    old: &[f32],
    reference: Option<&[f32]>,
    advantage: &[f64],
    scale: f64,
    grpo: &GrpoSettings,
    grad: Option<&mut Vec<f32>>,
) -> (f64, usize, f64) {
    let (mut loss, mut clipped, mut kl) = (0f64, 0usize, 0f64);
    let mut g = Vec::with_capacity(logp.len());
    for i in 0..logp.len() {
        let t = token_term(
            f64::from(logp[i]),
            f64::from(old[i]),
            reference.map(|r| f64::from(r[i])),
            advantage[i],
            grpo.epsilon,
            grpo.epsilon_high(),
            grpo.beta,
        );
        loss += t.loss * scale;
        clipped += usize::from(t.clipped);
        kl += t.kl;
        g.push((t.grad * scale) as f32);
    }
    if let Some(out) = grad {
        *out = g;
    }
    (loss, clipped, kl)
}

impl GrpoRun<'_, '_> {
    /// Trains for `grpo.steps` steps on the source's rollouts; `progress`
    /// sees every step's figures and rollouts as it ends.
    pub fn train(
        &self,
        source: &mut dyn RolloutSource,
        progress: &mut dyn FnMut(&GrpoStepMetrics, &StepRollouts),
    ) -> Result<GrpoTrained, TrainError> {
        let targets = self.cfg.validate()?;
        self.grpo.validate()?;
        let c = &self.base.config;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.cfg.seed);
        let mut lora = match self.parent {
            Some(p) => p.clone(),
            None => LoraWeights::init(c, &targets, self.cfg.rank, self.cfg.alpha, &mut rng),
        };
        let mut adam = AdamW { m: lora.zeros_like(), v: lora.zeros_like(), t: 0 };
        let steps = self.grpo.steps;
        let total_updates = steps * self.grpo.iterations;
        let mut metrics = Vec::with_capacity(steps);
        let mut all = Vec::with_capacity(steps);
        for step in 0..steps {
            self.cfg.cancel.check()?;
            let started = Instant::now();
            let rollouts = source.rollouts(step, &lora)?;
            // Sampling a step's groups is most of its time: checked again
            // before the updates.
            self.cfg.cancel.check()?;
            let train_started = Instant::now();
            let mut m = self.update(&mut lora, &mut adam, step, total_updates, &rollouts);
            m.train_seconds = train_started.elapsed().as_secs_f64();
            m.train_tokens_per_second /= m.train_seconds.max(1e-9);
            m.seconds = started.elapsed().as_secs_f64();
            progress(&m, &rollouts);
            metrics.push(m);
            all.push(rollouts);
        }
        Ok(GrpoTrained { lora, metrics, rollouts: all })
    }

    /// The optimizer steps on one step's rollouts. `train_tokens_per_second`
    /// comes back holding the rows processed (the caller divides).
    fn update(
        &self,
        lora: &mut LoraWeights,
        adam: &mut AdamW,
        step: usize,
        total_updates: usize,
        rollouts: &StepRollouts,
    ) -> GrpoStepMetrics {
        let g = self.grpo;
        let rewards: Vec<f64> = rollouts.groups.iter().flat_map(|gr| gr.samples.iter().map(|s| s.reward)).collect();
        let n = rewards.len().max(1) as f64;
        let reward_mean = rewards.iter().sum::<f64>() / n;
        let reward_std = (rewards.iter().map(|r| (r - reward_mean).powi(2)).sum::<f64>() / n).sqrt();
        let passed = rollouts.groups.iter().flat_map(|gr| &gr.samples).filter(|s| s.passed).count();
        let completions = rollouts.groups.iter().map(|gr| gr.samples.len()).sum::<usize>();
        let lengths: usize = rollouts.groups.iter().flat_map(|gr| &gr.samples).map(|s| s.tokens.len()).sum();
        let kept: Vec<(&Group, Vec<f64>)> = rollouts
            .groups
            .iter()
            .filter(|gr| gr.samples.iter().all(|s| !s.tokens.is_empty()))
            .filter_map(|gr| {
                let r: Vec<f64> = gr.samples.iter().map(|s| s.reward).collect();
                advantages(&r, g.advantage).map(|a| (gr, a))
            })
            .collect();
        let skipped = rollouts.groups.len() - kept.len();
        let sampled_tokens = lengths as f64;
        let mut m = GrpoStepMetrics {
            step: step + 1,
            steps: g.steps,
            loss: 0.0,
            reward_mean,
            reward_std,
            pass_rate: passed as f64 / completions.max(1) as f64,
            groups: rollouts.groups.len(),
            groups_skipped: skipped,
            skipped_share: skipped as f64 / rollouts.groups.len().max(1) as f64,
            kl: 0.0,
            clip_fraction: 0.0,
            entropy: 0.0,
            completion_length: lengths as f64 / completions.max(1) as f64,
            sampler_mismatch: 0.0,
            learning_rate: learning_rate(self.cfg, step * g.iterations, total_updates),
            grad_norm: 0.0,
            open_tier: rollouts.open_tier,
            sample_seconds: rollouts.sample_seconds,
            reward_seconds: rollouts.reward_seconds,
            train_seconds: 0.0,
            sample_tokens_per_second: sampled_tokens / rollouts.sample_seconds.max(1e-9),
            train_tokens_per_second: 0.0,
            seconds: 0.0,
        };
        if kept.is_empty() {
            return m;
        }
        let tokens: usize = kept.iter().flat_map(|(gr, _)| &gr.samples).map(|s| s.tokens.len()).sum();
        let scale = match g.advantage {
            AdvantageKind::Grpo => 1.0 / tokens as f64,
            AdvantageKind::DrGrpo => {
                1.0 / (kept.iter().map(|(gr, _)| gr.samples.len()).sum::<usize>() * g.max_new_tokens) as f64
            }
        };
        let micros = Micro::pack(&kept, g.groups_per_micro_batch, g.temperature);
        let references: Vec<Option<Vec<f32>>> = micros
            .iter()
            .map(|mb| (g.beta > 0.0).then(|| self.base.forward(self.parent, &mb.batch, false).0))
            .collect();
        let mut olds: Vec<Vec<f32>> = vec![Vec::new(); micros.len()];
        let (mut clipped, mut rows, mut processed) = (0usize, 0usize, 0usize);
        let (mut entropy, mut mismatch, mut kl) = (0f64, 0f64, 0f64);
        for it in 0..g.iterations {
            let mut grads = lora.zeros_like();
            for (k, mb) in micros.iter().enumerate() {
                let (logp, saved) = self.base.forward(Some(lora), &mb.batch, true);
                processed += mb.batch.rows();
                let Some(saved) = saved else { continue };
                if it == 0 {
                    olds[k].clone_from(&logp);
                    entropy += saved.entropy_sum(self.base.config.vocab);
                    mismatch += logp.iter().zip(&mb.sampler).map(|(a, b)| f64::from((a - b).abs())).sum::<f64>();
                }
                let mut g_rows = Vec::new();
                let (loss, c, k_sum) =
                    micro_terms(&logp, &olds[k], references[k].as_deref(), &mb.advantage, scale, g, Some(&mut g_rows));
                if it == 0 {
                    m.loss += loss;
                    kl += k_sum;
                }
                clipped += c;
                rows += logp.len();
                self.base.backward(lora, &mb.batch, saved, &g_rows, &mut grads);
            }
            let norm = grads.tensors().flat_map(|t| t.iter()).map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
            if self.cfg.max_grad_norm > 0.0 && norm > self.cfg.max_grad_norm {
                let k = (self.cfg.max_grad_norm / (norm + 1e-6)) as f32;
                grads.tensors_mut().for_each(|t| t.iter_mut().for_each(|v| *v *= k));
            }
            let lr = learning_rate(self.cfg, step * g.iterations + it, total_updates);
            adam.step(lora, &grads, lr, self.cfg.weight_decay);
            m.grad_norm = norm;
        }
        let first_rows = tokens.max(1) as f64;
        m.entropy = entropy / first_rows;
        m.sampler_mismatch = mismatch / first_rows;
        m.kl = kl / first_rows;
        m.clip_fraction = clipped as f64 / rows.max(1) as f64;
        m.train_tokens_per_second = processed as f64;
        m
    }
}

/// The prompts' sampling weights: by recent pass rate for this policy,
/// over the open difficulty tiers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Curriculum {
    pub enabled: bool,
    pub promote_at: f64,
    pub tiers: Vec<u32>,
    /// Decayed passes and tries per prompt.
    pub passes: Vec<f64>,
    pub tries: Vec<f64>,
    /// The highest open tier.
    pub open_tier: u32,
    /// The recent pass rate on the highest open tier (decayed per step).
    pub recent: Option<f64>,
}

impl Curriculum {
    /// How much older observations count after each new one.
    const DECAY: f64 = 0.5;
    /// The least weight of an open prompt (one every group failed or
    /// passed is still tried now and then).
    const FLOOR: f64 = 0.02;

    pub fn new(tiers: Vec<u32>, enabled: bool, promote_at: f64) -> Curriculum {
        let n = tiers.len();
        let open_tier = if enabled { tiers.iter().copied().min().unwrap_or(0) } else { u32::MAX };
        Curriculum { enabled, promote_at, tiers, passes: vec![0.0; n], tries: vec![0.0; n], open_tier, recent: None }
    }

    /// The estimated pass rate of prompt `i` (Laplace's rule over the
    /// decayed counts).
    pub fn pass_rate(&self, i: usize) -> f64 {
        (self.passes[i] + 1.0) / (self.tries[i] + 2.0)
    }

    /// Prompt `i`'s sampling weight: p(1 − p) plus a floor on open tiers,
    /// 0 on closed ones; 1 for every prompt when the curriculum is off.
    pub fn weight(&self, i: usize) -> f64 {
        if !self.enabled {
            return 1.0;
        }
        if self.tiers[i] > self.open_tier {
            return 0.0;
        }
        let p = self.pass_rate(i);
        p * (1.0 - p) + Self::FLOOR
    }

    /// `n` distinct prompts by weight (Efraimidis–Spirakis keys), with
    /// their weights; fewer when fewer are open.
    pub fn pick(&self, n: usize, rng: &mut impl Rng) -> Vec<(usize, f64)> {
        let mut keyed: Vec<(f64, usize, f64)> = (0..self.tiers.len())
            .filter_map(|i| {
                let w = self.weight(i);
                (w > 0.0).then(|| {
                    let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
                    (u.ln() / w, i, w)
                })
            })
            .collect();
        keyed.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        keyed.truncate(n);
        keyed.into_iter().map(|(_, i, w)| (i, w)).collect()
    }

    /// Records a group's passes; then, per step, opens the next tier when
    /// the recent pass rate on the highest open one reaches `promote_at`.
    pub fn record(&mut self, i: usize, passes: usize, tries: usize) {
        self.passes[i] = Self::DECAY * self.passes[i] + passes as f64;
        self.tries[i] = Self::DECAY * self.tries[i] + tries as f64;
    }

    /// After a step: `(passes, tries)` on the highest open tier's groups.
    pub fn end_step(&mut self, top_passes: usize, top_tries: usize) {
        if !self.enabled || top_tries == 0 {
            return;
        }
        let rate = top_passes as f64 / top_tries as f64;
        let recent = match self.recent {
            Some(r) => Self::DECAY * r + (1.0 - Self::DECAY) * rate,
            None => rate,
        };
        self.recent = Some(recent);
        if recent >= self.promote_at
            && let Some(next) = self.tiers.iter().copied().filter(|&t| t > self.open_tier).min()
        {
            self.open_tier = next;
            self.recent = None;
        }
    }
}

/// A completion's reward, from the Space's judge: the prompt, then the
/// group's texts; one reward per text.
pub type RewardFn<'a> = dyn FnMut(&GrpoPrompt, &[String]) -> Result<Vec<Reward>, String> + Send + 'a;

/// Rollouts sampled on the engine with the policy as an in-memory adapter,
/// scored by the caller's reward.
pub struct EngineRollouts<'a> {
    pub runtime: &'a Runtime,
    pub engine: &'a Engine,
    pub prompts: &'a [GrpoPrompt],
    pub grpo: &'a GrpoSettings,
    pub seed: u64,
    pub curriculum: Curriculum,
    pub reward: &'a mut RewardFn<'a>,
    tokens: Vec<Vec<u32>>,
    name: PathBuf,
}

impl<'a> EngineRollouts<'a> {
    /// Tokenizes every prompt (the chat template, the prompt's last
    /// `max_prompt_length` tokens).
    pub fn new(
        runtime: &'a Runtime,
        engine: &'a Engine,
        prompts: &'a [GrpoPrompt],
        grpo: &'a GrpoSettings,
        seed: u64,
        reward: &'a mut RewardFn<'a>,
        start: Option<Curriculum>,
    ) -> Result<EngineRollouts<'a>, TrainError> {
        if prompts.is_empty() {
            return Err(TrainError::Config("no training prompts".to_owned()));
        }
        let mut tokens = Vec::with_capacity(prompts.len());
        for p in prompts {
            let mut messages = Vec::new();
            if let Some(system) = &p.system {
                messages.push(Message::system(system.clone()));
            }
            messages.push(Message::user(p.prompt.clone()));
            let mut ids = runtime
                .prompt_tokens(&Prompt::Chat(messages))
                .map_err(|e| TrainError::Config(format!("prompt {}: {e}", p.index)))?;
            if ids.len() > grpo.max_prompt_length {
                ids.drain(..ids.len() - grpo.max_prompt_length);
            }
            tokens.push(ids);
        }
        let tiers: Vec<u32> = prompts.iter().map(|p| p.tier).collect();
        // A previous run's state continues when it is for the same prompts.
        let curriculum = match start {
            Some(c) if c.tiers == tiers && c.enabled == grpo.curriculum => c,
            _ => Curriculum::new(tiers, grpo.curriculum, grpo.promote_at),
        };
        static RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = PathBuf::from(format!("<grpo policy {}-{run}>", std::process::id()));
        Ok(EngineRollouts { runtime, engine, prompts, grpo, seed, curriculum, reward, tokens, name })
    }
}

impl Drop for EngineRollouts<'_> {
    fn drop(&mut self) {
        self.runtime.adapters.remove(&self.name);
    }
}

/// The seed of completion `k` of prompt `prompt` at `step`.
pub fn sample_seed(seed: u64, step: usize, prompt: usize, k: usize) -> u64 {
    let mut h = seed ^ 0x9e37_79b9_7f4a_7c15;
    for v in [step as u64, prompt as u64, k as u64] {
        h = (h ^ v).wrapping_mul(0x1000_0000_01b3).rotate_left(29);
    }
    h
}

impl RolloutSource for EngineRollouts<'_> {
    fn rollouts(&mut self, step: usize, policy: &LoraWeights) -> Result<StepRollouts, TrainError> {
        let g = self.grpo;
        let adapter = Arc::new(to_adapter(policy, &self.runtime.model.config));
        self.runtime.adapters.insert(&self.name, adapter);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(sample_seed(self.seed, step, usize::MAX, 0));
        let open_tier = self.curriculum.open_tier;
        let picks = self.curriculum.pick(g.prompts_per_step, &mut rng);
        let started = Instant::now();
        let mut waiting = Vec::with_capacity(picks.len() * g.group);
        for &(i, _) in &picks {
            for k in 0..g.group {
                let seed = sample_seed(self.seed, step, i, k);
                let params = SamplingParams {
                    temperature: g.temperature,
                    top_k: 0,
                    top_p: 1.0,
                    repetition_penalty: 1.0,
                    max_new_tokens: g.max_new_tokens,
                    seed,
                    ..SamplingParams::default()
                };
                let request = Request {
                    prompt: Prompt::Tokens(self.tokens[i].clone()),
                    adapter: Some(self.name.clone()),
                    params,
                    logprobs: true,
                };
                let rx = self.engine.submit(request).map_err(|e| TrainError::Config(format!("the engine: {e}")))?;
                waiting.push((seed, rx));
            }
        }
        let mut samples = Vec::with_capacity(waiting.len());
        for (seed, rx) in waiting {
            let out = rx
                .blocking_recv()
                .map_err(|_| TrainError::Config("the engine stopped".to_owned()))?
                .map_err(TrainError::Runtime)?;
            let mut tokens = out.tokens;
            tokens.extend(out.end_token);
            let mut lp = out.logprobs.unwrap_or_default();
            lp.truncate(tokens.len());
            samples.push(Sample { seed, tokens, sampler_logprobs: lp, reward: 0.0, passed: false, text: out.text });
        }
        let sample_seconds = started.elapsed().as_secs_f64();
        let reward_started = Instant::now();
        let mut groups = Vec::with_capacity(picks.len());
        let mut samples = samples.into_iter();
        let (mut top_passes, mut top_tries) = (0, 0);
        for &(i, weight) in &picks {
            let mut members: Vec<Sample> = samples.by_ref().take(g.group).collect();
            let texts: Vec<String> = members.iter().map(|s| s.text.clone()).collect();
            let rewards = (self.reward)(&self.prompts[i], &texts)
                .map_err(|e| TrainError::Config(format!("reward of prompt {}: {e}", self.prompts[i].index)))?;
            if rewards.len() != members.len() {
                return Err(TrainError::Config(format!(
                    "the reward gave {} values for {} completions",
                    rewards.len(),
                    members.len()
                )));
            }
            for (s, r) in members.iter_mut().zip(&rewards) {
                s.reward = if r.value.is_finite() { r.value } else { 0.0 };
                s.passed = r.passed;
            }
            let passes = members.iter().filter(|s| s.passed).count();
            self.curriculum.record(i, passes, members.len());
            if self.prompts[i].tier == open_tier {
                top_passes += passes;
                top_tries += members.len();
            }
            groups.push(Group {
                prompt_index: self.prompts[i].index,
                tier: self.prompts[i].tier,
                weight,
                prompt: self.tokens[i].clone(),
                samples: members,
            });
        }
        self.curriculum.end_step(top_passes, top_tries);
        Ok(StepRollouts {
            step,
            groups,
            open_tier: if self.grpo.curriculum { open_tier } else { 0 },
            sample_seconds,
            reward_seconds: reward_started.elapsed().as_secs_f64(),
        })
    }
}

/// A recorded run's rollouts, step by step (a replay needs neither the
/// sampler nor the judge).
pub struct Recorded {
    pub steps: std::vec::IntoIter<StepRollouts>,
}

impl RolloutSource for Recorded {
    fn rollouts(&mut self, step: usize, _policy: &LoraWeights) -> Result<StepRollouts, TrainError> {
        match self.steps.next() {
            Some(r) if r.step == step => Ok(r),
            Some(r) => {
                Err(TrainError::Config(format!("the recorded rollouts give step {} where {step} was due", r.step)))
            }
            None => Err(TrainError::Config(format!("the recorded rollouts end before step {step}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Target;

    #[test]
    fn equal_rewards_give_no_advantage_and_the_rest_are_centred() {
        assert_eq!(advantages(&[1.0, 1.0, 1.0], AdvantageKind::Grpo), None);
        assert_eq!(advantages(&[0.5], AdvantageKind::Grpo), None);
        let a = advantages(&[1.0, 0.0, 0.0, 1.0], AdvantageKind::Grpo).unwrap();
        assert!(a.iter().sum::<f64>().abs() < 1e-12);
        // The sample std of [1, 0, 0, 1] is sqrt(1/3).
        assert!((a[0] - 0.5 / (1f64 / 3.0).sqrt()).abs() < 1e-3, "{a:?}");
        let d = advantages(&[1.0, 0.0, 0.0, 1.0], AdvantageKind::DrGrpo).unwrap();
        assert_eq!(d, vec![0.5, -0.5, -0.5, 0.5]);
    }

    #[test]
    fn the_token_term_matches_finite_differences_and_clips() {
        let h = 1e-6;
        for &(logp, old, adv) in &[(-1.0, -1.05, 1.3), (-2.0, -1.0, 0.7), (-0.5, -1.5, -0.4), (-1.2, -1.2, -2.0)] {
            for reference in [None, Some(-1.4)] {
                let t = token_term(logp, old, reference, adv, 0.2, 0.28, 0.04);
                let up = token_term(logp + h, old, reference, adv, 0.2, 0.28, 0.04).loss;
                let down = token_term(logp - h, old, reference, adv, 0.2, 0.28, 0.04).loss;
                let numeric = (up - down) / (2.0 * h);
                assert!((t.grad - numeric).abs() < 1e-5, "{logp} {old} {adv}: {} vs {numeric}", t.grad);
            }
        }
        // Ratio e^1 with a positive advantage: clipped, no gradient from it.
        let t = token_term(-1.0, -2.0, None, 1.0, 0.2, 0.2, 0.0);
        assert!(t.clipped && t.grad == 0.0 && (t.loss + 1.2).abs() < 1e-12);
        // The same ratio with a negative advantage is not clipped.
        let t = token_term(-1.0, -2.0, None, -1.0, 0.2, 0.2, 0.0);
        assert!(!t.clipped && (t.grad - std::f64::consts::E).abs() < 1e-9);
        // KL is zero at the reference.
        assert_eq!(token_term(-1.0, -1.0, Some(-1.0), 0.0, 0.2, 0.2, 0.1).kl, 0.0);
    }

    #[test]
    fn the_curriculum_weighs_uncertain_prompts_and_opens_tiers() {
        let mut c = Curriculum::new(vec![0, 0, 0, 1, 1], true, 0.5);
        c.record(0, 8, 8);
        c.record(1, 0, 8);
        c.record(2, 4, 8);
        assert!(c.weight(2) > c.weight(0) && c.weight(2) > c.weight(1));
        assert!(c.weight(0) > 0.0, "a solved prompt keeps a floor");
        assert_eq!(c.weight(3), 0.0, "tier 1 is closed");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let picked = c.pick(10, &mut rng);
        assert_eq!(picked.len(), 3, "only the open tier's prompts");
        // Drawn first in proportion to the weights: 0.27 against 0.11 and
        // 0.11 (p = 1/2, 9/10, 1/10 by Laplace's rule, plus the floor).
        let mut firsts = [0usize; 3];
        for _ in 0..600 {
            firsts[c.pick(1, &mut rng)[0].0] += 1;
        }
        let share = firsts[2] as f64 / 600.0;
        assert!((share - 0.27 / 0.49).abs() < 0.07, "{firsts:?}");
        c.end_step(3, 8);
        assert_eq!(c.open_tier, 0);
        c.end_step(8, 8);
        assert_eq!(c.open_tier, 1, "the recent rate reached 0.5");
        assert!(c.weight(3) > 0.0);
        let off = Curriculum::new(vec![0, 1], false, 0.5);
        assert_eq!((off.weight(0), off.weight(1)), (1.0, 1.0));
    }

    fn tiny() -> crate::gguf::ModelConfig {
        super::super::net::tests::tiny("llama")
    }

    fn groups(rng: &mut impl Rng) -> Vec<Group> {
        (0..2)
            .map(|gi| Group {
                prompt_index: gi,
                tier: 0,
                weight: 1.0,
                prompt: (0..5 + gi).map(|_| rng.random_range(0..50)).collect(),
                samples: (0..3)
                    .map(|k| Sample {
                        seed: k,
                        tokens: (0..2 + k as usize + gi).map(|_| rng.random_range(0..50)).collect(),
                        sampler_logprobs: Vec::new(),
                        reward: rng.random_range(0.0..1.0),
                        passed: false,
                        text: String::new(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// The whole loss of one micro-batch through the f32 forward, as a
    /// function of the LoRA factors.
    fn loss(base: &Base<'_>, lora: &LoraWeights, mb: &Micro, old: &[f32], reference: &[f32], g: &GrpoSettings) -> f64 {
        let (logp, _) = base.forward(Some(lora), &mb.batch, false);
        micro_terms(&logp, old, Some(reference), &mb.advantage, 0.1, g, None).0
    }

    #[test]
    fn the_gradient_matches_the_f32_forward() {
        let c = tiny();
        let base = Base::random(c.clone(), 3, 1);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut lora = LoraWeights::init(&c, &Target::ALL, 4, 8.0, &mut rng);
        // Non-zero B so every factor has a gradient.
        lora.tensors_mut().for_each(|t| t.iter_mut().for_each(|v| *v += rng.random_range(-0.05..0.05)));
        let gs = groups(&mut rng);
        let with_adv: Vec<(&Group, Vec<f64>)> = gs
            .iter()
            .map(|g| {
                (g, advantages(&g.samples.iter().map(|s| s.reward).collect::<Vec<_>>(), AdvantageKind::Grpo).unwrap())
            })
            .collect();
        let parts: Vec<(&Group, Vec<usize>, Vec<f64>)> =
            with_adv.into_iter().map(|(g, a)| (g, (0..g.samples.len()).collect(), a)).collect();
        let mb = Micro::new(&parts, 0.8);
        let settings = GrpoSettings { beta: 0.3, epsilon: 0.2, ..GrpoSettings::default() };
        // Old and reference log-probs near θ's, so some ratios clip and
        // most do not.
        let (now, _) = base.forward(Some(&lora), &mb.batch, false);
        // Log-ratios of ±0.05 (inside the clip range) or ±0.4 (outside),
        // away from the kinks at ln 0.8 and ln 1.2.
        let old: Vec<f32> = now
            .iter()
            .map(|&l| {
                let size = if rng.random_bool(0.5) { 0.05 } else { 0.4 };
                l + if rng.random_bool(0.5) { size } else { -size }
            })
            .collect();
        let reference: Vec<f32> = now.iter().map(|&l| l + rng.random_range(-0.5..0.5)).collect();
        let (logp, saved) = base.forward(Some(&lora), &mb.batch, true);
        let mut g_rows = Vec::new();
        micro_terms(&logp, &old, Some(&reference), &mb.advantage, 0.1, &settings, Some(&mut g_rows));
        let mut grads = lora.zeros_like();
        base.backward(&lora, &mb.batch, saved.unwrap(), &g_rows, &mut grads);
        let mut checked = 0;
        for (ti, tensor) in grads.tensors().enumerate() {
            for j in [0, tensor.len() / 2, tensor.len() - 1] {
                let analytic = f64::from(tensor[j]);
                let mut plus = lora.clone();
                let mut minus = lora.clone();
                let h = 1e-3f32;
                plus.tensors_mut().nth(ti).unwrap()[j] += h;
                minus.tensors_mut().nth(ti).unwrap()[j] -= h;
                let numeric = (loss(&base, &plus, &mb, &old, &reference, &settings)
                    - loss(&base, &minus, &mb, &old, &reference, &settings))
                    / (2.0 * f64::from(h));
                // The tolerance of the DPO gradient check (f32 forward).
                let tol = 2e-2 * analytic.abs().max(numeric.abs()) + 2e-3;
                assert!((analytic - numeric).abs() < tol, "tensor {ti}[{j}]: analytic {analytic}, numeric {numeric}");
                checked += 1;
            }
        }
        assert!(checked >= 3 * 2 * 7 * 2);
    }

    #[test]
    fn micro_batches_are_bounded_in_rows_and_keep_every_sample_once() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let mut gs = groups(&mut rng);
        // A group whose samples alone pass the row cap.
        for s in &mut gs[1].samples {
            s.tokens = vec![1; MAX_MICRO_ROWS / 2 + 7];
        }
        let kept: Vec<(&Group, Vec<f64>)> = gs.iter().map(|g| (g, vec![0.5; g.samples.len()])).collect();
        let micros = Micro::pack(&kept, 2, 1.0);
        assert!(micros.iter().all(|m| m.batch.scored_tokens() <= MAX_MICRO_ROWS));
        let total: usize = micros.iter().map(|m| m.batch.scored_tokens()).sum();
        let want: usize = gs.iter().flat_map(|g| &g.samples).map(|s| s.tokens.len()).sum();
        assert_eq!(total, want, "every sample's tokens once");
        assert!(micros.len() >= 3, "the big group was split");
        // One group per micro-batch when asked.
        let small: Vec<(&Group, Vec<f64>)> = kept[..1].to_vec();
        assert_eq!(Micro::pack(&small, 1, 1.0).len(), 1);
    }

    /// Recorded rollouts, stepwise, for a run on the tiny model.
    struct Fixed(Vec<Group>);
    impl RolloutSource for Fixed {
        fn rollouts(&mut self, step: usize, _policy: &LoraWeights) -> Result<StepRollouts, TrainError> {
            Ok(StepRollouts { step, groups: self.0.clone(), open_tier: 0, sample_seconds: 0.0, reward_seconds: 0.0 })
        }
    }

    #[test]
    fn training_raises_the_likelihood_of_the_rewarded_completions_and_is_deterministic() {
        let c = tiny();
        let base = Base::random(c.clone(), 3, 1);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut gs = groups(&mut rng);
        // One group whose rewards are all equal: skipped.
        gs[1].samples.iter_mut().for_each(|s| s.reward = 0.5);
        let cfg = TrainConfig { learning_rate: 1e-2, rank: 4, alpha: 8.0, threads: 1, ..TrainConfig::default() };
        let grpo = GrpoSettings { steps: 6, iterations: 2, beta: 0.0, ..GrpoSettings::default() };
        let run = |cfg: &TrainConfig| {
            let r = GrpoRun { base: &base, cfg, grpo: &grpo, parent: None };
            r.train(&mut Fixed(gs.clone()), &mut |_, _| {}).unwrap()
        };
        let a = run(&cfg);
        let b = run(&cfg);
        assert_eq!(a.lora.a, b.lora.a);
        assert_eq!(a.lora.b, b.lora.b);
        assert!(a.metrics.iter().all(|m| m.groups_skipped == 1 && m.skipped_share == 0.5));
        assert!(a.metrics[1].clip_fraction >= 0.0);
        // The best completion of group 0 gained likelihood against the worst.
        let g0 = &gs[0];
        let best = (0..3).max_by(|&x, &y| g0.samples[x].reward.total_cmp(&g0.samples[y].reward)).unwrap();
        let worst = (0..3).min_by(|&x, &y| g0.samples[x].reward.total_cmp(&g0.samples[y].reward)).unwrap();
        let seqs: Vec<super::super::Seq> = [best, worst]
            .iter()
            .map(|&k| super::super::Seq {
                tokens: g0.prompt.iter().chain(&g0.samples[k].tokens).copied().collect(),
                scored_from: g0.prompt.len(),
            })
            .collect();
        let init = LoraWeights::init(&c, &Target::ALL, 4, 8.0, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
        let before = super::super::sequence_logprobs(&base, Some(&init), &seqs);
        let after = super::super::sequence_logprobs(&base, Some(&a.lora), &seqs);
        assert!(after[0] - before[0] > after[1] - before[1], "best {before:?} → {after:?}");
    }
}
