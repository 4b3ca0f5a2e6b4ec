//! Agents: a base model, a system prompt, sampling settings and an optional
//! adapter, in immutable versions; entering one into a Space.
//! An agent's versions (system prompt, settings, adapter) are private to its
//! owner; its name, owner and ratings are public.

use crate::auth::{Caller, MaybeCaller};
use crate::domain::{AgentName, Scope, parse_system_prompt};
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use agent_runtime::sampling::SamplingParams;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

/// Sampling an agent chooses; the Space sets the length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSampling {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub repetition_penalty: f32,
    pub stop: Vec<String>,
    pub seed: u64,
}

impl Default for AgentSampling {
    fn default() -> AgentSampling {
        let d = SamplingParams::default();
        AgentSampling {
            temperature: d.temperature,
            top_k: d.top_k,
            top_p: d.top_p,
            repetition_penalty: d.repetition_penalty,
            stop: Vec::new(),
            seed: 0,
        }
    }
}

impl AgentSampling {
    /// The runtime's parameters for one match.
    pub fn params(&self, max_new_tokens: usize, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            max_new_tokens,
            stop: self.stop.clone(),
            seed,
            ..SamplingParams::default()
        }
    }

    pub fn check(&self) -> Result<(), ApiError> {
        if self.stop.len() > 8 || self.stop.iter().any(|s| s.chars().count() > 64) {
            return Err(ApiError::invalid("sampling.stop", "at most 8 stop strings of at most 64 characters"));
        }
        self.params(1, 0).validate().map_err(|m| ApiError::invalid("sampling", m))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAgent {
    name: String,
    #[serde(default)]
    system_prompt: String,
    #[serde(default)]
    sampling: AgentSampling,
    #[serde(default)]
    adapter_sha256: Option<String>,
    /// The base model's sha256; the server's model when absent. A server
    /// runs one base model, so any other value is refused.
    #[serde(default)]
    base_model: Option<String>,
}

async fn check_adapter(conn: &mut PgConnection, sha: &Option<String>) -> Result<(), ApiError> {
    if let Some(sha) = sha {
        let known: Option<i32> =
            sqlx::query_scalar("select 1 from adapters where sha256 = $1").bind(sha).fetch_optional(&mut *conn).await?;
        if known.is_none() {
            return Err(ApiError::invalid("adapter_sha256", format!("no uploaded adapter has sha256 {sha}")));
        }
    }
    Ok(())
}

/// POST /api/v1/agents — an agent with its first version.
#[tracing::instrument(skip(state, body, caller), fields(user = %caller.username))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<NewAgent>,
) -> Result<HttpResponse, ApiError> {
    caller.write(&state, Scope::Play).await?;
    let name = AgentName::parse(&body.name)?;
    let system_prompt = parse_system_prompt(&body.system_prompt)?;
    body.sampling.check()?;
    if let Some(base) = &body.base_model
        && !base.eq_ignore_ascii_case(&state.base_model)
    {
        return Err(ApiError::invalid(
            "base_model",
            format!("this server runs one base model, sha256 {}; {base:?} is not it", state.base_model),
        ));
    }
    let mut tx = state.db.begin().await?;
    check_adapter(&mut tx, &body.adapter_sha256).await?;
    let id = Uuid::new_v4();
    sqlx::query("insert into agents (id, owner_id, name, current_version) values ($1, $2, $3, 1)")
        .bind(id)
        .bind(caller.user_id)
        .bind(name.as_str())
        .execute(&mut *tx)
        .await?;
    insert_version(
        &mut tx,
        id,
        1,
        &state.base_model,
        &system_prompt,
        &body.sampling,
        &body.adapter_sha256,
        None,
        None,
        "",
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::Created().json(agent_json(&state, id, Some(&caller)).await?))
}

#[allow(clippy::too_many_arguments)]
pub async fn insert_version(
    conn: &mut PgConnection,
    agent: Uuid,
    version: i32,
    base_model: &str,
    system_prompt: &str,
    sampling: &AgentSampling,
    adapter: &Option<String>,
    parent: Option<i32>,
    training_job: Option<Uuid>,
    note: &str,
) -> Result<(), ApiError> {
    sqlx::query(
        "insert into agent_versions
           (agent_id, version, base_model, system_prompt, sampling, adapter_sha256, parent_version, training_job_id, note)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(agent)
    .bind(version)
    .bind(base_model)
    .bind(system_prompt)
    .bind(serde_json::to_value(sampling).map_err(ApiError::internal)?)
    .bind(adapter)
    .bind(parent)
    .bind(training_job)
    .bind(note)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewVersion {
    #[serde(default)]
    system_prompt: Option<String>,
    #[serde(default)]
    sampling: Option<AgentSampling>,
    /// Some(None) removes the adapter; absent keeps it.
    #[serde(default, deserialize_with = "present")]
    adapter_sha256: Option<Option<String>>,
    #[serde(default)]
    note: String,
}

/// Tells a present `null` (Some(None)) from an absent key (None).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// The agent's owner (or an admin) or a 404: another user's agent is not
/// theirs to touch, and its existence is not confirmed to them.
async fn owned(conn: &mut PgConnection, caller: &Caller, agent: Uuid) -> Result<i32, ApiError> {
    let row: Option<(Uuid, i32)> =
        sqlx::query_as("select owner_id, current_version from agents where id = $1 for update")
            .bind(agent)
            .fetch_optional(&mut *conn)
            .await?;
    match row {
        Some((owner, current)) if owner == caller.user_id || caller.is_admin() => Ok(current),
        Some(_) => Err(ApiError::Forbidden("this agent belongs to another player".into())),
        None => Err(ApiError::NotFound("agent".into())),
    }
}

/// POST /api/v1/agents/{id}/versions — a new version from the current one.
pub async fn new_version(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    body: web::Json<NewVersion>,
) -> Result<HttpResponse, ApiError> {
    caller.write(&state, Scope::Play).await?;
    let agent = path.into_inner();
    let mut tx = state.db.begin().await?;
    let current = owned(&mut tx, &caller, agent).await?;
    let (system_prompt, sampling, adapter): (String, serde_json::Value, Option<String>) = sqlx::query_as(
        "select system_prompt, sampling, adapter_sha256 from agent_versions where agent_id = $1 and version = $2",
    )
    .bind(agent)
    .bind(current)
    .fetch_one(&mut *tx)
    .await?;
    let system_prompt = match &body.system_prompt {
        Some(p) => parse_system_prompt(p)?,
        None => system_prompt,
    };
    let sampling = match &body.sampling {
        Some(s) => {
            s.check()?;
            s.clone()
        }
        None => serde_json::from_value(sampling).map_err(ApiError::internal)?,
    };
    let adapter = body.adapter_sha256.clone().unwrap_or(adapter);
    check_adapter(&mut tx, &adapter).await?;
    if body.note.chars().count() > 500 {
        return Err(ApiError::invalid("note", "a note is at most 500 characters"));
    }
    // Versions a training job recorded but did not promote may lie above
    // the current one.
    let version: i32 = sqlx::query_scalar("select max(version) + 1 from agent_versions where agent_id = $1")
        .bind(agent)
        .fetch_one(&mut *tx)
        .await?;
    insert_version(
        &mut tx,
        agent,
        version,
        &state.base_model,
        &system_prompt,
        &sampling,
        &adapter,
        Some(current),
        None,
        &body.note,
    )
    .await?;
    sqlx::query("update agents set current_version = $2 where id = $1")
        .bind(agent)
        .bind(version)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(HttpResponse::Created().json(agent_json(&state, agent, Some(&caller)).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    version: i32,
}

/// POST /api/v1/agents/{id}/rollback — makes an earlier version current.
pub async fn rollback(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    body: web::Json<Rollback>,
) -> Result<HttpResponse, ApiError> {
    caller.write(&state, Scope::Play).await?;
    let agent = path.into_inner();
    let mut tx = state.db.begin().await?;
    owned(&mut tx, &caller, agent).await?;
    let exists: Option<i32> =
        sqlx::query_scalar("select version from agent_versions where agent_id = $1 and version = $2")
            .bind(agent)
            .bind(body.version)
            .fetch_optional(&mut *tx)
            .await?;
    if exists.is_none() {
        return Err(ApiError::invalid("version", format!("the agent has no version {}", body.version)));
    }
    sqlx::query("update agents set current_version = $2 where id = $1")
        .bind(agent)
        .bind(body.version)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(agent_json(&state, agent, Some(&caller)).await?))
}

/// An agent as `viewer` may see it: versions only for its owner and admins.
pub async fn agent_json(state: &AppState, agent: Uuid, viewer: Option<&Caller>) -> Result<serde_json::Value, ApiError> {
    let row: Option<(Uuid, String, Uuid, String, i32, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "select a.id, a.name, a.owner_id, u.username, a.current_version, a.created_at
         from agents a join users u on u.id = a.owner_id where a.id = $1",
    )
    .bind(agent)
    .fetch_optional(&state.db)
    .await?;
    let (id, name, owner_id, owner, current_version, created_at) =
        row.ok_or_else(|| ApiError::NotFound("agent".into()))?;
    let entries: Vec<(String, bool, f64, f64, i32)> = sqlx::query_as(
        "select s.slug, e.active, e.mu, e.sigma, e.matches from entries e join spaces s on s.id = e.space_id
         where e.agent_id = $1 order by s.slug",
    )
    .bind(agent)
    .fetch_all(&state.db)
    .await?;
    let entries: Vec<_> = entries
        .into_iter()
        .map(|(space, active, mu, sigma, matches)| {
            serde_json::json!({"space": space, "active": active, "mu": mu, "sigma": sigma,
                               "rating": crate::rating::display(mu), "matches": matches})
        })
        .collect();
    let mut value = serde_json::json!({
        "id": id, "name": name, "owner": owner, "current_version": current_version,
        "created_at": created_at, "entries": entries,
    });
    if viewer.is_some_and(|v| v.user_id == owner_id || v.is_admin()) {
        let versions: Vec<(
            i32,
            String,
            String,
            serde_json::Value,
            Option<String>,
            Option<i32>,
            Option<Uuid>,
            String,
            chrono::DateTime<chrono::Utc>,
        )> = sqlx::query_as(
            "select version, base_model, system_prompt, sampling, adapter_sha256, parent_version, training_job_id,
                        note, created_at
                 from agent_versions where agent_id = $1 order by version desc",
        )
        .bind(agent)
        .fetch_all(&state.db)
        .await?;
        value["versions"] = versions
            .into_iter()
            .map(|(version, base_model, system_prompt, sampling, adapter, parent, job, note, created_at)| {
                serde_json::json!({"version": version, "base_model": base_model, "system_prompt": system_prompt,
                    "sampling": sampling, "adapter_sha256": adapter, "parent_version": parent,
                    "training_job_id": job, "note": note, "created_at": created_at})
            })
            .collect();
    }
    Ok(value)
}

/// GET /api/v1/agents/{id}
pub async fn get(
    state: web::Data<AppState>,
    caller: MaybeCaller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(agent_json(&state, path.into_inner(), caller.0.as_ref()).await?))
}

/// GET /api/v1/agents — the caller's agents.
pub async fn mine(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Read)?;
    let ids: Vec<Uuid> = sqlx::query_scalar("select id from agents where owner_id = $1 order by created_at")
        .bind(caller.user_id)
        .fetch_all(&state.db)
        .await?;
    let mut list = Vec::with_capacity(ids.len());
    for id in ids {
        list.push(agent_json(&state, id, Some(&caller)).await?);
    }
    Ok(HttpResponse::Ok().json(list))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enter {
    space: String,
}

/// POST /api/v1/agents/{id}/entries — enter (or re-enter) a Space.
pub async fn enter(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    body: web::Json<Enter>,
) -> Result<HttpResponse, ApiError> {
    caller.write(&state, Scope::Play).await?;
    let agent = path.into_inner();
    let mut tx = state.db.begin().await?;
    owned(&mut tx, &caller, agent).await?;
    let space: Option<(Uuid, bool)> = sqlx::query_as("select id, active from spaces where slug = $1")
        .bind(&body.space)
        .fetch_optional(&mut *tx)
        .await?;
    let (space_id, active) = space.ok_or_else(|| ApiError::invalid("space", format!("no Space {:?}", body.space)))?;
    if !active {
        return Err(ApiError::invalid("space", format!("the Space {:?} is paused", body.space)));
    }
    let initial = crate::rating::initial();
    let owner: Uuid =
        sqlx::query_scalar("select owner_id from agents where id = $1").bind(agent).fetch_one(&mut *tx).await?;
    sqlx::query(
        "insert into entries (agent_id, space_id, owner_id, mu, sigma) values ($1, $2, $3, $4, $5)
         on conflict (agent_id, space_id) do update set active = true",
    )
    .bind(agent)
    .bind(space_id)
    .bind(owner)
    .bind(initial.rating)
    .bind(initial.uncertainty)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::Created().json(agent_json(&state, agent, Some(&caller)).await?))
}

/// DELETE /api/v1/agents/{id}/entries/{space} — withdraw from a Space; a
/// match already formed still finishes.
pub async fn withdraw(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(Uuid, String)>,
) -> Result<HttpResponse, ApiError> {
    caller.write(&state, Scope::Play).await?;
    let (agent, space) = path.into_inner();
    let mut tx = state.db.begin().await?;
    owned(&mut tx, &caller, agent).await?;
    let done = sqlx::query(
        "update entries set active = false where agent_id = $1 and space_id = (select id from spaces where slug = $2)",
    )
    .bind(agent)
    .bind(&space)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound(format!("entry in Space {space:?}")));
    }
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}
