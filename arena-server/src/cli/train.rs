//! `arena train dpo | sft | verify`: adapter training from the command line.

use super::args::{ScheduleArg, StorageArg, TrainArgs};
use super::model::model_path;
use crate::app::config::Settings;
use agent_runtime::Runtime;
use agent_runtime::model::default_threads;
use agent_runtime::train::manifest::{self, RunFiles};
use agent_runtime::train::{Objective, Schedule, StepMetrics, Storage, TrainConfig};
use anyhow::{Context, bail};
use std::io::{IsTerminal, Write};
use std::path::Path;
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

pub struct BenchArgs {
    pub steps: usize,
    pub batch_size: usize,
    pub pairs: Option<std::path::PathBuf>,
    pub python: std::path::PathBuf,
    pub trl: bool,
}

const TRL_BENCH: &str = include_str!("../../../agent-runtime/bench/trl_dpo_bench.py");

/// Deterministic pairs: a ~60-word prompt and two ~120-word answers each
/// (about 256 tokens per prompt + answer with the chat template).
fn bench_pairs(n: usize) -> String {
    const WORDS: [&str; 24] = [
        "the", "a", "river", "stone", "quietly", "bright", "market", "seven", "number", "answer", "because", "garden",
        "window", "laptop", "careful", "simple", "reason", "thought", "under", "over", "before", "after", "light",
        "road",
    ];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut text = |len: usize| -> String {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                WORDS[(state % WORDS.len() as u64) as usize]
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    (0..n)
        .map(|i| {
            serde_json::json!({
                "id": format!("bench-{i}"),
                "prompt": format!("Explain this carefully: {}", text(60)),
                "chosen": text(120),
                "rejected": text(120),
            })
            .to_string()
                + "\n"
        })
        .collect()
}

fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

pub fn bench(model: &super::args::ModelArgs, args: &BenchArgs, settings: &Settings) -> anyhow::Result<()> {
    let path = model_path(model, settings)?;
    let threads = model.threads.unwrap_or(2);
    let dir = tempfile::tempdir()?;
    let pairs_path = match &args.pairs {
        Some(p) => p.clone(),
        None => {
            let p = dir.path().join("pairs.jsonl");
            std::fs::write(&p, bench_pairs(args.batch_size * (args.steps + 1)))?;
            p
        }
    };
    let cfg = TrainConfig {
        rank: 8,
        alpha: 16.0,
        target_modules: ["q_proj", "k_proj", "v_proj", "o_proj"].map(String::from).to_vec(),
        batch_size: args.batch_size,
        steps: Some(args.steps + 1),
        max_length: 512,
        threads,
        ..TrainConfig::default()
    };
    eprintln!(
        "arena: DPO on {} with {threads} threads, batch {} pairs, r=8 on q/k/v/o",
        path.display(),
        args.batch_size
    );
    let runtime = Runtime::load(&path, threads).with_context(|| format!("loading {}", path.display()))?;
    let mut metrics = Vec::new();
    let mut log = progress_printer();
    let files = RunFiles { model: &path, pairs: &pairs_path, parent: None, out: &dir.path().join("out") };
    manifest::train_to_dir(&runtime, &files, &cfg, &mut |m: &StepMetrics| {
        log(m);
        metrics.push(m.clone());
    })?;
    let timed: Vec<&StepMetrics> = metrics.iter().skip(1).collect();
    let ours_step = median(timed.iter().map(|m| m.seconds).collect());
    let ours_pair_tokens = timed.iter().map(|m| m.pair_tokens as f64).sum::<f64>() / timed.len().max(1) as f64;
    let ours_rss = peak_rss_bytes();
    drop(runtime);

    let theirs: Option<serde_json::Value> = if args.trl {
        let script = dir.path().join("trl_dpo_bench.py");
        std::fs::write(&script, TRL_BENCH)?;
        eprintln!("TRL: {} {} (a few minutes)", args.python.display(), script.display());
        let out = std::process::Command::new(&args.python)
            .arg(&script)
            .arg(&path)
            .arg(&pairs_path)
            .args(["--threads", &threads.to_string(), "--steps", &args.steps.to_string()])
            .args(["--batch", &args.batch_size.to_string()])
            .env("OMP_NUM_THREADS", threads.to_string())
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", args.python.display()))?;
        if !out.status.success() {
            bail!(
                "the TRL side failed ({}); it needs `pip install torch trl peft transformers gguf` in {} (or --no-trl)",
                out.status,
                args.python.display()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let last = text.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or_default();
        Some(serde_json::from_str(last).with_context(|| format!("reading the TRL side's output: {text}"))?)
    } else {
        None
    };

    let gib = |b: f64| b / f64::from(1u32 << 30);
    println!("DPO, {} pairs per step, LoRA r=8 alpha 16 on q/k/v/o, {threads} threads, fp32", args.batch_size);
    println!("{:<26} {:>14} {:>14} {:>8}", "", "arena", "TRL", "ratio");
    // The ratio is ours over theirs where higher is better, theirs over
    // ours where lower is; none where it means nothing.
    let row = |name: &str, ours: f64, theirs: Option<f64>, better: Option<bool>, fmt: &dyn Fn(f64) -> String| {
        let ratio = theirs.zip(better).map(|(t, higher)| if higher { ours / t } else { t / ours });
        println!(
            "{name:<26} {:>14} {:>14} {:>8}",
            fmt(ours),
            theirs.map_or("-".to_owned(), fmt),
            ratio.map_or("-".to_owned(), |r| format!("{r:.2}x"))
        );
    };
    let t = |k: &str| theirs.as_ref().and_then(|v| v[k].as_f64());
    row("seconds per step", ours_step, t("seconds_per_step"), Some(false), &|v| format!("{v:.2}"));
    row("pair tokens per second", ours_pair_tokens / ours_step, t("pair_tokens_per_second"), Some(true), &|v| {
        format!("{v:.0}")
    });
    row("pair tokens per step", ours_pair_tokens, t("pair_tokens_per_step"), None, &|v| format!("{v:.0}"));
    let rss = ours_rss.map_or(f64::NAN, |b| b as f64);
    row("peak RSS (GiB)", gib(rss), t("peak_rss_bytes").map(gib), Some(false), &|v| format!("{v:.2}"));
    if let Some(v) = &theirs {
        println!("TRL side: {}", v["engine"].as_str().unwrap_or("?"));
    }
    println!(
        "arena side: f32 forward/backward over the dequantized weights, reference log-probs computed once before training \
         (TRL recomputes them every step with the adapter disabled), each pair's prompt computed once for both answers"
    );
    Ok(())
}
