//! Training in the arena: per-agent policies, training jobs for the
//! `trainer` role, and the promotion gate.
//!
//! A job is made by hand (the API) or by a policy ("every N new pairs the
//! agent took part in", checked by the web role's policy round). Making one
//! pins the agent's current version as parent and the exact pairs it will
//! train on, and writes an outbox row in the same transaction; the relay
//! puts the job id on the `train` stream. A trainer claims the job in
//! PostgreSQL (the truth), heart-beats while it works, trains a new adapter
//! by DPO (or SFT) from the parent's, and plays the new version against the
//! parent on the Space's held-out prompts, judged by the Space's judge with
//! the candidates' order swapped on every other prompt. The new version is
//! always recorded with its lineage; it becomes current only when the lower
//! end of the 95% interval of its win rate (decisive games) is above 50%
//! and the agent's current version is still the parent. A trainer that dies
//! leaves a stale heartbeat; the reconciler puts the job back on the stream
//! and another trainer claims it (at most `MAX_ATTEMPTS` times). A job that
//! hits a transient error (PostgreSQL or Redis unreachable, a serialization
//! failure) is put back in the queue the same way instead of failing.

pub mod worker;

use crate::error::ApiError;
use crate::kv::Redis;
use crate::pipeline::Pipeline;
use crate::space::Space;
use agent_runtime::train::{Objective, Schedule, Storage, TrainConfig};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

/// The outbox stream name of training jobs.
pub const STREAM: &str = "train";
/// The consumer group of trainers.
pub const GROUP: &str = "trainer";
/// Claims of one job before it fails for good.
pub const MAX_ATTEMPTS: i32 = 3;
/// A running job's heartbeat period.
pub const HEARTBEAT_S: u64 = 2;

/// The Redis stream trainers read.
pub fn stream(redis: &Redis) -> String {
    redis.key("stream:train")
}

/// Seconds without a heartbeat after which a running job counts as
/// abandoned (its trainer died) and is offered again.
pub fn stale_after_s(p: &Pipeline) -> u64 {
    p.settings.reconcile_after_s.max(5 * HEARTBEAT_S)
}

/// What a training job does: the trainer's hyper-parameters (see
/// `agent_runtime::train::TrainConfig`) and the arena's own limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobSettings {
    pub objective: Objective,
    pub beta: f64,
    pub rpo_alpha: f64,
    pub rank: usize,
    pub alpha: f32,
    pub target_modules: Vec<String>,
    pub learning_rate: f64,
    pub schedule: Schedule,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    /// Optimizer steps; when absent, `epochs` passes over the pairs.
    pub steps: Option<usize>,
    pub epochs: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub max_length: usize,
    pub max_prompt_length: usize,
    pub seed: u64,
    /// A job needs at least this many pairs.
    pub min_pairs: usize,
    /// It trains on the agent's newest pairs, at most this many.
    pub max_pairs: usize,
    /// Held-out prompts the gate plays (fewer if the Space holds out fewer).
    pub gate_prompts: usize,
}

impl Default for JobSettings {
    fn default() -> JobSettings {
        let t = TrainConfig::default();
        JobSettings {
            objective: t.objective,
            beta: t.beta,
            rpo_alpha: t.rpo_alpha,
            rank: t.rank,
            alpha: t.alpha,
            target_modules: t.target_modules,
            // What worked best in the experiment loop (README): a little
            // faster than TRL's default, two passes, short sequences.
            learning_rate: 1e-4,
            schedule: t.schedule,
            warmup_steps: 0,
            weight_decay: 0.0,
            steps: None,
            epochs: 2,
            batch_size: t.batch_size,
            grad_accum: 1,
            max_length: 256,
            max_prompt_length: 128,
            seed: 0,
            min_pairs: 16,
            max_pairs: 256,
            gate_prompts: 32,
        }
    }
}

impl JobSettings {
    /// The trainer's configuration on `threads` threads.
    pub fn train_config(&self, threads: usize) -> TrainConfig {
        TrainConfig {
            objective: self.objective,
            beta: self.beta,
            rpo_alpha: self.rpo_alpha,
            rank: self.rank,
            alpha: self.alpha,
            target_modules: self.target_modules.clone(),
            learning_rate: self.learning_rate,
            schedule: self.schedule,
            warmup_steps: self.warmup_steps,
            weight_decay: self.weight_decay,
            max_grad_norm: 1.0,
            steps: self.steps,
            epochs: self.epochs,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            max_length: self.max_length,
            max_prompt_length: self.max_prompt_length,
            seed: self.seed,
            storage: Storage::Dense,
            threads,
        }
    }

    /// Checks every value, the trainer's own checks included; the error
    /// names the setting. Limits keep one job to minutes, not days.
    pub fn check(&self) -> Result<(), ApiError> {
        let bad = |field: &str, message: String| Err(ApiError::invalid(&format!("settings.{field}"), message));
        if self.steps.is_some_and(|s| s > 2000) {
            return bad("steps", "at most 2000 steps per job".into());
        }
        if self.epochs > 10 {
            return bad("epochs", "at most 10 epochs per job".into());
        }
        if self.rank > 64 {
            return bad("rank", format!("rank must be 1..=64 in the arena, not {}", self.rank));
        }
        if self.batch_size > 32 || self.grad_accum > 32 {
            return bad("batch_size", "batch_size and grad_accum are at most 32".into());
        }
        if self.max_length > 1024 {
            return bad("max_length", "at most 1024 tokens".into());
        }
        if !(1..=4096).contains(&self.min_pairs) || self.max_pairs < self.min_pairs || self.max_pairs > 4096 {
            return bad("max_pairs", "need 1 ≤ min_pairs ≤ max_pairs ≤ 4096".into());
        }
        if !(4..=256).contains(&self.gate_prompts) {
            return bad("gate_prompts", format!("gate_prompts must be 4..=256, not {}", self.gate_prompts));
        }
        self.train_config(1).validate().map_err(|e| ApiError::invalid("settings", e.to_string()))?;
        Ok(())
    }
}

/// Why a job was not made.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("the agent already has training job {0} open; wait for it to finish")]
    Open(Uuid),
    #[error("the agent has {have} usable pairs in this Space; a job needs at least {need} (settings.min_pairs)")]
    TooFewPairs { have: usize, need: usize },
    #[error(
        "the Space holds out no prompts (training.holdout × its prompt count rounds to 0), so no new version could \
         be gated"
    )]
    NoHoldout,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl From<Refused> for ApiError {
    fn from(r: Refused) -> ApiError {
        match r {
            Refused::Open(_) => ApiError::conflict("agent", r.to_string()),
            Refused::TooFewPairs { .. } => ApiError::invalid("settings.min_pairs", r.to_string()),
            Refused::NoHoldout => ApiError::invalid("space", r.to_string()),
            Refused::Db(e) => ApiError::internal(e),
        }
    }
}

/// The pairs a job on `agent` in `space` trains on: the newest ones the
/// agent took part in (chosen or rejected) whose two orders agreed.
pub async fn usable_pairs(
    conn: &mut PgConnection,
    agent: Uuid,
    space: Uuid,
    limit: usize,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "select p.id from pairs p
         join match_agents ma on ma.match_id = p.match_id and ma.slot in (p.chosen_slot, p.rejected_slot)
         where p.space_id = $2 and ma.agent_id = $1 and p.consistent
         order by p.created_at desc, p.id limit $3",
    )
    .bind(agent)
    .bind(space)
    .bind(limit as i64)
    .fetch_all(conn)
    .await
}

/// Makes a job in the caller's transaction: pins the agent's current
/// version and the pairs, and hands the job to the trainers' stream.
pub async fn create_job(
    conn: &mut PgConnection,
    agent: Uuid,
    space_id: Uuid,
    space: &Space,
    space_version: i32,
    settings: &JobSettings,
    trigger: &str,
) -> Result<Uuid, Refused> {
    if space.held_out.is_empty() {
        return Err(Refused::NoHoldout);
    }
    // The agent row serialises job creation for the agent.
    let (owner, current): (Uuid, i32) =
        sqlx::query_as("select owner_id, current_version from agents where id = $1 for update")
            .bind(agent)
            .fetch_one(&mut *conn)
            .await?;
    let open: Option<Uuid> = sqlx::query_scalar(
        "select id from training_jobs where agent_id = $1 and status in ('queued', 'training', 'gating')",
    )
    .bind(agent)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(open) = open {
        return Err(Refused::Open(open));
    }
    let pairs = usable_pairs(conn, agent, space_id, settings.max_pairs).await?;
    if pairs.len() < settings.min_pairs {
        return Err(Refused::TooFewPairs { have: pairs.len(), need: settings.min_pairs });
    }
    let id = Uuid::new_v4();
    sqlx::query(
        "insert into training_jobs (id, agent_id, owner_id, space_id, space_version, parent_version, trigger, settings,
                                    pair_ids, status)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'queued')",
    )
    .bind(id)
    .bind(agent)
    .bind(owner)
    .bind(space_id)
    .bind(space_version)
    .bind(current)
    .bind(trigger)
    .bind(serde_json::to_value(settings).map_err(|e| sqlx::Error::Encode(Box::new(e)))?)
    .bind(&pairs)
    .execute(&mut *conn)
    .await?;
    sqlx::query("insert into outbox (stream, subject) values ($1, $2)")
        .bind(STREAM)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(id)
}

/// One pass of the automatic policies: every `every`-policy whose agent
/// has no open job and took part in at least `every_pairs` pairs since its
/// last job in that Space gets a job. Returns the jobs made.
pub async fn policy_round(p: &Pipeline) -> anyhow::Result<Vec<Uuid>> {
    let due: Vec<(Uuid, Uuid, serde_json::Value)> = sqlx::query_as(
        "select tp.agent_id, tp.space_id, tp.settings from training_policies tp
         where tp.mode = 'every'
           and not exists (select 1 from training_jobs j where j.agent_id = tp.agent_id
                           and j.status in ('queued', 'training', 'gating'))
           and (select count(*) from pairs p
                join match_agents ma on ma.match_id = p.match_id and ma.slot in (p.chosen_slot, p.rejected_slot)
                where p.space_id = tp.space_id and ma.agent_id = tp.agent_id and p.consistent
                  and p.created_at > coalesce((select max(j.created_at) from training_jobs j
                                               where j.agent_id = tp.agent_id and j.space_id = tp.space_id),
                                              '-infinity'))
               >= tp.every_pairs",
    )
    .fetch_all(&p.db)
    .await?;
    let mut made = Vec::new();
    for (agent, space_id, settings) in due {
        let settings: JobSettings = serde_json::from_value(settings)?;
        let version: i32 = sqlx::query_scalar("select current_version from spaces where id = $1")
            .bind(space_id)
            .fetch_one(&p.db)
            .await?;
        let space = p.spaces.get(&p.db, space_id, version).await?;
        let mut tx = p.db.begin().await?;
        match create_job(&mut tx, agent, space_id, &space, version, &settings, "policy").await {
            Ok(id) => {
                tx.commit().await?;
                tracing::info!(%agent, job = %id, "training policy made a job");
                made.push(id);
            }
            Err(Refused::Db(e)) => return Err(e.into()),
            Err(why) => tracing::debug!(%agent, %why, "training policy due but no job made"),
        }
    }
    if !made.is_empty() {
        crate::pipeline::flush_outbox(&p.db, &p.redis).await?;
    }
    Ok(made)
}

/// Offers again the jobs nobody is working on: queued ones not looked at
/// for a while (their message lost with Redis's data, say), and running
/// ones whose trainer stopped heart-beating. Returns how many.
pub async fn reconcile(p: &Pipeline) -> anyhow::Result<usize> {
    let stale: Vec<Uuid> = sqlx::query_scalar(
        "update training_jobs set heartbeat_at = now()
         where (status = 'queued' and coalesce(heartbeat_at, created_at) < now() - make_interval(secs => $1))
            or (status in ('training', 'gating') and heartbeat_at < now() - make_interval(secs => $2))
         returning id",
    )
    .bind(p.settings.reconcile_after_s as f64)
    .bind(stale_after_s(p) as f64)
    .fetch_all(&p.db)
    .await?;
    if stale.is_empty() {
        return Ok(0);
    }
    worker::ensure_group(&p.redis).await?;
    let mut pipe = redis::pipe();
    for id in &stale {
        pipe.xadd(stream(&p.redis), "*", &[("job", id.to_string())]).ignore();
    }
    let mut conn = p.redis.conn();
    let _: () = pipe.query_async(&mut conn).await?;
    tracing::info!(count = stale.len(), "reconciler offered training jobs again");
    Ok(stale.len())
}

/// Runs the policy round every `period` until `stop` fires.
pub async fn run_policies(p: Pipeline, period: std::time::Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.changed() => break,
        }
        if let Err(err) = policy_round(&p).await {
            tracing::warn!(error = %err, "training policy round failed");
        }
    }
}
