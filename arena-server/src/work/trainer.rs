//! The trainer role: takes jobs from the `train` stream, trains, gates and
//! records the new version.
//!
//! A job is made by hand (the API) or by a policy ("every N new pairs the
//! agent took part in", `policies`). Making one pins the agent's current
//! version as parent and the exact pairs it will train on, and writes an
//! outbox row in the same transaction; the relay puts the job id on the
//! `train` stream. A trainer claims the job in PostgreSQL (the truth),
//! heart-beats while it works, trains a new adapter by DPO (or SFT) from
//! the parent's, and plays the new version against the parent on the
//! Space's held-out prompts, judged by the Space's judge with the
//! candidates' order swapped on every other prompt. The new version is
//! always recorded with its lineage; it becomes current only when the
//! lower end of the 95% interval of its win rate (decisive games) is above
//! 50% and the agent's current version is still the parent
//! (`domain::training::Gate`). A trainer that dies leaves a stale
//! heartbeat; the reconciler puts the job back on the stream and another
//! trainer claims it (at most `MAX_ATTEMPTS` times). A job that hits a
//! transient error (PostgreSQL or Redis unreachable, a serialization
//! failure) is put back in the queue the same way instead of failing.

use super::generator::{EngineGenerator, GenJob, Generator, match_seed};
use super::runner::{RunnerSpec, Work};
use crate::context::Context;
use crate::domain::training::{Game, JobSettings, Outcome, clip};
use crate::domain::{JobId, JobStatus, Topic};
use crate::store::training::{self, Claimed};
use crate::store::{adapters, agents};
use agent_runtime::engine::{Engine, EngineConfig, Runtime};
use agent_runtime::train::StepMetrics;
use agent_runtime::train::grpo::{GrpoPrompt, GrpoStepMetrics, Reward};
use agent_runtime::train::manifest::{self, GrpoFiles, RunFiles};
use agent_runtime::train::pairs::PairRow;
use anyhow::Context as _;
use futures_util::future::BoxFuture;
use judge::{Candidate, Judge, JudgeModel, MatchInput};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Claims of one job before it fails for good.
pub const MAX_ATTEMPTS: i32 = 3;
/// A running job's heartbeat period.
pub const HEARTBEAT_S: u64 = 2;

/// Seconds without a heartbeat after which a running job counts as
/// abandoned (its trainer died) and is offered again.
pub fn stale_after_s(ctx: &Context) -> u64 {
    ctx.settings.reconcile_after_s.max(5 * HEARTBEAT_S)
}

/// The model a trainer works with, loaded on its first job (a process that
/// never trains never pays for it).
struct Loaded {
    runtime: Arc<Runtime>,
    engine: Engine,
    model_sha256: String,
}

/// A trainer: the model file and its thread count.
pub struct Trainer {
    model_path: PathBuf,
    threads: usize,
    loaded: tokio::sync::OnceCell<Arc<Loaded>>,
}

impl Trainer {
    pub fn new(model_path: PathBuf, threads: usize) -> Trainer {
        Trainer { model_path, threads: threads.max(1), loaded: tokio::sync::OnceCell::new() }
    }

    async fn loaded(&self) -> anyhow::Result<Arc<Loaded>> {
        let (path, threads) = (self.model_path.clone(), self.threads);
        self.loaded
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || -> anyhow::Result<Arc<Loaded>> {
                    let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
                    let model_sha256 = agent_runtime::model_file::sha256_reader(std::io::BufReader::new(file))?;
                    let runtime = Arc::new(Runtime::load(&path, threads)?);
                    let engine = Engine::start(runtime.clone(), EngineConfig { max_batch: 16, queue_capacity: 1024 });
                    Ok(Arc::new(Loaded { runtime, engine, model_sha256 }))
                })
                .await?
            })
            .await
            .cloned()
    }
}

/// Whether an error is the infrastructure's, not the job's: a lost or
/// refused connection to PostgreSQL or Redis, a pool timeout, a
/// serialization failure or deadlock, a server shutting down. Such a job is
/// tried again; any other error fails it.
pub fn is_transient(err: &anyhow::Error) -> bool {
    use std::io::ErrorKind;
    err.chain().any(|cause| {
        if let Some(e) = cause.downcast_ref::<sqlx::Error>() {
            return match e {
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => true,
                // 08: connection exception; 40: transaction rollback
                // (serialization failure, deadlock); 57P0x: shutdown.
                sqlx::Error::Database(db) => {
                    db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("40") || c.starts_with("57P0"))
                }
                _ => false,
            };
        }
        if let Some(e) = cause.downcast_ref::<redis::RedisError>() {
            return e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal();
        }
        cause.downcast_ref::<std::io::Error>().is_some_and(|e| {
            matches!(
                e.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
                    | ErrorKind::TimedOut
            )
        })
    })
}

/// Runs `work`, refreshing the job's heartbeat meanwhile.
async fn beating<T>(ctx: &Context, id: JobId, work: impl std::future::Future<Output = T>) -> T {
    let mut beat = tokio::time::interval(Duration::from_secs(HEARTBEAT_S));
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = beat.tick() => {
                let _ = training::heartbeat(&ctx.db, id, &ctx.consumer).await;
            }
        }
    }
}

impl Work for Trainer {
    /// One job at a time, acknowledged on read (the job's row is the work),
    /// cancelled when the worker stops (its heartbeat goes stale and
    /// another trainer takes it over).
    fn spec(&self, _ctx: &Context) -> RunnerSpec {
        RunnerSpec { topic: Topic::Train, batch: 1, ack_on_read: true, cancel_on_stop: true }
    }

    fn abandon<'a>(&'a self, _ctx: &'a Context, _job: Uuid, _reason: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        // Acknowledged on read, a job's message is never redelivered.
        Box::pin(std::future::ready(Ok(())))
    }

    fn run<'a>(&'a self, ctx: &'a Context, jobs: &'a [Uuid]) -> BoxFuture<'a, anyhow::Result<Vec<Uuid>>> {
        Box::pin(async move {
            for &job in jobs {
                self.take(ctx, JobId(job)).await;
            }
            Ok(jobs.to_vec())
        })
    }
}

impl Trainer {
    /// Claims the job if nobody works on it, and runs it to its end.
    async fn take(&self, ctx: &Context, job: JobId) {
        let claimed = match training::claim(&ctx.db, job, &ctx.consumer, stale_after_s(ctx)).await {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(%job, error = %err, "cannot claim the training job; the reconciler will offer it again");
                return;
            }
        };
        let id = claimed.id;
        if claimed.attempts > MAX_ATTEMPTS {
            let why = format!(
                "tried {} times; each attempt's trainer stopped or hit a transient error",
                claimed.attempts - 1
            );
            let _ = training::fail(&ctx.db, id, &ctx.consumer, &why).await;
            return;
        }
        tracing::info!(%id, agent = %claimed.agent_id, attempt = claimed.attempts, "training job claimed");
        // Removes the job's files however this ends, cancellation included.
        struct Cleanup(PathBuf);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _cleanup = Cleanup(work_dir(ctx, id));
        let limit = std::time::Duration::from_secs(ctx.settings.training_time_limit_s.max(1));
        // Set at the limit: the training thread (DPO or GRPO steps, GRPO's
        // rollouts) stops at its next step; the async parts (self-play,
        // playouts, the gate) stop when their future is dropped.
        let cancel = agent_runtime::train::Cancel::default();
        let timed_out = std::sync::atomic::AtomicBool::new(false);
        let run = async {
            match tokio::time::timeout(limit, run_job(ctx, self, claimed, cancel.clone())).await {
                Ok(result) => result,
                Err(_) => {
                    cancel.cancel();
                    timed_out.store(true, std::sync::atomic::Ordering::SeqCst);
                    Err(anyhow::anyhow!("the job ran past its time limit of {} s and was stopped", limit.as_secs()))
                }
            }
        };
        match beating(ctx, id, run).await {
            // It used the trainer time it was priced for: no refund.
            Err(err) if timed_out.load(std::sync::atomic::Ordering::SeqCst) => {
                tracing::warn!(%id, error = ?err, "training job stopped at its time limit");
                let _ = training::fail_used(&ctx.db, id, &ctx.consumer, &format!("{err:#}")).await;
            }
            Ok(status) => tracing::info!(%id, %status, "training job finished"),
            Err(err) if is_transient(&err) => {
                tracing::warn!(%id, error = ?err, "training job hit a transient error; it goes back in the queue");
                // If even this fails, the stale heartbeat brings the job back.
                let _ = training::release(&ctx.db, id, &ctx.consumer, &format!("{err:#}")).await;
            }
            Err(err) => {
                tracing::warn!(%id, error = ?err, "training job failed");
                let _ = training::fail(&ctx.db, id, &ctx.consumer, &format!("{err:#}")).await;
            }
        }
    }
}

/// Trains, gates and records; returns the job's final status.
async fn run_job(
    ctx: &Context,
    trainer: &Trainer,
    job: Claimed,
    cancel: agent_runtime::train::Cancel,
) -> anyhow::Result<JobStatus> {
    let settings: JobSettings = serde_json::from_value(job.settings.clone()).context("the job's settings")?;
    let parent = {
        let mut conn = ctx.db.acquire().await?;
        agents::version_config(&mut conn, job.agent_id, job.parent_version)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the parent version v{} is gone", job.parent_version))?
    };
    let (system_prompt, sampling, parent_adapter) = (parent.system_prompt, parent.sampling, parent.adapter_sha256);
    let space = ctx.spaces.get(&ctx.db, job.space_id, job.space_version).await?;
    let pairs = training::pair_texts(&ctx.db, &job.pair_ids).await?;
    // A referee-decided game's DPO job makes its pairs by self-play below.
    anyhow::ensure!(
        !pairs.is_empty() || !settings.needs_pairs() || space.self_play_game().is_some(),
        "none of the job's {} pairs can be read",
        job.pair_ids.len()
    );

    // Inputs on disk, as `arena train dpo` reads them: the manifest then
    // names every pair by its arena id.
    let data_dir = ctx.data_dir.clone();
    let work = work_dir(ctx, job.id);
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let pairs_path = work.join("pairs.jsonl");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&pairs_path)?);
        for pair in &pairs {
            let id = pair.id.to_string();
            let row = PairRow::new(&pair.prompt, &pair.chosen, &pair.rejected).id(&id).system(&system_prompt);
            writeln!(file, "{}", row.line())?;
        }
        file.flush()?;
    }
    let parent_dir = match &parent_adapter {
        Some(sha) => Some(adapters::materialize(&ctx.db, &data_dir, sha).await?),
        None => None,
    };
    let loaded = trainer.loaded().await?;
    let run = Run { ctx, trainer, job: &job, loaded: &loaded, settings: &settings };
    let mut cfg = settings.train_config(trainer.threads);
    cfg.cancel = cancel;
    let out = work.join("adapter");
    // A game the referee decides: DPO learns from decisions, not from the
    // matches' whole-game pairs. The parent plays itself from training
    // prompts; at its turns other answers are played out, and each
    // decision whose lines ended differently is a pair (the view as the
    // prompt).
    let game = referee_game(&space);
    if let Some(referee) = game.filter(|_| settings.needs_pairs()) {
        let table = crate::work::games::Table {
            engine: loaded.engine.clone(),
            referee: Arc::new(referee.clone()),
            max_tokens: referee.turns.max_tokens as usize,
        };
        let player = crate::work::games::Player { adapter: parent_dir.clone(), system: system_prompt.clone() };
        let prompts: Vec<String> =
            space.match_prompts.iter().take(GAME_TRAIN_PROMPTS).map(|&i| space.prompts[i].prompt.clone()).collect();
        let decisions = crate::work::games::self_play_pairs(
            &table,
            &player,
            &prompts,
            GAME_ALTERNATIVES,
            1.0,
            settings.seed ^ job.id.0.as_u64_pair().0,
        )
        .await?;
        anyhow::ensure!(!decisions.is_empty(), "the games played gave no decision whose lines ended differently");
        // The job was priced for at most max_pairs pairs.
        let decisions = &decisions[..decisions.len().min(settings.max_pairs)];
        let mut file = std::io::BufWriter::new(std::fs::File::create(&pairs_path)?);
        for (k, d) in decisions.iter().enumerate() {
            let id = format!("decision-{k}");
            let row = PairRow::new(&d.view, &d.better, &d.worse).id(&id).system(&system_prompt);
            writeln!(file, "{}", row.line())?;
        }
        file.flush()?;
    }

    let manifest_json = if settings.needs_pairs() {
        train_on_pairs(&run, &pairs_path, parent_dir.clone(), &out, cfg).await?
    } else {
        let player = crate::work::games::Player { adapter: parent_dir.clone(), system: system_prompt.clone() };
        let place = GrpoPlace { space: &space, system_prompt: &system_prompt, game: game.map(|_| player) };
        train_grpo(&run, place, parent_dir.clone(), &out, cfg).await?
    };

    // The adapter goes where every adapter goes: checked, stored by content.
    let config = std::fs::read(out.join(agent_runtime::lora::CONFIG_FILE))?;
    let weights = std::fs::read(out.join(agent_runtime::lora::WEIGHTS_FILE))?;
    let (sha, _, config) = adapters::validate(&config, &weights, loaded.runtime.config())
        .map_err(|why| anyhow::anyhow!("the trained adapter does not validate: {why}"))?;
    // The job was priced when it was made: its adapter counts against no quota.
    adapters::insert(&ctx.db, &sha, &String::from_utf8(config)?, &weights, job.owner_id, None).await?;
    let moved = training::start_gate(&ctx.db, job.id, &ctx.consumer, &sha, &manifest_json).await?;
    anyhow::ensure!(moved, "another trainer took the job over");
    let new_dir = adapters::materialize(&ctx.db, &data_dir, &sha).await?;
    let input = GateInput { space: &space, system_prompt: &system_prompt, sampling: &sampling, new_dir, parent_dir };
    if game.is_some() {
        return game_gate(&run, input).await;
    }
    gate(&run, input).await
}

/// What a job's training and gate run on: the job, the trainer's loaded
/// model, and the job's settings.
#[derive(Clone, Copy)]
struct Run<'a> {
    ctx: &'a Context,
    trainer: &'a Trainer,
    job: &'a Claimed,
    loaded: &'a Arc<Loaded>,
    settings: &'a JobSettings,
}

/// What a gate compares: the new adapter and its parent, as the agent's
/// current version plays them (its system prompt and sampling), in the
/// job's Space.
struct GateInput<'a> {
    space: &'a Arc<crate::domain::space::Space>,
    system_prompt: &'a str,
    sampling: &'a crate::domain::agent::AgentSampling,
    new_dir: PathBuf,
    parent_dir: Option<PathBuf>,
}

/// Training prompts a game job plays itself from (each from both seats).
const GAME_TRAIN_PROMPTS: usize = 24;
/// Other answers played out at each of the learner's turns.
const GAME_ALTERNATIVES: usize = 2;

/// The Space's referee when it decides the games itself: see
/// `Space::self_play_game`.
fn referee_game(space: &crate::domain::space::Space) -> Option<&referee::Referee> {
    space.self_play_game()
}

/// The gate of a game Space: the new version plays its parent from the
/// held-out starting prompts, once from each seat, at the agent's sampling
/// temperature with seeds fixed by the job; each game a win, a tie or a
/// loss for the new version; the same decision rule as every gate.
async fn game_gate(run: &Run<'_>, input: GateInput<'_>) -> anyhow::Result<JobStatus> {
    let Run { ctx, job, loaded, settings, .. } = *run;
    let GateInput { space, system_prompt, sampling, new_dir, parent_dir } = input;
    // Each prompt is two games.
    let (prompts, seed) = gate_draw(job, settings, space, settings.gate_prompts.div_ceil(2).max(1));
    let referee = space.game.clone().ok_or_else(|| anyhow::anyhow!("no referee"))?;
    let table = crate::work::games::Table {
        engine: loaded.engine.clone(),
        max_tokens: referee.turns.max_tokens as usize,
        referee: Arc::new(referee),
    };
    let new = crate::work::games::Player { adapter: Some(new_dir), system: system_prompt.to_owned() };
    let old = crate::work::games::Player { adapter: parent_dir, system: system_prompt.to_owned() };
    let starts: Vec<(usize, String)> = prompts.iter().map(|&i| (i, space.prompts[i].prompt.clone())).collect();
    let ended = crate::work::games::head_to_head(&table, &new, &old, &starts, sampling.temperature, seed).await?;
    let games = ended
        .into_iter()
        .map(|(index, seat, state)| {
            let (mine, theirs) =
                (crate::work::games::seat_score(&state, seat), crate::work::games::seat_score(&state, 1 - seat));
            let outcome = if mine > theirs {
                Outcome::Win
            } else if mine < theirs {
                Outcome::Loss
            } else {
                Outcome::Tie
            };
            Game {
                prompt_index: index,
                new_first: seat == 0,
                outcome,
                new: clip(&referee::Referee::seat_transcript(&state, seat)),
                parent: clip(&referee::Referee::seat_transcript(&state, 1 - seat)),
            }
        })
        .collect();
    Ok(training::record_gate(&ctx.db, job.id, &ctx.consumer, games).await?)
}

/// DPO or SFT on the job's pairs (written to `pairs_path`); the manifest.
async fn train_on_pairs(
    run: &Run<'_>,
    pairs_path: &std::path::Path,
    parent_dir: Option<PathBuf>,
    out: &std::path::Path,
    cfg: agent_runtime::train::TrainConfig,
) -> anyhow::Result<serde_json::Value> {
    let Run { ctx, trainer, job, loaded, .. } = *run;
    // Train on a blocking thread; each step's metrics come back here.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<StepMetrics>();
    let training = {
        let (runtime, model, pairs_path, parent_dir, out, cfg) = (
            loaded.runtime.clone(),
            trainer.model_path.clone(),
            pairs_path.to_owned(),
            parent_dir.clone(),
            out.to_owned(),
            cfg,
        );
        tokio::task::spawn_blocking(move || {
            let files = RunFiles { model: &model, pairs: &pairs_path, parent: parent_dir.as_deref(), out: &out };
            manifest::train_to_dir(&runtime, &files, &cfg, &mut |m: &StepMetrics| {
                let _ = tx.send(m.clone());
            })
        })
    };
    while let Some(m) = rx.recv().await {
        training::record_step(&ctx.db, job.id, &ctx.consumer, m.step, m.steps, &serde_json::to_value(&m)?).await?;
    }
    let manifest = training.await?.map_err(|e| anyhow::anyhow!("training: {e}"))?;
    Ok(serde_json::to_value(&manifest)?)
}

/// Where a GRPO job trains: its Space, the agent's system prompt, and in
/// a game the referee decides, the parent playing the lines out.
struct GrpoPlace<'a> {
    space: &'a Arc<crate::domain::space::Space>,
    system_prompt: &'a str,
    game: Option<crate::work::games::Player>,
}

/// Positions a game GRPO job samples answers at.
const GAME_GRPO_POSITIONS: usize = 64;

/// GRPO on the Space's training prompts, rewarded by the Space's judge,
/// sampled on the trainer's engine; the manifest. In a game the referee
/// decides, the prompts are positions from the parent's self-play on the
/// training openings (each the view of the seat to move) and a sampled
/// answer's reward is that seat's final score when its line is played out
/// by the parent (a per-turn reward; legal answers pass).
async fn train_grpo(
    run: &Run<'_>,
    place: GrpoPlace<'_>,
    parent_dir: Option<PathBuf>,
    out: &std::path::Path,
    cfg: agent_runtime::train::TrainConfig,
) -> anyhow::Result<serde_json::Value> {
    let Run { ctx, trainer, job, loaded, settings } = *run;
    let GrpoPlace { space, system_prompt, game } = place;
    let source = match game {
        Some(_) => format!("space {} v{}: positions from the parent's self-play", job.space_id, job.space_version),
        None => format!("space {} v{}", job.space_id, job.space_version),
    };
    let seed = settings.seed ^ job.id.0.as_u64_pair().0;
    let (grpo, prompts, mut reward): (_, _, Box<agent_runtime::train::grpo::RewardFn<'static>>) = match game {
        Some(player) => {
            let referee = space.game.clone().ok_or_else(|| anyhow::anyhow!("no referee"))?;
            let table = Arc::new(crate::work::games::Table {
                engine: loaded.engine.clone(),
                max_tokens: referee.turns.max_tokens as usize,
                referee: Arc::new(referee),
            });
            let openings: Vec<String> =
                space.match_prompts.iter().take(GAME_TRAIN_PROMPTS).map(|&i| space.prompts[i].prompt.clone()).collect();
            let players = [player.clone(), player];
            let positions =
                crate::work::games::play_positions(&table, &players, None, &openings, 1.0, seed, GAME_GRPO_POSITIONS)
                    .await?;
            anyhow::ensure!(!positions.is_empty(), "the parent's self-play reached no position to learn at");
            let prompts: Vec<GrpoPrompt> = positions
                .iter()
                .enumerate()
                .map(|(index, p)| GrpoPrompt {
                    index,
                    system: Some(system_prompt.to_owned()).filter(|s| !s.is_empty()),
                    prompt: p.view.clone(),
                    reference: None,
                    tier: 0,
                })
                .collect();
            let grpo = settings.grpo_settings(table.max_tokens);
            let handle = tokio::runtime::Handle::current();
            let mut calls = 0u64;
            let reward = move |prompt: &GrpoPrompt, texts: &[String]| {
                let at = positions.get(prompt.index).ok_or_else(|| format!("no position {}", prompt.index))?;
                calls += 1;
                let lines = crate::work::games::line_rewards(&table, &players, at, texts, 1.0, seed ^ calls);
                let ends = handle.block_on(lines).map_err(|e| format!("playing the lines out: {e}"))?;
                Ok(ends.into_iter().map(|(value, passed)| Reward { value, passed }).collect())
            };
            (grpo, prompts, Box::new(reward))
        }
        None => {
            let prompts = crate::work::grpo::training_prompts(space, Some(system_prompt));
            anyhow::ensure!(!prompts.is_empty(), "the Space has no training prompts (every prompt is held out)");
            let judge = space_judge(trainer, loaded, space).await?;
            let reward = crate::work::grpo::judge_reward_owned(judge);
            (settings.grpo_settings(space.max_new_tokens as usize), prompts, Box::new(reward))
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<GrpoStepMetrics>();
    let training = {
        let (loaded, model, out, source) = (loaded.clone(), trainer.model_path.clone(), out.to_owned(), source);
        tokio::task::spawn_blocking(move || {
            let files = GrpoFiles {
                model: &model,
                parent: parent_dir.as_deref(),
                out: &out,
                prompt_source: &source,
                curriculum: None,
            };
            manifest::grpo_to_dir(
                &loaded.runtime,
                &loaded.engine,
                &files,
                &prompts,
                &cfg,
                &grpo,
                &mut *reward,
                &mut |m: &GrpoStepMetrics| {
                    let _ = tx.send(m.clone());
                },
            )
        })
    };
    while let Some(m) = rx.recv().await {
        training::record_step(&ctx.db, job.id, &ctx.consumer, m.step, m.steps, &serde_json::to_value(&m)?).await?;
    }
    let manifest = training.await?.map_err(|e| anyhow::anyhow!("training: {e}"))?;
    Ok(serde_json::to_value(&manifest)?)
}

/// The Space's judge on the trainer's model (or the one it names).
async fn space_judge(
    trainer: &Trainer,
    loaded: &Arc<Loaded>,
    space: &crate::domain::space::Space,
) -> anyhow::Result<Judge> {
    let judge_config = Arc::new(space.judge.clone());
    let judge_model = if judge_config.needs_model() {
        let model = match &judge_config.model {
            Some(path) => {
                let (path, threads) = (path.clone(), trainer.threads);
                tokio::task::spawn_blocking(move || JudgeModel::load(&path, threads)).await?
            }
            None => JudgeModel::new(loaded.runtime.clone(), loaded.model_sha256.clone()),
        };
        Some(Arc::new(model.map_err(anyhow::Error::msg)?))
    } else {
        None
    };
    Ok(Judge::for_space(judge_config, judge_model, &trainer.model_path)?)
}

/// The gate's prompts: `count` of the Space's held-out prompts drawn by a
/// seed the job fixes (its id and settings), in index order; and the seed.
fn gate_draw(
    job: &Claimed,
    settings: &JobSettings,
    space: &crate::domain::space::Space,
    count: usize,
) -> (Vec<usize>, u64) {
    let mut prompts = space.held_out.clone();
    let mut seed = [0u8; 8];
    seed.copy_from_slice(&job.id.0.as_bytes()[..8]);
    let seed = u64::from_le_bytes(seed) ^ settings.seed;
    prompts.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    prompts.truncate(count);
    prompts.sort_unstable();
    (prompts, seed)
}

/// The gate: the new version against its parent on held-out prompts,
/// same seeds, judged by the Space's judge; the job's final status.
async fn gate(run: &Run<'_>, input: GateInput<'_>) -> anyhow::Result<JobStatus> {
    let Run { ctx, trainer, job, loaded, settings } = *run;
    let GateInput { space, system_prompt, sampling, new_dir, parent_dir } = input;
    // The gate: new against parent on held-out prompts, same seeds.
    let (prompts, _) = gate_draw(job, settings, space, settings.gate_prompts);
    let mut jobs = Vec::with_capacity(2 * prompts.len());
    for (i, &index) in prompts.iter().enumerate() {
        let item = &space.prompts[index];
        let params = sampling.params(space.max_new_tokens as usize, match_seed(sampling.seed, job.id.0, i));
        for adapter in [Some(new_dir.clone()), parent_dir.clone()] {
            jobs.push(GenJob {
                system: system_prompt.to_owned(),
                prompt: item.prompt.clone(),
                adapter,
                params: params.clone(),
                reference: item.reference.clone(),
                slot: jobs.len() % 2,
            });
        }
    }
    let generator = EngineGenerator { engine: loaded.engine.clone() };
    let answers = generator.generate(jobs).await;
    let mut texts = Vec::with_capacity(answers.len());
    for answer in answers {
        texts.push(answer.context("gate generation")?.text);
    }
    let judge = space_judge(trainer, loaded, space).await?;
    let space_for_judge = space.clone();
    let prompts_for_judge = prompts.clone();
    let games = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Game>> {
        let mut games = Vec::with_capacity(prompts_for_judge.len());
        for (i, &index) in prompts_for_judge.iter().enumerate() {
            let item = &space_for_judge.prompts[index];
            let (new, parent) = (texts[2 * i].clone(), texts[2 * i + 1].clone());
            let new_first = i % 2 == 0;
            let a = Candidate { id: "new".into(), text: new.clone() };
            let b = Candidate { id: "parent".into(), text: parent.clone() };
            let candidates = if new_first { vec![a, b] } else { vec![b, a] };
            let verdict = judge.judge(&MatchInput {
                prompt: item.prompt.clone(),
                reference: item.reference.clone(),
                candidates,
            })?;
            let outcome = match verdict.ranks["new"].cmp(&verdict.ranks["parent"]) {
                std::cmp::Ordering::Less => Outcome::Win,
                std::cmp::Ordering::Equal => Outcome::Tie,
                std::cmp::Ordering::Greater => Outcome::Loss,
            };
            games.push(Game { prompt_index: index, new_first, outcome, new: clip(&new), parent: clip(&parent) });
        }
        Ok(games)
    })
    .await??;
    Ok(training::record_gate(&ctx.db, job.id, &ctx.consumer, games).await?)
}

/// Where a job's inputs and adapter are written while it runs.
fn work_dir(ctx: &Context, job: JobId) -> PathBuf {
    ctx.data_dir.join("training").join(job.to_string())
}

#[cfg(test)]
mod tests {
    use super::is_transient;
    use anyhow::Context;

    fn wrapped<E: std::error::Error + Send + Sync + 'static>(e: E) -> anyhow::Error {
        Err::<(), E>(e).context("storing the adapter").context("training job").unwrap_err()
    }

    #[test]
    fn lost_connections_are_transient_and_the_jobs_own_errors_are_not() {
        let io = |kind| std::io::Error::new(kind, "x");
        assert!(is_transient(&wrapped(sqlx::Error::PoolTimedOut)));
        assert!(is_transient(&wrapped(sqlx::Error::Io(io(std::io::ErrorKind::ConnectionReset)))));
        assert!(is_transient(&wrapped(redis::RedisError::from(io(std::io::ErrorKind::ConnectionRefused)))));
        assert!(is_transient(&wrapped(io(std::io::ErrorKind::BrokenPipe))));

        assert!(!is_transient(&wrapped(sqlx::Error::RowNotFound)));
        assert!(!is_transient(&wrapped(io(std::io::ErrorKind::NotFound))));
        assert!(!is_transient(&anyhow::anyhow!("pairs.jsonl:3: missing field `chosen`")));
    }
}
