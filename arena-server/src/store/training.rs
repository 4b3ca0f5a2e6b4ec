//! Training jobs and policies in SQL: making a job (its parent version and
//! pairs pinned), claiming it with a heartbeat, recording its progress, its
//! gate and its new version, and the views its owner reads.

use super::StoreError;
use super::agents::{self, NewAgentVersion};
use super::{ledger, outbox};
use crate::domain::space::Space;
use crate::domain::training::{Gate, JobSettings};
use crate::domain::{AgentId, JobId, JobStatus, JobTrigger, PairId, PolicyMode, SpaceId, Topic, UserId};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

/// Why a job was not made.
#[derive(Debug, thiserror::Error)]
pub enum JobRefused {
    #[error("the agent already has training job {0} open; wait for it to finish")]
    Open(JobId),
    #[error(
        "you have {0} training jobs open (at most {MAX_OPEN_JOBS_PER_USER}, all your agents together); wait for one to finish"
    )]
    TooManyOpen(i64),
    #[error("the agent has {have} usable pairs in this Space; a job needs at least {need} (settings.min_pairs)")]
    TooFewPairs { have: usize, need: usize },
    #[error(
        "the Space holds out no prompts (training.holdout × its prompt count rounds to 0), so no new version could \
         be gated"
    )]
    NoHoldout,
    #[error(
        "GRPO in a game its referee decides plays lines out between two seats; this game has more: train with \
         DPO on its pairs"
    )]
    GrpoInGame,
    #[error(transparent)]
    OverBudget(crate::domain::DomainError),
    #[error("the job costs {price} credits (its budget is {budget} tokens) and you hold {balance}")]
    CannotPay { price: i64, budget: u64, balance: i64 },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The pairs a job on `agent` in `space` trains on: the newest ones the
/// agent took part in (chosen or rejected) whose two orders agreed.
pub async fn usable_pairs(
    conn: &mut PgConnection,
    agent: AgentId,
    space: SpaceId,
    limit: usize,
) -> Result<Vec<PairId>, sqlx::Error> {
    sqlx::query_scalar(
        "select p.id from pairs p
         where p.space_id = $2 and p.consistent
           and exists (select 1 from match_agents ma
                       where ma.agent_id = $1
                         and ((ma.match_id = coalesce(p.chosen_match_id, p.match_id) and ma.slot = p.chosen_slot)
                              or (ma.match_id = coalesce(p.rejected_match_id, p.match_id)
                                  and ma.slot = p.rejected_slot)))
         order by p.created_at desc, p.id limit $3",
    )
    .bind(agent)
    .bind(space)
    .bind(limit as i64)
    .fetch_all(conn)
    .await
}

/// Training jobs one user may have open at once, all their agents together
/// (a job holds a trainer for up to its time limit).
pub const MAX_OPEN_JOBS_PER_USER: i64 = 2;

/// Makes a job in the caller's transaction: pins the agent's current
/// version and the pairs, and hands the job to the trainers' stream.
/// Where a job trains and what it costs: the Space (id, parsed version and
/// its number) and the price per million budgeted tokens.
pub struct JobPlace<'a> {
    pub space_id: SpaceId,
    pub space: &'a Space,
    pub space_version: i32,
    pub credits_per_mtoken: i64,
}

pub async fn create_job(
    conn: &mut PgConnection,
    agent: AgentId,
    place: JobPlace<'_>,
    settings: &JobSettings,
    trigger: JobTrigger,
) -> Result<JobId, JobRefused> {
    let JobPlace { space_id, space, space_version, credits_per_mtoken } = place;
    if space.held_out.is_empty() {
        return Err(JobRefused::NoHoldout);
    }
    if !settings.needs_pairs()
        && space.game.as_ref().is_some_and(|g| g.turns.on_limit == referee::OnLimit::Rules && g.seats != 2)
    {
        return Err(JobRefused::GrpoInGame);
    }
    // The agent row serialises job creation for the agent.
    let head = agents::lock(conn, agent).await?.ok_or(sqlx::Error::RowNotFound)?;
    let open: Option<JobId> =
        sqlx::query_scalar("select id from training_jobs where agent_id = $1 and status = any($2)")
            .bind(agent)
            .bind(&JobStatus::OPEN[..])
            .fetch_optional(&mut *conn)
            .await?;
    if let Some(open) = open {
        return Err(JobRefused::Open(open));
    }
    // The owner's open jobs, counted under a lock of the owner's: two of
    // their agents' jobs made at once cannot both pass.
    sqlx::query("select pg_advisory_xact_lock(hashtextextended('training-jobs:' || $1::text, 0))")
        .bind(head.owner_id)
        .execute(&mut *conn)
        .await?;
    let owned: i64 = sqlx::query_scalar("select count(*) from training_jobs where owner_id = $1 and status = any($2)")
        .bind(head.owner_id)
        .bind(&JobStatus::OPEN[..])
        .fetch_one(&mut *conn)
        .await?;
    if owned >= MAX_OPEN_JOBS_PER_USER {
        return Err(JobRefused::TooManyOpen(owned));
    }
    // GRPO samples its own answers to the Space's training prompts; in a
    // game the referee decides, DPO's pairs are the parent's decisions
    // from self-play (its matches' whole-game pairs are not preferences:
    // the seats answered different views).
    let self_play = space.self_play_game().is_some();
    let pairs = if settings.needs_pairs() && !self_play {
        usable_pairs(conn, agent, space_id, settings.max_pairs).await?
    } else {
        Vec::new()
    };
    if settings.needs_pairs() && !self_play && pairs.len() < settings.min_pairs {
        return Err(JobRefused::TooFewPairs { have: pairs.len(), need: settings.min_pairs });
    }
    let id = JobId::new();
    // In a two-seat game its referee decides, DPO trains on the decision
    // pairs the trainer makes by self-play, at most max_pairs of them:
    // priced as that many.
    let budget =
        settings.token_budget(if self_play && settings.needs_pairs() { settings.max_pairs } else { pairs.len() });
    settings.check_budget(budget).map_err(JobRefused::OverBudget)?;
    let price = crate::domain::training::training_price(budget, credits_per_mtoken);
    if price > 0 {
        // Paid to the house in the job's own transaction: no job without
        // its payment, no payment without its job.
        let account = ledger::user_account(conn, head.owner_id).await.map_err(|e| match e {
            ledger::LedgerError::Db(e) => JobRefused::Db(e),
            other => JobRefused::Db(sqlx::Error::Protocol(other.to_string())),
        })?;
        let legs = [ledger::Leg::new(account, -price), ledger::Leg::new(ledger::HOUSE, price)];
        match ledger::post(conn, &format!("training:{id}"), "training", None, "training job", &legs).await {
            Ok(_) => {}
            Err(ledger::LedgerError::InsufficientFunds { balance, .. }) => {
                return Err(JobRefused::CannotPay { price, budget, balance });
            }
            Err(ledger::LedgerError::Db(e)) => return Err(JobRefused::Db(e)),
            Err(other) => return Err(JobRefused::Db(sqlx::Error::Protocol(other.to_string()))),
        }
    }
    sqlx::query(
        "insert into training_jobs (id, agent_id, owner_id, space_id, space_version, parent_version, trigger, settings,
                                    pair_ids, status, price, token_budget)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(id)
    .bind(agent)
    .bind(head.owner_id)
    .bind(space_id)
    .bind(space_version)
    .bind(head.current_version)
    .bind(trigger)
    .bind(serde_json::to_value(settings).map_err(|e| sqlx::Error::Encode(Box::new(e)))?)
    .bind(&pairs)
    .bind(JobStatus::Queued)
    .bind(price)
    .bind(budget.min(i64::MAX as u64) as i64)
    .execute(&mut *conn)
    .await?;
    outbox::enqueue(conn, Topic::Train, id.0).await?;
    Ok(id)
}

/// An `every`-policy whose agent has no open job and took part in at least
/// `every_pairs` pairs since its last job in that Space.
#[derive(Debug, sqlx::FromRow)]
pub struct DuePolicy {
    pub agent_id: AgentId,
    pub space_id: SpaceId,
    #[sqlx(json)]
    pub settings: JobSettings,
}

pub async fn due_policies(pool: &PgPool) -> Result<Vec<DuePolicy>, sqlx::Error> {
    sqlx::query_as(
        "select tp.agent_id, tp.space_id, tp.settings from training_policies tp
         where tp.mode = $1
           and not exists (select 1 from training_jobs j where j.agent_id = tp.agent_id and j.status = any($2))
           and (select count(distinct p.id) from pairs p
                join match_agents ma on (ma.match_id = coalesce(p.chosen_match_id, p.match_id) and ma.slot = p.chosen_slot)
                              or (ma.match_id = coalesce(p.rejected_match_id, p.match_id) and ma.slot = p.rejected_slot)
                where p.space_id = tp.space_id and ma.agent_id = tp.agent_id and p.consistent
                  and p.created_at > coalesce((select max(j.created_at) from training_jobs j
                                               where j.agent_id = tp.agent_id and j.space_id = tp.space_id),
                                              '-infinity'))
               >= tp.every_pairs",
    )
    .bind(PolicyMode::Every)
    .bind(&JobStatus::OPEN[..])
    .fetch_all(pool)
    .await
}

/// Jobs nobody is working on, touched now: queued ones not looked at for
/// `queued_after_s` (their message lost with Redis's data, say), and
/// running ones whose heartbeat is older than `stale_after_s`.
pub async fn touch_abandoned(
    pool: &PgPool,
    queued_after_s: u64,
    stale_after_s: u64,
) -> Result<Vec<JobId>, sqlx::Error> {
    sqlx::query_scalar(
        "update training_jobs set heartbeat_at = now()
         where (status = $3 and coalesce(heartbeat_at, created_at) < now() - make_interval(secs => $1))
            or (status = any($4) and heartbeat_at < now() - make_interval(secs => $2))
         returning id",
    )
    .bind(queued_after_s as f64)
    .bind(stale_after_s as f64)
    .bind(JobStatus::Queued)
    .bind(&JobStatus::RUNNING[..])
    .fetch_all(pool)
    .await
}

/// A job a trainer claimed.
#[derive(Debug, sqlx::FromRow)]
pub struct Claimed {
    pub id: JobId,
    pub agent_id: AgentId,
    pub owner_id: UserId,
    pub space_id: SpaceId,
    pub space_version: i32,
    pub parent_version: i32,
    pub settings: serde_json::Value,
    pub pair_ids: Vec<PairId>,
    pub attempts: i32,
}

/// Takes the job for `worker` if nobody works on it: queued, or running
/// under a trainer whose heartbeat is older than `stale_after_s`. None when
/// it is finished or in good hands.
pub async fn claim(pool: &PgPool, id: JobId, worker: &str, stale_after_s: u64) -> Result<Option<Claimed>, sqlx::Error> {
    sqlx::query_as(
        "update training_jobs set status = $4, worker = $2, heartbeat_at = now(), attempts = attempts + 1,
                started_at = coalesce(started_at, now()), step = 0, error = null
         where id = $1 and (status = $5
               or (status = any($6) and heartbeat_at < now() - make_interval(secs => $3)))
         returning id, agent_id, owner_id, space_id, space_version, parent_version, settings, pair_ids, attempts",
    )
    .bind(id)
    .bind(worker)
    .bind(stale_after_s as f64)
    .bind(JobStatus::Training)
    .bind(JobStatus::Queued)
    .bind(&JobStatus::RUNNING[..])
    .fetch_optional(pool)
    .await
}

/// Ends a job `worker` holds as failed and refunds its price, once (the
/// refund's key is the job's).
pub async fn fail(pool: &PgPool, id: JobId, worker: &str, why: &str) -> Result<(), StoreError> {
    end_failed(pool, id, worker, why, true).await
}

/// Ends a job that ran to its time limit as failed, without a refund: the
/// trainer time it was priced for was used (it was cancelled at its limit).
pub async fn fail_used(pool: &PgPool, id: JobId, worker: &str, why: &str) -> Result<(), StoreError> {
    end_failed(pool, id, worker, why, false).await
}

async fn end_failed(pool: &PgPool, id: JobId, worker: &str, why: &str, refund: bool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    let failed: Option<(UserId, i64)> = sqlx::query_as(
        "update training_jobs set status = $4, error = $3, finished_at = now()
         where id = $1 and worker = $2 and status = any($5) returning owner_id, price",
    )
    .bind(id)
    .bind(worker)
    .bind(crate::domain::shown::without_paths(why))
    .bind(JobStatus::Failed)
    .bind(&JobStatus::RUNNING[..])
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((owner, price)) = failed
        && price > 0
        && refund
    {
        let account = ledger::user_account(&mut tx, owner).await?;
        let legs = [ledger::Leg::new(ledger::HOUSE, -price), ledger::Leg::new(account, price)];
        ledger::post(&mut tx, &format!("training-refund:{id}"), "refund", None, "failed training job", &legs).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Puts a job `worker` holds back in the queue after a transient error;
/// the reconciler offers it again (the claim counts the attempt).
pub async fn release(pool: &PgPool, id: JobId, worker: &str, why: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update training_jobs set status = $4, worker = null, heartbeat_at = now(), error = $3
         where id = $1 and worker = $2 and status = any($5)",
    )
    .bind(id)
    .bind(worker)
    .bind(format!("will retry after: {why}"))
    .bind(JobStatus::Queued)
    .bind(&JobStatus::RUNNING[..])
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn heartbeat(pool: &PgPool, id: JobId, worker: &str) -> Result<(), sqlx::Error> {
    sqlx::query("update training_jobs set heartbeat_at = now() where id = $1 and worker = $2")
        .bind(id)
        .bind(worker)
        .execute(pool)
        .await?;
    Ok(())
}

/// Records one optimizer step's metrics and the job's progress.
pub async fn record_step(
    pool: &PgPool,
    id: JobId,
    worker: &str,
    step: usize,
    steps: usize,
    metrics: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    let mut db = pool.begin().await?;
    sqlx::query(
        "insert into training_metrics (job_id, step, metrics) values ($1, $2, $3)
         on conflict (job_id, step) do update set metrics = excluded.metrics",
    )
    .bind(id)
    .bind(step as i32)
    .bind(metrics)
    .execute(&mut *db)
    .await?;
    sqlx::query("update training_jobs set step = $3, steps = $4 where id = $1 and worker = $2")
        .bind(id)
        .bind(worker)
        .bind(step as i32)
        .bind(steps as i32)
        .execute(&mut *db)
        .await?;
    db.commit().await
}

/// One pair a job trains on, as text.
#[derive(Debug, sqlx::FromRow)]
pub struct PairText {
    pub id: PairId,
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
}

/// The job's pairs, oldest first.
pub async fn pair_texts(pool: &PgPool, ids: &[PairId]) -> Result<Vec<PairText>, sqlx::Error> {
    sqlx::query_as(
        "select p.id, coalesce(p.prompt, m.prompt) as prompt, coalesce(p.chosen_text, co.text) as chosen,
                coalesce(p.rejected_text, ro.text) as rejected
         from pairs p join matches m on m.id = p.match_id
         join outputs co on co.match_id = coalesce(p.chosen_match_id, p.match_id) and co.slot = p.chosen_slot
         join outputs ro on ro.match_id = coalesce(p.rejected_match_id, p.match_id) and ro.slot = p.rejected_slot
         where p.id = any($1) order by p.created_at, p.id",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
}

/// Moves a trained job to the gate with its adapter and manifest; false
/// when `worker` no longer holds it.
pub async fn start_gate(
    pool: &PgPool,
    id: JobId,
    worker: &str,
    adapter_sha256: &str,
    manifest: &serde_json::Value,
) -> Result<bool, sqlx::Error> {
    let moved = sqlx::query(
        "update training_jobs set status = $5, adapter_sha256 = $3, manifest = $4
         where id = $1 and worker = $2 and status = $6",
    )
    .bind(id)
    .bind(worker)
    .bind(adapter_sha256)
    .bind(manifest)
    .bind(JobStatus::Gating)
    .bind(JobStatus::Training)
    .execute(pool)
    .await?;
    Ok(moved.rows_affected() == 1)
}

/// Records a gated job held by `worker`: decides from its games, writes
/// the new version with its lineage (the parent's base model, system
/// prompt and sampling, the job's adapter), makes it current only if it
/// passed and the agent still plays the parent, and ends the job. Returns
/// the job's final status.
pub async fn record_gate(
    pool: &PgPool,
    job_id: JobId,
    worker: &str,
    games: Vec<crate::domain::training::Game>,
) -> Result<JobStatus, StoreError> {
    let mut db = pool.begin().await?;
    let job: Option<(AgentId, i32, Option<String>, i32)> = sqlx::query_as(
        "select agent_id, parent_version, adapter_sha256, cardinality(pair_ids) from training_jobs
         where id = $1 and worker = $2 and status = $3 for update",
    )
    .bind(job_id)
    .bind(worker)
    .bind(JobStatus::Gating)
    .fetch_optional(&mut *db)
    .await?;
    let Some((agent, parent, Some(sha), pairs)) = job else {
        return Err(StoreError::Internal(anyhow::anyhow!(
            "the job is not gating under this trainer (another trainer took it over?)"
        )));
    };
    let config = agents::version_config(&mut db, agent, parent).await?.ok_or(sqlx::Error::RowNotFound)?;
    let head = agents::lock(&mut db, agent).await?.ok_or(sqlx::Error::RowNotFound)?;
    let version = agents::next_version(&mut db, agent).await?;
    let gate = Gate::decide(games, parent, head.current_version);
    let note = format!(
        "trained by job {job_id} on {pairs} pairs from v{parent}; gate {} wins, {} losses, {} ties; {}",
        gate.wins, gate.losses, gate.ties, gate.reason
    );
    let note: String = note.chars().take(500).collect();
    NewAgentVersion {
        agent,
        version,
        base_model: &config.base_model,
        system_prompt: &config.system_prompt,
        sampling: &config.sampling,
        adapter_sha256: Some(&sha),
        parent: Some(parent),
        training_job: Some(job_id),
        note: &note,
    }
    .insert(&mut db)
    .await?;
    if gate.promoted {
        agents::set_current(&mut db, agent, version).await?;
    }
    let status = if gate.promoted { JobStatus::Promoted } else { JobStatus::Rejected };
    sqlx::query("update training_jobs set status = $2, gate = $3, new_version = $4, finished_at = now() where id = $1")
        .bind(job_id)
        .bind(status)
        .bind(serde_json::to_value(&gate).map_err(|e| StoreError::Internal(e.into()))?)
        .bind(version)
        .execute(&mut *db)
        .await?;
    db.commit().await?;
    Ok(status)
}

/// The Space by slug where the agent is entered: its id and current
/// version, or why not.
pub async fn entered_space(conn: &mut PgConnection, agent: AgentId, slug: &str) -> Result<(SpaceId, i32), StoreError> {
    let row: Option<(SpaceId, i32, bool)> = sqlx::query_as(
        "select s.id, s.current_version, e.agent_id is not null from spaces s
         left join entries e on e.space_id = s.id and e.agent_id = $1 where s.slug = $2",
    )
    .bind(agent)
    .bind(slug)
    .fetch_optional(conn)
    .await?;
    match row {
        None => Err(StoreError::invalid("space", format!("no Space {slug:?}"))),
        Some((_, _, false)) => Err(StoreError::invalid(
            "space",
            format!("the agent has never entered the Space {slug:?}; it has no pairs there"),
        )),
        Some((id, version, true)) => Ok((id, version)),
    }
}

/// Sets the agent's policy in a Space.
pub async fn set_policy(
    conn: &mut PgConnection,
    agent: AgentId,
    space: SpaceId,
    mode: PolicyMode,
    every_pairs: Option<i32>,
    settings: &JobSettings,
) -> Result<(), StoreError> {
    sqlx::query(
        "insert into training_policies (agent_id, space_id, mode, every_pairs, settings) values ($1, $2, $3, $4, $5)
         on conflict (agent_id, space_id) do update
         set mode = excluded.mode, every_pairs = excluded.every_pairs, settings = excluded.settings, updated_at = now()",
    )
    .bind(agent)
    .bind(space)
    .bind(mode)
    .bind(every_pairs)
    .bind(serde_json::to_value(settings).map_err(|e| StoreError::Internal(e.into()))?)
    .execute(conn)
    .await?;
    Ok(())
}

/// The settings of the agent's policy in a Space, if it has one.
pub async fn policy_settings(
    conn: &mut PgConnection,
    agent: AgentId,
    space: SpaceId,
) -> Result<Option<serde_json::Value>, sqlx::Error> {
    sqlx::query_scalar("select settings from training_policies where agent_id = $1 and space_id = $2")
        .bind(agent)
        .bind(space)
        .fetch_optional(conn)
        .await
}

/// One policy as its owner sees it.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct PolicyRow {
    pub space: String,
    pub mode: PolicyMode,
    pub every_pairs: Option<i32>,
    pub settings: serde_json::Value,
}

pub async fn policies(conn: &mut PgConnection, agent: AgentId) -> Result<Vec<PolicyRow>, sqlx::Error> {
    sqlx::query_as(
        "select s.slug as space, tp.mode, tp.every_pairs, tp.settings from training_policies tp
         join spaces s on s.id = tp.space_id where tp.agent_id = $1 order by s.slug",
    )
    .bind(agent)
    .fetch_all(conn)
    .await
}

/// The agent's newest jobs, at most 100.
pub async fn jobs_of(conn: &mut PgConnection, agent: AgentId) -> Result<Vec<JobId>, sqlx::Error> {
    sqlx::query_scalar("select id from training_jobs where agent_id = $1 order by created_at desc limit 100")
        .bind(agent)
        .fetch_all(conn)
        .await
}

/// The agent a job trains, if the job exists.
pub async fn job_agent(conn: &mut PgConnection, id: JobId) -> Result<Option<AgentId>, sqlx::Error> {
    sqlx::query_scalar("select agent_id from training_jobs where id = $1").bind(id).fetch_optional(conn).await
}

/// A job as its owner sees it.
#[derive(Debug, sqlx::FromRow)]
pub struct JobRow {
    pub agent_id: AgentId,
    pub slug: String,
    pub parent_version: i32,
    pub trigger: JobTrigger,
    pub settings: serde_json::Value,
    pub pairs: i32,
    pub status: JobStatus,
    pub step: i32,
    pub steps: Option<i32>,
    pub adapter_sha256: Option<String>,
    pub manifest: Option<serde_json::Value>,
    pub gate: Option<serde_json::Value>,
    pub new_version: Option<i32>,
    pub error: Option<String>,
    pub attempts: i32,
    pub price: i64,
    pub token_budget: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

pub async fn job(conn: &mut PgConnection, id: JobId) -> Result<JobRow, sqlx::Error> {
    sqlx::query_as(
        "select j.agent_id, s.slug, j.parent_version, j.trigger, j.settings, cardinality(j.pair_ids) as pairs,
                j.status, j.step, j.steps, j.adapter_sha256, j.manifest, j.gate, j.new_version, j.error, j.attempts,
                j.price, j.token_budget, j.created_at, j.started_at, j.finished_at
         from training_jobs j join spaces s on s.id = j.space_id where j.id = $1",
    )
    .bind(id)
    .fetch_one(conn)
    .await
}

/// The job's per-step metrics in order.
pub async fn metrics(conn: &mut PgConnection, id: JobId) -> Result<Vec<serde_json::Value>, sqlx::Error> {
    sqlx::query_scalar("select metrics from training_metrics where job_id = $1 order by step")
        .bind(id)
        .fetch_all(conn)
        .await
}
