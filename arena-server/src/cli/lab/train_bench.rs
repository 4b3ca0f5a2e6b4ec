//! `arena train bench` and `arena train bench-grpo`: our DPO and GRPO
//! throughput and peak memory, with TRL's trainers beside them on the same
//! model, data, batch and thread count.

use super::common::{median, peak_rss_bytes};
use crate::app::config::Settings;
use crate::cli::args::{DpoBenchArgs, GrpoBenchArgs};
use crate::cli::model::model_path;
use crate::cli::train::{grpo_printer, progress_printer};
use agent_runtime::Runtime;
use agent_runtime::engine::{Engine, EngineConfig};
use agent_runtime::train::grpo::{GrpoSettings, GrpoStepMetrics};
use agent_runtime::train::manifest::GrpoFiles;
use agent_runtime::train::manifest::{self, RunFiles};
use agent_runtime::train::{Objective, Schedule, StepMetrics, TrainConfig};
use anyhow::{Context, bail};
use std::path::Path;
use std::sync::Arc;

const TRL_BENCH: &str = include_str!("../../../../agent-runtime/bench/trl_dpo_bench.py");

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

pub fn dpo(args: &DpoBenchArgs, settings: &Settings) -> anyhow::Result<()> {
    let model = &args.model;
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
        let args_out = [
            path.display().to_string(),
            pairs_path.display().to_string(),
            "--threads".into(),
            threads.to_string(),
            "--steps".into(),
            args.steps.to_string(),
            "--batch".into(),
            args.batch_size.to_string(),
        ];
        Some(run_trl(&args.python, dir.path(), "trl_dpo_bench.py", TRL_BENCH, &args_out, threads)?)
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

const TRL_GRPO_BENCH: &str = include_str!("../../../../agent-runtime/bench/trl_grpo_bench.py");

/// Our GRPO step beside TRL's GRPOTrainer, same model, prompts, reward
/// (the Space's hard checks), group, lengths, rank, β, ε and μ.
pub fn grpo(args: &GrpoBenchArgs, settings: &Settings) -> anyhow::Result<()> {
    let model = &args.model;
    let path = model_path(model, settings)?;
    let threads = model.threads.unwrap_or(2);
    let space = crate::cli::space::load_space(&args.space).map_err(|errors| anyhow::anyhow!(errors.join("\n")))?;
    let dir = tempfile::tempdir()?;
    // Both sides draw from the same prompts: the Space's, in file order.
    let prompts = crate::work::grpo::training_prompts(&space, None);
    let prompts_path = dir.path().join("prompts.jsonl");
    let lines: String = prompts
        .iter()
        .map(|p| {
            format!(
                "{}\n",
                serde_json::json!({"prompt": p.prompt, "reference": p.reference.clone().unwrap_or_default()})
            )
        })
        .collect();
    std::fs::write(&prompts_path, lines)?;
    let cfg = TrainConfig {
        objective: Objective::Grpo,
        rank: args.rank,
        alpha: 2.0 * args.rank as f32,
        learning_rate: 2e-5,
        schedule: Schedule::Constant,
        threads,
        ..TrainConfig::default()
    };
    let grpo = GrpoSettings {
        group: args.group,
        prompts_per_step: args.prompts_per_step,
        steps: args.steps + 1,
        temperature: 1.0,
        iterations: args.iterations,
        beta: args.beta,
        max_new_tokens: args.max_new_tokens,
        curriculum: false,
        ..GrpoSettings::default()
    };
    eprintln!(
        "arena: GRPO on {} with {threads} threads, G = {}, {} prompts per step, μ = {}, β = {}, r = {} on all linear layers",
        path.display(),
        args.group,
        args.prompts_per_step,
        args.iterations,
        args.beta,
        args.rank
    );
    let runtime = Arc::new(Runtime::load(&path, threads).with_context(|| format!("loading {}", path.display()))?);
    let engine = Engine::start(runtime.clone(), EngineConfig { max_batch: 64, queue_capacity: 1 << 16 });
    // The TRL script's reward: the Space's hard check (the last number is
    // the reference) plus a little for brevity, so every group trains on
    // both sides (ours would skip an all-equal group and look faster).
    let mut reward = |p: &agent_runtime::train::grpo::GrpoPrompt, texts: &[String]| {
        let reference = p.reference.clone().unwrap_or_default();
        Ok(texts
            .iter()
            .map(|t| {
                let cleaned = t.replace(',', "");
                let last = cleaned
                    .split(|c: char| !(c.is_ascii_digit() || c == '-'))
                    .rfind(|w| w.trim_start_matches('-').chars().next().is_some_and(|c| c.is_ascii_digit()))
                    .map(str::to_owned);
                let right = last.as_deref() == Some(reference.as_str());
                let value = f64::from(u8::from(right)) + 0.2 / (1.0 + t.chars().count() as f64 / 10.0);
                agent_runtime::train::grpo::Reward { value, passed: right }
            })
            .collect())
    };
    let mut metrics: Vec<GrpoStepMetrics> = Vec::new();
    let mut log = grpo_printer();
    let out = dir.path().join("out");
    let files = GrpoFiles { model: &path, parent: None, out: &out, prompt_source: "bench", curriculum: None };
    manifest::grpo_to_dir(
        &runtime,
        &engine,
        &files,
        &prompts,
        &cfg,
        &grpo,
        &mut reward,
        &mut |m: &GrpoStepMetrics| {
            log(m);
            metrics.push(m.clone());
        },
    )?;
    let timed: Vec<&GrpoStepMetrics> = metrics.iter().skip(1).collect();
    let ours_step = median(timed.iter().map(|m| m.seconds).collect());
    let completions = (args.group * args.prompts_per_step) as f64;
    let ours_tokens = timed.iter().map(|m| m.completion_length * completions).sum::<f64>() / timed.len().max(1) as f64;
    let ours_sample = median(timed.iter().map(|m| m.sample_seconds).collect());
    let ours_train = median(timed.iter().map(|m| m.train_seconds).collect());
    let ours_rss = peak_rss_bytes();
    drop(engine);
    drop(runtime);

    let theirs: Option<serde_json::Value> = if args.trl {
        let args_out = [
            path.display().to_string(),
            prompts_path.display().to_string(),
            "--threads".into(),
            threads.to_string(),
            "--steps".into(),
            args.steps.to_string(),
            "--group".into(),
            args.group.to_string(),
            "--prompts-per-step".into(),
            args.prompts_per_step.to_string(),
            "--iterations".into(),
            args.iterations.to_string(),
            "--max-new-tokens".into(),
            args.max_new_tokens.to_string(),
            "--rank".into(),
            args.rank.to_string(),
            "--beta".into(),
            args.beta.to_string(),
        ];
        Some(run_trl(&args.python, dir.path(), "trl_grpo_bench.py", TRL_GRPO_BENCH, &args_out, threads)?)
    } else {
        None
    };
    let gib = |b: f64| b / f64::from(1u32 << 30);
    println!(
        "GRPO, G = {} × {} prompts per step, μ = {}, β = {}, {} new tokens at most, LoRA r={} on all linear layers, {threads} threads, fp32",
        args.group, args.prompts_per_step, args.iterations, args.beta, args.max_new_tokens, args.rank
    );
    println!("{:<30} {:>14} {:>14} {:>8}", "", "arena", "TRL", "ratio");
    let row = |name: &str, ours: f64, theirs: Option<f64>, better: Option<bool>, fmt: &dyn Fn(f64) -> String| {
        let ratio = theirs.zip(better).map(|(t, higher)| if higher { ours / t } else { t / ours });
        println!(
            "{name:<30} {:>14} {:>14} {:>8}",
            fmt(ours),
            theirs.map_or("-".to_owned(), fmt),
            ratio.map_or("-".to_owned(), |r| format!("{r:.2}x"))
        );
    };
    let t = |k: &str| theirs.as_ref().and_then(|v| v[k].as_f64());
    row("seconds per step", ours_step, t("seconds_per_step"), Some(false), &|v| format!("{v:.2}"));
    row("completion tokens per second", ours_tokens / ours_step, t("completion_tokens_per_second"), Some(true), &|v| {
        format!("{v:.1}")
    });
    row("completion tokens per step", ours_tokens, t("completion_tokens_per_step"), None, &|v| format!("{v:.0}"));
    let rss = ours_rss.map_or(f64::NAN, |b| b as f64);
    row("peak RSS (GiB)", gib(rss), t("peak_rss_bytes").map(gib), Some(false), &|v| format!("{v:.2}"));
    println!("arena step: sampling {ours_sample:.2} s, training {ours_train:.2} s (medians)");
    if let Some(v) = &theirs {
        println!("TRL side: {}", v["engine"].as_str().unwrap_or("?"));
    }
    Ok(())
}

/// Runs one of the TRL benchmark scripts (written into `dir`) with
/// `python` on `threads` threads and reads the JSON object it prints last.
fn run_trl(
    python: &Path,
    dir: &Path,
    name: &str,
    text: &str,
    args: &[String],
    threads: usize,
) -> anyhow::Result<serde_json::Value> {
    let script = dir.join(name);
    std::fs::write(&script, text)?;
    eprintln!("TRL: {} {} (minutes)", python.display(), script.display());
    let out = std::process::Command::new(python)
        .arg(&script)
        .args(args)
        .env("OMP_NUM_THREADS", threads.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "the TRL side failed ({}); it needs `pip install torch trl peft transformers gguf` in {} (or --no-trl)",
            out.status,
            python.display()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("reading the TRL side's output: {stdout}"))
}
