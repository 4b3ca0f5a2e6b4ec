//! Agents and their immutable versions, and their entries in Spaces.

use super::StoreError;
use crate::domain::agent::AgentSampling;
use crate::domain::{AgentId, JobId, SpaceId, UserId};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

/// One new, immutable version of an agent. Every version names the base
/// model it runs on; `parent` and `training_job` record its lineage.
#[derive(Debug, Clone)]
pub struct NewAgentVersion<'a> {
    pub agent: AgentId,
    pub version: i32,
    pub base_model: &'a str,
    pub system_prompt: &'a str,
    pub sampling: &'a AgentSampling,
    pub adapter_sha256: Option<&'a str>,
    pub parent: Option<i32>,
    pub training_job: Option<JobId>,
    pub note: &'a str,
}

impl NewAgentVersion<'_> {
    /// Writes the version in the caller's transaction.
    pub async fn insert(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        sqlx::query(
            "insert into agent_versions
               (agent_id, version, base_model, system_prompt, sampling, adapter_sha256, parent_version,
                training_job_id, note)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(self.agent)
        .bind(self.version)
        .bind(self.base_model)
        .bind(self.system_prompt)
        .bind(serde_json::to_value(self.sampling).map_err(|e| StoreError::Internal(e.into()))?)
        .bind(self.adapter_sha256)
        .bind(self.parent)
        .bind(self.training_job)
        .bind(self.note)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// Inserts the agent row (its version 1 follows with `NewAgentVersion`).
pub async fn insert_agent(conn: &mut PgConnection, id: AgentId, owner: UserId, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("insert into agents (id, owner_id, name, current_version) values ($1, $2, $3, 1)")
        .bind(id)
        .bind(owner)
        .bind(name)
        .execute(conn)
        .await?;
    Ok(())
}

/// One of `owner`'s agents by name, compared without case.
pub async fn by_owner_and_name(pool: &PgPool, owner: UserId, name: &str) -> Result<Option<AgentId>, sqlx::Error> {
    sqlx::query_scalar("select id from agents where owner_id = $1 and lower(name) = lower($2)")
        .bind(owner)
        .bind(name)
        .fetch_optional(pool)
        .await
}

/// The agent's owner and current version, the row locked for the caller's
/// transaction (it serialises version and job changes of one agent).
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct AgentHead {
    pub owner_id: UserId,
    pub current_version: i32,
}

pub async fn lock(conn: &mut PgConnection, agent: AgentId) -> Result<Option<AgentHead>, sqlx::Error> {
    sqlx::query_as("select owner_id, current_version from agents where id = $1 for update")
        .bind(agent)
        .fetch_optional(conn)
        .await
}

/// The agent's owner, if the agent exists.
pub async fn owner(conn: &mut PgConnection, agent: AgentId) -> Result<Option<UserId>, sqlx::Error> {
    sqlx::query_scalar("select owner_id from agents where id = $1").bind(agent).fetch_optional(conn).await
}

/// What a version plays with.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VersionConfig {
    pub base_model: String,
    pub system_prompt: String,
    #[sqlx(json)]
    pub sampling: AgentSampling,
    pub adapter_sha256: Option<String>,
}

pub async fn version_config(
    conn: &mut PgConnection,
    agent: AgentId,
    version: i32,
) -> Result<Option<VersionConfig>, sqlx::Error> {
    sqlx::query_as(
        "select base_model, system_prompt, sampling, adapter_sha256 from agent_versions
         where agent_id = $1 and version = $2",
    )
    .bind(agent)
    .bind(version)
    .fetch_optional(conn)
    .await
}

/// The number the agent's next version gets: versions a training job
/// recorded but did not promote may lie above the current one.
pub async fn next_version(conn: &mut PgConnection, agent: AgentId) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("select coalesce(max(version), 0) + 1 from agent_versions where agent_id = $1")
        .bind(agent)
        .fetch_one(conn)
        .await
}

pub async fn version_exists(conn: &mut PgConnection, agent: AgentId, version: i32) -> Result<bool, sqlx::Error> {
    let found: Option<i32> =
        sqlx::query_scalar("select version from agent_versions where agent_id = $1 and version = $2")
            .bind(agent)
            .bind(version)
            .fetch_optional(conn)
            .await?;
    Ok(found.is_some())
}

pub async fn set_current(conn: &mut PgConnection, agent: AgentId, version: i32) -> Result<(), sqlx::Error> {
    sqlx::query("update agents set current_version = $2 where id = $1").bind(agent).bind(version).execute(conn).await?;
    Ok(())
}

/// Whether an adapter with this sha256 was uploaded.
pub async fn adapter_known(conn: &mut PgConnection, sha256: &str) -> Result<bool, sqlx::Error> {
    let known: Option<i32> =
        sqlx::query_scalar("select 1 from adapters where sha256 = $1").bind(sha256).fetch_optional(conn).await?;
    Ok(known.is_some())
}

/// An agent's public face.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AgentRow {
    pub id: AgentId,
    pub name: String,
    #[serde(skip)]
    pub owner_id: UserId,
    pub owner: String,
    pub current_version: i32,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Whether its versions may run on open workers the operator does not run.
    pub open_workers: bool,
}

/// Lets (or stops letting) an agent's versions run on open workers.
pub async fn set_open_workers(pool: &PgPool, agent: AgentId, open: bool) -> Result<(), sqlx::Error> {
    sqlx::query("update agents set open_workers = $2 where id = $1").bind(agent).bind(open).execute(pool).await?;
    Ok(())
}

/// One of an agent's entries, with its rating there.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EntryRow {
    pub space: String,
    pub active: bool,
    /// The Space version whose terms the player accepted by entering.
    pub accepted_version: i32,
    /// The Space's last version that changed its terms: an entry that
    /// accepted an earlier one waits until its player enters again.
    pub terms_version: i32,
    pub mu: f64,
    pub sigma: f64,
    pub matches: i32,
}

/// One version as its owner sees it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct VersionRow {
    pub version: i32,
    pub base_model: String,
    pub system_prompt: String,
    pub sampling: serde_json::Value,
    pub adapter_sha256: Option<String>,
    pub parent_version: Option<i32>,
    pub training_job_id: Option<JobId>,
    pub note: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

pub async fn agent(pool: &PgPool, agent: AgentId) -> Result<Option<AgentRow>, sqlx::Error> {
    sqlx::query_as(
        "select a.id, a.name, a.owner_id, u.username as owner, a.current_version, a.created_at, a.open_workers
         from agents a join users u on u.id = a.owner_id where a.id = $1",
    )
    .bind(agent)
    .fetch_optional(pool)
    .await
}

pub async fn entries(pool: &PgPool, agent: AgentId) -> Result<Vec<EntryRow>, sqlx::Error> {
    sqlx::query_as(
        "select s.slug as space, e.active, e.accepted_version, s.terms_version, e.mu, e.sigma, e.matches
         from entries e join spaces s on s.id = e.space_id
         where e.agent_id = $1 order by s.slug",
    )
    .bind(agent)
    .fetch_all(pool)
    .await
}

pub async fn versions(pool: &PgPool, agent: AgentId) -> Result<Vec<VersionRow>, sqlx::Error> {
    sqlx::query_as(
        "select version, base_model, system_prompt, sampling, adapter_sha256, parent_version, training_job_id,
                note, created_at
         from agent_versions where agent_id = $1 order by version desc",
    )
    .bind(agent)
    .fetch_all(pool)
    .await
}

/// `owner`'s agents, oldest first.
pub async fn of_owner(pool: &PgPool, owner: UserId) -> Result<Vec<AgentId>, sqlx::Error> {
    sqlx::query_scalar("select id from agents where owner_id = $1 order by created_at")
        .bind(owner)
        .fetch_all(pool)
        .await
}

/// A Space as an entry sees it.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct EntrySpace {
    pub id: SpaceId,
    pub active: bool,
}

/// A Space by slug for entering: its id and whether it is active.
pub async fn space_for_entry(conn: &mut PgConnection, slug: &str) -> Result<Option<EntrySpace>, sqlx::Error> {
    sqlx::query_as("select id, active from spaces where slug = $1").bind(slug).fetch_optional(conn).await
}

/// Enters the agent (or re-activates its entry) with the given rating.
pub async fn enter(
    conn: &mut PgConnection,
    agent: AgentId,
    space: SpaceId,
    owner: UserId,
    mu: f64,
    sigma: f64,
) -> Result<(), sqlx::Error> {
    // Entering accepts the Space's current version and its terms.
    sqlx::query(
        "insert into entries (agent_id, space_id, owner_id, mu, sigma, accepted_version)
         select $1, $2, $3, $4, $5, current_version from spaces where id = $2
         on conflict (agent_id, space_id) do update set active = true, accepted_version = excluded.accepted_version",
    )
    .bind(agent)
    .bind(space)
    .bind(owner)
    .bind(mu)
    .bind(sigma)
    .execute(conn)
    .await?;
    Ok(())
}

/// Enters the agent where it has no entry yet; one it has is left alone.
pub async fn enter_if_new(
    pool: &PgPool,
    agent: AgentId,
    owner: UserId,
    slug: &str,
    mu: f64,
    sigma: f64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into entries (agent_id, space_id, owner_id, mu, sigma, accepted_version)
         select $1, id, $2, $3, $4, current_version from spaces where slug = $5 on conflict do nothing",
    )
    .bind(agent)
    .bind(owner)
    .bind(mu)
    .bind(sigma)
    .bind(slug)
    .execute(pool)
    .await?;
    Ok(())
}

/// Withdraws the agent from a Space; false when it has no entry there.
pub async fn withdraw(conn: &mut PgConnection, agent: AgentId, slug: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update entries set active = false where agent_id = $1 and space_id = (select id from spaces where slug = $2)",
    )
    .bind(agent)
    .bind(slug)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// An agent among the best-rated in a Space.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TopAgent {
    pub agent_id: AgentId,
    pub name: String,
    pub owner: String,
    pub space: String,
    pub mu: f64,
    pub matches: i32,
}

/// The best-rated entries across active Spaces with at least `min_matches`.
pub async fn top(pool: &PgPool, min_matches: i32, limit: i64) -> Result<Vec<TopAgent>, sqlx::Error> {
    sqlx::query_as(
        "select a.id as agent_id, a.name, u.username as owner, s.slug as space, e.mu, e.matches
         from entries e join agents a on a.id = e.agent_id join users u on u.id = a.owner_id
         join spaces s on s.id = e.space_id
         where s.active and e.matches >= $1 order by e.mu desc, a.name limit $2",
    )
    .bind(min_matches)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// An owner's agents as (id, name), for forms that pick one.
pub async fn names_of_owner(pool: &PgPool, owner: UserId) -> Result<Vec<(AgentId, String)>, sqlx::Error> {
    sqlx::query_as("select id, name from agents where owner_id = $1 order by name").bind(owner).fetch_all(pool).await
}
