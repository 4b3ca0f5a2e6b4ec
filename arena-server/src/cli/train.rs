//! `arena train dpo | sft | verify`: adapter training from the command line.

use super::args::{GrpoArgs, ScheduleArg, StorageArg, TrainArgs, TrainVerifyArgs};
use super::model::model_path;
use crate::app::config::Settings;
use agent_runtime::Runtime;
use agent_runtime::engine::{Engine, EngineConfig};
use agent_runtime::model::default_threads;
use agent_runtime::train::grpo::{AdvantageKind, GrpoSettings, GrpoStepMetrics};
use agent_runtime::train::manifest::GrpoFiles;
use agent_runtime::train::manifest::{self, RunFiles};
use agent_runtime::train::{Objective, Schedule, StepMetrics, Storage, TrainConfig};
use anyhow::{Context, bail};
use judge::{Judge, JudgeModel};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

fn config(args: &TrainArgs, objective: Objective) -> anyhow::Result<TrainConfig> {
    let schedule = match args.schedule {
        ScheduleArg::Constant => Schedule::Constant,
        ScheduleArg::Linear => Schedule::Linear,
        ScheduleArg::Cosine => Schedule::Cosine,
    };
    let storage = match args.storage {
        StorageArg::Dense => Storage::Dense,
        StorageArg::Quantized => Storage::Quantized,
    };
    let cfg = TrainConfig {
        objective,
        beta: args.beta,
        rpo_alpha: args.rpo_alpha,
        rank: args.rank,
        alpha: args.alpha,
        target_modules: args.targets.clone(),
        learning_rate: args.learning_rate,
        schedule,
        warmup_steps: args.warmup_steps,
        weight_decay: args.weight_decay,
        max_grad_norm: args.max_grad_norm,
        steps: args.steps,
        epochs: args.epochs,
        batch_size: args.batch_size,
        grad_accum: args.grad_accum,
        max_length: args.max_length,
        max_prompt_length: args.max_prompt_length,
        seed: args.seed,
        storage,
        threads: args.model.threads.unwrap_or_else(default_threads),
        cancel: Default::default(),
    };
    cfg.validate()?;
    Ok(cfg)
}

/// A one-line progress bar on a terminal, one line per step otherwise.
pub fn progress_printer() -> impl FnMut(&StepMetrics) + Send {
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    move |m: &StepMetrics| {
        const WIDTH: usize = 24;
        let done = WIDTH * m.step / m.steps.max(1);
        let elapsed = started.elapsed().as_secs_f64();
        let eta = elapsed / m.step as f64 * (m.steps - m.step) as f64;
        let line = format!(
            "step {}/{} [{}{}] loss {:.4} acc {:.2} margin {:+.4} lr {:.2e} {:.2} s/step eta {:.0} s",
            m.step,
            m.steps,
            "#".repeat(done),
            ".".repeat(WIDTH - done),
            m.loss,
            m.reward_accuracy,
            m.reward_margin,
            m.learning_rate,
            m.seconds,
            eta
        );
        let mut err = std::io::stderr().lock();
        if tty {
            let _ = write!(err, "\r{line}\x1b[K");
            if m.step == m.steps {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{line}");
        }
    }
}

pub fn train(args: &TrainArgs, objective: Objective, settings: &Settings) -> anyhow::Result<()> {
    let cfg = config(args, objective)?;
    let path = model_path(&args.model, settings)?;
    let runtime = Runtime::load(&path, cfg.threads).with_context(|| format!("loading {}", path.display()))?;
    let files = RunFiles { model: &path, pairs: &args.pairs, parent: args.adapter.as_deref(), out: &args.out };
    let mut progress = progress_printer();
    let m = manifest::train_to_dir(&runtime, &files, &cfg, &mut progress)?;
    let summary = serde_json::json!({
        "out": args.out,
        "adapter_sha256": m.result.adapter_sha256,
        "steps": m.result.steps,
        "final_loss": m.result.final_loss,
        "final_reward_accuracy": m.result.final_reward_accuracy,
        "trainable_parameters": m.result.trainable_parameters,
        "reference_seconds": m.result.reference_seconds,
        "train_seconds": m.result.train_seconds,
        "pair_tokens_per_second": m.result.pair_tokens as f64 / m.result.train_seconds.max(1e-9),
        "manifest": args.out.join(manifest::MANIFEST_FILE),
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// The Space's judge on `runtime` (the same model answers and judges), or
/// with `verifiers_only` its verifiers alone.
pub fn space_judge(
    space: &crate::domain::space::Space,
    runtime: &Arc<Runtime>,
    model: &Path,
    verifiers_only: bool,
) -> anyhow::Result<Judge> {
    let mut config = space.judge.clone();
    if verifiers_only {
        config.mode = judge::JudgeMode::None;
    }
    let judge_model = if config.needs_model() {
        let file = std::fs::File::open(model).with_context(|| format!("opening {}", model.display()))?;
        let sha = agent_runtime::model_file::sha256_reader(std::io::BufReader::new(file))?;
        Some(Arc::new(JudgeModel::new(runtime.clone(), sha)?))
    } else {
        None
    };
    let judge = Judge::new(Arc::new(config), judge_model)?;
    Ok(if verifiers_only { judge } else { judge.with_embedder_for(model)? })
}

/// A line per GRPO step on stderr.
pub fn grpo_printer() -> impl FnMut(&GrpoStepMetrics) + Send {
    let started = Instant::now();
    move |m: &GrpoStepMetrics| {
        eprintln!(
            "step {}/{} reward {:.3}±{:.3} pass {:.2} skipped {}/{} kl {:.4} clip {:.3} entropy {:.2} len {:.1} \
             tier {} | sample {:.0} tok/s, train {:.0} tok/s, {:.1} s/step, {:.0} s",
            m.step,
            m.steps,
            m.reward_mean,
            m.reward_std,
            m.pass_rate,
            m.groups_skipped,
            m.groups,
            m.kl,
            m.clip_fraction,
            m.entropy,
            m.completion_length,
            m.open_tier,
            m.sample_tokens_per_second,
            m.train_tokens_per_second,
            m.seconds,
            started.elapsed().as_secs_f64()
        );
    }
}

/// GRPO settings from the command line.
pub fn grpo_settings(args: &GrpoArgs, space_max_new: usize) -> GrpoSettings {
    GrpoSettings {
        group: args.group,
        prompts_per_step: args.prompts_per_step,
        steps: args.steps,
        iterations: args.iterations,
        beta: args.beta,
        epsilon: args.epsilon,
        epsilon_high: args.epsilon_high,
        advantage: if args.dr_grpo { AdvantageKind::DrGrpo } else { AdvantageKind::Grpo },
        temperature: args.temperature,
        max_new_tokens: args.max_new_tokens.unwrap_or(space_max_new),
        curriculum: args.curriculum,
        ..GrpoSettings::default()
    }
}

pub fn grpo(args: &GrpoArgs, settings: &Settings) -> anyhow::Result<()> {
    let space = super::space::load_space(&args.space).map_err(|errors| anyhow::anyhow!(errors.join("\n")))?;
    let threads = args.model.threads.unwrap_or_else(default_threads);
    let cfg = TrainConfig {
        objective: Objective::Grpo,
        rank: args.rank,
        alpha: 2.0 * args.rank as f32,
        target_modules: args.targets.clone(),
        learning_rate: args.learning_rate,
        schedule: Schedule::Constant,
        seed: args.seed,
        threads,
        ..TrainConfig::default()
    };
    cfg.validate()?;
    let grpo = grpo_settings(args, space.max_new_tokens as usize);
    grpo.validate()?;
    let prompts = crate::work::grpo::training_prompts(&space, args.system.as_deref());
    if prompts.is_empty() {
        bail!("{} has no training prompts (every prompt is held out)", args.space.display());
    }
    let path = model_path(&args.model, settings)?;
    let runtime = Arc::new(Runtime::load(&path, threads).with_context(|| format!("loading {}", path.display()))?);
    let judge = space_judge(&space, &runtime, &path, args.verifiers_only)?;
    let engine = Engine::start(runtime.clone(), EngineConfig { max_batch: 64, queue_capacity: 1 << 16 });
    let source = args.space.display().to_string();
    let files = GrpoFiles {
        model: &path,
        parent: args.adapter.as_deref(),
        out: &args.out,
        prompt_source: &source,
        curriculum: None,
    };
    let mut reward = crate::work::grpo::judge_reward(&judge);
    let mut progress = grpo_printer();
    eprintln!(
        "GRPO on {} training prompts of {} ({} held out), G = {}, {} prompts per step, {} steps",
        prompts.len(),
        space.name,
        space.held_out.len(),
        grpo.group,
        grpo.prompts_per_step,
        grpo.steps
    );
    let m = manifest::grpo_to_dir(&runtime, &engine, &files, &prompts, &cfg, &grpo, &mut reward, &mut progress)?;
    let summary = serde_json::json!({
        "out": args.out,
        "adapter_sha256": m.result.adapter_sha256,
        "steps": m.result.steps,
        "first_reward_mean": m.result.first_reward_mean,
        "last_reward_mean": m.result.last_reward_mean,
        "skipped_share": m.result.skipped_share,
        "open_tier": m.result.open_tier,
        "sample_seconds": m.result.sample_seconds,
        "reward_seconds": m.result.reward_seconds,
        "train_seconds": m.result.train_seconds,
        "trainable_parameters": m.result.trainable_parameters,
        "manifest": args.out.join(manifest::MANIFEST_FILE),
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

pub fn verify(args: &TrainVerifyArgs) -> anyhow::Result<bool> {
    let (manifest_path, model, pairs) = (args.manifest.as_path(), args.model.as_deref(), args.pairs.as_deref());
    // Both manifest kinds record the model and the thread count here.
    let bytes = std::fs::read(manifest_path).with_context(|| format!("reading {}", manifest_path.display()))?;
    let head: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", manifest_path.display()))?;
    let recorded_model = head["base_model"]["path"].as_str().map(std::path::PathBuf::from);
    let threads = head["config"]["threads"].as_u64().unwrap_or(1).clamp(1, 256) as usize;
    let Some(model_path) = model.map(Path::to_path_buf).or(recorded_model) else {
        bail!("{} names no base model", manifest_path.display());
    };
    let runtime = Runtime::load(&model_path, threads).with_context(|| format!("loading {}", model_path.display()))?;
    let mut progress = progress_printer();
    match manifest::verify(&runtime, manifest_path, model, pairs, &mut progress) {
        Ok(v) => {
            println!(
                "{}: verified — the replay of {} steps gave adapter {}",
                manifest_path.display(),
                v.steps,
                v.adapter_sha256
            );
            Ok(true)
        }
        Err(e) => {
            println!("{}: NOT verified — {e}", manifest_path.display());
            Ok(false)
        }
    }
}
