//! Open runtime workers: registration with a stake, leases of formed
//! matches, the jobs and the records they answer with, and the money —
//! pay into escrow, escrow released after its window, a slash and the
//! escrow forfeited when an audit fails, the stake returned after leaving.
//! Every movement is a ledger transaction with its own idempotency key.

use super::StoreError;
use super::ledger::{self, HOUSE, LedgerError, Leg, MINT};
use crate::domain::worker::{Assignment, NewWorker, RolloutRecord};
use crate::domain::{MatchId, UserId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A worker as the store keeps it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Worker {
    pub id: Uuid,
    pub owner_id: UserId,
    pub name: String,
    #[serde(skip)]
    pub public_key: Vec<u8>,
    pub model_sha256: String,
    pub runtime_version: String,
    pub recipe: String,
    pub device: String,
    pub max_batch: i32,
    pub stake: i64,
    pub status: String,
    pub jobs_done: i64,
    pub tokens_done: i64,
    pub audits_passed: i32,
    pub audits_failed: i32,
    pub clean_streak: i32,
    pub strikes: i32,
    pub banned_until: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub left_at: Option<DateTime<Utc>>,
}

const WORKER_COLUMNS: &str = "id, owner_id, name, public_key, model_sha256, runtime_version, recipe, device, max_batch,
    stake, status, jobs_done, tokens_done, audits_passed, audits_failed, clean_streak, strikes, banned_until,
    last_seen, created_at, left_at";

/// The worker's stake or escrow account.
async fn account(conn: &mut PgConnection, worker: Uuid, kind: &str) -> Result<Uuid, LedgerError> {
    sqlx::query_scalar("select id from accounts where worker_id = $1 and kind = $2")
        .bind(worker)
        .bind(kind)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(LedgerError::NoAccount(worker))
}

/// Registers a worker and locks its stake from the owner's balance, in one
/// transaction. The same public key registered again by its owner while
/// active is the same worker (a restarted process): returned, nothing new.
pub async fn register(pool: &PgPool, owner: UserId, w: &NewWorker) -> Result<(Worker, bool), StoreError> {
    let mut tx = pool.begin().await?;
    let existing: Option<Worker> =
        sqlx::query_as(&format!("select {WORKER_COLUMNS} from workers where public_key = $1 for update"))
            .bind(&w.public_key[..])
            .fetch_optional(&mut *tx)
            .await?;
    if let Some(existing) = existing {
        if existing.owner_id != owner || existing.status != "active" {
            return Err(StoreError::Conflict {
                field: "public_key".into(),
                message: "this public key belongs to another worker: make a new key pair".into(),
            });
        }
        return Ok((existing, false));
    }
    let id = Uuid::new_v4();
    let inserted = sqlx::query(
        "insert into workers (id, owner_id, name, public_key, model_sha256, runtime_version, recipe, device,
                              max_batch, stake)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) on conflict do nothing",
    )
    .bind(id)
    .bind(owner)
    .bind(&w.name)
    .bind(&w.public_key[..])
    .bind(&w.model_sha256)
    .bind(&w.runtime_version)
    .bind(&w.recipe)
    .bind(w.device.as_str())
    .bind(w.max_batch)
    .bind(w.stake)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(StoreError::Conflict {
            field: "name".into(),
            message: format!("you already have an active worker named {:?}", w.name),
        });
    }
    for kind in ["stake", "escrow"] {
        sqlx::query("insert into accounts (id, kind, worker_id) values ($1, $2, $3)")
            .bind(Uuid::new_v4())
            .bind(kind)
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    let user = ledger::user_account(&mut tx, owner).await?;
    let stake = account(&mut tx, id, "stake").await?;
    ledger::post(
        &mut tx,
        &format!("worker-stake:{id}"),
        "worker_stake",
        None,
        &format!("stake for worker {:?}", w.name),
        &[Leg::new(user, -w.stake), Leg::new(stake, w.stake)],
    )
    .await?;
    let worker: Worker = sqlx::query_as(&format!("select {WORKER_COLUMNS} from workers where id = $1"))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((worker, true))
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Worker>, sqlx::Error> {
    sqlx::query_as(&format!("select {WORKER_COLUMNS} from workers where id = $1")).bind(id).fetch_optional(pool).await
}

/// A worker with its money, as `GET /api/v1/workers` and `/workers` show it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct WorkerView {
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub worker: Worker,
    pub owner: String,
    /// Credits in the stake account now (the stake less any slash).
    pub staked: i64,
    /// Pay not yet released.
    pub escrow: i64,
    /// Pay released to the owner.
    pub earned: i64,
    pub slashed: i64,
    pub open_lease: Option<Uuid>,
}

/// The owner's workers (every worker with `None`), newest first.
pub async fn list(pool: &PgPool, owner: Option<UserId>) -> Result<Vec<WorkerView>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {}, u.username as owner,
                coalesce((select balance from accounts where worker_id = w.id and kind = 'stake'), 0) as staked,
                coalesce((select balance from accounts where worker_id = w.id and kind = 'escrow'), 0) as escrow,
                coalesce((select sum(pay) from worker_jobs j where j.worker_id = w.id and j.released
                          and j.state = 'accepted'), 0)::bigint as earned,
                coalesce((select -sum(e.amount) from ledger_entries e join ledger_transactions t
                            on t.id = e.transaction_id join accounts a on a.id = e.account_id
                          where a.worker_id = w.id and a.kind = 'stake' and t.kind = 'worker_slash'), 0)::bigint
                  as slashed,
                (select id from worker_leases l where l.worker_id = w.id and l.state = 'open') as open_lease
         from workers w join users u on u.id = w.owner_id
         where $1::uuid is null or w.owner_id = $1 order by w.created_at desc limit 200",
        WORKER_COLUMNS.split(", ").map(|c| format!("w.{}", c.trim())).collect::<Vec<_>>().join(", ")
    ))
    .bind(owner)
    .fetch_all(pool)
    .await
}

/// The pots of `ids`.
pub async fn pots(pool: &PgPool, ids: &[MatchId]) -> Result<Vec<(MatchId, i64)>, sqlx::Error> {
    sqlx::query_as("select id, pot from matches where id = any($1)").bind(ids).fetch_all(pool).await
}

/// Credits in the worker's stake account now.
pub async fn staked(pool: &PgPool, worker: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("select coalesce((select balance from accounts where worker_id = $1 and kind = 'stake'), 0)")
        .bind(worker)
        .fetch_one(pool)
        .await
}

pub async fn heartbeat(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("update workers set last_seen = now() where id = $1").bind(id).execute(pool).await?;
    Ok(())
}

/// The worker leaves: no new leases; its open lease expires now; the stake
/// comes back once its escrow window has passed (`release`).
pub async fn leave(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("update workers set status = 'left', left_at = now() where id = $1 and status = 'active'")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    expire(&mut tx, Some(id)).await?;
    tx.commit().await
}

/// Expires open leases past their deadline (with `worker`: that worker's
/// open lease, now). Their matches' claims lapse with them, so another
/// worker or the runtime takes the match; a late answer is refused.
pub async fn expire(conn: &mut PgConnection, worker: Option<Uuid>) -> Result<u64, sqlx::Error> {
    let expired: Vec<Uuid> = sqlx::query_scalar(
        "update worker_leases set state = 'expired'
         where state = 'open' and (deadline < now() or worker_id = $1) returning id",
    )
    .bind(worker)
    .fetch_all(&mut *conn)
    .await?;
    if expired.is_empty() {
        return Ok(0);
    }
    sqlx::query(
        "with gone as (update worker_jobs set state = 'expired' where lease_id = any($1) and state = 'leased'
                       returning match_id)
         update matches set claimed_until = null where id in (select match_id from gone) and status = 'formed'",
    )
    .bind(&expired)
    .execute(&mut *conn)
    .await?;
    Ok(expired.len() as u64)
}

/// A lease as the store keeps it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Lease {
    pub id: Uuid,
    pub worker_id: Uuid,
    pub deadline: DateTime<Utc>,
    pub state: String,
    pub created_at: DateTime<Utc>,
}

pub async fn lease(pool: &PgPool, id: Uuid) -> Result<Option<Lease>, sqlx::Error> {
    sqlx::query_as("select id, worker_id, deadline, state, created_at from worker_leases where id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

pub async fn open_lease(pool: &PgPool, worker: Uuid) -> Result<Option<Lease>, sqlx::Error> {
    sqlx::query_as(
        "select id, worker_id, deadline, state, created_at from worker_leases where worker_id = $1 and state = 'open'",
    )
    .bind(worker)
    .fetch_optional(pool)
    .await
}

/// A formed match a worker could take, with what decides whether it may.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Candidate {
    pub id: MatchId,
    pub space_id: crate::domain::SpaceId,
    pub space_version: i32,
    pub seats: i64,
}

/// Locks up to `limit` formed, unclaimed matches whose every agent allows
/// open workers, none of which `owner` owns and none `worker` had rejected
/// (a match it failed goes to someone else), oldest first, skipping rows
/// another transaction holds.
pub async fn candidates(
    conn: &mut PgConnection,
    owner: UserId,
    worker: Uuid,
    limit: i64,
) -> Result<Vec<Candidate>, sqlx::Error> {
    sqlx::query_as(
        "select m.id, m.space_id, m.space_version,
                (select count(*) from match_agents ma where ma.match_id = m.id) as seats
         from matches m
         where m.status = 'formed' and (m.claimed_until is null or m.claimed_until < now())
           and not exists (select 1 from match_agents ma join agents a on a.id = ma.agent_id
                           where ma.match_id = m.id and (ma.owner_id = $1 or not a.open_workers))
           and not exists (select 1 from worker_jobs j
                           where j.match_id = m.id and j.worker_id = $3 and j.state = 'rejected')
         order by m.created_at limit $2 for update of m skip locked",
    )
    .bind(owner)
    .bind(limit)
    .bind(worker)
    .fetch_all(&mut *conn)
    .await
}

/// The built-in runtime's claim: which of `ids` it may generate now (formed
/// and claimed by no lease), claimed for `secs`.
pub async fn claim_for_runtime(pool: &PgPool, ids: &[MatchId], secs: u64) -> Result<Vec<MatchId>, sqlx::Error> {
    sqlx::query_scalar(
        "update matches set claimed_until = now() + make_interval(secs => $2), claimed_by = null
         where id = any($1) and status = 'formed'
           and (claimed_until is null or claimed_until < now() or claimed_by is null)
         returning id",
    )
    .bind(ids)
    .bind(secs as f64)
    .fetch_all(pool)
    .await
}

/// How many times each seat of `ids` was leased before.
pub async fn attempts(conn: &mut PgConnection, ids: &[MatchId]) -> Result<Vec<(MatchId, i16, i64)>, sqlx::Error> {
    sqlx::query_as("select match_id, slot, count(*) from worker_jobs where match_id = any($1) group by match_id, slot")
        .bind(ids)
        .fetch_all(&mut *conn)
        .await
}

/// Writes a lease of `jobs` and claims their matches until `deadline`.
pub async fn insert_lease(
    conn: &mut PgConnection,
    worker: Uuid,
    lease: Uuid,
    deadline: DateTime<Utc>,
    jobs: &[Assignment],
) -> Result<(), sqlx::Error> {
    sqlx::query("insert into worker_leases (id, worker_id, deadline) values ($1, $2, $3)")
        .bind(lease)
        .bind(worker)
        .bind(deadline)
        .execute(&mut *conn)
        .await?;
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.job_id).collect();
    let matches: Vec<MatchId> = jobs.iter().map(|j| j.match_id).collect();
    let slots: Vec<i16> = jobs.iter().map(|j| j.slot).collect();
    let attempts: Vec<i32> = jobs.iter().map(|j| j.attempt).collect();
    let assignments: Vec<serde_json::Value> =
        jobs.iter().map(|j| serde_json::to_value(j).unwrap_or_default()).collect();
    sqlx::query(
        "insert into worker_jobs (id, lease_id, worker_id, match_id, slot, attempt, assignment)
         select j.id, $2, $3, j.m, j.s, j.a, j.x
         from unnest($1::uuid[], $4::uuid[], $5::smallint[], $6::int[], $7::jsonb[]) as j(id, m, s, a, x)",
    )
    .bind(&ids)
    .bind(lease)
    .bind(worker)
    .bind(&matches)
    .bind(&slots)
    .bind(&attempts)
    .bind(&assignments)
    .execute(&mut *conn)
    .await?;
    sqlx::query("update matches set claimed_until = $2, claimed_by = $3 where id = any($1)")
        .bind(&matches)
        .bind(deadline)
        .bind(lease)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A job with its assignment and, once answered, its record.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
    pub id: Uuid,
    pub lease_id: Uuid,
    pub worker_id: Uuid,
    pub match_id: MatchId,
    pub slot: i16,
    #[sqlx(json)]
    pub assignment: Assignment,
    #[sqlx(json(nullable))]
    pub record: Option<RolloutRecord>,
    pub state: String,
}

pub async fn lease_jobs(pool: &PgPool, lease: Uuid) -> Result<Vec<Job>, sqlx::Error> {
    sqlx::query_as(
        "select id, lease_id, worker_id, match_id, slot, assignment, record, state from worker_jobs
         where lease_id = $1 order by match_id, slot",
    )
    .bind(lease)
    .fetch_all(pool)
    .await
}

/// Whether a completion with this key was accepted before from another job
/// (the same agent version's adapter, prompt and tokens): a sampled answer
/// that repeats under another seed is a replay until an audit says not.
pub async fn seen_completion(pool: &PgPool, key: &str, job: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "select exists (select 1 from worker_jobs where record_sha256 is not null and id <> $2
                        and audit->>'completion_key' = $1)",
    )
    .bind(key)
    .bind(job)
    .fetch_one(pool)
    .await
}

/// Stores a lease's answered records, each with its sha256, a note (its
/// completion key, the signature) and its state (`auditing`, or `leased`
/// until accepted or rejected at once),
/// and marks the lease answered. Refuses (returns false) a lease that is no
/// longer open: a late or second answer changes nothing.
pub async fn store_answers(
    conn: &mut PgConnection,
    lease: Uuid,
    answers: &[(Uuid, &RolloutRecord, String, serde_json::Value, &str)],
    claim_secs: u64,
) -> Result<bool, sqlx::Error> {
    let answered = sqlx::query(
        "update worker_leases set state = 'answered', answered_at = now()
         where id = $1 and state = 'open' and deadline >= now()",
    )
    .bind(lease)
    .execute(&mut *conn)
    .await?;
    if answered.rows_affected() == 0 {
        return Ok(false);
    }
    for (job, record, sha, note, state) in answers {
        sqlx::query(
            "update worker_jobs set record = $2, record_sha256 = $3, audit = $4, state = $5, answered_at = now(),
                                    tokens = $6
             where id = $1 and state = 'leased'",
        )
        .bind(job)
        .bind(serde_json::to_value(record).unwrap_or_default())
        .bind(sha)
        .bind(note)
        .bind(state)
        .bind(record.tokens.len() as i32)
        .execute(&mut *conn)
        .await?;
    }
    // The match stays claimed while its answer waits for the audit.
    sqlx::query(
        "update matches set claimed_until = now() + make_interval(secs => $2)
         where id in (select match_id from worker_jobs where lease_id = $1)",
    )
    .bind(lease)
    .bind(claim_secs as f64)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// One match's jobs answered by one lease and waiting for their audit.
pub async fn auditing(pool: &PgPool, limit: i64) -> Result<Vec<Job>, sqlx::Error> {
    sqlx::query_as(
        "select id, lease_id, worker_id, match_id, slot, assignment, record, state from worker_jobs
         where match_id in (select match_id from worker_jobs where state = 'auditing'
                            group by match_id order by min(answered_at) limit $1)
           and state = 'auditing' order by match_id, slot",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Accepts one match's answered jobs: their outputs stored (with the job
/// each came from), the match advanced, the worker paid into escrow and
/// its counters moved. A match another worker already generated makes
/// these jobs void: nothing stored, nothing paid. Returns whether the
/// match advanced.
pub async fn accept(
    conn: &mut PgConnection,
    jobs: &[Job],
    outputs: &[crate::store::matches::NewOutput],
    audited: Option<serde_json::Value>,
    pay_per_ktoken: i64,
) -> Result<bool, StoreError> {
    let Some(first) = jobs.first() else { return Ok(false) };
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    // Lock the jobs; only those still waiting may be accepted.
    let waiting: Vec<Uuid> = sqlx::query_scalar(
        "select id from worker_jobs where id = any($1) and state in ('leased', 'auditing') for update",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    if waiting.len() != ids.len() {
        return Ok(false);
    }
    let formed: bool = sqlx::query_scalar("select status = 'formed' from matches where id = $1 for update")
        .bind(first.match_id)
        .fetch_one(&mut *conn)
        .await?;
    if !formed {
        sqlx::query("update worker_jobs set state = 'void' where id = any($1)").bind(&ids).execute(&mut *conn).await?;
        return Ok(false);
    }
    crate::store::matches::insert_outputs(conn, outputs).await?;
    for job in jobs {
        sqlx::query("update outputs set worker_job_id = $3 where match_id = $1 and slot = $2")
            .bind(job.match_id)
            .bind(job.slot)
            .bind(job.id)
            .execute(&mut *conn)
            .await?;
    }
    crate::store::matches::advance(conn, crate::domain::Stage::Generate, &[first.match_id]).await?;
    let tokens: i64 = jobs.iter().filter_map(|j| j.record.as_ref()).map(|r| r.tokens.len() as i64).sum();
    let pay = crate::domain::worker::pay_for(tokens, pay_per_ktoken);
    // The pay is split over the jobs for the record (the first takes the remainder).
    let each = pay / jobs.len() as i64;
    for (i, job) in jobs.iter().enumerate() {
        let mine = if i == 0 { pay - each * (jobs.len() as i64 - 1) } else { each };
        sqlx::query(
            "update worker_jobs set state = 'accepted', pay = $2, audited = $3 is not null,
                                    audit = coalesce($3, audit) where id = $1",
        )
        .bind(job.id)
        .bind(mine)
        .bind(&audited)
        .execute(&mut *conn)
        .await?;
    }
    let passed = i32::from(audited.is_some());
    sqlx::query(
        "update workers set jobs_done = jobs_done + $2, tokens_done = tokens_done + $3,
                            audits_passed = audits_passed + $4, clean_streak = clean_streak + $4
         where id = $1",
    )
    .bind(first.worker_id)
    .bind(jobs.len() as i64)
    .bind(tokens)
    .bind(passed)
    .execute(&mut *conn)
    .await?;
    if pay > 0 {
        let escrow = account(conn, first.worker_id, "escrow").await?;
        ledger::post(
            conn,
            &format!("worker-pay:{}:{}", first.lease_id, first.match_id.0),
            "worker_pay",
            Some(first.match_id),
            &format!("{tokens} tokens generated, held in escrow"),
            &[Leg::new(MINT, -pay), Leg::new(escrow, pay)],
        )
        .await?;
    }
    Ok(true)
}

/// Rejects a match's waiting records with `finding` and releases the match
/// for another worker; false when none was still waiting (done already).
async fn reject_records(
    conn: &mut PgConnection,
    jobs: &[Job],
    match_id: MatchId,
    finding: &serde_json::Value,
) -> Result<bool, sqlx::Error> {
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    let rejected = sqlx::query(
        "update worker_jobs set state = 'rejected', audited = true, audit = audit || $2
         where id = any($1) and state in ('leased', 'auditing')",
    )
    .bind(&ids)
    .bind(finding)
    .execute(&mut *conn)
    .await?;
    if rejected.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query("update matches set claimed_until = null where id = $1 and status = 'formed'")
        .bind(match_id)
        .execute(&mut *conn)
        .await?;
    Ok(true)
}

/// A soft fail (the tolerant tier just outside its limits): the match's
/// records rejected without a slash, the match released for another
/// worker, the worker's streak — its reputation — started over.
pub async fn soft_reject(conn: &mut PgConnection, jobs: &[Job], finding: serde_json::Value) -> Result<(), StoreError> {
    let Some(first) = jobs.first() else { return Ok(()) };
    if !reject_records(conn, jobs, first.match_id, &finding).await? {
        return Ok(());
    }
    sqlx::query("update workers set clean_streak = 0 where id = $1").bind(first.worker_id).execute(&mut *conn).await?;
    Ok(())
}

/// What a failed audit costs.
#[derive(Debug, Clone, Serialize)]
pub struct Penalty {
    pub slashed: i64,
    pub forfeited: i64,
    pub banned_until: DateTime<Utc>,
}

/// A failed audit: the match's jobs rejected with the finding, the match
/// released for another worker (same seeds), the worker's escrow forfeited
/// and `slash_pct` of its stake slashed to the house, its streak reset and
/// a ban that doubles with each strike (`ban_s` the first).
pub async fn reject(
    conn: &mut PgConnection,
    jobs: &[Job],
    finding: serde_json::Value,
    slash_pct: i64,
    ban_s: i64,
) -> Result<Option<Penalty>, StoreError> {
    let Some(first) = jobs.first() else { return Ok(None) };
    if !reject_records(conn, jobs, first.match_id, &finding).await? {
        return Ok(None);
    }
    let strikes: i32 = sqlx::query_scalar(
        "update workers set audits_failed = audits_failed + 1, clean_streak = 0, strikes = strikes + 1,
                banned_until = now() + make_interval(secs => $2 * power(2, strikes))
         where id = $1 returning strikes",
    )
    .bind(first.worker_id)
    .bind(ban_s as f64)
    .fetch_one(&mut *conn)
    .await?;
    let banned_until: DateTime<Utc> = sqlx::query_scalar("select banned_until from workers where id = $1")
        .bind(first.worker_id)
        .fetch_one(&mut *conn)
        .await?;
    let stake = account(conn, first.worker_id, "stake").await?;
    let escrow = account(conn, first.worker_id, "escrow").await?;
    let (stake_balance, escrow_balance): (i64, i64) = sqlx::query_as(
        "select (select balance from accounts where id = $1), (select balance from accounts where id = $2)",
    )
    .bind(stake)
    .bind(escrow)
    .fetch_one(&mut *conn)
    .await?;
    let stake_of: i64 = sqlx::query_scalar("select stake from workers where id = $1")
        .bind(first.worker_id)
        .fetch_one(&mut *conn)
        .await?;
    let slashed = (stake_of.saturating_mul(slash_pct) / 100).min(stake_balance);
    let key = format!("worker-slash:{}:{}", first.lease_id, first.match_id.0);
    ledger::post(
        conn,
        &key,
        "worker_slash",
        Some(first.match_id),
        &format!("audit failed (strike {strikes}): {slash_pct}% of the stake and the escrow"),
        &[Leg::new(stake, -slashed), Leg::new(escrow, -escrow_balance), Leg::new(HOUSE, slashed + escrow_balance)],
    )
    .await?;
    // The escrowed jobs are paid no more.
    sqlx::query(
        "update worker_jobs set released = true, pay = 0 where worker_id = $1 and state = 'accepted' and not released",
    )
    .bind(first.worker_id)
    .execute(&mut *conn)
    .await?;
    Ok(Some(Penalty { slashed, forfeited: escrow_balance, banned_until }))
}

/// Releases escrow older than `escrow_s` to the owners, and returns the
/// stake of workers that left when nothing of theirs is still in escrow.
/// Returns the credits moved.
pub async fn release(pool: &PgPool, escrow_s: u64) -> Result<i64, StoreError> {
    let mut moved = 0;
    let due: Vec<(Uuid, UserId, Vec<Uuid>, i64)> = sqlx::query_as(
        "select j.worker_id, w.owner_id, array_agg(j.id), sum(j.pay)::bigint from worker_jobs j
         join workers w on w.id = j.worker_id
         where j.state = 'accepted' and not j.released and j.answered_at < now() - make_interval(secs => $1)
         group by j.worker_id, w.owner_id limit 100",
    )
    .bind(escrow_s as f64)
    .fetch_all(pool)
    .await?;
    for (worker, owner, jobs, pay) in due {
        let mut tx = pool.begin().await?;
        let locked: Vec<Uuid> = sqlx::query_scalar(
            "update worker_jobs set released = true where id = any($1) and not released and state = 'accepted'
             returning id",
        )
        .bind(&jobs)
        .fetch_all(&mut *tx)
        .await?;
        if locked.len() != jobs.len() {
            continue; // Another process released or a slash took them: roll back.
        }
        if pay > 0 {
            let escrow = account(&mut tx, worker, "escrow").await?;
            let user = ledger::user_account(&mut tx, owner).await?;
            let mut sorted = jobs.clone();
            sorted.sort();
            let mut h = <sha2::Sha256 as sha2::Digest>::new();
            for id in &sorted {
                sha2::Digest::update(&mut h, id.as_bytes());
            }
            let key = format!("worker-release:{}", hex::encode(sha2::Digest::finalize(h)));
            ledger::post(
                &mut tx,
                &key,
                "worker_release",
                None,
                &format!("escrow released for {} jobs", jobs.len()),
                &[Leg::new(escrow, -pay), Leg::new(user, pay)],
            )
            .await?;
            moved += pay;
        }
        tx.commit().await?;
    }
    // Stakes of workers that left, once their escrow is settled.
    let gone: Vec<(Uuid, UserId)> = sqlx::query_as(
        "select w.id, w.owner_id from workers w
         where w.status = 'left' and w.left_at < now() - make_interval(secs => $1)
           and exists (select 1 from accounts a where a.worker_id = w.id and a.kind = 'stake' and a.balance > 0)
           and not exists (select 1 from worker_jobs j where j.worker_id = w.id
                           and ((j.state = 'accepted' and not j.released) or j.state in ('leased', 'auditing')))",
    )
    .bind(escrow_s as f64)
    .fetch_all(pool)
    .await?;
    for (worker, owner) in gone {
        let mut tx = pool.begin().await?;
        let stake = account(&mut tx, worker, "stake").await?;
        let balance: i64 = sqlx::query_scalar("select balance from accounts where id = $1 for update")
            .bind(stake)
            .fetch_one(&mut *tx)
            .await?;
        let user = ledger::user_account(&mut tx, owner).await?;
        ledger::post(
            &mut tx,
            &format!("worker-unstake:{worker}"),
            "worker_unstake",
            None,
            "stake returned after leaving",
            &[Leg::new(stake, -balance), Leg::new(user, balance)],
        )
        .await?;
        tx.commit().await?;
        moved += balance;
    }
    Ok(moved)
}

/// Today's audit secret, made on first use; its commitment (sha256) is
/// public from then on, the secret only once the day is over.
pub async fn audit_secret(pool: &PgPool) -> Result<Vec<u8>, sqlx::Error> {
    let secret: [u8; 32] = rand::random();
    let commitment = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(secret));
    sqlx::query(
        "insert into audit_secrets (day, secret, commitment) values (current_date, $1, $2) on conflict do nothing",
    )
    .bind(&secret[..])
    .bind(commitment)
    .execute(pool)
    .await?;
    sqlx::query_scalar("select secret from audit_secrets where day = current_date").fetch_one(pool).await
}

/// A day's audit commitment, with its secret once the day is over.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditDay {
    pub day: chrono::NaiveDate,
    pub commitment: String,
    pub secret: Option<String>,
}

pub async fn audit_days(pool: &PgPool) -> Result<Vec<AuditDay>, sqlx::Error> {
    sqlx::query_as(
        "select day, commitment, case when day < current_date then encode(secret, 'hex') end as secret
         from audit_secrets order by day desc limit 60",
    )
    .fetch_all(pool)
    .await
}

/// Which worker generated each seat of a match, and whether it was audited.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SeatWorker {
    pub slot: i16,
    pub worker: String,
    pub audited: bool,
    pub record_sha256: Option<String>,
}

pub async fn seat_workers(pool: &PgPool, id: MatchId) -> Result<Vec<SeatWorker>, sqlx::Error> {
    sqlx::query_as(
        "select o.slot, w.name as worker, j.audited, j.record_sha256 from outputs o
         join worker_jobs j on j.id = o.worker_job_id join workers w on w.id = j.worker_id
         where o.match_id = $1 order by o.slot",
    )
    .bind(id)
    .fetch_all(pool)
    .await
}

/// Whether one of `leases` (open) has a job needing adapter `sha`.
pub async fn lease_needs(pool: &PgPool, leases: &[Uuid], sha: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "select exists (select 1 from worker_jobs j join worker_leases l on l.id = j.lease_id
                        where l.id = any($1) and l.state = 'open'
                          and j.assignment->'identity'->>'adapter_sha256' = $2)",
    )
    .bind(leases)
    .bind(sha)
    .fetch_one(pool)
    .await
}

/// A rejected record, for the owner's page.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Finding {
    pub worker: String,
    pub match_id: MatchId,
    pub answered_at: Option<DateTime<Utc>>,
    pub audit: serde_json::Value,
}

/// The newest rejected records (one per match) of `owner`'s workers (all with `None`).
pub async fn findings(pool: &PgPool, owner: Option<UserId>, limit: i64) -> Result<Vec<Finding>, sqlx::Error> {
    sqlx::query_as(
        "select distinct on (j.match_id, j.lease_id) w.name as worker, j.match_id, j.answered_at,
                coalesce(j.audit, '{}') as audit
         from worker_jobs j join workers w on w.id = j.worker_id
         where j.state = 'rejected' and ($1::uuid is null or w.owner_id = $1)
         order by j.match_id, j.lease_id, j.answered_at desc limit $2",
    )
    .bind(owner)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Credits paid into escrow per day over the last `days` days (days
/// without pay included as 0).
pub async fn pay_by_day(
    pool: &PgPool,
    owner: Option<UserId>,
    days: i32,
) -> Result<Vec<(chrono::NaiveDate, i64)>, sqlx::Error> {
    sqlx::query_as(
        "select d::date, coalesce((select sum(j.pay) from worker_jobs j join workers w on w.id = j.worker_id
                                   where j.state = 'accepted' and j.answered_at::date = d::date
                                     and ($1::uuid is null or w.owner_id = $1)), 0)::bigint
         from generate_series(current_date - ($2 - 1), current_date, interval '1 day') as d order by d",
    )
    .bind(owner)
    .bind(days)
    .fetch_all(pool)
    .await
}
