//! `arena train dpo | sft | verify`: adapter training from the command line.

use super::args::{GrpoArgs, ScheduleArg, StorageArg, TrainArgs};
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
        Some(Arc::new(JudgeModel::new(runtime.clone(), sha).map_err(anyhow::Error::msg)?))
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
        curriculum: !args.no_curriculum,
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

pub fn verify(manifest_path: &Path, model: Option<&Path>, pairs: Option<&Path>) -> anyhow::Result<bool> {
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

pub struct DpoBenchArgs {
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

pub fn bench(model: &super::args::ModelArgs, args: &DpoBenchArgs, settings: &Settings) -> anyhow::Result<()> {
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

pub struct GrpoBenchArgs {
    pub steps: usize,
    pub group: usize,
    pub prompts_per_step: usize,
    pub iterations: usize,
    pub max_new_tokens: usize,
    pub rank: usize,
    pub beta: f64,
    pub space: std::path::PathBuf,
    pub python: std::path::PathBuf,
    pub trl: bool,
}

const TRL_GRPO_BENCH: &str = include_str!("../../../agent-runtime/bench/trl_grpo_bench.py");

/// Our GRPO step beside TRL's GRPOTrainer, same model, prompts, reward
/// (the Space's hard checks), group, lengths, rank, β, ε and μ.
pub fn bench_grpo(model: &super::args::ModelArgs, args: &GrpoBenchArgs, settings: &Settings) -> anyhow::Result<()> {
    let path = model_path(model, settings)?;
    let threads = model.threads.unwrap_or(2);
    let space = super::space::load_space(&args.space).map_err(|errors| anyhow::anyhow!(errors.join("\n")))?;
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
