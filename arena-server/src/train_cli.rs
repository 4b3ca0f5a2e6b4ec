//! `arena train dpo | sft | verify`: adapter training from the command line.

use crate::cli::TrainArgs;
use crate::config::Settings;
use crate::model_cli::model_path;
use agent_runtime::Runtime;
use agent_runtime::model::default_threads;
use agent_runtime::train::manifest::{self, RunFiles};
use agent_runtime::train::{Objective, Schedule, StepMetrics, Storage, TrainConfig};
use anyhow::{Context, bail};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

fn config(args: &TrainArgs, objective: Objective) -> anyhow::Result<TrainConfig> {
    let schedule = match args.schedule.as_str() {
        "constant" => Schedule::Constant,
        "linear" => Schedule::Linear,
        "cosine" => Schedule::Cosine,
        other => bail!("--schedule {other:?}: expected constant, linear or cosine"),
    };
    let storage = match args.storage.as_str() {
        "dense" => Storage::Dense,
        "quantized" => Storage::Quantized,
        other => bail!("--storage {other:?}: expected dense or quantized"),
    };
    let cfg = TrainConfig {
        objective,
        beta: args.beta,
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

pub fn verify(manifest_path: &Path, model: Option<&Path>, pairs: Option<&Path>) -> anyhow::Result<bool> {
    let m = manifest::read(manifest_path)?;
    let model_path = model.unwrap_or(&m.base_model.path);
    let runtime =
        Runtime::load(model_path, m.config.threads).with_context(|| format!("loading {}", model_path.display()))?;
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
