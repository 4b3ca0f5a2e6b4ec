//! Training from the API: an agent's policy per Space, jobs made by hand,
//! and each job's status, progress, curves and gate. Everything here is
//! private to the agent's owner (and admins).

use crate::context::Context;
use crate::domain::training::{JobSettings, TrainingPolicy};
use crate::domain::user::Scope;
use crate::domain::{AgentId, JobId, JobTrigger};
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::store::{agents, training};
use crate::work::relay;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use sqlx::PgConnection;

/// The agent's owner (or an admin), or a refusal that confirms nothing.
async fn check_owner(conn: &mut PgConnection, caller: &Caller, agent: AgentId) -> Result<(), ApiError> {
    match agents::owner(conn, agent).await? {
        Some(owner) if owner == caller.user_id || caller.is_admin() => Ok(()),
        // Another player's agent is not confirmed to exist.
        Some(_) | None => Err(ApiError::NotFound("agent".into())),
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
    state: web::Data<Context>,
    caller: Caller,
    path: web::Path<(AgentId, String)>,
    body: web::Json<PolicyBody>,
) -> Result<HttpResponse, ApiError> {
    let (agent, slug) = path.into_inner();
    let body = body.into_inner();
    let policy = TrainingPolicy::parse(&body.mode, body.every_pairs)?;
    let settings = settings_from(body.settings)?;
    set_training_policy(&state, &caller, agent, &slug, policy, &settings).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "agent": agent, "space": slug, "mode": policy.mode(), "every_pairs": policy.every_pairs(), "settings": settings,
    })))
}

/// Sets an agent's training policy in a Space with the settings its jobs
/// will use, as the API and the agent's page do.
pub async fn set_training_policy(
    state: &Context,
    caller: &Caller,
    agent: AgentId,
    slug: &str,
    policy: TrainingPolicy,
    settings: &JobSettings,
) -> Result<(), ApiError> {
    caller.write(state, Scope::Play).await?;
    settings.check()?;
    let mut tx = state.db.begin().await?;
    check_owner(&mut tx, caller, agent).await?;
    let (space_id, _) = training::entered_space(&mut tx, agent, slug).await?;
    training::set_policy(&mut tx, agent, space_id, policy.mode(), policy.every_pairs(), settings).await?;
    tx.commit().await?;
    Ok(())
}

/// GET /api/v1/agents/{id}/training — policies and jobs, newest first.
pub async fn overview(
    state: web::Data<Context>,
    caller: Caller,
    path: web::Path<AgentId>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Read)?;
    let agent = path.into_inner();
    let mut conn = state.db.acquire().await?;
    check_owner(&mut conn, &caller, agent).await?;
    let policies = training::policies(&mut conn, agent).await?;
    let ids = training::jobs_of(&mut conn, agent).await?;
    let mut jobs = Vec::with_capacity(ids.len());
    for id in ids {
        jobs.push(job_json(&mut conn, id, false).await?);
    }
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
    state: web::Data<Context>,
    caller: Caller,
    path: web::Path<AgentId>,
    body: web::Json<JobBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let settings = body.settings.map(|v| settings_from(Some(v))).transpose()?;
    let id = start_job(&state, &caller, path.into_inner(), &body.space, settings).await?;
    let mut conn = state.db.acquire().await?;
    Ok(HttpResponse::Accepted().json(job_json(&mut conn, id, true).await?))
}

/// Makes a training job now, as the API and the agent's page do: priced,
/// pinned to the agent's current version and pairs; its id.
pub async fn start_job(
    state: &Context,
    caller: &Caller,
    agent: AgentId,
    space: &str,
    settings: Option<JobSettings>,
) -> Result<JobId, ApiError> {
    caller.write(state, Scope::Play).await?;
    let explicit = settings.is_some();
    let mut settings = settings.unwrap_or_default();
    settings.check()?;
    let mut tx = state.db.begin().await?;
    check_owner(&mut tx, caller, agent).await?;
    let (space_id, version) = training::entered_space(&mut tx, agent, space).await?;
    if !explicit && let Some(policy) = training::policy_settings(&mut tx, agent, space_id).await? {
        settings = serde_json::from_value(policy).map_err(ApiError::internal)?;
    }
    let space = state.spaces.get(&state.db, space_id, version).await.map_err(ApiError::internal)?;
    let place = training::JobPlace {
        space_id,
        space: &space,
        space_version: version,
        credits_per_mtoken: state.settings.training_credits_per_mtoken,
    };
    let id = training::create_job(&mut tx, agent, place, &settings, JobTrigger::Manual).await?;
    tx.commit().await?;
    if let Err(err) = relay::flush_outbox(state).await {
        tracing::warn!(error = %err, "outbox relay failed; the reconciler will hand the job over");
    }
    Ok(id)
}

/// GET /api/v1/training-jobs/{id} — status, progress, curves, gate.
pub async fn get(state: web::Data<Context>, caller: Caller, path: web::Path<JobId>) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Read)?;
    let id = path.into_inner();
    let mut conn = state.db.acquire().await?;
    let agent = training::job_agent(&mut conn, id).await?.ok_or_else(|| ApiError::NotFound("training job".into()))?;
    // Another player's job is not confirmed to exist.
    check_owner(&mut conn, &caller, agent).await.map_err(|e| match e {
        ApiError::Forbidden(_) => ApiError::NotFound("training job".into()),
        other => other,
    })?;
    Ok(HttpResponse::Ok().json(job_json(&mut conn, id, true).await?))
}

/// A job as its owner sees it; `full` adds the curves, the gate's games and
/// the manifest.
pub async fn job_json(conn: &mut PgConnection, id: JobId, full: bool) -> Result<serde_json::Value, ApiError> {
    let j = training::job(&mut *conn, id).await?;
    let mut value = serde_json::json!({
        "id": id, "agent": j.agent_id, "space": j.slug, "parent_version": j.parent_version, "trigger": j.trigger,
        "settings": j.settings, "pairs": j.pairs, "status": j.status, "price": j.price,
        "token_budget": j.token_budget,
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
        let curve = training::metrics(&mut *conn, id).await?;
        value["metrics"] = serde_json::Value::Array(curve);
        value["manifest"] = j.manifest.unwrap_or(serde_json::Value::Null);
    }
    Ok(value)
}
