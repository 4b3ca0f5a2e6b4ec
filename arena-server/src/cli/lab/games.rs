//! `arena experiment games`: the closed loop for a two-seat multi-turn
//! Space on one machine — play, credit decisions by outcome, DPO, repeat —
//! measured as the agent's score against the base model over held-out
//! starting positions with seats alternated.
//!
//! Each generation: the current agent plays the base model greedily from
//! every held-out prompt twice (once in each seat): a win counts 1, a draw
//! ½, with a 95% interval; each side's illegal-move rate is counted. Then
//! it plays the base model from training prompts with sampling, and at
//! every one of its own turns more answers are sampled from the same view
//! and their lines played out too: when a line ends differently for the
//! agent than the game's own, the answer whose line ended better is chosen
//! over the other — a decision-point pair whose prompt is the view
//! the agent was shown. DPO on those pairs (the current adapter as parent
//! and reference) makes the next generation's adapter.

use crate::app::config::Settings;
use crate::cli::args::{DeviceArg, GamesArgs, GamesBenchArgs, GamesObjective, ModelArgs};
use crate::cli::model::model_path;
use crate::cli::space::load_space;
use crate::work::games::{Player, Score, Table, illegal, seat_score};
use agent_runtime::engine::{Engine, EngineConfig, Runtime};
use agent_runtime::train::manifest::{self, RunFiles};
use agent_runtime::train::pairs::PairRow;
use agent_runtime::train::{Objective, StepMetrics, TrainConfig};
use anyhow::{Context, bail};
use futures_util::future::join_all;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use referee::State;
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone, Serialize)]
struct Generation {
    generation: usize,
    adapter: Option<PathBuf>,
    vs_base: Score,
    /// Illegal answers / answers, the agent's and the base model's.
    agent_illegal: (usize, usize),
    base_illegal: (usize, usize),
    pairs: usize,
    train_games: usize,
    train_seconds: f64,
    elapsed_seconds: f64,
}

pub async fn run(args: &GamesArgs, settings: &Settings) -> anyhow::Result<()> {
    let threads = args.threads.unwrap_or_else(agent_runtime::model::default_threads);
    let space = load_space(&args.space).map_err(|errors| anyhow::anyhow!(errors.join("\n")))?;
    let Some(referee) = space.game.clone() else {
        bail!("{} is not a multi-turn Space (it has no [turns] and [referee])", args.space.display());
    };
    if referee.seats != 2 {
        bail!("this loop plays two-seat games; {} has {}", args.space.display(), referee.seats);
    }
    if referee.turns.on_limit == referee::OnLimit::Judge {
        bail!("this loop needs games the referee decides (turns.on_limit = \"rules\")");
    }
    if space.prompts.len() < args.eval_prompts + 2 {
        bail!(
            "{} has {} prompts; --eval-prompts {} leaves too few to train on",
            args.space.display(),
            space.prompts.len(),
            args.eval_prompts
        );
    }
    let model = model_path(&ModelArgs { model: None, device: DeviceArg::Cpu, threads: None }, settings)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let started = Instant::now();

    let mut order: Vec<usize> = (0..space.prompts.len()).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(args.seed));
    let eval: Vec<String> = order[..args.eval_prompts].iter().map(|&i| space.prompts[i].prompt.clone()).collect();
    let pool: Vec<String> = order[args.eval_prompts..].iter().map(|&i| space.prompts[i].prompt.clone()).collect();

    let runtime = Arc::new(Runtime::load(&model, threads)?);
    let engine = Engine::start(runtime.clone(), EngineConfig { max_batch: 64, queue_capacity: 1 << 16 });
    let max_tokens = referee.turns.max_tokens as usize;
    let table = Arc::new(Table { engine, referee: Arc::new(referee), max_tokens });
    let base = Player::default();
    let mut current = Player::default();
    let mut report: Vec<Generation> = Vec::new();
    let mut jsonl = std::fs::File::create(args.out.join("generations.jsonl"))?;
    for g in 0..=args.generations {
        // Evaluate: every held-out prompt from both seats, greedy.
        let games = eval.iter().flat_map(|p| [(p, 0usize), (p, 1usize)]).map(|(prompt, seat)| {
            let players = if seat == 0 { [current.clone(), base.clone()] } else { [base.clone(), current.clone()] };
            let table = &*table;
            async move {
                let start = table.start(prompt).await?;
                let end = table.finish(prompt, &players, start, 0.0, 0).await?;
                Ok::<_, anyhow::Error>((end, seat))
            }
        });
        let ended = join_all(games).await.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        let (mut w, mut d, mut l) = (0, 0, 0);
        let (mut ai, mut an, mut bi, mut bn) = (0, 0, 0, 0);
        for (state, seat) in &ended {
            let (mine, theirs) = (seat_score(state, *seat), seat_score(state, 1 - seat));
            if mine > theirs {
                w += 1
            } else if mine < theirs {
                l += 1
            } else {
                d += 1
            }
            let (i, n) = illegal(state, *seat);
            ai += i;
            an += n;
            let (i, n) = illegal(state, 1 - seat);
            bi += i;
            bn += n;
        }
        let mut generation = Generation {
            generation: g,
            adapter: current.adapter.clone(),
            vs_base: Score::new(w, d, l),
            agent_illegal: (ai, an),
            base_illegal: (bi, bn),
            pairs: 0,
            train_games: 0,
            train_seconds: 0.0,
            elapsed_seconds: started.elapsed().as_secs_f64(),
        };
        let s = generation.vs_base;
        eprintln!(
            "generation {g}: vs base {:.1}% [{:.1}, {:.1}] ({w} won, {d} drawn, {l} lost); illegal: agent {ai}/{an}, base {bi}/{bn} ({:.0} s)",
            100.0 * s.rate,
            100.0 * s.low,
            100.0 * s.high,
            generation.elapsed_seconds
        );
        if g == args.generations {
            writeln!(jsonl, "{}", serde_json::to_string(&generation)?)?;
            report.push(generation);
            break;
        }

        // Play training games with branches; pairs from the decisions.
        let gen_dir = args.out.join(format!("gen{}", g + 1));
        std::fs::create_dir_all(&gen_dir)?;
        let mut picks = pool.clone();
        picks.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(args.seed ^ ((g as u64 + 1) * 7919)));
        picks.truncate(args.train_prompts);
        if args.objective == GamesObjective::Grpo {
            let table = table.clone();
            let out = gen_dir.join("adapter");
            let train_started = Instant::now();
            let plan = GrpoGeneration { index: g, picks: &picks, out: &out };
            let (positions, last) = grpo_generation(args, &runtime, &model, table, &current, plan).await?;
            generation.train_seconds = train_started.elapsed().as_secs_f64();
            generation.train_games = 2 * picks.len();
            generation.pairs = positions;
            if let Some(m) = last {
                eprintln!(
                    "generation {g}: GRPO at {positions} positions, {} steps, last reward {:.3} ({:.0} s)",
                    m.steps, m.reward_mean, generation.train_seconds
                );
            }
            writeln!(jsonl, "{}", serde_json::to_string(&generation)?)?;
            report.push(generation);
            current = Player { adapter: Some(out), system: String::new() };
            continue;
        }
        let games =
            picks.iter().enumerate().flat_map(|(i, p)| [(i, p, 0usize), (i, p, 1usize)]).map(|(i, prompt, seat)| {
                let players = if seat == 0 { [current.clone(), base.clone()] } else { [base.clone(), current.clone()] };
                let table = &*table;
                let seed = args.seed.wrapping_mul(1_000_003) ^ ((g as u64) << 40) ^ ((i as u64) << 8) ^ seat as u64;
                async move {
                    table.play_with_branches(prompt, &players, seat, args.alternatives, args.temperature, seed).await
                }
            });
        let played = join_all(games).await.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        generation.train_games = played.len();
        let mut lines = Vec::new();
        for (k, (_, decisions)) in played.iter().enumerate() {
            for (j, d) in decisions.iter().enumerate() {
                let id = format!("g{}-game{k}-d{j}", g + 1);
                lines.push(PairRow::new(&d.view, &d.better, &d.worse).id(&id).margin(d.margin).line());
            }
        }
        lines.truncate(args.max_pairs);
        generation.pairs = lines.len();
        let pairs_path = gen_dir.join("pairs.jsonl");
        std::fs::write(&pairs_path, lines.iter().map(|l| format!("{l}\n")).collect::<String>())?;
        eprintln!("generation {g}: {} training games, {} decision pairs", played.len(), lines.len());
        if lines.is_empty() {
            writeln!(jsonl, "{}", serde_json::to_string(&generation)?)?;
            report.push(generation);
            continue;
        }
        let cfg = TrainConfig {
            objective: Objective::Dpo,
            learning_rate: args.learning_rate,
            beta: args.beta,
            rank: args.rank,
            alpha: 2.0 * args.rank as f32,
            steps: args.steps,
            epochs: args.epochs,
            max_length: 384,
            max_prompt_length: 320,
            seed: args.seed.wrapping_add(g as u64),
            threads,
            ..TrainConfig::default()
        };
        let out = gen_dir.join("adapter");
        let files = RunFiles { model: &model, pairs: &pairs_path, parent: current.adapter.as_deref(), out: &out };
        let train_started = Instant::now();
        let mut last: Option<StepMetrics> = None;
        manifest::train_to_dir(&runtime, &files, &cfg, &mut |m: &StepMetrics| last = Some(m.clone()))?;
        generation.train_seconds = train_started.elapsed().as_secs_f64();
        if let Some(m) = last {
            eprintln!(
                "generation {g}: DPO {} steps, loss {:.3}, reward accuracy {:.2} ({:.0} s)",
                m.steps, m.loss, m.reward_accuracy, generation.train_seconds
            );
        }
        writeln!(jsonl, "{}", serde_json::to_string(&generation)?)?;
        report.push(generation);
        current = Player { adapter: Some(out), system: String::new() };
    }
    let md = render(args, &report);
    std::fs::write(args.out.join("report.md"), &md)?;
    print!("{md}");
    Ok(())
}

/// Which generation a GRPO step trains, from which training openings,
/// into which folder.
struct GrpoGeneration<'a> {
    index: usize,
    picks: &'a [String],
    out: &'a std::path::Path,
}

/// One GRPO generation: positions from the agent's games against the base
/// model on `picks` (the agent's turns, both seats), answers sampled there
/// by the policy, each rewarded by the agent's end of the line it starts
/// (played out against the base at the sampling temperature). Returns the
/// positions used and the last step's figures.
async fn grpo_generation(
    args: &GamesArgs,
    runtime: &Arc<Runtime>,
    model: &std::path::Path,
    table: Arc<Table>,
    current: &Player,
    plan: GrpoGeneration<'_>,
) -> anyhow::Result<(usize, Option<agent_runtime::train::grpo::GrpoStepMetrics>)> {
    let GrpoGeneration { index: g, picks, out } = plan;
    use agent_runtime::train::grpo::{GrpoPrompt, GrpoSettings, Reward};
    use agent_runtime::train::manifest::GrpoFiles;
    let base = Player::default();
    let seed = args.seed.wrapping_mul(1_000_003) ^ ((g as u64) << 40);
    let mut positions = Vec::new();
    for seat in [0usize, 1] {
        let players = if seat == 0 { [current.clone(), base.clone()] } else { [base.clone(), current.clone()] };
        let found = crate::work::games::play_positions(
            &table,
            &players,
            Some(seat),
            picks,
            args.temperature,
            seed ^ seat as u64,
            usize::MAX,
        )
        .await?;
        positions.extend(found.into_iter().map(|p| (p, players.clone())));
    }
    anyhow::ensure!(!positions.is_empty(), "the games reached no position of the agent's");
    let prompts: Vec<GrpoPrompt> = positions
        .iter()
        .enumerate()
        .map(|(index, (p, _))| GrpoPrompt { index, system: None, prompt: p.view.clone(), reference: None, tier: 0 })
        .collect();
    let grpo = GrpoSettings {
        group: args.group,
        prompts_per_step: args.prompts_per_step,
        steps: args.grpo_steps,
        temperature: args.temperature,
        max_new_tokens: table.max_tokens,
        max_prompt_length: 320,
        curriculum: false,
        ..GrpoSettings::default()
    };
    let cfg = TrainConfig {
        objective: Objective::Dpo,
        learning_rate: args.learning_rate,
        rank: args.rank,
        alpha: 2.0 * args.rank as f32,
        max_length: 384,
        max_prompt_length: 320,
        seed: args.seed.wrapping_add(g as u64),
        threads: args.threads.unwrap_or_else(agent_runtime::model::default_threads),
        ..TrainConfig::default()
    };
    let handle = tokio::runtime::Handle::current();
    let (temperature, n) = (args.temperature, positions.len());
    let (runtime, model, out, parent) = (runtime.clone(), model.to_owned(), out.to_owned(), current.adapter.clone());
    let last = tokio::task::spawn_blocking(move || {
        let mut calls = 0u64;
        let mut reward = |prompt: &GrpoPrompt, texts: &[String]| {
            let (at, players) = positions.get(prompt.index).ok_or_else(|| format!("no position {}", prompt.index))?;
            calls += 1;
            let lines = crate::work::games::line_rewards(&table, players, at, texts, temperature, seed ^ calls);
            let ends = handle.block_on(lines).map_err(|e| format!("playing the lines out: {e}"))?;
            Ok(ends.into_iter().map(|(value, passed)| Reward { value, passed }).collect())
        };
        let files = GrpoFiles {
            model: &model,
            parent: parent.as_deref(),
            out: &out,
            prompt_source: "positions of the agent's games against the base model",
            curriculum: None,
        };
        let mut last = None;
        manifest::grpo_to_dir(&runtime, &table.engine, &files, &prompts, &cfg, &grpo, &mut reward, &mut |m| {
            last = Some(m.clone())
        })?;
        Ok::<_, anyhow::Error>(last)
    })
    .await??;
    Ok((n, last))
}

fn render(args: &GamesArgs, report: &[Generation]) -> String {
    let rate = |(i, n): (usize, usize)| {
        if n == 0 { "—".to_owned() } else { format!("{:.1}% ({i}/{n})", 100.0 * i as f64 / n as f64) }
    };
    let training = if args.objective == GamesObjective::Grpo {
        format!(
            "GRPO (lr {}, {} steps of {} positions × {} answers per generation) at the agent's turns of its games \
             against the base at temperature {}, each answer rewarded by the agent's end of the line it starts",
            args.learning_rate, args.grpo_steps, args.prompts_per_step, args.group, args.temperature
        )
    } else {
        format!(
            "at temperature {}, {} more answers sampled at each of the agent's turns and played out; DPO (β {}, lr {}) \
             on the decisions whose two lines ended differently",
            args.temperature, args.alternatives, args.beta, args.learning_rate
        )
    };
    let column = if args.objective == GamesObjective::Grpo { "positions" } else { "pairs" };
    let mut md = format!(
        "# {} — the agent against the base model\n\n{} held-out starting positions × both seats, greedy; \
         a win 1, a draw ½, 95% Wilson interval. Training: {} positions × both seats per generation against the base; \
         {training}.\n\n\
         | gen | score vs base [95% CI] | won / drawn / lost | agent illegal | base illegal | {column} | elapsed |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
        args.space.display(),
        args.eval_prompts,
        args.train_prompts,
    );
    for g in report {
        let s = g.vs_base;
        md.push_str(&format!(
            "| {} | {:.1}% [{:.1}, {:.1}] | {} / {} / {} | {} | {} | {} | {:.0} s |\n",
            g.generation,
            100.0 * s.rate,
            100.0 * s.low,
            100.0 * s.high,
            s.wins,
            s.draws,
            s.losses,
            rate(g.agent_illegal),
            rate(g.base_illegal),
            g.pairs,
            g.elapsed_seconds
        ));
    }
    md
}

/// `arena bench games`: turns per second of concurrent two-seat games on
/// the real model (the base model in both seats, sampled), their requests
/// batched on one engine, beside the same games played one at a time.
pub async fn bench(args: &GamesBenchArgs, settings: &Settings) -> anyhow::Result<()> {
    let GamesBenchArgs { space, games, threads, forfeit } = args;
    let (games, threads) = (*games, *threads);
    let threads = threads.unwrap_or_else(agent_runtime::model::default_threads);
    let loaded = load_space(space).map_err(|errors| anyhow::anyhow!(errors.join("\n")))?;
    let Some(mut referee) = loaded.game.clone() else { bail!("{} is not a multi-turn Space", space.display()) };
    if !forfeit {
        // Illegal moves pass the turn and never end the game: games run
        // their full length.
        referee.illegal = referee::Illegal::Penalty { points: 0.0, max: u32::MAX };
    }
    if referee.seats != 2 {
        bail!("this bench plays two-seat games");
    }
    let model = model_path(&ModelArgs { model: None, device: DeviceArg::Cpu, threads: None }, settings)?;
    let runtime = Arc::new(Runtime::load(&model, threads)?);
    let budget = runtime.prefix_budget().max(agent_runtime::engine::PREFIX_CACHE_BYTES);
    let engine = Engine::start(runtime.clone(), EngineConfig { max_batch: 64, queue_capacity: 1 << 16 });
    let table = Table { engine, referee: Arc::new(referee.clone()), max_tokens: referee.turns.max_tokens as usize };
    let players = [Player::default(), Player::default()];
    let prompts: Vec<String> = loaded.prompts.iter().cycle().take(games).map(|p| p.prompt.clone()).collect();
    let play = |k: usize| {
        let (table, players, prompt) = (&table, &players, &prompts[k]);
        async move {
            let start = table.start(prompt).await?;
            table.finish(prompt, players, start, 1.0, 1000 + k as u64).await
        }
    };
    // Warm-up: one game (cache off, so the runs below start alike).
    runtime.set_prefix_budget(0);
    play(0).await?;
    let turns = |states: &[State]| states.iter().map(|s| s.transcript.len()).sum::<usize>();
    println!(
        "{} — {games} two-seat games, the base model in both seats, temperature 1, {threads} threads{}",
        space.display(),
        if !forfeit { ", illegal moves pass the turn (no forfeit)" } else { "" }
    );
    let mut runs: Vec<(String, Vec<State>, f64)> = Vec::new();
    for cache in [false, true] {
        let label = if cache { "prefix cache on " } else { "prefix cache off" };
        runtime.set_prefix_budget(if cache { budget } else { 0 });
        let before = runtime.prefix_stats();
        let started = Instant::now();
        let together = join_all((0..games).map(play)).await.into_iter().collect::<anyhow::Result<Vec<State>>>()?;
        let together_s = started.elapsed().as_secs_f64();
        let mid = runtime.prefix_stats();
        // Each one-at-a-time run starts from an empty cache too.
        runtime.clear_prefix_cache();
        let started = Instant::now();
        let mut alone = Vec::new();
        for k in 0..games {
            alone.push(play(k).await?);
        }
        let alone_s = started.elapsed().as_secs_f64();
        let (t1, t2) = (turns(&together), turns(&alone));
        let share = |a: agent_runtime::prefix::PrefixStats, b: agent_runtime::prefix::PrefixStats| {
            let reused = (b.reused_tokens - a.reused_tokens) as f64;
            let fed = (b.fed_tokens - a.fed_tokens) as f64;
            if reused + fed > 0.0 { 100.0 * reused / (reused + fed) } else { 0.0 }
        };
        println!(
            "{label}: {games} at once {t1} turns in {together_s:.1} s = {:.2} turns/s (prompt tokens reused {:.0}%); \
             one at a time {t2} turns in {alone_s:.1} s = {:.2} turns/s (reused {:.0}%); ratio {:.2}",
            t1 as f64 / together_s,
            share(before, mid),
            t2 as f64 / alone_s,
            share(mid, runtime.prefix_stats()),
            (t1 as f64 / together_s) / (t2 as f64 / alone_s),
        );
        runs.push((label.to_owned(), together, together_s));
        runs.push((label.to_owned(), alone, alone_s));
    }
    let same = runs.windows(2).all(|w| turns(&w[0].1) == turns(&w[1].1));
    println!("(the same seeds; every run's games have the same turns: {})", if same { "yes" } else { "no" });
    if let [(_, _, off), _, (_, _, on), _] = &runs[..] {
        println!("{games} at once, cache on vs off: {:.2}x", off / on);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_count_half_and_the_interval_holds_the_rate() {
        let s = Score::new(30, 20, 10);
        assert!((s.rate - 40.0 / 60.0).abs() < 1e-12);
        assert!(s.low < s.rate && s.rate < s.high);
        let even = Score::new(0, 60, 0);
        assert!((even.rate - 0.5).abs() < 1e-12 && even.low < 0.5 && even.high > 0.5);
        let none = Score::new(0, 0, 0);
        assert_eq!((none.low, none.high), (0.0, 1.0));
    }
}
