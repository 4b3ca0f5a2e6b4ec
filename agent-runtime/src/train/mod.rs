//! Adapter training: DPO (and SFT on the chosen answers) on LoRA factors
//! over a frozen base, with AdamW on the LoRA parameters only.
//!
//! The forward and backward are ours ([`net`]): f32 arithmetic over the
//! model file's dequantized weights, gradients only where the LoRA factors
//! need them. The reference log-likelihoods DPO compares against come from
//! the parent version (the parent adapter, or the base when there is none),
//! computed once before the first step with the same forward. With the same
//! seed, thread count and inputs, a run gives the same adapter bytes.

pub mod dpo;
pub mod grpo;
pub mod manifest;
pub mod net;
pub mod pairs;

use crate::chat::Message;
use crate::engine::{Prompt, Runtime};
use crate::lora::{Adapter, AdapterError, LoraPair};
use crate::model::Target;
use crate::train::pairs::PreferencePair;
pub use net::{Base, LoraWeights, Seq, Storage};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;

/// What a run optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Direct preference optimisation on (chosen, rejected) pairs.
    Dpo,
    /// Supervised fine-tuning on the chosen answers (mean token NLL).
    Sft,
    /// Group-relative policy optimisation on the policy's own samples,
    /// rewarded by the Space's judge ([`grpo`]); it takes prompts, not
    /// pairs.
    Grpo,
}

/// The learning-rate schedule after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    Constant,
    /// Linear decay to zero at the last step (TRL's default).
    Linear,
    Cosine,
}

/// Every setting of a run; recorded whole in its manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub objective: Objective,
    /// DPO's β: how far the policy may move from the reference.
    pub beta: f64,
    /// DPO only: adds this times the chosen answers' mean token NLL to the
    /// loss (RPO, Pang et al. 2024; TRL's `rpo_alpha`). 0 is plain DPO.
    pub rpo_alpha: f64,
    /// LoRA rank and alpha for a new adapter (a parent adapter's own are
    /// kept when training continues from it).
    pub rank: usize,
    pub alpha: f32,
    /// PEFT module names (`q_proj`, …, `down_proj`).
    pub target_modules: Vec<String>,
    pub learning_rate: f64,
    pub schedule: Schedule,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    /// Gradients are scaled down to this global norm (0: no clipping).
    pub max_grad_norm: f64,
    /// Optimizer steps; when absent, `epochs` passes over the pairs.
    pub steps: Option<usize>,
    pub epochs: usize,
    /// Pairs per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Prompt plus answer, in tokens; answers are cut to fit.
    pub max_length: usize,
    /// Prompts longer than this keep their last tokens.
    pub max_prompt_length: usize,
    pub seed: u64,
    pub storage: Storage,
    /// Threads of the kernels (part of the result's identity: the same
    /// count gives the same bytes).
    pub threads: usize,
    /// Stops the run at its next step when set (a job past its time limit):
    /// no part of a run's identity, never recorded.
    #[serde(skip)]
    pub cancel: Cancel,
}

/// A flag a run checks at every step (and between the reference pass's
/// batches): once set, the run ends with [`TrainError::Cancelled`] within
/// one step. Clones share the flag; every two compare equal (it is not
/// part of a run's settings).
#[derive(Debug, Clone, Default)]
pub struct Cancel(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// `Err(Cancelled)` once cancelled.
    pub fn check(&self) -> Result<(), TrainError> {
        if self.is_cancelled() { Err(TrainError::Cancelled) } else { Ok(()) }
    }
}

impl PartialEq for Cancel {
    fn eq(&self, _: &Cancel) -> bool {
        true
    }
}

impl Default for TrainConfig {
    fn default() -> TrainConfig {
        TrainConfig {
            objective: Objective::Dpo,
            beta: 0.1,
            rpo_alpha: 0.0,
            rank: 16,
            alpha: 32.0,
            target_modules: Target::ALL.iter().map(|t| t.module().to_owned()).collect(),
            learning_rate: 5e-5,
            schedule: Schedule::Linear,
            warmup_steps: 0,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            steps: None,
            epochs: 1,
            batch_size: 4,
            grad_accum: 1,
            max_length: 512,
            max_prompt_length: 256,
            seed: 0,
            storage: Storage::Dense,
            threads: crate::model::default_threads(),
            cancel: Cancel::default(),
        }
    }
}

impl TrainConfig {
    /// Checks every value; the message names the setting.
    pub fn validate(&self) -> Result<Vec<Target>, TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if !(self.beta > 0.0 && self.beta.is_finite()) {
            return bad(format!("beta must be a positive number, not {}", self.beta));
        }
        if !(self.rpo_alpha >= 0.0 && self.rpo_alpha <= 100.0) {
            return bad(format!("rpo_alpha must be in [0, 100], not {}", self.rpo_alpha));
        }
        if !(1..=256).contains(&self.rank) {
            return bad(format!("rank must be 1..=256, not {}", self.rank));
        }
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            return bad(format!("alpha must be positive, not {}", self.alpha));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate < 1.0) {
            return bad(format!("learning_rate must be in (0, 1), not {}", self.learning_rate));
        }
        if !((0.0..1.0).contains(&self.weight_decay) && self.max_grad_norm >= 0.0 && self.max_grad_norm.is_finite()) {
            return bad("weight_decay must be in [0, 1) and max_grad_norm ≥ 0".to_owned());
        }
        if self.steps == Some(0) || self.epochs == 0 || self.batch_size == 0 || self.grad_accum == 0 {
            return bad("steps, epochs, batch_size and grad_accum must be at least 1".to_owned());
        }
        if self.max_length < 8 || self.max_prompt_length == 0 || self.max_prompt_length >= self.max_length {
            return bad(format!(
                "max_prompt_length ({}) must be at least 1 and below max_length ({}, at least 8)",
                self.max_prompt_length, self.max_length
            ));
        }
        if self.threads == 0 || self.threads > 256 {
            return bad(format!("threads must be 1..=256, not {}", self.threads));
        }
        let mut targets = Vec::new();
        for name in &self.target_modules {
            match Target::from_module(name) {
                Some(t) => targets.push(t),
                None => {
                    return bad(format!(
                        "unknown target module `{name}` (one of: {})",
                        Target::ALL.map(Target::module).join(", ")
                    ));
                }
            }
        }
        if targets.is_empty() {
            return bad("target_modules is empty".to_owned());
        }
        targets.sort();
        targets.dedup();
        Ok(targets)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("training setting: {0}")]
    Config(String),
    #[error("pair {line}: {message}")]
    Pair { line: usize, message: String },
    #[error(transparent)]
    Adapter(#[from] AdapterError),
    #[error(transparent)]
    Runtime(#[from] crate::RuntimeError),
    #[error(transparent)]
    Pairs(#[from] crate::train::pairs::PairsError),
    #[error("manifest {path}: {message}")]
    Manifest { path: std::path::PathBuf, message: String },
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("the run was cancelled")]
    Cancelled,
}

/// One optimizer step's figures (TRL's names where TRL logs the same).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepMetrics {
    pub step: usize,
    pub steps: usize,
    pub loss: f64,
    /// DPO: the share of pairs whose chosen reward beats the rejected one.
    pub reward_accuracy: f64,
    pub chosen_reward: f64,
    pub rejected_reward: f64,
    pub reward_margin: f64,
    /// Mean token negative log-likelihood of the chosen answers (DPO; with
    /// `rpo_alpha` it is part of `loss`).
    #[serde(default)]
    pub chosen_nll: f64,
    pub learning_rate: f64,
    /// Before clipping.
    pub grad_norm: f64,
    /// Rows through the forward and backward this step (a pair's prompt
    /// counts once).
    pub tokens: usize,
    /// Prompt + chosen + rejected tokens of this step's pairs.
    pub pair_tokens: usize,
    pub seconds: f64,
}

/// A pair tokenized and cut to the run's lengths.
#[derive(Debug, Clone)]
pub struct Example {
    pub prompt: Vec<u32>,
    pub chosen: Vec<u32>,
    pub rejected: Vec<u32>,
}

/// Tokenizes a pair as the arena plays it: the chat template over the
/// (optional) system prompt and the user prompt, then the answer and the
/// end-of-turn token; the prompt keeps its last `max_prompt_length`
/// tokens, the answers their first tokens up to `max_length`.
pub fn prepare(runtime: &Runtime, pair: &PreferencePair, cfg: &TrainConfig) -> Result<Example, TrainError> {
    let bad = |message: String| TrainError::Pair { line: pair.line, message };
    let mut messages = Vec::new();
    if let Some(system) = &pair.system {
        messages.push(Message::system(system.clone()));
    }
    messages.push(Message::user(pair.prompt.clone()));
    let mut prompt = runtime.prompt_tokens(&Prompt::Chat(messages)).map_err(|e| bad(e.to_string()))?;
    if prompt.len() > cfg.max_prompt_length {
        prompt.drain(..prompt.len() - cfg.max_prompt_length);
    }
    let room = cfg.max_length - prompt.len();
    let eos = runtime.tokenizer.eos;
    let answer = |text: &str, name: &str| -> Result<Vec<u32>, TrainError> {
        if text.trim().is_empty() {
            return Err(bad(format!("`{name}` is empty")));
        }
        let mut ids = runtime.tokenizer.encode(text, false, false).map_err(|e| bad(e.to_string()))?;
        ids.extend(eos);
        ids.truncate(room);
        Ok(ids)
    };
    Ok(Example { chosen: answer(&pair.chosen, "chosen")?, rejected: answer(&pair.rejected, "rejected")?, prompt })
}

/// What a run produced.
pub struct Trained {
    pub lora: LoraWeights,
    pub metrics: Vec<StepMetrics>,
    /// Seconds spent on the reference pass and on the steps.
    pub reference_seconds: f64,
    pub train_seconds: f64,
    /// Pair tokens (prompt + chosen + rejected) the steps went through.
    pub pair_tokens: usize,
}

impl Trained {
    /// The result as an adapter the runtime plays.
    pub fn adapter(&self, runtime: &Runtime) -> Adapter {
        to_adapter(&self.lora, &runtime.model.config)
    }
}

/// LoRA factors in the runtime's adapter type.
pub fn to_adapter(lora: &LoraWeights, config: &crate::gguf::ModelConfig) -> Adapter {
    let t = lora.targets.len();
    let layers = (0..config.n_layers)
        .map(|li| {
            lora.targets
                .iter()
                .enumerate()
                .map(|(ti, &target)| {
                    (target, LoraPair { a: lora.a[li * t + ti].clone(), b: lora.b[li * t + ti].clone() })
                })
                .collect::<BTreeMap<_, _>>()
        })
        .collect();
    Adapter::from_pairs(config, lora.rank, lora.alpha, layers)
}

/// An adapter's factors, to continue training from.
pub fn from_adapter(adapter: &Adapter, config: &crate::gguf::ModelConfig) -> Result<LoraWeights, TrainError> {
    if adapter.use_rslora {
        return Err(TrainError::Config(
            "the parent adapter uses rsLoRA scaling, which training does not support".into(),
        ));
    }
    let targets = adapter.targets();
    let mut a = Vec::new();
    let mut b = Vec::new();
    for li in 0..config.n_layers {
        for &target in &targets {
            let (out_dim, in_dim) = target.shape(config);
            let pair = adapter.pair(li, target).unwrap_or_else(|| LoraPair {
                a: vec![0.0; adapter.rank * in_dim],
                b: vec![0.0; out_dim * adapter.rank],
            });
            a.push(pair.a);
            b.push(pair.b);
        }
    }
    Ok(LoraWeights { rank: adapter.rank, alpha: adapter.alpha, scale: adapter.scale, targets, a, b })
}

/// The learning rate before optimizer step `step` (0-based) of `total`.
pub fn learning_rate(cfg: &TrainConfig, step: usize, total: usize) -> f64 {
    let warm = cfg.warmup_steps;
    if step < warm {
        return cfg.learning_rate * step as f64 / warm as f64;
    }
    let span = total.saturating_sub(warm).max(1) as f64;
    let progress = (step - warm) as f64 / span;
    cfg.learning_rate
        * match cfg.schedule {
            Schedule::Constant => 1.0,
            Schedule::Linear => (1.0 - progress).max(0.0),
            Schedule::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        }
}

/// AdamW (PyTorch's: decoupled weight decay, bias-corrected moments).
struct AdamW {
    m: LoraWeights,
    v: LoraWeights,
    t: i32,
}

impl AdamW {
    const B1: f64 = 0.9;
    const B2: f64 = 0.999;
    const EPS: f64 = 1e-8;

    fn step(&mut self, params: &mut LoraWeights, grads: &LoraWeights, lr: f64, weight_decay: f64) {
        self.t += 1;
        let c1 = 1.0 - Self::B1.powi(self.t);
        let c2 = 1.0 - Self::B2.powi(self.t);
        let decay = (1.0 - lr * weight_decay) as f32;
        let (b1, b2, eps) = (Self::B1 as f32, Self::B2 as f32, Self::EPS as f32);
        let (lr_c1, c2) = ((lr / c1) as f32, c2 as f32);
        for (((p, g), m), v) in
            params.tensors_mut().zip(grads.tensors()).zip(self.m.tensors_mut()).zip(self.v.tensors_mut())
        {
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *p = *p * decay - lr_c1 * *m / ((*v / c2).sqrt() + eps);
            }
        }
    }
}

/// A batch of examples' answers, each pair's prompt computed once: with
/// `both`, chosen then rejected per example (sequences 2k and 2k+1),
/// otherwise the chosen answers alone.
fn answers_batch(examples: &[&Example], both: bool) -> net::Batch {
    let groups: Vec<(&[u32], Vec<&[u32]>)> = examples
        .iter()
        .map(|e| {
            let answers = if both { vec![&e.chosen[..], &e.rejected[..]] } else { vec![&e.chosen[..]] };
            (&e.prompt[..], answers)
        })
        .collect();
    net::Batch::shared(&groups)
}

/// The sequence log-likelihoods of `seqs` under `lora` (or the base).
pub fn sequence_logprobs(base: &Base<'_>, lora: Option<&LoraWeights>, seqs: &[Seq]) -> Vec<f64> {
    let batch = net::Batch::new(seqs);
    let (logp, _) = base.forward(lora, &batch, false);
    batch.per_seq(&logp)
}

/// A training run over prepared examples.
pub struct Run<'a, 'm> {
    pub base: &'a Base<'m>,
    pub cfg: &'a TrainConfig,
    pub examples: &'a [Example],
    /// The parent version's factors (the reference, and the start).
    pub parent: Option<&'a LoraWeights>,
}

impl Run<'_, '_> {
    /// Optimizer steps this run makes.
    pub fn total_steps(&self) -> usize {
        let per_step = self.cfg.batch_size * self.cfg.grad_accum;
        self.cfg.steps.unwrap_or_else(|| self.examples.len().div_ceil(per_step) * self.cfg.epochs)
    }

    /// Trains; `progress` sees every step's figures as it ends.
    pub fn train(&self, progress: &mut dyn FnMut(&StepMetrics)) -> Result<Trained, TrainError> {
        let targets = self.cfg.validate()?;
        if self.cfg.objective == Objective::Grpo {
            return Err(TrainError::Config(
                "GRPO trains on prompts and rewards (train::grpo), not on pairs".to_owned(),
            ));
        }
        if self.examples.is_empty() {
            return Err(TrainError::Config("no training pairs".to_owned()));
        }
        let c = &self.base.config;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.cfg.seed);
        let mut lora = match self.parent {
            Some(p) => p.clone(),
            None => LoraWeights::init(c, &targets, self.cfg.rank, self.cfg.alpha, &mut rng),
        };

        // The reference: the parent version's log-likelihoods, once.
        let started = Instant::now();
        let dpo = self.cfg.objective == Objective::Dpo;
        let mut reference = vec![(0f64, 0f64); self.examples.len()];
        if dpo {
            for (chunk_i, chunk) in self.examples.chunks(self.cfg.batch_size).enumerate() {
                self.cfg.cancel.check()?;
                let picked: Vec<&Example> = chunk.iter().collect();
                let batch = answers_batch(&picked, true);
                let (logp, _) = self.base.forward(self.parent, &batch, false);
                for (i, pair) in batch.per_seq(&logp).chunks(2).enumerate() {
                    reference[chunk_i * self.cfg.batch_size + i] = (pair[0], pair[1]);
                }
            }
        }
        let reference_seconds = started.elapsed().as_secs_f64();

        let total = self.total_steps();
        let mut order: Vec<usize> = Vec::new();
        let mut next = 0usize;
        let mut draw = |rng: &mut rand_chacha::ChaCha8Rng| -> usize {
            if next == order.len() {
                order = (0..self.examples.len()).collect();
                order.shuffle(rng);
                next = 0;
            }
            next += 1;
            order[next - 1]
        };
        let mut adam = AdamW { m: lora.zeros_like(), v: lora.zeros_like(), t: 0 };
        let mut metrics = Vec::with_capacity(total);
        let mut pair_tokens = 0usize;
        let train_started = Instant::now();
        for step in 0..total {
            self.cfg.cancel.check()?;
            let step_started = Instant::now();
            let mut grads = lora.zeros_like();
            let mut sums = [0f64; 5];
            let mut tokens = 0usize;
            let step_pair_tokens_before = pair_tokens;
            for _ in 0..self.cfg.grad_accum {
                let picked: Vec<usize> = (0..self.cfg.batch_size).map(|_| draw(&mut rng)).collect();
                let accum = self.cfg.grad_accum as f64;
                let chosen: Vec<&Example> = picked.iter().map(|&i| &self.examples[i]).collect();
                let batch = answers_batch(&chosen, dpo);
                tokens += batch.rows();
                pair_tokens += chosen.iter().map(|e| e.prompt.len() + e.chosen.len() + e.rejected.len()).sum::<usize>();
                let (logp, saved) = self.base.forward(Some(&lora), &batch, true);
                let per_seq = batch.per_seq(&logp);
                let g_seq: Vec<f64> = if dpo {
                    let quads: Vec<(f64, f64, f64, f64)> = picked
                        .iter()
                        .enumerate()
                        .map(|(k, &i)| (per_seq[2 * k], per_seq[2 * k + 1], reference[i].0, reference[i].1))
                        .collect();
                    let (mean, each) = dpo::batch(&quads, self.cfg.beta);
                    // The chosen answers' NLL, averaged over their tokens
                    // in the micro-batch (as TRL's cross-entropy does).
                    let chosen_tokens = chosen.iter().map(|e| e.chosen.len()).sum::<usize>().max(1) as f64;
                    let nll = -quads.iter().map(|q| q.0).sum::<f64>() / chosen_tokens;
                    let rpo = self.cfg.rpo_alpha;
                    sums[0] += (mean.loss + rpo * nll) / accum;
                    sums[1] += mean.accuracy / accum;
                    sums[2] += mean.chosen_reward / accum;
                    sums[3] += mean.rejected_reward / accum;
                    sums[4] += nll / accum;
                    // The backward takes ∂loss/∂logp per sequence.
                    each.iter()
                        .flat_map(|t| [(t.grad_chosen - rpo / chosen_tokens) / accum, t.grad_rejected / accum])
                        .collect()
                } else {
                    let n = batch.scored_tokens().max(1) as f64;
                    sums[0] += -per_seq.iter().sum::<f64>() / n / accum;
                    vec![-1.0 / n / accum; picked.len()]
                };
                let g_rows = batch.spread(&g_seq);
                // saved is Some: keep was true.
                if let Some(saved) = saved {
                    self.base.backward(&lora, &batch, saved, &g_rows, &mut grads);
                }
            }
            let norm = grads.tensors().flat_map(|t| t.iter()).map(|&g| f64::from(g) * f64::from(g)).sum::<f64>().sqrt();
            if self.cfg.max_grad_norm > 0.0 && norm > self.cfg.max_grad_norm {
                let k = (self.cfg.max_grad_norm / (norm + 1e-6)) as f32;
                grads.tensors_mut().for_each(|t| t.iter_mut().for_each(|g| *g *= k));
            }
            let lr = learning_rate(self.cfg, step, total);
            adam.step(&mut lora, &grads, lr, self.cfg.weight_decay);
            let m = StepMetrics {
                step: step + 1,
                steps: total,
                loss: sums[0],
                reward_accuracy: sums[1],
                chosen_reward: sums[2],
                rejected_reward: sums[3],
                reward_margin: sums[2] - sums[3],
                chosen_nll: sums[4],
                learning_rate: lr,
                grad_norm: norm,
                tokens,
                pair_tokens: pair_tokens - step_pair_tokens_before,
                seconds: step_started.elapsed().as_secs_f64(),
            };
            progress(&m);
            metrics.push(m);
        }
        Ok(Trained {
            lora,
            metrics,
            reference_seconds,
            train_seconds: train_started.elapsed().as_secs_f64(),
            pair_tokens,
        })
    }
}
