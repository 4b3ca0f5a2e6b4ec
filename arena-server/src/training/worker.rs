//! The trainer role: takes jobs from the `train` stream, trains, gates and
//! records the new version. See the module above for the life of a job.

use super::{GROUP, HEARTBEAT_S, JobSettings, MAX_ATTEMPTS, stream};
use crate::kv::Redis;
use crate::pipeline::Pipeline;
use crate::pipeline::generate::{EngineGenerator, GenJob, Generator, match_seed};
use crate::routes::agents::{AgentSampling, insert_version};
use agent_runtime::engine::{Engine, EngineConfig, Runtime};
use agent_runtime::train::StepMetrics;
use agent_runtime::train::manifest::{self, RunFiles};
use anyhow::Context;
use judge::calibrate::Rate;
use judge::{Candidate, Judge, JudgeModel, MatchInput};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use redis::AsyncCommands;
use redis::streams::{StreamReadOptions, StreamReadReply};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

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

/// Creates the stream and the trainers' group if missing.
pub async fn ensure_group(redis: &Redis) -> redis::RedisResult<()> {
    crate::pipeline::create_group(redis, &stream(redis), GROUP).await
}

/// A job this trainer claimed.
#[derive(sqlx::FromRow)]
struct Claimed {
    id: Uuid,
    agent_id: Uuid,
    owner_id: Uuid,
    space_id: Uuid,
    space_version: i32,
    parent_version: i32,
    settings: serde_json::Value,
    pair_ids: Vec<Uuid>,
    attempts: i32,
}

/// Takes the job if nobody works on it: queued, or running under a trainer
/// whose heartbeat went stale. None when it is finished or in good hands.
async fn claim(p: &Pipeline, id: Uuid) -> anyhow::Result<Option<Claimed>> {
    Ok(sqlx::query_as(
        "update training_jobs set status = 'training', worker = $2, heartbeat_at = now(), attempts = attempts + 1,
                started_at = coalesce(started_at, now()), step = 0, error = null
         where id = $1 and (status = 'queued'
               or (status in ('training', 'gating') and heartbeat_at < now() - make_interval(secs => $3)))
         returning id, agent_id, owner_id, space_id, space_version, parent_version, settings, pair_ids, attempts",
    )
    .bind(id)
    .bind(&p.consumer)
    .bind(super::stale_after_s(p) as f64)
    .fetch_optional(&p.db)
    .await?)
}

/// Ends a job this trainer holds as failed.
async fn fail(p: &Pipeline, id: Uuid, why: &str) -> anyhow::Result<()> {
    sqlx::query(
        "update training_jobs set status = 'failed', error = $3, finished_at = now()
         where id = $1 and worker = $2 and status in ('training', 'gating')",
    )
    .bind(id)
    .bind(&p.consumer)
    .bind(why)
    .execute(&p.db)
    .await?;
    Ok(())
}

/// Puts a job this trainer holds back in the queue after a transient
/// error; the reconciler offers it again (the claim counts the attempt).
async fn release(p: &Pipeline, id: Uuid, why: &str) -> anyhow::Result<()> {
    sqlx::query(
        "update training_jobs set status = 'queued', worker = null, heartbeat_at = now(), error = $3
         where id = $1 and worker = $2 and status in ('training', 'gating')",
    )
    .bind(id)
    .bind(&p.consumer)
    .bind(format!("will retry after: {why}"))
    .execute(&p.db)
    .await?;
    Ok(())
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
async fn beating<T>(p: &Pipeline, id: Uuid, work: impl std::future::Future<Output = T>) -> T {
    let mut beat = tokio::time::interval(Duration::from_secs(HEARTBEAT_S));
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = beat.tick() => {
                let _ = sqlx::query("update training_jobs set heartbeat_at = now() where id = $1 and worker = $2")
                    .bind(id)
                    .bind(&p.consumer)
                    .execute(&p.db)
                    .await;
            }
        }
    }
}

/// Runs the trainer until `stop` fires. Messages are acknowledged as soon
/// as they are read: the job's row, not the message, is the work, and the
/// reconciler offers a job again when its trainer stops heart-beating.
pub async fn run(p: Pipeline, trainer: Arc<Trainer>, mut stop: tokio::sync::watch::Receiver<bool>) {
    if let Err(err) = ensure_group(&p.redis).await {
        tracing::warn!(error = %err, "cannot create the trainers' group yet");
    }
    let Some(mut reader) = crate::pipeline::stream_reader(&p.redis, "trainer", &mut stop).await else { return };
    tracing::info!(consumer = %p.consumer, "trainer started");
    let key = stream(&p.redis);
    let keys = [key.as_str()];
    while !*stop.borrow() {
        let options = StreamReadOptions::default().group(GROUP, &p.consumer).count(1).block(1000);
        let reply: redis::RedisResult<StreamReadReply> = tokio::select! {
            r = reader.xread_options(&keys, &[">"], &options) => r,
            _ = stop.changed() => break,
        };
        let entries = match reply {
            Ok(reply) => reply.keys.into_iter().flat_map(|k| k.ids).collect::<Vec<_>>(),
            Err(err) => {
                if err.code() == Some("NOGROUP") {
                    let _ = ensure_group(&p.redis).await;
                } else {
                    tracing::warn!(error = %err, "reading the train stream failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                continue;
            }
        };
        for entry in entries {
            let job = entry.get::<String>("job").and_then(|j| Uuid::parse_str(&j).ok());
            let mut conn = p.redis.conn();
            let _: redis::RedisResult<i64> = conn.xack(&key, GROUP, &[&entry.id]).await;
            let Some(job) = job else { continue };
            let claimed = match claim(&p, job).await {
                Ok(Some(c)) => c,
                Ok(None) => continue,
                Err(err) => {
                    tracing::warn!(%job, error = %err, "cannot claim the training job; the reconciler will offer it again");
                    continue;
                }
            };
            let id = claimed.id;
            if claimed.attempts > MAX_ATTEMPTS {
                let why = format!(
                    "tried {} times; each attempt's trainer stopped or hit a transient error",
                    claimed.attempts - 1
                );
                let _ = fail(&p, id, &why).await;
                continue;
            }
            tracing::info!(%id, agent = %claimed.agent_id, attempt = claimed.attempts, "training job claimed");
            let outcome = tokio::select! {
                out = beating(&p, id, run_job(&p, &trainer, claimed)) => Some(out),
                // Stopped: the heartbeat stops with us; another trainer
                // takes the job over once it goes stale.
                _ = stop.changed() => None,
            };
            let _ = std::fs::remove_dir_all(work_dir(&p, id));
            match outcome {
                Some(Ok(status)) => tracing::info!(%id, status, "training job finished"),
                Some(Err(err)) if is_transient(&err) => {
                    tracing::warn!(%id, error = ?err, "training job hit a transient error; it goes back in the queue");
                    // If even this fails, the stale heartbeat brings the job back.
                    let _ = release(&p, id, &format!("{err:#}")).await;
                }
                Some(Err(err)) => {
                    tracing::warn!(%id, error = ?err, "training job failed");
                    let _ = fail(&p, id, &format!("{err:#}")).await;
                }
                None => break,
            }
        }
    }
    tracing::info!("trainer stopped");
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
#[derive(Debug, Serialize)]
struct Gate {
    prompts: usize,
    wins: usize,
    losses: usize,
    ties: usize,
    /// Wins among decisive games, with its Wilson 95% interval.
    win_rate: Rate,
    passed: bool,
    promoted: bool,
    reason: String,
    games: Vec<Game>,
}

fn clip(text: &str) -> String {
    const KEEP: usize = 400;
    if text.chars().count() <= KEEP { text.to_owned() } else { text.chars().take(KEEP).collect::<String>() + "…" }
}

/// Trains, gates and records; returns the job's final status.
async fn run_job(p: &Pipeline, trainer: &Trainer, job: Claimed) -> anyhow::Result<&'static str> {
    let settings: JobSettings = serde_json::from_value(job.settings.clone()).context("the job's settings")?;
    let (system_prompt, sampling, parent_adapter): (String, serde_json::Value, Option<String>) = sqlx::query_as(
        "select system_prompt, sampling, adapter_sha256 from agent_versions
             where agent_id = $1 and version = $2",
    )
    .bind(job.agent_id)
    .bind(job.parent_version)
    .fetch_one(&p.db)
    .await?;
    let sampling: AgentSampling = serde_json::from_value(sampling)?;
    let space = p.spaces.get(&p.db, job.space_id, job.space_version).await?;
    let pairs: Vec<(Uuid, String, String, String)> = sqlx::query_as(
        "select p.id, m.prompt, co.text, ro.text from pairs p join matches m on m.id = p.match_id
         join outputs co on co.match_id = p.match_id and co.slot = p.chosen_slot
         join outputs ro on ro.match_id = p.match_id and ro.slot = p.rejected_slot
         where p.id = any($1) order by p.created_at, p.id",
    )
    .bind(&job.pair_ids)
    .fetch_all(&p.db)
    .await?;
    anyhow::ensure!(!pairs.is_empty(), "none of the job's {} pairs can be read", job.pair_ids.len());

    // Inputs on disk, as `arena train dpo` reads them: the manifest then
    // names every pair by its arena id.
    let data_dir = p.spaces.data_dir();
    let work = work_dir(p, job.id);
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let pairs_path = work.join("pairs.jsonl");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&pairs_path)?);
        for (id, prompt, chosen, rejected) in &pairs {
            let mut line = serde_json::json!({"id": id, "prompt": prompt, "chosen": chosen, "rejected": rejected});
            if !system_prompt.is_empty() {
                line["system"] = serde_json::Value::String(system_prompt.clone());
            }
            writeln!(file, "{line}")?;
        }
        file.flush()?;
    }
    let parent_dir = match &parent_adapter {
        Some(sha) => Some(crate::adapters::materialize(&p.db, &data_dir, sha).await?),
        None => None,
    };
    let loaded = trainer.loaded().await?;
    let cfg = settings.train_config(trainer.threads);
    let out = work.join("adapter");

    // Train on a blocking thread; each step's metrics come back here.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<StepMetrics>();
    let training = {
        let (runtime, model, pairs_path, parent_dir, out, cfg) = (
            loaded.runtime.clone(),
            trainer.model_path.clone(),
            pairs_path.clone(),
            parent_dir.clone(),
            out.clone(),
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
        let mut db = p.db.begin().await?;
        sqlx::query(
            "insert into training_metrics (job_id, step, metrics) values ($1, $2, $3)
             on conflict (job_id, step) do update set metrics = excluded.metrics",
        )
        .bind(job.id)
        .bind(m.step as i32)
        .bind(serde_json::to_value(&m)?)
        .execute(&mut *db)
        .await?;
        sqlx::query("update training_jobs set step = $3, steps = $4 where id = $1 and worker = $2")
            .bind(job.id)
            .bind(&p.consumer)
            .bind(m.step as i32)
            .bind(m.steps as i32)
            .execute(&mut *db)
            .await?;
        db.commit().await?;
    }
    let manifest = training.await?.map_err(|e| anyhow::anyhow!("training: {e}"))?;

    // The adapter goes where every adapter goes: checked, stored by content.
    let config = std::fs::read(out.join(agent_runtime::lora::CONFIG_FILE))?;
    let weights = std::fs::read(out.join(agent_runtime::lora::WEIGHTS_FILE))?;
    let (sha, _) = crate::adapters::validate(&config, &weights, loaded.runtime.config())
        .map_err(|why| anyhow::anyhow!("the trained adapter does not validate: {why}"))?;
    sqlx::query(
        "insert into adapters (sha256, config, weights, bytes, uploaded_by) values ($1, $2, $3, $4, $5)
         on conflict (sha256) do nothing",
    )
    .bind(&sha)
    .bind(String::from_utf8(config)?)
    .bind(&weights)
    .bind(weights.len() as i64)
    .bind(job.owner_id)
    .execute(&p.db)
    .await?;
    let moved = sqlx::query(
        "update training_jobs set status = 'gating', adapter_sha256 = $3, manifest = $4
         where id = $1 and worker = $2 and status = 'training'",
    )
    .bind(job.id)
    .bind(&p.consumer)
    .bind(&sha)
    .bind(serde_json::to_value(&manifest)?)
    .execute(&p.db)
    .await?;
    anyhow::ensure!(moved.rows_affected() == 1, "another trainer took the job over");
    let new_dir = crate::adapters::materialize(&p.db, &data_dir, &sha).await?;

    // The gate: new against parent on held-out prompts, same seeds.
    let mut prompts = space.held_out.clone();
    let mut seed = [0u8; 8];
    seed.copy_from_slice(&job.id.as_bytes()[..8]);
    prompts.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(u64::from_le_bytes(seed) ^ settings.seed));
    prompts.truncate(settings.gate_prompts);
    prompts.sort_unstable();
    let mut jobs = Vec::with_capacity(2 * prompts.len());
    for (i, &index) in prompts.iter().enumerate() {
        let item = &space.prompts[index];
        let params = sampling.params(space.max_new_tokens as usize, match_seed(sampling.seed, job.id, i));
        for adapter in [Some(new_dir.clone()), parent_dir.clone()] {
            jobs.push(GenJob {
                system: system_prompt.clone(),
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
    let judge = Judge::new(judge_config, judge_model)?;
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
    record(p, job.id, games).await
}

/// Where a job's inputs and adapter are written while it runs.
fn work_dir(p: &Pipeline, job: Uuid) -> PathBuf {
    p.spaces.data_dir().join("training").join(job.to_string())
}

/// Records a gated job (status `gating`, held by this trainer): decides
/// from its games, writes the new version with its lineage (the parent's
/// system prompt and sampling, the job's adapter), makes it current only
/// if it passed and the agent still plays the parent, and ends the job.
/// Returns the job's final status.
pub async fn record(p: &Pipeline, job_id: Uuid, games: Vec<Game>) -> anyhow::Result<&'static str> {
    let count = |o: Outcome| games.iter().filter(|g| g.outcome == o).count();
    let (wins, losses, ties) = (count(Outcome::Win), count(Outcome::Loss), count(Outcome::Tie));
    let win_rate = Rate::new(wins, wins + losses);
    let passed = wins + losses > 0 && win_rate.low > 0.5;

    let mut db = p.db.begin().await?;
    let job: Option<(Uuid, i32, Option<String>, i32)> = sqlx::query_as(
        "select agent_id, parent_version, adapter_sha256, cardinality(pair_ids) from training_jobs
         where id = $1 and worker = $2 and status = 'gating' for update",
    )
    .bind(job_id)
    .bind(&p.consumer)
    .fetch_optional(&mut *db)
    .await?;
    let Some((agent, parent, Some(sha), pairs)) = job else {
        anyhow::bail!("the job is not gating under this trainer (another trainer took it over?)");
    };
    let (base_model, system_prompt, sampling): (String, String, serde_json::Value) = sqlx::query_as(
        "select base_model, system_prompt, sampling from agent_versions where agent_id = $1 and version = $2",
    )
    .bind(agent)
    .bind(parent)
    .fetch_one(&mut *db)
    .await?;
    let sampling: AgentSampling = serde_json::from_value(sampling)?;
    let current: i32 = sqlx::query_scalar("select current_version from agents where id = $1 for update")
        .bind(agent)
        .fetch_one(&mut *db)
        .await?;
    let version: i32 = sqlx::query_scalar("select max(version) + 1 from agent_versions where agent_id = $1")
        .bind(agent)
        .fetch_one(&mut *db)
        .await?;
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
    let note = format!(
        "trained by job {job_id} on {pairs} pairs from v{parent}; gate {wins} wins, {losses} losses, {ties} ties; {reason}"
    );
    insert_version(
        &mut db,
        agent,
        version,
        &base_model,
        &system_prompt,
        &sampling,
        &Some(sha),
        Some(parent),
        Some(job_id),
        &note.chars().take(500).collect::<String>(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("recording the new version: {e}"))?;
    if promoted {
        sqlx::query("update agents set current_version = $2 where id = $1")
            .bind(agent)
            .bind(version)
            .execute(&mut *db)
            .await?;
    }
    let status = if promoted { "promoted" } else { "rejected" };
    let gate = Gate { prompts: games.len(), wins, losses, ties, win_rate, passed, promoted, reason, games };
    sqlx::query("update training_jobs set status = $2, gate = $3, new_version = $4, finished_at = now() where id = $1")
        .bind(job_id)
        .bind(status)
        .bind(serde_json::to_value(&gate)?)
        .bind(version)
        .execute(&mut *db)
        .await?;
    db.commit().await?;
    Ok(status)
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
