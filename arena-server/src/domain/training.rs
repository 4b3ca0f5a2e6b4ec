//! Training in the arena as rules: a job's settings and their limits, and
//! the promotion gate's decision from its games.

use super::DomainError;
use agent_runtime::train::{Objective, Schedule, Storage, TrainConfig};
use judge::calibrate::Rate;
use serde::{Deserialize, Serialize};

/// When an agent trains in a Space: when its owner asks, or every N new
/// pairs it took part in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainingPolicy {
    Manual,
    Every(i32),
}

impl TrainingPolicy {
    /// The policy a form or body names: `mode` ("manual" or "every") and,
    /// for "every", the pair count (1 to 100,000).
    pub fn parse(mode: &str, every_pairs: Option<i32>) -> Result<TrainingPolicy, DomainError> {
        match (mode, every_pairs) {
            ("manual", None) => Ok(TrainingPolicy::Manual),
            ("manual", Some(_)) => Err(DomainError::new("every_pairs", "every_pairs goes with mode \"every\"")),
            ("every", Some(n)) if (1..=100_000).contains(&n) => Ok(TrainingPolicy::Every(n)),
            ("every", _) => Err(DomainError::new("every_pairs", "mode \"every\" needs every_pairs in 1..=100000")),
            (other, _) => Err(DomainError::new("mode", format!("mode {other:?} is not one of \"manual\", \"every\""))),
        }
    }

    pub fn mode(self) -> super::PolicyMode {
        match self {
            TrainingPolicy::Manual => super::PolicyMode::Manual,
            TrainingPolicy::Every(_) => super::PolicyMode::Every,
        }
    }

    pub fn every_pairs(self) -> Option<i32> {
        match self {
            TrainingPolicy::Manual => None,
            TrainingPolicy::Every(n) => Some(n),
        }
    }
}

/// What a training job does: the trainer's hyper-parameters (see
/// `agent_runtime::train::TrainConfig`) and the arena's own limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobSettings {
    pub objective: Objective,
    pub beta: f64,
    pub rpo_alpha: f64,
    pub rank: usize,
    pub alpha: f32,
    pub target_modules: Vec<String>,
    pub learning_rate: f64,
    pub schedule: Schedule,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    /// Optimizer steps; when absent, `epochs` passes over the pairs.
    pub steps: Option<usize>,
    pub epochs: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub max_length: usize,
    pub max_prompt_length: usize,
    pub seed: u64,
    /// A job needs at least this many pairs.
    pub min_pairs: usize,
    /// It trains on the agent's newest pairs, at most this many.
    pub max_pairs: usize,
    /// Held-out prompts the gate plays (fewer if the Space holds out fewer).
    pub gate_prompts: usize,
    /// GRPO (objective `grpo`): completions per prompt, prompts per
    /// rollout step, optimizer steps per rollout, the KL penalty to the
    /// parent, the clip range, sampling temperature, and whether prompts
    /// are drawn by the curriculum. `steps` counts rollout steps (20 when
    /// absent); the job samples the Space's training prompts, never its
    /// held-out ones, and needs no pairs.
    pub group: usize,
    pub prompts_per_step: usize,
    pub iterations: usize,
    pub kl_beta: f64,
    pub epsilon: f64,
    pub temperature: f32,
    pub curriculum: bool,
}

impl Default for JobSettings {
    fn default() -> JobSettings {
        let t = TrainConfig::default();
        JobSettings {
            objective: t.objective,
            beta: t.beta,
            rpo_alpha: t.rpo_alpha,
            rank: t.rank,
            alpha: t.alpha,
            target_modules: t.target_modules,
            // What worked best in the experiment loop (README): a little
            // faster than TRL's default, two passes, short sequences.
            learning_rate: 1e-4,
            schedule: t.schedule,
            warmup_steps: 0,
            weight_decay: 0.0,
            steps: None,
            epochs: 2,
            batch_size: t.batch_size,
            grad_accum: 1,
            max_length: 256,
            max_prompt_length: 128,
            seed: 0,
            min_pairs: 16,
            max_pairs: 256,
            gate_prompts: 32,
            group: 8,
            prompts_per_step: 4,
            iterations: 2,
            kl_beta: 0.04,
            epsilon: 0.2,
            temperature: 1.0,
            curriculum: true,
        }
    }
}

impl JobSettings {
    /// The trainer's configuration on `threads` threads.
    pub fn train_config(&self, threads: usize) -> TrainConfig {
        TrainConfig {
            objective: self.objective,
            beta: self.beta,
            rpo_alpha: self.rpo_alpha,
            rank: self.rank,
            alpha: self.alpha,
            target_modules: self.target_modules.clone(),
            learning_rate: self.learning_rate,
            schedule: self.schedule,
            warmup_steps: self.warmup_steps,
            weight_decay: self.weight_decay,
            max_grad_norm: 1.0,
            steps: self.steps,
            epochs: self.epochs,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            max_length: self.max_length,
            max_prompt_length: self.max_prompt_length,
            seed: self.seed,
            storage: Storage::Dense,
            threads,
            cancel: Default::default(),
        }
    }

    /// Rollout steps of a GRPO job.
    pub fn grpo_steps(&self) -> usize {
        self.steps.unwrap_or(20)
    }

    /// GRPO's settings for a Space whose answers have `max_new_tokens`.
    pub fn grpo_settings(&self, max_new_tokens: usize) -> agent_runtime::train::grpo::GrpoSettings {
        agent_runtime::train::grpo::GrpoSettings {
            group: self.group,
            prompts_per_step: self.prompts_per_step,
            steps: self.grpo_steps(),
            iterations: self.iterations,
            beta: self.kl_beta,
            epsilon: self.epsilon,
            temperature: self.temperature,
            max_new_tokens: max_new_tokens.clamp(1, self.max_length),
            max_prompt_length: self.max_prompt_length,
            curriculum: self.curriculum,
            ..Default::default()
        }
    }

    /// Whether the job needs pairs (every objective but GRPO).
    pub fn needs_pairs(&self) -> bool {
        self.objective != Objective::Grpo
    }

    /// The most tokens a job with these settings trains on over `pairs`
    /// pairs: every pair pass (`steps × batch_size × grad_accum`, or
    /// `epochs × pairs`) at `max_length` tokens for each of its two
    /// answers; for GRPO every completion (`steps × prompts_per_step ×
    /// group`) at `max_length` tokens, once per iteration. What a job is
    /// priced by.
    pub fn token_budget(&self, pairs: usize) -> u64 {
        if self.objective == Objective::Grpo {
            return (self.grpo_steps() as u64)
                .saturating_mul(self.prompts_per_step as u64 * self.group as u64)
                .saturating_mul(self.iterations.max(1) as u64)
                .saturating_mul(self.max_length as u64);
        }
        let passes = match self.steps {
            Some(steps) => steps as u64 * self.batch_size.max(1) as u64 * self.grad_accum.max(1) as u64,
            None => self.epochs as u64 * pairs as u64,
        };
        passes.saturating_mul(2 * self.max_length as u64)
    }

    /// The default of `arena.training_time_limit_s`, in minutes: a job
    /// running longer is stopped at its next step and failed without a
    /// refund (a backstop; the token budget's cap is the real bound).
    pub const MAX_MINUTES: u64 = 90;

    /// The largest token budget one job may have (see `token_budget`).
    pub const MAX_TOKEN_BUDGET: u64 = 4_000_000;

    /// Checks every value, the trainer's own checks included; the error
    /// names the setting. Limits keep one job to minutes, not days.
    pub fn check(&self) -> Result<(), DomainError> {
        let bad = |field: &str, message: String| Err(DomainError::new(&format!("settings.{field}"), message));
        if self.steps.is_some_and(|s| s > 2000) {
            return bad("steps", "at most 2000 steps per job".into());
        }
        if self.epochs > 10 {
            return bad("epochs", "at most 10 epochs per job".into());
        }
        if self.rank > 64 {
            return bad("rank", format!("rank must be 1..=64 in the arena, not {}", self.rank));
        }
        if self.batch_size > 32 || self.grad_accum > 32 {
            return bad("batch_size", "batch_size and grad_accum are at most 32".into());
        }
        if self.max_length > 1024 {
            return bad("max_length", "at most 1024 tokens".into());
        }
        if !(1..=4096).contains(&self.min_pairs) || self.max_pairs < self.min_pairs || self.max_pairs > 4096 {
            return bad("max_pairs", "need 1 ≤ min_pairs ≤ max_pairs ≤ 4096".into());
        }
        if !(4..=256).contains(&self.gate_prompts) {
            return bad("gate_prompts", format!("gate_prompts must be 4..=256, not {}", self.gate_prompts));
        }
        self.train_config(1).validate().map_err(|e| DomainError::new("settings", e.to_string()))?;
        if self.objective == Objective::Grpo {
            if self.grpo_steps() > 500 {
                return bad("steps", "at most 500 rollout steps per GRPO job".into());
            }
            if self.prompts_per_step > 32 {
                return bad("prompts_per_step", "at most 32 prompts per step".into());
            }
            self.grpo_settings(self.max_length / 2)
                .validate()
                .map_err(|e| DomainError::new("settings", e.to_string()))?;
        }
        // With a step count the budget is known now; by epochs it depends
        // on the pairs, and the job is checked again when they are picked.
        if self.steps.is_some() || self.objective == Objective::Grpo {
            self.check_budget(self.token_budget(0))?;
        }
        Ok(())
    }

    /// Refuses a token budget past `MAX_TOKEN_BUDGET`, naming what to lower.
    pub fn check_budget(&self, budget: u64) -> Result<(), DomainError> {
        if budget > Self::MAX_TOKEN_BUDGET {
            return Err(DomainError::new(
                "settings.steps",
                format!(
                    "this job could train on {budget} tokens (passes over the pairs × 2 × max_length); one job may \
                     train on at most {}: fewer steps, epochs, max_pairs or a shorter max_length",
                    Self::MAX_TOKEN_BUDGET
                ),
            ));
        }
        Ok(())
    }
}

/// Credits a job with `token_budget` tokens costs at `credits_per_mtoken`
/// per million tokens, rounded up (so every job but a free one costs ≥ 1).
pub fn training_price(token_budget: u64, credits_per_mtoken: i64) -> i64 {
    let credits = (token_budget as u128 * credits_per_mtoken.max(0) as u128).div_ceil(1_000_000);
    credits.min(i64::MAX as u128) as i64
}

/// How one game of the gate went for the new version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Win,
    Tie,
    Loss,
}

/// One game of the gate: the new version and its parent on one held-out
/// prompt.
#[derive(Debug, Clone, Serialize)]
pub struct Game {
    pub prompt_index: usize,
    /// Whether the new version's answer was listed first.
    pub new_first: bool,
    pub outcome: Outcome,
    /// The answers, cut to 400 characters.
    pub new: String,
    pub parent: String,
}

/// The gate's record, stored on the job.
#[derive(Debug, Clone, Serialize)]
pub struct Gate {
    pub prompts: usize,
    pub wins: usize,
    pub losses: usize,
    pub ties: usize,
    /// Wins among decisive games, with its Wilson 95% interval.
    pub win_rate: Rate,
    pub passed: bool,
    pub promoted: bool,
    pub reason: String,
    pub games: Vec<Game>,
}

/// An answer as the gate keeps it: at most 400 characters.
pub fn clip(text: &str) -> String {
    const KEEP: usize = 400;
    if text.chars().count() <= KEEP { text.to_owned() } else { text.chars().take(KEEP).collect::<String>() + "…" }
}

impl Gate {
    /// Decides from the games: the new version passes when the lower end of
    /// the Wilson 95% interval of its win rate over decisive games is above
    /// 50%; it is promoted when it passed and the agent still plays
    /// `parent` (its `current` version).
    pub fn decide(games: Vec<Game>, parent: i32, current: i32) -> Gate {
        let count = |o: Outcome| games.iter().filter(|g| g.outcome == o).count();
        let (wins, losses, ties) = (count(Outcome::Win), count(Outcome::Loss), count(Outcome::Tie));
        let win_rate = Rate::new(wins, wins + losses);
        let passed = wins + losses > 0 && win_rate.low > 0.5;
        let promoted = passed && current == parent;
        let interval = format!("[{:.1}%, {:.1}%]", win_rate.low * 100.0, win_rate.high * 100.0);
        let reason = if promoted {
            format!("promoted: the win rate's 95% interval {interval} lies above 50%")
        } else if passed {
            format!(
                "passed the gate but not promoted: the agent's current version moved from v{parent} to v{current} meanwhile"
            )
        } else {
            format!("not promoted: the win rate's 95% interval {interval} does not lie above 50%")
        };
        Gate { prompts: games.len(), wins, losses, ties, win_rate, passed, promoted, reason, games }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn games(outcomes: &[Outcome]) -> Vec<Game> {
        outcomes
            .iter()
            .enumerate()
            .map(|(i, &outcome)| Game {
                prompt_index: i,
                new_first: i % 2 == 0,
                outcome,
                new: String::new(),
                parent: String::new(),
            })
            .collect()
    }

    #[test]
    fn the_gate_needs_an_interval_above_half() {
        let gate = Gate::decide(games(&[Outcome::Win; 12]), 1, 1);
        assert!(gate.passed && gate.promoted, "{}", gate.reason);
        let gate = Gate::decide(games(&[Outcome::Win, Outcome::Loss, Outcome::Win, Outcome::Tie]), 1, 1);
        assert!(!gate.passed && !gate.promoted, "{}", gate.reason);
        let gate = Gate::decide(games(&[Outcome::Tie; 8]), 1, 1);
        assert!(!gate.passed, "ties alone decide nothing");
        let gate = Gate::decide(games(&[Outcome::Win; 12]), 1, 2);
        assert!(gate.passed && !gate.promoted && gate.reason.contains("moved"), "{}", gate.reason);
    }

    #[test]
    fn settings_are_bounded() {
        assert!(JobSettings::default().check().is_ok());
        let too_long = JobSettings { steps: Some(5000), ..JobSettings::default() };
        assert_eq!(too_long.check().unwrap_err().field, "settings.steps");
        let few = JobSettings { min_pairs: 10, max_pairs: 5, ..JobSettings::default() };
        assert_eq!(few.check().unwrap_err().field, "settings.max_pairs");
    }
}
