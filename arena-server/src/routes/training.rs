//! Training from the API: an agent's policy per Space, jobs made by hand,
//! and each job's status, progress, curves and gate. Everything here is
//! private to the agent's owner (and admins).

use crate::auth::Caller;
use crate::domain::Scope;
use crate::error::ApiError;
use crate::space_store::SpaceCache;
use crate::state::AppState;
use crate::training::{self, JobSettings};
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

/// The agent's owner (or an admin), or a refusal that confirms nothing.
async fn check_owner(conn: &mut PgConnection, caller: &Caller, agent: Uuid) -> Result<(), ApiError> {
    let owner: Option<Uuid> =
        sqlx::query_scalar("select owner_id from agents where id = $1").bind(agent).fetch_optional(conn).await?;
    match owner {
        Some(owner) if owner == caller.user_id || caller.is_admin() => Ok(()),
        Some(_) => Err(ApiError::Forbidden("this agent belongs to another player".into())),
        None => Err(ApiError::NotFound("agent".into())),
    }
}

/// The Space by slug, where the agent is entered: (id, current version).
async fn entered_space(conn: &mut PgConnection, agent: Uuid, slug: &str) -> Result<(Uuid, i32), ApiError> {
    let row: Option<(Uuid, i32, bool)> = sqlx::query_as(
        "select s.id, s.current_version, e.agent_id is not null from spaces s
         left join entries e on e.space_id = s.id and e.agent_id = $1 where s.slug = $2",
    )
    .bind(agent)
    .bind(slug)
    .fetch_optional(conn)
    .await?;
    match row {
        None => Err(ApiError::invalid("space", format!("no Space {slug:?}"))),
        Some((_, _, false)) => Err(ApiError::invalid(
            "space",
            format!("the agent has never entered the Space {slug:?}; it has no pairs there"),
        )),
        Some((id, version, true)) => Ok((id, version)),
    }
}

fn settings_from(value: Option<serde_json::Value>) -> Result<JobSettings, ApiError> {
    let settings: JobSettings = match value {
        None => JobSettings::default(),
        Some(v) => serde_json::from_value(v).map_err(|e| ApiError::invalid("settings", e.to_string()))?,
    };
    settings.check()?;
    Ok(settings)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    /// `manual` or `every`.
    mode: String,
    #[serde(default)]
    every_pairs: Option<i32>,
    #[serde(default)]
    settings: Option<serde_json::Value>,
}

/// PUT /api/v1/agents/{id}/training/{space} — the agent's training policy there.
pub async fn set_policy(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(Uuid, String)>,
    body: web::Json<PolicyBody>,
) -> Result<HttpResponse, ApiError> {
    caller.write(&state, Scope::Play).await?;
    let (agent, slug) = path.into_inner();
    let body = body.into_inner();
    let every = match (body.mode.as_str(), body.every_pairs) {
        ("manual", None) => None,
        ("manual", Some(_)) => return Err(ApiError::invalid("every_pairs", "every_pairs goes with mode \"every\"")),
        ("every", Some(n)) if (1..=100_000).contains(&n) => Some(n),
        ("every", _) => return Err(ApiError::invalid("every_pairs", "mode \"every\" needs every_pairs in 1..=100000")),
        (other, _) => {
            return Err(ApiError::invalid("mode", format!("mode {other:?} is not one of \"manual\", \"every\"")));
        }
    };
    let settings = settings_from(body.settings)?;
    let mut tx = state.db.begin().await?;
    check_owner(&mut tx, &caller, agent).await?;
    let (space_id, _) = entered_space(&mut tx, agent, &slug).await?;
    sqlx::query(
        "insert into training_policies (agent_id, space_id, mode, every_pairs, settings) values ($1, $2, $3, $4, $5)
         on conflict (agent_id, space_id) do update
         set mode = excluded.mode, every_pairs = excluded.every_pairs, settings = excluded.settings, updated_at = now()",
    )
    .bind(agent)
    .bind(space_id)
    .bind(&body.mode)
    .bind(every)
    .bind(serde_json::to_value(&settings).map_err(ApiError::internal)?)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "agent": agent, "space": slug, "mode": body.mode, "every_pairs": every, "settings": settings,
    })))
}

/// GET /api/v1/agents/{id}/training — policies and jobs, newest first.
pub async fn overview(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Read)?;
    let agent = path.into_inner();
    let mut conn = state.db.acquire().await?;
    check_owner(&mut conn, &caller, agent).await?;
    let policies: Vec<(String, String, Option<i32>, serde_json::Value)> = sqlx::query_as(
        "select s.slug, tp.mode, tp.every_pairs, tp.settings from training_policies tp
         join spaces s on s.id = tp.space_id where tp.agent_id = $1 order by s.slug",
    )
    .bind(agent)
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<Uuid> =
        sqlx::query_scalar("select id from training_jobs where agent_id = $1 order by created_at desc limit 100")
            .bind(agent)
            .fetch_all(&mut *conn)
            .await?;
    let mut jobs = Vec::with_capacity(ids.len());
    for id in ids {
        jobs.push(job_json(&mut conn, id, false).await?);
    }
    let policies: Vec<_> = policies
        .into_iter()
        .map(|(space, mode, every, settings)| {
            serde_json::json!({"space": space, "mode": mode, "every_pairs": every, "settings": settings})
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({"policies": policies, "jobs": jobs})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobBody {
    space: String,
    /// Absent: the agent's policy settings for the Space, or the defaults.
    #[serde(default)]
    settings: Option<serde_json::Value>,
}

/// POST /api/v1/agents/{id}/training-jobs — train now.
pub async fn start(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    body: web::Json<JobBody>,
) -> Result<HttpResponse, ApiError> {
    caller.write(&state, Scope::Play).await?;
    let agent = path.into_inner();
    let body = body.into_inner();
    let explicit = body.settings.is_some();
    let mut settings = settings_from(body.settings)?;
    let mut tx = state.db.begin().await?;
    check_owner(&mut tx, &caller, agent).await?;
    let (space_id, version) = entered_space(&mut tx, agent, &body.space).await?;
    if !explicit {
        let policy: Option<serde_json::Value> =
            sqlx::query_scalar("select settings from training_policies where agent_id = $1 and space_id = $2")
                .bind(agent)
                .bind(space_id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(policy) = policy {
            settings = serde_json::from_value(policy).map_err(ApiError::internal)?;
        }
    }
    let space = SpaceCache::new(&state.data_dir).get(&state.db, space_id, version).await.map_err(ApiError::internal)?;
    let id = training::create_job(&mut tx, agent, space_id, &space, version, &settings, "manual").await?;
    tx.commit().await?;
    if let Err(err) = crate::pipeline::flush_outbox(&state.db, &state.redis).await {
        tracing::warn!(error = %err, "outbox relay failed; the reconciler will hand the job over");
    }
    let mut conn = state.db.acquire().await?;
    Ok(HttpResponse::Accepted().json(job_json(&mut conn, id, true).await?))
}

/// GET /api/v1/training-jobs/{id} — status, progress, curves, gate.
pub async fn get(state: web::Data<AppState>, caller: Caller, path: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Read)?;
    let id = path.into_inner();
    let mut conn = state.db.acquire().await?;
    let agent: Option<Uuid> = sqlx::query_scalar("select agent_id from training_jobs where id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let agent = agent.ok_or_else(|| ApiError::NotFound("training job".into()))?;
    // Another player's job is not confirmed to exist.
    check_owner(&mut conn, &caller, agent).await.map_err(|e| match e {
        ApiError::Forbidden(_) => ApiError::NotFound("training job".into()),
        other => other,
    })?;
    Ok(HttpResponse::Ok().json(job_json(&mut conn, id, true).await?))
}

#[derive(sqlx::FromRow)]
struct JobRow {
    agent_id: Uuid,
    slug: String,
    parent_version: i32,
    trigger: String,
    settings: serde_json::Value,
    pairs: i32,
    status: String,
    step: i32,
    steps: Option<i32>,
    adapter_sha256: Option<String>,
    manifest: Option<serde_json::Value>,
    gate: Option<serde_json::Value>,
    new_version: Option<i32>,
    error: Option<String>,
    attempts: i32,
    created_at: chrono::DateTime<chrono::Utc>,
    started_at: Option<chrono::DateTime<chrono::Utc>>,
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A job as its owner sees it; `full` adds the curves, the gate's games and
/// the manifest.
async fn job_json(conn: &mut PgConnection, id: Uuid, full: bool) -> Result<serde_json::Value, ApiError> {
    let j: JobRow = sqlx::query_as(
        "select j.agent_id, s.slug, j.parent_version, j.trigger, j.settings, cardinality(j.pair_ids) as pairs,
                j.status, j.step, j.steps, j.adapter_sha256, j.manifest, j.gate, j.new_version, j.error, j.attempts,
                j.created_at, j.started_at, j.finished_at
         from training_jobs j join spaces s on s.id = j.space_id where j.id = $1",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    let mut value = serde_json::json!({
        "id": id, "agent": j.agent_id, "space": j.slug, "parent_version": j.parent_version, "trigger": j.trigger,
        "settings": j.settings, "pairs": j.pairs, "status": j.status,
        "progress": {"step": j.step, "steps": j.steps},
        "adapter_sha256": j.adapter_sha256, "new_version": j.new_version, "error": j.error, "attempts": j.attempts,
        "created_at": j.created_at, "started_at": j.started_at, "finished_at": j.finished_at,
    });
    let mut gate = j.gate;
    if !full {
        // The summary keeps the decision, not the games.
        if let Some(g) = gate.as_mut().and_then(|g| g.as_object_mut()) {
            g.remove("games");
        }
    }
    value["gate"] = gate.unwrap_or(serde_json::Value::Null);
    if full {
        let curve: Vec<serde_json::Value> =
            sqlx::query_scalar("select metrics from training_metrics where job_id = $1 order by step")
                .bind(id)
                .fetch_all(&mut *conn)
                .await?;
        value["metrics"] = serde_json::Value::Array(curve);
        value["manifest"] = j.manifest.unwrap_or(serde_json::Value::Null);
    }
    Ok(value)
}
