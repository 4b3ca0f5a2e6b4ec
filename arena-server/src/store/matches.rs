//! Matches: their status transitions, the stages' reads and writes (seats,
//! outputs, verdicts), failure with refunds, and the API's views.

use super::ledger::{self, Leg};
use super::outbox;
use crate::domain::{AgentId, MatchId, MatchStatus, SpaceId, Stage, Topic, UserId};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

fn uuids(ids: &[MatchId]) -> Vec<Uuid> {
    ids.iter().map(|m| m.0).collect()
}

/// Moves matches `stage` finished from its input status to its output
/// status, stamps the time, and writes the hand-over to the next stage, in
/// the caller's transaction. Returns the matches it moved: one already past
/// the stage (a redelivery) is left alone. Settlement has its own
/// bookkeeping (`settlement`).
pub async fn advance(conn: &mut PgConnection, stage: Stage, ids: &[MatchId]) -> Result<Vec<MatchId>, sqlx::Error> {
    let sql = match stage {
        Stage::Generate => {
            "update matches set status = $2, updated_at = now(), generated_at = clock_timestamp()
             where id = any($1) and status = $3 returning id"
        }
        Stage::Judge => {
            "update matches set status = $2, updated_at = now(), judged_at = clock_timestamp()
             where id = any($1) and status = $3 returning id"
        }
        Stage::Settle => return Ok(Vec::new()),
    };
    let moved: Vec<MatchId> = sqlx::query_scalar(sql)
        .bind(ids)
        .bind(stage.output_status())
        .bind(stage.input_status())
        .fetch_all(&mut *conn)
        .await?;
    if let Some(next) = stage.next() {
        outbox::enqueue_many(conn, Topic::Stage(next), &uuids(&moved)).await?;
    }
    Ok(moved)
}

/// Which of `ids` are in `status` now.
pub async fn in_status(pool: &PgPool, ids: &[MatchId], status: MatchStatus) -> Result<Vec<MatchId>, sqlx::Error> {
    sqlx::query_scalar("select id from matches where id = any($1) and status = $2")
        .bind(ids)
        .bind(status)
        .fetch_all(pool)
        .await
}

/// Fails an unsettled match: refunds every entry fee and the sponsor pool
/// from its pot and frees its agents. Returns the Space's slug when it
/// changed anything; a match already settled or failed is left alone.
pub async fn fail(
    conn: &mut PgConnection,
    match_id: MatchId,
    reason: &str,
) -> Result<Option<String>, super::StoreError> {
    let row: Option<(MatchStatus, SpaceId, i64, String, UserId)> = sqlx::query_as(
        "select m.status, m.space_id, m.pot, s.slug, s.owner_id from matches m join spaces s on s.id = m.space_id
         where m.id = $1 for update of m",
    )
    .bind(match_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((status, space_id, pot, slug, designer)) = row else { return Ok(None) };
    // Shown on the match page and in the players' ledgers.
    let reason = &crate::domain::shown::without_paths(reason);
    if status.is_final() {
        return Ok(None);
    }
    let fees: Vec<(Uuid, i64)> = sqlx::query_as(
        "select acc.id, ma.entry_fee from match_agents ma
         join accounts acc on acc.kind = 'user' and acc.user_id = ma.owner_id
         where ma.match_id = $1 order by ma.slot",
    )
    .bind(match_id)
    .fetch_all(&mut *conn)
    .await?;
    let pot_account: Uuid = sqlx::query_scalar("select id from accounts where kind = 'pot' and match_id = $1")
        .bind(match_id)
        .fetch_one(&mut *conn)
        .await?;
    let mut legs: Vec<Leg> = fees.iter().filter(|(_, fee)| *fee > 0).map(|(acc, fee)| Leg::new(*acc, *fee)).collect();
    let sponsor = pot - fees.iter().map(|(_, fee)| fee).sum::<i64>();
    if sponsor > 0 {
        let account = ledger::user_account(&mut *conn, designer).await?;
        legs.push(Leg::new(account, sponsor));
    }
    if pot > 0 {
        legs.push(Leg::new(pot_account, -pot));
    }
    ledger::post(&mut *conn, &format!("refund:{match_id}"), "refund", Some(match_id), reason, &legs).await?;
    sqlx::query("update matches set status = $3, error = $2, updated_at = now() where id = $1")
        .bind(match_id)
        .bind(reason)
        .bind(MatchStatus::Failed)
        .execute(&mut *conn)
        .await?;
    sqlx::query("update entries set open_match = null where space_id = $1 and open_match = $2")
        .bind(space_id)
        .bind(match_id)
        .execute(&mut *conn)
        .await?;
    Ok(Some(slug))
}

/// One agent's turn in a formed match, with its pinned version's settings.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GenerateSeat {
    pub match_id: MatchId,
    pub slug: String,
    pub space_id: SpaceId,
    pub space_version: i32,
    pub prompt: String,
    pub reference: Option<String>,
    pub slot: i16,
    pub system_prompt: String,
    #[sqlx(json)]
    pub sampling: crate::domain::agent::AgentSampling,
    pub adapter_sha256: Option<String>,
}

/// Every seat of `ids`, by match and slot.
pub async fn generate_seats(pool: &PgPool, ids: &[MatchId]) -> Result<Vec<GenerateSeat>, sqlx::Error> {
    sqlx::query_as(
        "select m.id as match_id, s.slug, m.space_id, m.space_version, m.prompt, m.reference, ma.slot,
                v.system_prompt, v.sampling, v.adapter_sha256
         from matches m join spaces s on s.id = m.space_id join match_agents ma on ma.match_id = m.id
         join agent_versions v on v.agent_id = ma.agent_id and v.version = ma.agent_version
         where m.id = any($1) order by m.id, ma.slot",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
}

/// One agent's answer.
#[derive(Debug, Clone)]
pub struct NewOutput {
    pub match_id: MatchId,
    pub slot: i16,
    pub text: String,
    pub finish: String,
    pub tokens: i32,
}

/// Stores answers; one already stored for its match and slot is kept.
pub async fn insert_outputs(conn: &mut PgConnection, outputs: &[NewOutput]) -> Result<(), sqlx::Error> {
    let ids: Vec<MatchId> = outputs.iter().map(|o| o.match_id).collect();
    let slots: Vec<i16> = outputs.iter().map(|o| o.slot).collect();
    // PostgreSQL text cannot hold NUL.
    let texts: Vec<String> = outputs.iter().map(|o| o.text.replace('\0', "")).collect();
    let finishes: Vec<&str> = outputs.iter().map(|o| o.finish.as_str()).collect();
    let tokens: Vec<i32> = outputs.iter().map(|o| o.tokens).collect();
    sqlx::query(
        "insert into outputs (match_id, slot, text, finish, tokens)
         select * from unnest($1::uuid[], $2::smallint[], $3::text[], $4::text[], $5::int[])
         on conflict (match_id, slot) do nothing",
    )
    .bind(&ids)
    .bind(&slots)
    .bind(&texts)
    .bind(&finishes)
    .bind(&tokens)
    .execute(conn)
    .await?;
    Ok(())
}

/// A match waiting for the judge.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JudgeOpen {
    pub id: MatchId,
    pub slug: String,
    pub space_id: SpaceId,
    pub space_version: i32,
    pub prompt: String,
    pub reference: Option<String>,
}

pub async fn judge_open(pool: &PgPool, ids: &[MatchId]) -> Result<Vec<JudgeOpen>, sqlx::Error> {
    sqlx::query_as(
        "select m.id, s.slug, m.space_id, m.space_version, m.prompt, m.reference
         from matches m join spaces s on s.id = m.space_id
         where m.id = any($1) and m.status = $2",
    )
    .bind(ids)
    .bind(MatchStatus::Generated)
    .fetch_all(pool)
    .await
}

/// One stored answer.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutputText {
    pub match_id: MatchId,
    pub slot: i16,
    pub text: String,
}

/// The answers of `ids`, by match and slot.
pub async fn outputs(pool: &PgPool, ids: &[MatchId]) -> Result<Vec<OutputText>, sqlx::Error> {
    sqlx::query_as("select match_id, slot, text from outputs where match_id = any($1) order by match_id, slot")
        .bind(ids)
        .fetch_all(pool)
        .await
}

/// Stores verdicts (JSON text, parsed once by PostgreSQL); one already
/// stored for its match is kept.
pub async fn insert_verdicts(conn: &mut PgConnection, ids: &[MatchId], verdicts: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into verdicts (match_id, verdict) select id, v::jsonb from unnest($1::uuid[], $2::text[]) as x(id, v)
         on conflict (match_id) do nothing",
    )
    .bind(ids)
    .bind(verdicts)
    .execute(conn)
    .await?;
    Ok(())
}

/// A match and its Space's slug.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MatchSpace {
    pub id: MatchId,
    pub slug: String,
}

/// Each match's Space slug.
pub async fn slugs(pool: &PgPool, ids: &[MatchId]) -> Result<Vec<MatchSpace>, sqlx::Error> {
    sqlx::query_as("select m.id, s.slug from matches m join spaces s on s.id = m.space_id where m.id = any($1)")
        .bind(ids)
        .fetch_all(pool)
        .await
}

/// A match and where it stands.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct MatchState {
    pub id: MatchId,
    pub status: MatchStatus,
}

/// Marks up to 1000 open matches whose status has not moved for `after_s`
/// seconds as touched now, and returns them with their status.
pub async fn touch_stalled(pool: &PgPool, after_s: u64) -> Result<Vec<MatchState>, sqlx::Error> {
    sqlx::query_as(
        "update matches set updated_at = now()
         where id in (select id from matches where status = any($2)
                      and updated_at < now() - make_interval(secs => $1) limit 1000)
         returning id, status",
    )
    .bind(after_s as f64)
    .bind(&MatchStatus::OPEN[..])
    .fetch_all(pool)
    .await
}

/// How many matches are in one status.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct StatusCount {
    pub status: MatchStatus,
    pub count: i64,
}

/// Open matches per status (statuses without matches left out).
pub async fn open_counts(pool: &PgPool) -> Result<Vec<StatusCount>, sqlx::Error> {
    sqlx::query_as("select status, count(*) as count from matches where status = any($1) group by status")
        .bind(&MatchStatus::OPEN[..])
        .fetch_all(pool)
        .await
}

/// Matches in `status` (all when None).
pub async fn count(pool: &PgPool, status: Option<MatchStatus>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("select count(*) from matches where $1::text is null or status = $1")
        .bind(status)
        .fetch_one(pool)
        .await
}

/// A line of the match list.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct MatchSummary {
    pub id: MatchId,
    pub space: String,
    pub space_version: i32,
    pub status: MatchStatus,
    pub pot: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub settled_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Newest first, optionally of one Space and one status.
pub async fn list(
    pool: &PgPool,
    space: Option<&str>,
    status: Option<MatchStatus>,
    limit: i64,
) -> Result<Vec<MatchSummary>, sqlx::Error> {
    sqlx::query_as(
        "select m.id, s.slug as space, m.space_version, m.status, m.pot, m.created_at, m.settled_at
         from matches m join spaces s on s.id = m.space_id
         where ($1::text is null or s.slug = $1) and ($2::text is null or m.status = $2)
         order by m.created_at desc limit $3",
    )
    .bind(space)
    .bind(status)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One match's head.
#[derive(Debug, sqlx::FromRow)]
pub struct MatchHead {
    pub id: MatchId,
    pub space: String,
    pub space_id: crate::domain::SpaceId,
    /// The Space's designer.
    pub designer_id: crate::domain::UserId,
    pub space_version: i32,
    pub status: MatchStatus,
    pub prompt: String,
    pub reference: Option<String>,
    pub pot: i64,
    pub error: Option<String>,
    pub seq: Option<i64>,
    pub record_hash: Option<String>,
    /// The record hash this one chains to, and the match that has it.
    pub prev_hash: Option<String>,
    pub prev_id: Option<MatchId>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub settled_at: Option<chrono::DateTime<chrono::Utc>>,
}

pub async fn head(pool: &PgPool, id: MatchId) -> Result<Option<MatchHead>, sqlx::Error> {
    sqlx::query_as(
        "select m.id, s.slug as space, m.space_id, s.owner_id as designer_id, m.space_version, m.status, m.prompt, m.reference, m.pot, m.error, m.seq,
                m.record_hash, m.prev_hash,
                (select p.id from matches p where p.space_id = m.space_id and p.seq = m.seq - 1) as prev_id,
                m.created_at, m.settled_at
         from matches m join spaces s on s.id = m.space_id where m.id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// One seat of a match as the API shows it.
#[derive(Debug, sqlx::FromRow)]
pub struct SeatView {
    pub slot: i16,
    pub agent_id: AgentId,
    pub agent: String,
    pub owner: String,
    pub owner_id: crate::domain::UserId,
    pub agent_version: i32,
    pub entry_fee: i64,
    pub mu_before: f64,
    pub mu_after: Option<f64>,
    pub rank: Option<i32>,
    pub payout: Option<i64>,
    pub output: Option<String>,
    pub finish: Option<String>,
}

pub async fn seats(pool: &PgPool, id: MatchId) -> Result<Vec<SeatView>, sqlx::Error> {
    sqlx::query_as(
        "select ma.slot, ma.agent_id, a.name as agent, u.username as owner, ma.owner_id, ma.agent_version, ma.entry_fee,
                ma.mu_before, ma.mu_after, ma.rank, ma.payout, o.text as output, o.finish
         from match_agents ma join agents a on a.id = ma.agent_id join users u on u.id = ma.owner_id
         left join outputs o on o.match_id = ma.match_id and o.slot = ma.slot
         where ma.match_id = $1 order by ma.slot",
    )
    .bind(id)
    .fetch_all(pool)
    .await
}

pub async fn verdict(pool: &PgPool, id: MatchId) -> Result<Option<serde_json::Value>, sqlx::Error> {
    sqlx::query_scalar("select verdict from verdicts where match_id = $1").bind(id).fetch_optional(pool).await
}

/// One stage's latency over the settled matches.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StageLatency {
    pub stage: String,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Per stage of the settled matches, in pipeline order (the control-plane
/// benchmark's table).
pub async fn stage_latencies(pool: &PgPool) -> Result<Vec<StageLatency>, sqlx::Error> {
    sqlx::query_as(
        "select stage, percentile_cont(0.5) within group (order by ms) as p50_ms,
                percentile_cont(0.99) within group (order by ms) as p99_ms
         from (select 'form → generated' as stage, extract(epoch from generated_at - created_at) * 1000 as ms from matches where status = $1
               union all select 'generated → judged', extract(epoch from judged_at - generated_at) * 1000 from matches where status = $1
               union all select 'judged → settled', extract(epoch from settled_at - judged_at) * 1000 from matches where status = $1
               union all select 'formed → settled', extract(epoch from settled_at - created_at) * 1000 from matches where status = $1) x
         group by stage order by min(case stage when 'form → generated' then 1 when 'generated → judged' then 2
                                                when 'judged → settled' then 3 else 4 end)",
    )
    .bind(MatchStatus::Settled)
    .fetch_all(pool)
    .await
}

/// A match as lists on pages show it: who played and how it went.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MatchLine {
    pub id: MatchId,
    pub space: String,
    pub status: MatchStatus,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub settled_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Agent names, best first once ranked, joined by " · ".
    pub seats: String,
}

/// The newest matches, optionally of one Space, one status, or one agent.
pub async fn lines(
    pool: &PgPool,
    space: Option<&str>,
    status: Option<MatchStatus>,
    agent: Option<AgentId>,
    limit: i64,
) -> Result<Vec<MatchLine>, sqlx::Error> {
    sqlx::query_as(
        "select m.id, s.slug as space, m.status, m.created_at, m.settled_at,
                coalesce((select string_agg(a.name || coalesce(' (#' || ma.rank || ')', ''), ' · '
                                            order by coalesce(ma.rank, 99), ma.slot)
                          from match_agents ma join agents a on a.id = ma.agent_id where ma.match_id = m.id), '')
                  as seats
         from matches m join spaces s on s.id = m.space_id
         where ($1::text is null or s.slug = $1) and ($2::text is null or m.status = $2)
           and ($3::uuid is null or exists (select 1 from match_agents x where x.match_id = m.id and x.agent_id = $3))
         order by m.created_at desc limit $4",
    )
    .bind(space)
    .bind(status)
    .bind(agent)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Per Space: matches formed since `since`.
pub async fn formed_since(
    pool: &PgPool,
    since: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "select s.slug, count(*) from matches m join spaces s on s.id = m.space_id
         where m.created_at >= $1 group by s.slug",
    )
    .bind(since)
    .fetch_all(pool)
    .await
}

/// One point of an agent's rating history in a Space.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RatingPoint {
    pub space: String,
    pub settled_at: chrono::DateTime<chrono::Utc>,
    pub mu_after: f64,
}

/// An agent's rating after each settled match, oldest first (the newest
/// `limit` per agent).
pub async fn rating_history(pool: &PgPool, agent: AgentId, limit: i64) -> Result<Vec<RatingPoint>, sqlx::Error> {
    sqlx::query_as(
        "select * from (select s.slug as space, m.settled_at, ma.mu_after
                        from match_agents ma join matches m on m.id = ma.match_id join spaces s on s.id = m.space_id
                        where ma.agent_id = $1 and m.status = 'settled' and ma.mu_after is not null
                        order by m.settled_at desc limit $2) x
         order by settled_at",
    )
    .bind(agent)
    .bind(limit)
    .fetch_all(pool)
    .await
}
