//! `arena lab audit-bench`: what the open workers' audit catches, measured
//! on the real model with no server — honest rollouts (sampled, distinct
//! seeds, generated in the engine's batches) replayed on a runtime of
//! another thread count, and each cheat of `arena lab cheat-worker` made
//! from them and replayed; per completion length, each kind's catch rate
//! with a 95% interval, the honest rejects, the adapters' per-token KL to
//! the base and the smallest one an audit still tells apart, the
//! verifier's cost against generation, the record's size per token, and the
//! economics simulation's expected profit per strategy.

use crate::app::config::Settings;
use crate::cli::args::AuditBenchArgs;
use crate::domain::worker::{self, Strategy};
use agent_runtime::audit::{Claim, Tier};
use agent_runtime::chat::Message;
use agent_runtime::engine::{Engine, EngineConfig, Request, Runtime};
use agent_runtime::lora::Adapter;
use agent_runtime::model::{Logits, SeqStep, Target};
use agent_runtime::sampling::SamplingParams;
use agent_runtime::{Completion, Finish, Prompt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const QUESTIONS: &[&str] = &[
    "Explain why the sky is blue.",
    "Write a short poem about the sea.",
    "How do vaccines work?",
    "Give three tips for learning a language.",
    "What is the difference between weather and climate?",
    "Describe how a bicycle works.",
    "Why do we have seasons?",
    "What makes a good friend?",
    "How does a refrigerator keep food cold?",
    "Summarise the story of Romeo and Juliet.",
    "What is photosynthesis?",
    "How should I prepare for a job interview?",
];

/// The bench's prompts as token ids.
fn prompts(rt: &Runtime) -> anyhow::Result<Vec<Vec<u32>>> {
    Ok(QUESTIONS.iter().map(|q| rt.prompt_tokens(&Prompt::Chat(vec![Message::user(*q)]))).collect::<Result<_, _>>()?)
}

/// How every bench rollout samples (its length and seed set per rollout).
fn sampling() -> SamplingParams {
    SamplingParams { temperature: 0.8, top_k: 40, top_p: 0.95, ..Default::default() }
}

/// Wilson's 95% interval for `k` of `n`.
fn wilson(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (n, p, z) = (n as f64, k as f64 / n as f64, 1.96f64);
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z * ((p * (1.0 - p) + z * z / (4.0 * n)) / n).sqrt() / (1.0 + z * z / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

struct Bench {
    engine: Engine,
    /// The checker: another runtime, on its own thread count.
    checker: Arc<Runtime>,
    prompts: Vec<Vec<u32>>,
}

impl Bench {
    /// `n` rollouts of `len` tokens, rollout i on prompt i mod P with seed
    /// `seed + i`, all submitted at once (the engine batches them).
    fn generate(
        &self,
        n: usize,
        len: usize,
        adapter: Option<&Path>,
        params: &SamplingParams,
        seed: u64,
    ) -> anyhow::Result<(Vec<Completion>, Duration)> {
        let started = Instant::now();
        let receivers = (0..n)
            .map(|i| {
                let params = SamplingParams { max_new_tokens: len, seed: seed + i as u64, ..params.clone() };
                self.engine.submit(Request {
                    prompt: Prompt::Tokens(self.prompts[i % self.prompts.len()].clone()),
                    adapter: adapter.map(Path::to_owned),
                    params,
                    logprobs: true,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = receivers
            .into_iter()
            .map(|rx| Ok(rx.blocking_recv().map_err(|_| anyhow::anyhow!("the engine stopped"))??))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((out, started.elapsed()))
    }

    /// Whether the exact replay under `adapter` and `params` finds a fault.
    fn caught(
        &self,
        i: usize,
        c: &Completion,
        adapter: Option<&Adapter>,
        params: &SamplingParams,
    ) -> anyhow::Result<bool> {
        let prompt = &self.prompts[i % self.prompts.len()];
        let claim = Claim {
            prompt,
            tokens: &c.tokens,
            logprobs: c.logprobs.as_deref().unwrap_or(&[]),
            finish: c.finish,
            end_token: c.end_token,
            params,
        };
        Ok(self.checker.replay(&claim, adapter, Tier::Exact)?.fault.is_some())
    }

    /// Mean per-token KL(with adapter ‖ base) over the completions' positions.
    fn kl(&self, completions: &[Completion], adapter: &Adapter) -> anyhow::Result<f64> {
        let rt = &self.checker;
        let vocab = rt.config().vocab;
        let (mut total, mut count) = (0.0f64, 0usize);
        for (i, c) in completions.iter().enumerate().take(8) {
            if c.tokens.is_empty() {
                continue;
            }
            let prompt = &self.prompts[i % self.prompts.len()];
            let seq: Vec<u32> = prompt.iter().chain(&c.tokens).copied().collect();
            let logits = |a: Option<&Adapter>| -> anyhow::Result<Vec<f32>> {
                let mut cache = rt.model.new_cache();
                Ok(rt
                    .model
                    .forward(&mut [SeqStep { tokens: &seq, cache: &mut cache, adapter: a, logits: Logits::All }])?
                    .remove(0))
            };
            let (with, without) = (logits(Some(adapter))?, logits(None)?);
            for pos in prompt.len() - 1..seq.len() - 1 {
                let p = log_softmax(&with[pos * vocab..(pos + 1) * vocab]);
                let q = log_softmax(&without[pos * vocab..(pos + 1) * vocab]);
                total += p.iter().zip(&q).map(|(lp, lq)| lp.exp() * (lp - lq)).sum::<f64>();
                count += 1;
            }
        }
        Ok(if count == 0 { 0.0 } else { total / count as f64 })
    }
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    row.iter().map(|&v| v as f64 - max - sum.ln()).collect()
}

fn adapter_dir(dir: &Path, name: &str, rt: &Runtime, seed: u64, b_scale: f32) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    Adapter::random(rt.config(), &Target::ALL, 16, seed, 0.05, b_scale).save(&path, None)?;
    Ok(path)
}

/// An honest rollout as the calibration's child writes it.
#[derive(serde::Serialize, serde::Deserialize)]
struct ClaimLine {
    prompt: Vec<u32>,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    finish: Finish,
    end_token: Option<u32>,
    params: SamplingParams,
}

/// The calibration's child: honest rollouts with the bench's adapter on
/// this process's kernel path, as claims.
fn emit_claims(args: &AuditBenchArgs, settings: &Settings, out: &Path) -> anyhow::Result<bool> {
    let model = args.model.clone().unwrap_or_else(|| settings.model.path.clone());
    let rt = Arc::new(Runtime::load(&model, args.threads)?);
    let engine = Engine::start(rt.clone(), EngineConfig { max_batch: args.max_batch, queue_capacity: 4096 });
    let prompts = prompts(&rt)?;
    let bench = Bench { engine, checker: rt.clone(), prompts };
    let dir = tempfile::tempdir()?;
    let mine = adapter_dir(dir.path(), "mine", &rt, 1, 0.02)?;
    let params = sampling();
    let mut lines = String::new();
    for &len in &args.lengths {
        let (done, _) = bench.generate(args.rollouts, len, Some(&mine), &params, 0)?;
        for (i, c) in done.into_iter().enumerate() {
            let line = ClaimLine {
                prompt: bench.prompts[i % bench.prompts.len()].clone(),
                tokens: c.tokens,
                logprobs: c.logprobs.unwrap_or_default(),
                finish: c.finish,
                end_token: c.end_token,
                params: SamplingParams { max_new_tokens: len, seed: i as u64, ..params.clone() },
            };
            lines.push_str(&serde_json::to_string(&line)?);
            lines.push('\n');
        }
    }
    std::fs::write(out, lines)?;
    Ok(true)
}

/// The tolerant tier's calibration: claims from every other kernel path,
/// replayed on this one with no limits; the worst drift seen.
fn calibrate(args: &AuditBenchArgs, settings: &Settings) -> anyhow::Result<bool> {
    use agent_runtime::quant::{self, Kernels};
    let model = args.model.clone().unwrap_or_else(|| settings.model.path.clone());
    let here = quant::kernels();
    let checker = Runtime::load(&model, args.check_threads)?;
    let dir = tempfile::tempdir()?;
    let mine = adapter_dir(dir.path(), "mine", &checker, 1, 0.02)?;
    let adapter = checker.adapter(&mine)?;
    let open = Tier::Tolerant { logprob: f32::INFINITY, near_tie: f32::INFINITY, max_near_ties: usize::MAX };
    println!("replayed on {} (recipe {}), claims generated on each other path:\n", here.name(), here.recipe());
    println!(
        "| generated on | rollouts | positions | worst log-prob drift (nats) | tokens unlike the replay's draw | farthest from a tie at those (probability) |\n| --- | --- | --- | --- | --- | --- |"
    );
    let mut worst = (0f32, 0f32);
    for other in Kernels::ALL.into_iter().filter(|k| *k != here && k.available()) {
        let file = dir.path().join(format!("{}.jsonl", other.name()));
        let lengths = args.lengths.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        let status = std::process::Command::new(std::env::current_exe()?)
            .args(["lab", "audit-bench", "--rollouts", &args.rollouts.to_string(), "--lengths", &lengths])
            .args(["--threads", &args.threads.to_string(), "--max-batch", &args.max_batch.to_string()])
            .arg("--model")
            .arg(&model)
            .arg("--emit-claims")
            .arg(&file)
            .env("ARENA_KERNELS", other.name())
            .status()?;
        anyhow::ensure!(status.success(), "the {} child failed", other.name());
        let (mut n, mut positions, mut mismatches, mut drift, mut gap) = (0, 0, 0, 0f32, 0f32);
        for line in std::fs::read_to_string(&file)?.lines() {
            let c: ClaimLine = serde_json::from_str(line)?;
            let claim = Claim {
                prompt: &c.prompt,
                tokens: &c.tokens,
                logprobs: &c.logprobs,
                finish: c.finish,
                end_token: c.end_token,
                params: &c.params,
            };
            let r = checker.replay(&claim, Some(&adapter), open)?;
            n += 1;
            positions += r.positions;
            mismatches += r.near_ties;
            drift = drift.max(r.max_logprob_diff);
            gap = gap.max(r.max_near_tie_gap);
        }
        worst = (worst.0.max(drift), worst.1.max(gap));
        println!("| {} | {n} | {positions} | {drift:.5} | {mismatches} | {gap:.4} |", other.name());
    }
    println!(
        "\nlimits at twice the worst honest drift: log-prob {:.4} nats, near ties {:.5} in probability (the server holds {} and {})",
        2.0 * worst.0,
        2.0 * worst.1,
        crate::work::workers::TOLERANT_LOGPROB,
        crate::work::workers::TOLERANT_NEAR_TIE
    );
    Ok(true)
}

/// Honest rollouts only: generated on one and on two threads in batches
/// of up to 16, every one replayed; the exact tier's false rejects.
fn honest_only(args: &AuditBenchArgs, settings: &Settings, n: usize) -> anyhow::Result<bool> {
    let model = args.model.clone().unwrap_or_else(|| settings.model.path.clone());
    let checker = Arc::new(Runtime::load(&model, args.check_threads)?);
    let prompts = prompts(&checker)?;
    let dir = tempfile::tempdir()?;
    let mine = adapter_dir(dir.path(), "mine", &checker, 1, 0.02)?;
    let adapter = checker.adapter(&mine)?;
    let len = args.lengths.first().copied().unwrap_or(16);
    let params = sampling();
    let (mut done, mut rejected, mut positions) = (0usize, 0usize, 0usize);
    let (mut gen_core_s, mut check_core_s) = (0f64, 0f64);
    for threads in [1usize, 2] {
        let rt = Arc::new(Runtime::load(&model, threads)?);
        let engine = Engine::start(rt, EngineConfig { max_batch: 16, queue_capacity: 8192 });
        let bench = Bench { engine, checker: checker.clone(), prompts: prompts.clone() };
        let half = if threads == 1 { n / 2 } else { n - n / 2 };
        // In waves of up to 16 × 8, so the batch's make-up keeps changing.
        let mut start = 0usize;
        while start < half {
            let wave = (half - start).min(128);
            let seed = (threads as u64) << 32 | start as u64;
            let (out, took) = bench.generate(wave, len, Some(&mine), &params, seed)?;
            gen_core_s += took.as_secs_f64() * threads as f64;
            let started = Instant::now();
            for (i, c) in out.iter().enumerate() {
                let p = SamplingParams { max_new_tokens: len, seed: seed + i as u64, ..params.clone() };
                let claim = Claim {
                    prompt: &bench.prompts[i % bench.prompts.len()],
                    tokens: &c.tokens,
                    logprobs: c.logprobs.as_deref().unwrap_or(&[]),
                    finish: c.finish,
                    end_token: c.end_token,
                    params: &p,
                };
                let r = checker.replay(&claim, Some(&adapter), Tier::Exact)?;
                positions += r.positions;
                if let Some(f) = r.fault {
                    rejected += 1;
                    eprintln!("honest rollout rejected ({threads} threads): {f}");
                }
            }
            check_core_s += started.elapsed().as_secs_f64() * args.check_threads as f64;
            done += wave;
            start += wave;
            eprintln!("  {done} / {n} honest rollouts, {rejected} rejected");
        }
    }
    let (lo, hi) = wilson(rejected, done);
    println!(
        "honest rollouts of {len} tokens: {done} generated (half on 1 thread, half on 2, batches of up to 16), {positions} positions replayed on {} thread(s): {rejected} rejected (95% interval {:.3}–{:.3}%)",
        args.check_threads,
        100.0 * lo,
        100.0 * hi
    );
    println!(
        "core-seconds: generation {gen_core_s:.0}, replay {check_core_s:.0} ({:.2}× generation)",
        check_core_s / gen_core_s.max(1e-9)
    );
    Ok(rejected == 0)
}

pub fn run(args: &AuditBenchArgs, settings: &Settings) -> anyhow::Result<bool> {
    if let Some(n) = args.honest {
        return honest_only(args, settings, n);
    }
    if let Some(out) = &args.emit_claims {
        return emit_claims(args, settings, out);
    }
    if args.calibrate {
        return calibrate(args, settings);
    }
    let model = args.model.clone().unwrap_or_else(|| settings.model.path.clone());
    let generator = Arc::new(Runtime::load(&model, args.threads)?);
    let checker = Arc::new(Runtime::load(&model, args.check_threads)?);
    let engine = Engine::start(generator.clone(), EngineConfig { max_batch: args.max_batch, queue_capacity: 4096 });
    let prompts = prompts(&checker)?;
    let bench = Bench { engine, checker: checker.clone(), prompts };
    let dir = tempfile::tempdir()?;
    let mine = adapter_dir(dir.path(), "mine", &checker, 1, 0.02)?;
    let other = adapter_dir(dir.path(), "other", &checker, 2, 0.02)?;
    // The agent's previous version: the same A, B a little smaller.
    let older = adapter_dir(dir.path(), "older", &checker, 1, 0.018)?;
    let mine_a = checker.adapter(&mine)?;
    let params = sampling();
    println!(
        "kernels {} (recipe {}); generated on {} threads in batches of up to {}, replayed on {} threads; exact tier",
        agent_runtime::quant::kernels().name(),
        agent_runtime::quant::kernels().recipe(),
        args.threads,
        args.max_batch,
        args.check_threads
    );
    println!(
        "\n| completion tokens | cheat | caught / audited | rate | 95% interval |\n| --- | --- | --- | --- | --- |"
    );
    let (mut honest_n, mut honest_rejects, mut positions) = (0usize, 0usize, 0usize);
    let (mut gen_time, mut check_time, mut gen_tokens) = (Duration::ZERO, Duration::ZERO, 0usize);
    let mut record_bytes = (0usize, 0usize);
    let mut kl_rollouts: Vec<Completion> = Vec::new();
    for &len in &args.lengths {
        let n = if len >= 256 { args.rollouts.div_ceil(3).max(1) } else { args.rollouts };
        let (honest, took) = bench.generate(n, len, Some(&mine), &params, 0)?;
        gen_time += took;
        gen_tokens += honest.iter().map(|c| c.tokens.len()).sum::<usize>();
        for (i, c) in honest.iter().enumerate() {
            let p = SamplingParams { max_new_tokens: len, seed: i as u64, ..params.clone() };
            let started = Instant::now();
            let replay = checker.replay(
                &Claim {
                    prompt: &bench.prompts[i % bench.prompts.len()],
                    tokens: &c.tokens,
                    logprobs: c.logprobs.as_deref().unwrap_or(&[]),
                    finish: c.finish,
                    end_token: c.end_token,
                    params: &p,
                },
                Some(&mine_a),
                Tier::Exact,
            )?;
            check_time += started.elapsed();
            positions += replay.positions;
            honest_n += 1;
            if replay.fault.is_some() {
                honest_rejects += 1;
                eprintln!("honest rollout rejected: {:?}", replay.fault);
            }
            let record = worker::RolloutRecord {
                lease_id: uuid::Uuid::nil(),
                job_id: uuid::Uuid::nil(),
                match_id: crate::domain::MatchId(uuid::Uuid::nil()),
                slot: 0,
                attempt: 0,
                identity: worker::Identity {
                    base_sha256: "0".repeat(64),
                    adapter_sha256: Some("0".repeat(64)),
                    template_sha256: "0".repeat(64),
                    runtime_version: agent_runtime::VERSION.into(),
                    recipe: agent_runtime::quant::kernels().recipe().into(),
                    params: p.clone(),
                    prompt_sha256: "0".repeat(64),
                },
                tokens: c.tokens.clone(),
                logprobs: c.logprobs.clone().unwrap_or_default(),
                finish: c.finish,
                end_token: c.end_token,
                elapsed_ms: 0,
            };
            let body = serde_json::to_vec(&record)?.len() + 128;
            record_bytes.0 += body;
            record_bytes.1 += c.tokens.len().max(1);
        }
        if len == 64 || kl_rollouts.is_empty() {
            kl_rollouts = honest.clone();
        }
        let at = |i: usize| SamplingParams { max_new_tokens: len, seed: i as u64, ..params.clone() };
        let mut rows: Vec<(&str, usize, usize)> = Vec::new();
        let mut tally = |name: &'static str, claims: &[(usize, Completion)]| -> anyhow::Result<()> {
            let mut caught = 0;
            for (i, c) in claims {
                if bench.caught(*i, c, Some(&mine_a), &at(*i))? {
                    caught += 1;
                }
            }
            rows.push((name, caught, claims.len()));
            Ok(())
        };
        let indexed = |v: Vec<Completion>| v.into_iter().enumerate().collect::<Vec<_>>();
        let (plain, _) = bench.generate(n, len, None, &params, 0)?;
        tally("drop-adapter", &indexed(plain.clone()))?;
        let mut attack = Vec::new();
        for (i, c) in plain.iter().enumerate() {
            let mut scored = c.tokens.clone();
            scored.extend(c.end_token);
            let mut c = c.clone();
            c.logprobs =
                Some(checker.completion_logprobs(&bench.prompts[i % bench.prompts.len()], &scored, Some(&mine_a))?);
            attack.push((i, c));
        }
        tally("prefill-attack", &attack)?;
        tally("other-adapter", &indexed(bench.generate(n, len, Some(&other), &params, 0)?.0))?;
        tally("older-adapter", &indexed(bench.generate(n, len, Some(&older), &params, 0)?.0))?;
        tally("replay (another seed's answer)", &indexed(bench.generate(n, len, Some(&mine), &params, 1000)?.0))?;
        let hotter = SamplingParams { temperature: params.temperature * 1.5, ..params.clone() };
        tally("temperature ×1.5", &indexed(bench.generate(n, len, Some(&mine), &hotter, 0)?.0))?;
        let greedy = SamplingParams { temperature: 0.0, ..params.clone() };
        tally("greedy", &indexed(bench.generate(n, len, Some(&mine), &greedy, 0)?.0))?;
        let mut best: Vec<Option<Completion>> = vec![None; n];
        for k in 1..=4u64 {
            for (i, c) in bench.generate(n, len, Some(&mine), &params, k * 7919)?.0.into_iter().enumerate() {
                if best[i].as_ref().is_none_or(|b| c.tokens.len() > b.tokens.len()) {
                    best[i] = Some(c);
                }
            }
        }
        tally("best-of-4 (longest)", &best.into_iter().flatten().enumerate().collect::<Vec<_>>())?;
        let edit = |f: &dyn Fn(&mut Completion) -> bool| -> Vec<(usize, Completion)> {
            honest
                .iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let mut c = c.clone();
                    f(&mut c).then_some((i, c))
                })
                .collect()
        };
        let vocab = checker.config().vocab as u32;
        tally(
            "edit: substitute a token",
            &edit(&|c| {
                if c.tokens.is_empty() {
                    return false;
                }
                let i = c.tokens.len() / 2;
                c.tokens[i] = (c.tokens[i] + 1) % vocab;
                true
            }),
        )?;
        tally(
            "edit: insert a token",
            &edit(&|c| {
                // Past the length limit it is malformed: caught before the replay.
                let i = c.tokens.len() / 2;
                c.tokens.insert(i, 1000);
                if let Some(l) = c.logprobs.as_mut() {
                    l.insert(i, -3.0);
                }
                true
            }),
        )?;
        tally(
            "edit: delete a token",
            &edit(&|c| {
                if c.tokens.len() < 2 {
                    return false;
                }
                let i = c.tokens.len() / 2;
                c.tokens.remove(i);
                if let Some(l) = c.logprobs.as_mut() {
                    l.remove(i);
                }
                true
            }),
        )?;
        let eot = checker.end_of_turn()[0];
        tally(
            "truncate (half, as finished)",
            &edit(&|c| {
                if c.tokens.len() < 2 {
                    return false;
                }
                let keep = c.tokens.len() / 2;
                c.tokens.truncate(keep);
                let mut lp = c.logprobs.take().unwrap_or_default();
                lp.truncate(keep);
                lp.push(-0.05);
                c.logprobs = Some(lp);
                c.finish = Finish::EndOfTurn;
                c.end_token = Some(eot);
                true
            }),
        )?;
        let tail = checker.tokenizer.encode(" Visit example.com for more.", false, false)?;
        tally(
            "append text",
            &edit(&|c| {
                c.tokens.extend(&tail);
                let lp = c.logprobs.get_or_insert_with(Vec::new);
                let end = lp.pop();
                lp.extend(std::iter::repeat_n(-1.0, tail.len()));
                lp.extend(end);
                true
            }),
        )?;
        for (name, caught, total) in rows {
            let (lo, hi) = wilson(caught, total);
            let rate = if total == 0 { f64::NAN } else { caught as f64 / total as f64 };
            println!(
                "| {len} | {name} | {caught} / {total} | {:.1}% | {:.1}–{:.1}% |",
                100.0 * rate,
                100.0 * lo,
                100.0 * hi
            );
        }
    }
    let (lo, hi) = wilson(honest_rejects, honest_n);
    println!(
        "\nhonest rollouts: {honest_n} ({positions} positions) replayed, {honest_rejects} rejected (95% interval {:.2}–{:.2}%)",
        100.0 * lo,
        100.0 * hi
    );
    // Adapters' KL to the base, and the smallest an audit tells apart.
    println!("\n| adapter | per-token KL to the base (nats) | drop-adapter caught |\n| --- | --- | --- |");
    for (name, b_scale) in
        [("mine (B 0.02)", 0.02f32), ("tiny (B 1e-3)", 1e-3), ("tinier (B 1e-4)", 1e-4), ("tiniest (B 1e-5)", 1e-5)]
    {
        let path = adapter_dir(dir.path(), &format!("kl-{b_scale}"), &checker, 1, b_scale)?;
        let a = checker.adapter(&path)?;
        let kl = bench.kl(&kl_rollouts, &a)?;
        let len = 64.min(*args.lengths.iter().max().unwrap_or(&64));
        let (plain, _) = bench.generate(8, len, None, &params, 0)?;
        let caught = plain
            .iter()
            .enumerate()
            .map(|(i, c)| {
                bench.caught(i, c, Some(&a), &SamplingParams { max_new_tokens: len, seed: i as u64, ..params.clone() })
            })
            .collect::<anyhow::Result<Vec<bool>>>()?
            .into_iter()
            .filter(|c| *c)
            .count();
        println!("| {name} | {kl:.2e} | {caught} / 8 |");
    }
    // Compared in core-seconds: the checker and the generator run on
    // different thread counts.
    let check_core = check_time.as_secs_f64() * args.check_threads as f64;
    let gen_core = gen_time.as_secs_f64() * args.threads as f64;
    let ratio = check_core / gen_core.max(1e-9);
    let floor = f64::from(settings.arena.worker_audit_floor_pct) / 100.0;
    println!(
        "\nverifier: replays took {check_core:.1} core-s for honest rollouts whose generation took {gen_core:.1} core-s \
         ({gen_tokens} tokens, batched): {ratio:.2}× a rollout's generation; at a {:.0}% audit rate {:.2}% of \
         generation, at 100% (probation) {:.0}%",
        100.0 * floor,
        100.0 * floor * ratio,
        100.0 * ratio
    );
    println!(
        "record: {:.1} bytes per generated token (JSON with the identity and the signature; {} bytes over {} tokens)",
        record_bytes.0 as f64 / record_bytes.1.max(1) as f64,
        record_bytes.0,
        record_bytes.1
    );
    // The economics, simulated with this server's settings.
    let econ = settings.arena.economics();
    let stake = settings.arena.worker_min_stake;
    let pay = worker::pay_for(econ.max_job_tokens(stake, 10_000), econ.pay_per_ktoken).max(1) as f64;
    println!(
        "\neconomics: stake {stake}, a job's pay {pay} (the cap at the floor), honest compute half its pay, a cheated job's bribe = its pay; 20 lives of 5,000 jobs each\n\n| strategy | profit per job | caught |\n| --- | --- | --- |"
    );
    for (name, s) in [
        ("honest", Strategy::Honest),
        ("lazy", Strategy::Lazy),
        ("biased (20% of jobs)", Strategy::Biased { share: 0.2 }),
        ("biased (all jobs)", Strategy::Biased { share: 1.0 }),
        ("Sybil (honest in probation, then lazy)", Strategy::Sybil),
    ] {
        let outs: Vec<_> =
            (0..20).map(|seed| worker::simulate(s, &econ, stake, pay, 0.5, pay, 50, 5_000, seed)).collect();
        let profit: f64 = outs.iter().map(|o| o.profit).sum::<f64>() / outs.iter().map(|o| o.jobs).sum::<u64>() as f64;
        let caught: u64 = outs.iter().map(|o| o.caught).sum();
        println!("| {name} | {profit:+.3} | {caught} |");
    }
    Ok(honest_rejects == 0)
}
