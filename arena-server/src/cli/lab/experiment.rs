//! `arena experiment loop`: the closed loop on one machine, without the
//! server — compete, judge, DPO, repeat — measured on held-out prompts.
//!
//! Each generation: the current agent (the base model, then its adapters)
//! answers every held-out prompt greedily; the Space's hard verifiers decide
//! the pass rate, and the Space's judge compares the answer with the base
//! model's (both orders) for a win rate. Then it answers training prompts
//! several times with sampling, each prompt's answers meet as one match
//! judged by the Space's judge, the judge's preference pairs train the next
//! adapter by DPO (or SFT on their chosen answers) with the current one as
//! parent and reference, and the next generation plays.

use crate::app::config::Settings;
use crate::cli::args::{DeviceArg, LoopArgs, ModelArgs, ObjectiveArg};
use crate::cli::model::model_path;
use crate::cli::space::load_space;
use crate::domain::space::PromptItem;
use agent_runtime::chat::Message;
use agent_runtime::engine::{Engine, EngineConfig, Prompt, Request, Runtime};
use agent_runtime::sampling::SamplingParams;
use agent_runtime::train::grpo::{AdvantageKind, GrpoPrompt, GrpoSettings};
use agent_runtime::train::manifest::{self, GrpoFiles, RunFiles};
use agent_runtime::train::pairs::PairRow;
use agent_runtime::train::{Objective, StepMetrics, TrainConfig};
use anyhow::{Context, bail};
use judge::calibrate::Rate;
use judge::{Candidate, Judge, JudgeModel, MatchInput};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone, Serialize)]
struct Generation {
    generation: usize,
    adapter: Option<PathBuf>,
    pass: Rate,
    /// Against the base model's answers, ties counted as half a win.
    win_vs_base: Option<Rate>,
    ties_vs_base: usize,
    /// Pairs made this generation, and the pairs its adapter trained on.
    pairs: usize,
    trained_on: usize,
    /// With a gate: the candidate's and the current adapter's gate passes,
    /// and whether the candidate was kept.
    gate: Option<(usize, usize, bool)>,
    /// GRPO's figures for the next adapter.
    grpo: Option<GrpoSummary>,
    train_seconds: f64,
    elapsed_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
struct GrpoSummary {
    first_reward_mean: f64,
    last_reward_mean: f64,
    skipped_share: f64,
    open_tier: u32,
}

fn chat(prompt: &str) -> Prompt {
    Prompt::Chat(vec![Message::user(prompt.to_owned())])
}

/// SFT learns each chosen answer once: a winner beat several losers, so it
/// heads several pairs, and repeating it would weigh prompts by their number
/// of losers.
fn distinct_chosen(lines: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    lines
        .into_iter()
        .filter(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            seen.insert((v["prompt"].to_string(), v["chosen"].to_string()))
        })
        .collect()
}

/// Answers for every (prompt, seed), batched on the engine.
async fn answer(
    engine: &Engine,
    adapter: Option<&Path>,
    prompts: &[(&PromptItem, SamplingParams)],
) -> anyhow::Result<Vec<String>> {
    let mut waiting = Vec::with_capacity(prompts.len());
    for (item, params) in prompts {
        let request = Request {
            prompt: chat(&item.prompt),
            adapter: adapter.map(Path::to_path_buf),
            params: params.clone(),
            logprobs: false,
        };
        waiting.push(engine.submit(request).map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    let mut out = Vec::with_capacity(waiting.len());
    for rx in waiting {
        out.push(rx.await.context("the engine stopped")??.text);
    }
    Ok(out)
}

pub async fn run(args: &LoopArgs, settings: &Settings) -> anyhow::Result<()> {
    let threads = args.threads.unwrap_or_else(agent_runtime::model::default_threads);
    let space = load_space(&args.space).map_err(|errors| anyhow::anyhow!(errors.join("\n")))?;
    if space.prompts.len() < args.eval_prompts + args.gate_prompts + 2 {
        bail!(
            "{} has {} prompts; --eval-prompts {} and --gate-prompts {} leave too few to train on",
            args.space.display(),
            space.prompts.len(),
            args.eval_prompts,
            args.gate_prompts
        );
    }
    if args.samples < 2 {
        bail!("--samples must be at least 2 (a match needs two answers)");
    }
    let sft = args.objective == ObjectiveArg::Sft;
    let grpo_run = args.objective == ObjectiveArg::Grpo;
    let model = model_path(&ModelArgs { model: None, device: DeviceArg::Cpu, threads: None }, settings)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let started = Instant::now();

    // Held-out prompts first, the rest for training, by a seeded shuffle.
    let mut order: Vec<usize> = (0..space.prompts.len()).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(args.seed));
    let eval: Vec<&PromptItem> = order[..args.eval_prompts].iter().map(|&i| &space.prompts[i]).collect();
    let held = args.eval_prompts + args.gate_prompts;
    let gate: Vec<&PromptItem> = order[args.eval_prompts..held].iter().map(|&i| &space.prompts[i]).collect();
    let train_pool: Vec<&PromptItem> = order[held..].iter().map(|&i| &space.prompts[i]).collect();
    let grpo_prompts: Vec<GrpoPrompt> = order[held..]
        .iter()
        .map(|&i| GrpoPrompt {
            index: i,
            system: None,
            prompt: space.prompts[i].prompt.clone(),
            reference: space.prompts[i].reference.clone(),
            tier: space.prompts[i].tier,
        })
        .collect();

    let model_sha = {
        let file = std::fs::File::open(&model).with_context(|| format!("opening {}", model.display()))?;
        agent_runtime::model_file::sha256_reader(std::io::BufReader::new(file))?
    };
    let runtime = Arc::new(Runtime::load(&model, threads)?);
    let judge_model =
        if space.judge.needs_model() { Some(Arc::new(JudgeModel::new(runtime.clone(), model_sha)?)) } else { None };
    let judge = Judge::for_space(Arc::new(space.judge.clone()), judge_model, &model)?;
    let compete_judge = if args.verifiers_only {
        let mut cfg = space.judge.clone();
        cfg.mode = judge::JudgeMode::None;
        Judge::new(Arc::new(cfg), None)?
    } else {
        Judge::new(judge.config.clone(), judge.model.clone())?.with_embedder(judge.embedder.clone())
    };
    let engine = Engine::start(runtime.clone(), EngineConfig { max_batch: 64, queue_capacity: 1 << 16 });
    let max_new = space.max_new_tokens as usize;

    let greedy: Vec<(&PromptItem, SamplingParams)> =
        eval.iter().map(|&p| (p, SamplingParams::greedy(max_new))).collect();
    let base_answers = answer(&engine, None, &greedy).await?;
    let gate_greedy: Vec<(&PromptItem, SamplingParams)> =
        gate.iter().map(|&p| (p, SamplingParams::greedy(max_new))).collect();
    let lab = Lab {
        args,
        engine: &engine,
        runtime: &runtime,
        model: &model,
        judge: &judge,
        compete_judge: &compete_judge,
        eval: &eval,
        greedy: &greedy,
        base_answers: &base_answers,
        train_pool: &train_pool,
        threads,
        max_new,
        started,
    };
    let mut gate = Gate { prompts: &gate, greedy: &gate_greedy, current: 0 };
    gate.current = if gate.prompts.is_empty() { 0 } else { gate.passes(&lab, None).await? };
    let mut carried: Vec<String> = Vec::new();
    let mut curriculum: Option<agent_runtime::train::grpo::Curriculum> = None;
    let mut report: Vec<Generation> = Vec::new();
    let mut adapter: Option<PathBuf> = None;
    let table_path = args.out.join("generations.jsonl");
    let mut table = std::fs::File::create(&table_path)?;
    for g in 0..=args.generations {
        // Evaluate.
        let mut generation = lab.evaluate(g, adapter.as_deref()).await?;
        if g == args.generations {
            writeln!(table, "{}", serde_json::to_string(&generation)?)?;
            report.push(generation);
            break;
        }
        let out = if grpo_run {
            // Learn by GRPO from the current adapter (start and reference).
            lab.learn_grpo(g, adapter.as_deref(), &grpo_prompts, &mut curriculum, &mut generation)?
        } else {
            // Compete: each training prompt's sampled answers are one match.
            let gen_dir = args.out.join(format!("gen{}", g + 1));
            let made = lab.compete(g, adapter.as_deref(), &gen_dir).await?;
            generation.pairs = made.len();
            let train_lines: Vec<String> = if args.carry_pairs {
                carried.extend(made);
                let from = carried.len().saturating_sub(args.max_pairs);
                carried[from..].to_vec()
            } else {
                made.into_iter().take(args.max_pairs).collect()
            };
            let train_lines = if sft { distinct_chosen(train_lines) } else { train_lines };
            let pairs = train_lines.len();
            generation.trained_on = pairs;
            let pairs_path = gen_dir.join("train-pairs.jsonl");
            std::fs::write(&pairs_path, train_lines.iter().map(|l| format!("{l}\n")).collect::<String>())?;
            if pairs == 0 {
                eprintln!("generation {g}: the judge found no preference among the samples; the agent stays");
                writeln!(table, "{}", serde_json::to_string(&generation)?)?;
                report.push(generation);
                continue;
            }
            // Learn: DPO (or SFT) from the current adapter (parent and reference).
            lab.learn_pairs(g, adapter.as_deref(), &pairs_path, sft, &mut generation)?
        };
        // The gate: keep the candidate only if it passes at least as many
        // gate prompts as the current adapter.
        let keep = gate.admits(&lab, g, &out, &mut generation, !grpo_run).await?;
        writeln!(table, "{}", serde_json::to_string(&generation)?)?;
        report.push(generation);
        if keep {
            adapter = Some(out);
        }
    }
    let md = render(args, &space.name, &report);
    std::fs::write(args.out.join("report.md"), &md)?;
    println!("{md}");
    Ok(())
}

/// What every generation of the loop works with.
struct Lab<'a> {
    args: &'a LoopArgs,
    engine: &'a Engine,
    runtime: &'a Arc<Runtime>,
    model: &'a Path,
    /// The Space's whole judge (evaluation and the gate).
    judge: &'a Judge,
    /// The judge that ranks the training matches (`--verifiers-only`: the
    /// verifiers alone).
    compete_judge: &'a Judge,
    eval: &'a [&'a PromptItem],
    /// The held-out prompts with greedy sampling.
    greedy: &'a [(&'a PromptItem, SamplingParams)],
    base_answers: &'a [String],
    train_pool: &'a [&'a PromptItem],
    threads: usize,
    max_new: usize,
    started: Instant,
}

impl Lab<'_> {
    /// The agent (at `adapter`) on the held-out prompts: its pass rate, and
    /// its wins against the base model's answers.
    async fn evaluate(&self, g: usize, adapter: Option<&Path>) -> anyhow::Result<Generation> {
        let (engine, eval, base_answers) = (self.engine, self.eval, self.base_answers);
        let answers =
            if adapter.is_none() { base_answers.to_vec() } else { answer(engine, adapter, self.greedy).await? };
        let (mut passed, mut wins, mut ties) = (0usize, 0usize, 0usize);
        for (i, item) in eval.iter().enumerate() {
            let mut candidates = vec![Candidate { id: "agent".into(), text: answers[i].clone() }];
            if adapter.is_some() {
                candidates.push(Candidate { id: "base".into(), text: base_answers[i].clone() });
            }
            let verdict = self.judge.judge(&MatchInput {
                prompt: item.prompt.clone(),
                reference: item.reference.clone(),
                candidates,
            })?;
            passed += usize::from(verdict.passed_hard["agent"]);
            if adapter.is_some() {
                match verdict.ranks["agent"].cmp(&verdict.ranks["base"]) {
                    std::cmp::Ordering::Less => wins += 1,
                    std::cmp::Ordering::Equal => ties += 1,
                    std::cmp::Ordering::Greater => {}
                }
            }
        }
        let n = eval.len();
        let generation = Generation {
            generation: g,
            adapter: adapter.map(Path::to_path_buf),
            pass: Rate::new(passed, n),
            // Ties count half: (2·wins + ties) half-wins out of 2n.
            win_vs_base: adapter.is_some().then(|| Rate::new(2 * wins + ties, 2 * n)),
            ties_vs_base: ties,
            pairs: 0,
            trained_on: 0,
            gate: None,
            grpo: None,
            train_seconds: 0.0,
            elapsed_seconds: self.started.elapsed().as_secs_f64(),
        };
        eprintln!(
            "generation {g}: pass {} · win vs base {} · {:.0} s",
            generation.pass.show(),
            generation.win_vs_base.as_ref().map_or("-".to_owned(), Rate::show),
            generation.elapsed_seconds
        );
        Ok(generation)
    }

    /// GRPO steps from the current adapter (start and reference) on the
    /// loop's training split; the candidate adapter's folder.
    fn learn_grpo(
        &self,
        g: usize,
        adapter: Option<&Path>,
        grpo_prompts: &[GrpoPrompt],
        curriculum: &mut Option<agent_runtime::train::grpo::Curriculum>,
        generation: &mut Generation,
    ) -> anyhow::Result<PathBuf> {
        let args = self.args;
        let gen_dir = args.out.join(format!("gen{}", g + 1));
        let out = gen_dir.join("adapter");
        let cfg = TrainConfig {
            objective: Objective::Grpo,
            learning_rate: args.learning_rate,
            rank: args.rank,
            alpha: 2.0 * args.rank as f32,
            schedule: agent_runtime::train::Schedule::Constant,
            seed: args.seed.wrapping_add(g as u64),
            threads: self.threads,
            ..TrainConfig::default()
        };
        let settings = GrpoSettings {
            group: args.samples,
            prompts_per_step: args.prompts_per_step,
            steps: args.steps.unwrap_or(10),
            iterations: args.iterations,
            beta: args.kl_beta,
            epsilon: args.epsilon,
            advantage: if args.dr_grpo { AdvantageKind::DrGrpo } else { AdvantageKind::Grpo },
            temperature: args.temperature,
            max_new_tokens: self.max_new,
            curriculum: args.curriculum,
            ..GrpoSettings::default()
        };
        let source = format!("{} (the loop's training split, seed {})", args.space.display(), args.seed);
        let files = GrpoFiles {
            model: self.model,
            parent: adapter,
            out: &out,
            prompt_source: &source,
            curriculum: curriculum.clone(),
        };
        let train_started = Instant::now();
        let mut reward = crate::work::grpo::judge_reward(self.compete_judge);
        let mut printer = crate::cli::train::grpo_printer();
        let manifest = tokio::task::block_in_place(|| {
            manifest::grpo_to_dir(
                self.runtime,
                self.engine,
                &files,
                grpo_prompts,
                &cfg,
                &settings,
                &mut reward,
                &mut printer,
            )
        })?;
        generation.train_seconds = train_started.elapsed().as_secs_f64();
        generation.trained_on = manifest.result.steps * settings.prompts_per_step * settings.group;
        // The next generation's curriculum goes on from this one's.
        *curriculum = Some(manifest.result.curriculum.clone());
        generation.grpo = Some(GrpoSummary {
            first_reward_mean: manifest.result.first_reward_mean,
            last_reward_mean: manifest.result.last_reward_mean,
            skipped_share: manifest.result.skipped_share,
            open_tier: manifest.result.open_tier,
        });
        Ok(out)
    }

    /// Each picked training prompt's sampled answers as one match, ranked by
    /// the compete judge; its pairs as lines (also written to
    /// `gen_dir/pairs.jsonl`).
    async fn compete(&self, g: usize, adapter: Option<&Path>, gen_dir: &Path) -> anyhow::Result<Vec<String>> {
        let (args, max_new) = (self.args, self.max_new);
        let mut picked = self.train_pool.to_vec();
        picked.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(args.seed.wrapping_add(1000 + g as u64)));
        picked.truncate(args.train_prompts);
        let sampled: Vec<(&PromptItem, SamplingParams)> = picked
            .iter()
            .enumerate()
            .flat_map(|(i, &p)| {
                (0..args.samples).map(move |k| {
                    let seed = args.seed ^ ((g as u64) << 40) ^ ((i as u64) << 8) ^ k as u64;
                    let params = SamplingParams {
                        temperature: args.temperature,
                        repetition_penalty: args.repetition_penalty,
                        max_new_tokens: max_new,
                        seed,
                        ..SamplingParams::default()
                    };
                    (p, params)
                })
            })
            .collect();
        let outputs = answer(self.engine, adapter, &sampled).await?;
        std::fs::create_dir_all(gen_dir)?;
        let mut made: Vec<String> = Vec::new();
        for (i, item) in picked.iter().enumerate() {
            let texts = &outputs[i * args.samples..(i + 1) * args.samples];
            let candidates: Vec<Candidate> =
                texts.iter().enumerate().map(|(k, t)| Candidate { id: format!("s{k}"), text: t.clone() }).collect();
            let verdict = self.compete_judge.judge(&MatchInput {
                prompt: item.prompt.clone(),
                reference: item.reference.clone(),
                candidates: candidates.clone(),
            })?;
            for pair in &verdict.pairs {
                let text =
                    |id: &str| candidates.iter().find(|c| c.id == id).map(|c| c.text.clone()).unwrap_or_default();
                let (chosen, rejected) = (text(&pair.chosen), text(&pair.rejected));
                if chosen.trim().is_empty() || rejected.trim().is_empty() || chosen == rejected {
                    continue;
                }
                let id = format!("g{}-p{i}-{}-{}", g + 1, pair.chosen, pair.rejected);
                made.push(PairRow::new(&item.prompt, &chosen, &rejected).id(&id).margin(pair.margin).line());
            }
        }
        std::fs::write(gen_dir.join("pairs.jsonl"), made.iter().map(|l| format!("{l}\n")).collect::<String>())?;
        Ok(made)
    }

    /// DPO (or SFT) on `pairs_path` from the current adapter (parent and
    /// reference); the candidate adapter's folder.
    fn learn_pairs(
        &self,
        g: usize,
        adapter: Option<&Path>,
        pairs_path: &Path,
        sft: bool,
        generation: &mut Generation,
    ) -> anyhow::Result<PathBuf> {
        let args = self.args;
        let cfg = TrainConfig {
            objective: if sft { Objective::Sft } else { Objective::Dpo },
            learning_rate: args.learning_rate,
            beta: args.beta,
            rpo_alpha: args.rpo_alpha,
            rank: args.rank,
            alpha: 2.0 * args.rank as f32,
            steps: args.steps,
            epochs: args.epochs,
            max_length: 256,
            max_prompt_length: 128,
            seed: args.seed.wrapping_add(g as u64),
            threads: self.threads,
            ..TrainConfig::default()
        };
        let out = args.out.join(format!("gen{}", g + 1)).join("adapter");
        let files = RunFiles { model: self.model, pairs: pairs_path, parent: adapter, out: &out };
        let train_started = Instant::now();
        let mut last: Option<StepMetrics> = None;
        manifest::train_to_dir(self.runtime, &files, &cfg, &mut |m: &StepMetrics| last = Some(m.clone()))?;
        generation.train_seconds = train_started.elapsed().as_secs_f64();
        if let Some(m) = last {
            eprintln!(
                "generation {g}: {} pairs, {} steps, loss {:.3}, reward accuracy {:.2} ({:.0} s)",
                generation.trained_on, m.steps, m.loss, m.reward_accuracy, generation.train_seconds
            );
        }
        Ok(out)
    }
}

/// The gate prompts and the hard-check passes of the adapter kept so far.
struct Gate<'a> {
    prompts: &'a [&'a PromptItem],
    greedy: &'a [(&'a PromptItem, SamplingParams)],
    current: usize,
}

impl Gate<'_> {
    /// Hard-verifier passes of `adapter` (None: the base) on the gate prompts.
    async fn passes(&self, lab: &Lab<'_>, adapter: Option<&Path>) -> anyhow::Result<usize> {
        let answers = answer(lab.engine, adapter, self.greedy).await?;
        let mut passed = 0;
        for (item, text) in self.prompts.iter().zip(answers) {
            let verdict = lab.judge.judge(&MatchInput {
                prompt: item.prompt.clone(),
                reference: item.reference.clone(),
                candidates: vec![Candidate { id: "agent".into(), text }],
            })?;
            passed += usize::from(verdict.passed_hard["agent"]);
        }
        Ok(passed)
    }

    /// Whether the candidate at `out` is kept: without gate prompts always;
    /// otherwise when it passes at least as many as the current adapter.
    async fn admits(
        &mut self,
        lab: &Lab<'_>,
        g: usize,
        out: &Path,
        generation: &mut Generation,
        say: bool,
    ) -> anyhow::Result<bool> {
        if self.prompts.is_empty() {
            return Ok(true);
        }
        let passes = self.passes(lab, Some(out)).await?;
        let keep = passes >= self.current;
        if say {
            let n = self.prompts.len();
            let current = self.current;
            eprintln!(
                "generation {g}: gate {passes}/{n} vs current {current}/{n}: {}",
                if keep { "kept" } else { "discarded" }
            );
        }
        generation.gate = Some((passes, self.current, keep));
        if keep {
            self.current = passes;
        }
        Ok(keep)
    }
}

/// The loop's report in Markdown: its settings and a row per generation.
fn render(args: &LoopArgs, space: &str, report: &[Generation]) -> String {
    let grpo_run = args.objective == ObjectiveArg::Grpo;
    let mut md = String::new();
    let method = match args.objective {
        ObjectiveArg::Grpo => format!(
            "GRPO: {} steps × {} prompts × {} samples per generation (rewarded by {}), μ {}, KL β {}, ε {}{}{}",
            args.steps.unwrap_or(10),
            args.prompts_per_step,
            args.samples,
            if args.verifiers_only { "the Space's verifiers" } else { "the Space's judge" },
            args.iterations,
            args.kl_beta,
            args.epsilon,
            if args.dr_grpo { ", Dr. GRPO" } else { "" },
            if args.curriculum { ", curriculum" } else { ", no curriculum" }
        ),
        objective => format!(
            "{} training prompts × {} samples per generation (ranked by {}), {} β {} RPO α {}",
            args.train_prompts,
            args.samples,
            if args.verifiers_only { "the Space's verifiers" } else { "the Space's judge" },
            if objective == ObjectiveArg::Sft { "SFT" } else { "DPO" },
            args.beta,
            args.rpo_alpha
        ),
    };
    md.push_str(&format!(
        "Space `{}`, {} held-out prompts, {method}, lr {} r {}, T {} repetition penalty {}, seed {}\n\n",
        space, args.eval_prompts, args.learning_rate, args.rank, args.temperature, args.repetition_penalty, args.seed
    ));
    md.push_str(&format!(
        "{} gate prompts; pairs {}\n\n",
        args.gate_prompts,
        if grpo_run {
            "none (GRPO learns from its own samples; the curriculum carries over generations)".to_owned()
        } else if args.carry_pairs {
            format!("carried across generations (newest {})", args.max_pairs)
        } else {
            "of each generation only".to_owned()
        }
    ));
    md.push_str(
        if grpo_run {
            "| generation | pass rate [95% CI] | win rate vs base [95% CI] | GRPO on the way to the next | next adapter at the gate | elapsed |\n"
        } else {
            "| generation | pass rate [95% CI] | win rate vs base [95% CI] | pairs made / trained on | next adapter at the gate | elapsed |\n"
        },
    );
    md.push_str("| --- | --- | --- | --- | --- | --- |\n");
    for r in report {
        let last = r.generation == args.generations;
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.0} s |\n",
            r.generation,
            r.pass.show(),
            r.win_vs_base.as_ref().map_or("—".to_owned(), Rate::show),
            match (&r.grpo, last) {
                (_, true) => "—".to_owned(),
                (Some(g), false) => format!(
                    "{} samples, reward {:.2} → {:.2}, {:.0}% groups skipped",
                    r.trained_on,
                    g.first_reward_mean,
                    g.last_reward_mean,
                    100.0 * g.skipped_share
                ),
                (None, false) => format!("{} / {}", r.pairs, r.trained_on),
            },
            match r.gate {
                Some((new, cur, kept)) =>
                    format!("{} ({new} vs {cur} of {})", if kept { "kept" } else { "discarded" }, args.gate_prompts),
                None if last => "—".to_owned(),
                None if r.trained_on == 0 => "nothing to train on".to_owned(),
                None => "kept (no gate)".to_owned(),
            },
            r.elapsed_seconds
        ));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::distinct_chosen;

    #[test]
    fn sft_keeps_each_prompts_winner_once() {
        let line = |prompt: &str, chosen: &str, rejected: &str| {
            agent_runtime::train::pairs::PairRow::new(prompt, chosen, rejected).line()
        };
        let lines = vec![
            line("p1", "a", "x"),
            line("p1", "a", "y"),
            line("p1", "b", "y"),
            line("p2", "a", "z"),
            line("p2", "a", "x"),
        ];
        let kept = distinct_chosen(lines.clone());
        assert_eq!(kept, vec![lines[0].clone(), lines[2].clone(), lines[3].clone()]);
    }
}
