//! Agents: a base model, a system prompt, sampling settings and an optional
//! adapter, in immutable versions; entering one into a Space.
//! An agent's versions (system prompt, settings, adapter) are private to its
//! owner; its name, owner and ratings are public.

use crate::context::Context;
use crate::domain::AgentId;
use crate::domain::agent::{AgentName, AgentSampling, parse_note, parse_system_prompt};
use crate::domain::rating;
use crate::domain::user::Scope;
use crate::http::auth::{Caller, MaybeCaller};
use crate::http::error::ApiError;
use crate::store::agents::{self, NewAgentVersion};
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use sqlx::PgConnection;

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
    if let Some(sha) = sha
        && !agents::adapter_known(conn, sha).await?
    {
        return Err(ApiError::invalid("adapter_sha256", format!("no uploaded adapter has sha256 {sha}")));
    }
    Ok(())
}

/// POST /api/v1/agents — an agent with its first version.
#[tracing::instrument(skip(state, body, caller), fields(user = %caller.username))]
pub async fn create(
    state: web::Data<Context>,
    caller: Caller,
    body: web::Json<NewAgent>,
) -> Result<HttpResponse, ApiError> {
    let id = create_agent(&state, &caller, body.into_inner()).await?;
    Ok(HttpResponse::Created().json(agent_json(&state, id, Some(&caller)).await?))
}

impl NewAgent {
    /// An agent as the agent builder page sends it.
    pub fn new(
        name: String,
        system_prompt: String,
        sampling: AgentSampling,
        adapter_sha256: Option<String>,
    ) -> NewAgent {
        NewAgent { name, system_prompt, sampling, adapter_sha256, base_model: None }
    }
}

/// Makes an agent with its first version, as the API and the agent builder
/// do it; its id.
pub async fn create_agent(state: &Context, caller: &Caller, body: NewAgent) -> Result<AgentId, ApiError> {
    caller.write(state, Scope::Play).await?;
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
    let id = AgentId::new();
    agents::insert_agent(&mut tx, id, caller.user_id, name.as_str()).await?;
    NewAgentVersion {
        agent: id,
        version: 1,
        base_model: &state.base_model,
        system_prompt: &system_prompt,
        sampling: &body.sampling,
        adapter_sha256: body.adapter_sha256.as_deref(),
        parent: None,
        training_job: None,
        note: "",
    }
    .insert(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(id)
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
async fn owned(conn: &mut PgConnection, caller: &Caller, agent: AgentId) -> Result<i32, ApiError> {
    match agents::lock(conn, agent).await? {
        Some(head) if head.owner_id == caller.user_id || caller.is_admin() => Ok(head.current_version),
        // Another player's agent is not confirmed to exist.
        Some(_) | None => Err(ApiError::NotFound("agent".into())),
    }
}

/// POST /api/v1/agents/{id}/versions — a new version from the current one.
pub async fn new_version(
    state: web::Data<Context>,
    caller: Caller,
    path: web::Path<AgentId>,
    body: web::Json<NewVersion>,
) -> Result<HttpResponse, ApiError> {
    let agent = path.into_inner();
    make_version(&state, &caller, agent, body.into_inner()).await?;
    Ok(HttpResponse::Created().json(agent_json(&state, agent, Some(&caller)).await?))
}

impl NewVersion {
    /// A version as the agent's page sends it: every field given (the
    /// adapter kept, replaced, or removed with `Some(None)`).
    pub fn new(
        system_prompt: String,
        sampling: AgentSampling,
        adapter_sha256: Option<Option<String>>,
        note: String,
    ) -> NewVersion {
        NewVersion { system_prompt: Some(system_prompt), sampling: Some(sampling), adapter_sha256, note }
    }
}

/// A new version from the current one with `body`'s changes, made current,
/// as the API and the agent's page do it.
pub async fn make_version(state: &Context, caller: &Caller, agent: AgentId, body: NewVersion) -> Result<(), ApiError> {
    caller.write(state, Scope::Play).await?;
    let mut tx = state.db.begin().await?;
    let current = owned(&mut tx, caller, agent).await?;
    let was =
        agents::version_config(&mut tx, agent, current).await?.ok_or_else(|| ApiError::NotFound("version".into()))?;
    let system_prompt = match &body.system_prompt {
        Some(p) => parse_system_prompt(p)?,
        None => was.system_prompt,
    };
    let sampling = match &body.sampling {
        Some(s) => {
            s.check()?;
            s.clone()
        }
        None => was.sampling,
    };
    let adapter = body.adapter_sha256.clone().unwrap_or(was.adapter_sha256);
    check_adapter(&mut tx, &adapter).await?;
    let note = parse_note(&body.note)?;
    // Versions a training job recorded but did not promote may lie above
    // the current one.
    let version = agents::next_version(&mut tx, agent).await?;
    NewAgentVersion {
        agent,
        version,
        base_model: &state.base_model,
        system_prompt: &system_prompt,
        sampling: &sampling,
        adapter_sha256: adapter.as_deref(),
        parent: Some(current),
        training_job: None,
        note: &note,
    }
    .insert(&mut tx)
    .await?;
    agents::set_current(&mut tx, agent, version).await?;
    tx.commit().await?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    version: i32,
}

/// POST /api/v1/agents/{id}/rollback — makes an earlier version current.
pub async fn rollback(
    state: web::Data<Context>,
    caller: Caller,
    path: web::Path<AgentId>,
    body: web::Json<Rollback>,
) -> Result<HttpResponse, ApiError> {
    let agent = path.into_inner();
    roll_back(&state, &caller, agent, body.version).await?;
    Ok(HttpResponse::Ok().json(agent_json(&state, agent, Some(&caller)).await?))
}

/// Makes `version` the agent's current one (its owner or an admin).
pub async fn roll_back(state: &Context, caller: &Caller, agent: AgentId, version: i32) -> Result<(), ApiError> {
    caller.write(state, Scope::Play).await?;
    let mut tx = state.db.begin().await?;
    owned(&mut tx, caller, agent).await?;
    if !agents::version_exists(&mut tx, agent, version).await? {
        return Err(ApiError::invalid("version", format!("the agent has no version {version}")));
    }
    agents::set_current(&mut tx, agent, version).await?;
    tx.commit().await?;
    Ok(())
}

/// An agent as `viewer` may see it: versions only for its owner and admins.
pub async fn agent_json(
    state: &Context,
    agent: AgentId,
    viewer: Option<&Caller>,
) -> Result<serde_json::Value, ApiError> {
    let row = agents::agent(&state.db, agent).await?.ok_or_else(|| ApiError::NotFound("agent".into()))?;
    let entries: Vec<_> = agents::entries(&state.db, agent)
        .await?
        .into_iter()
        .map(|e| {
            let waiting = e.accepted_version < e.terms_version;
            serde_json::json!({"space": e.space, "active": e.active, "mu": e.mu, "sigma": e.sigma,
                               "rating": rating::display(e.mu), "matches": e.matches,
                               "accepted_version": e.accepted_version,
                               "paused": waiting.then(|| format!(
                                   "the Space changed its terms in version {}; enter again to accept them",
                                   e.terms_version))})
        })
        .collect();
    let mut value = serde_json::json!({
        "id": row.id, "name": row.name, "owner": row.owner, "current_version": row.current_version,
        "created_at": row.created_at, "entries": entries,
    });
    if viewer.is_some_and(|v| v.user_id == row.owner_id || v.is_admin()) {
        value["open_workers"] = serde_json::json!(row.open_workers);
        value["versions"] =
            serde_json::to_value(agents::versions(&state.db, agent).await?).map_err(ApiError::internal)?;
    }
    Ok(value)
}

/// GET /api/v1/agents/{id}
pub async fn get(
    state: web::Data<Context>,
    caller: MaybeCaller,
    path: web::Path<AgentId>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(agent_json(&state, path.into_inner(), caller.0.as_ref()).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentPatch {
    open_workers: bool,
}

/// PATCH /api/v1/agents/{id} — whether the agent's versions may run on
/// open workers (machines the operator does not run, which then see its
/// system prompt and adapter).
pub async fn patch(
    state: web::Data<Context>,
    caller: Caller,
    path: web::Path<AgentId>,
    body: web::Json<AgentPatch>,
) -> Result<HttpResponse, ApiError> {
    let agent = path.into_inner();
    set_open_workers(&state, &caller, agent, body.open_workers).await?;
    Ok(HttpResponse::Ok().json(agent_json(&state, agent, Some(&caller)).await?))
}

/// Sets an agent's open-workers choice, for its owner (or an admin).
pub async fn set_open_workers(state: &Context, caller: &Caller, agent: AgentId, open: bool) -> Result<(), ApiError> {
    caller.write(state, Scope::Play).await?;
    let row = agents::agent(&state.db, agent).await?.ok_or_else(|| ApiError::NotFound("agent".into()))?;
    if row.owner_id != caller.user_id && !caller.is_admin() {
        return Err(ApiError::NotFound("agent".into()));
    }
    agents::set_open_workers(&state.db, agent, open).await?;
    Ok(())
}

/// GET /api/v1/agents — the caller's agents.
pub async fn mine(state: web::Data<Context>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Read)?;
    let ids = agents::of_owner(&state.db, caller.user_id).await?;
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
    state: web::Data<Context>,
    caller: Caller,
    path: web::Path<AgentId>,
    body: web::Json<Enter>,
) -> Result<HttpResponse, ApiError> {
    let agent = path.into_inner();
    enter_space(&state, &caller, agent, &body.space).await?;
    Ok(HttpResponse::Created().json(agent_json(&state, agent, Some(&caller)).await?))
}

/// Enters (or re-enters, accepting the Space's current terms) an agent.
pub async fn enter_space(state: &Context, caller: &Caller, agent: AgentId, slug: &str) -> Result<(), ApiError> {
    caller.write(state, Scope::Play).await?;
    let mut tx = state.db.begin().await?;
    owned(&mut tx, caller, agent).await?;
    let space = agents::space_for_entry(&mut tx, slug).await?;
    let space = space.ok_or_else(|| ApiError::invalid("space", format!("no Space {slug:?}")))?;
    let (space_id, active) = (space.id, space.active);
    if !active {
        return Err(ApiError::invalid("space", format!("the Space {slug:?} is paused")));
    }
    let initial = rating::initial();
    let owner = agents::owner(&mut tx, agent).await?.ok_or_else(|| ApiError::NotFound("agent".into()))?;
    agents::enter(&mut tx, agent, space_id, owner, initial.rating, initial.uncertainty).await?;
    tx.commit().await?;
    Ok(())
}

/// DELETE /api/v1/agents/{id}/entries/{space} — withdraw from a Space; a
/// match already formed still finishes.
pub async fn withdraw(
    state: web::Data<Context>,
    caller: Caller,
    path: web::Path<(AgentId, String)>,
) -> Result<HttpResponse, ApiError> {
    let (agent, space) = path.into_inner();
    leave_space(&state, &caller, agent, &space).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Withdraws an agent from a Space; a match already formed still finishes.
pub async fn leave_space(state: &Context, caller: &Caller, agent: AgentId, space: &str) -> Result<(), ApiError> {
    caller.write(state, Scope::Play).await?;
    let mut tx = state.db.begin().await?;
    owned(&mut tx, caller, agent).await?;
    if !agents::withdraw(&mut tx, agent, space).await? {
        return Err(ApiError::NotFound(format!("entry in Space {space:?}")));
    }
    tx.commit().await?;
    Ok(())
}
