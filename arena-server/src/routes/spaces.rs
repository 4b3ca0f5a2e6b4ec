//! Spaces: listing, publishing (every change is a new version), pausing,
//! versions, the leaderboard, and the preference-pair export.

use crate::auth::{Caller, MaybeCaller};
use crate::domain::Scope;
use crate::error::ApiError;
use crate::leaderboard;
use crate::space_store;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use std::collections::BTreeMap;
use uuid::Uuid;

/// GET /api/v1/spaces
pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(space_store::list(&state.db).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    /// The Space's TOML.
    source: String,
    /// Files the TOML names (prompt file, schemas), by relative path.
    #[serde(default)]
    files: BTreeMap<String, String>,
}

/// POST /api/v1/spaces — a new Space, or a new version of one's own.
/// The body may carry a Space's files (prompt files run to megabytes), so
/// it is read here with the Space limit rather than the API's 256 KiB.
#[tracing::instrument(skip(state, payload, caller), fields(user = %caller.username))]
pub async fn publish(
    state: web::Data<AppState>,
    caller: Caller,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    use futures_util::StreamExt;
    caller.write(&state, Scope::Design).await?;
    let limit = space_store::MAX_FILES_BYTES + 1024 * 1024;
    let mut bytes = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::Payload(e.to_string()))?;
        if bytes.len() + chunk.len() > limit {
            return Err(ApiError::Payload(format!(
                "a Space and its files are at most {} bytes",
                space_store::MAX_FILES_BYTES
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    let body: Publish =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::invalid("body", format!("malformed JSON body: {e}")))?;
    let published = space_store::publish(&state.db, &caller, &body.source, &body.files).await?;
    let status = if published.created { actix_web::http::StatusCode::CREATED } else { actix_web::http::StatusCode::OK };
    Ok(HttpResponse::build(status).json(published))
}

async fn space_id(state: &AppState, slug: &str) -> Result<(Uuid, Uuid), ApiError> {
    sqlx::query_as("select id, owner_id from spaces where slug = $1")
        .bind(slug)
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Space {slug:?}")))
}

/// GET /api/v1/spaces/{slug}
pub async fn get(state: web::Data<AppState>, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let row = space_store::by_slug(&state.db, &slug)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Space {:?}", slug.as_str())))?;
    let (source,): (String,) = sqlx::query_as("select source from space_versions where space_id = $1 and version = $2")
        .bind(row.id)
        .bind(row.current_version)
        .fetch_one(&state.db)
        .await?;
    let mut value = serde_json::to_value(&row).map_err(ApiError::internal)?;
    value["source"] = serde_json::Value::String(source);
    Ok(HttpResponse::Ok().json(value))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    active: bool,
}

/// PATCH /api/v1/spaces/{slug} — pause or resume matchmaking.
pub async fn patch(
    state: web::Data<AppState>,
    caller: Caller,
    slug: web::Path<String>,
    body: web::Json<Patch>,
) -> Result<HttpResponse, ApiError> {
    caller.write(&state, Scope::Design).await?;
    let (id, owner) = space_id(&state, &slug).await?;
    if owner != caller.user_id && !caller.is_admin() {
        return Err(ApiError::Forbidden("this Space belongs to another designer".into()));
    }
    sqlx::query("update spaces set active = $2 where id = $1").bind(id).bind(body.active).execute(&state.db).await?;
    get(state, slug).await
}

/// GET /api/v1/spaces/{slug}/versions
pub async fn versions(state: web::Data<AppState>, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (id, _) = space_id(&state, &slug).await?;
    let rows: Vec<(i32, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "select version, sha256, created_at from space_versions where space_id = $1 order by version desc",
    )
    .bind(id)
    .fetch_all(&state.db)
    .await?;
    let list: Vec<_> = rows
        .into_iter()
        .map(|(version, sha256, created_at)| serde_json::json!({"version": version, "sha256": sha256, "created_at": created_at}))
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

/// GET /api/v1/spaces/{slug}/versions/{version} — the TOML and its files.
pub async fn version(state: web::Data<AppState>, path: web::Path<(String, i32)>) -> Result<HttpResponse, ApiError> {
    let (slug, version) = path.into_inner();
    let (id, _) = space_id(&state, &slug).await?;
    let row: Option<(String, serde_json::Value, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "select source, files, sha256, created_at from space_versions where space_id = $1 and version = $2",
    )
    .bind(id)
    .bind(version)
    .fetch_optional(&state.db)
    .await?;
    let (source, files, sha256, created_at) = row.ok_or_else(|| ApiError::NotFound(format!("version {version}")))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "space": slug, "version": version, "sha256": sha256, "created_at": created_at,
        "source": source, "files": files,
    })))
}

/// GET /api/v1/spaces/{slug}/leaderboard
pub async fn leaderboard(state: web::Data<AppState>, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (id, _) = space_id(&state, &slug).await?;
    Ok(HttpResponse::Ok().json(leaderboard::get(&state, id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairsQuery {
    #[serde(default)]
    after: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    min_margin: Option<f64>,
}

/// GET /api/v1/spaces/{slug}/pairs — preference pairs as JSON Lines in TRL's
/// format (`prompt`, `chosen`, `rejected`, plus provenance), for buyers.
pub async fn pairs(
    state: web::Data<AppState>,
    caller: MaybeCaller,
    slug: web::Path<String>,
    query: web::Query<PairsQuery>,
) -> Result<HttpResponse, ApiError> {
    let caller = caller.0.ok_or(ApiError::Unauthenticated)?;
    caller.require(Scope::Export)?;
    let (id, _) = space_id(&state, &slug).await?;
    let limit = query.limit.unwrap_or(1000);
    if !(1..=100_000).contains(&limit) {
        return Err(ApiError::invalid("limit", "limit is 1..=100000"));
    }
    type PairLine = (Uuid, Uuid, String, String, String, f64, bool, Option<String>, chrono::DateTime<chrono::Utc>);
    let rows: Vec<PairLine> = sqlx::query_as(
        "select p.id, p.match_id, m.prompt, oc.text, orj.text, p.margin, p.consistent, p.license, p.created_at
             from pairs p
             join matches m on m.id = p.match_id
             join outputs oc on oc.match_id = p.match_id and oc.slot = p.chosen_slot
             join outputs orj on orj.match_id = p.match_id and orj.slot = p.rejected_slot
             where p.space_id = $1 and ($2::timestamptz is null or p.created_at > $2) and p.margin >= $3
             order by p.created_at, p.id limit $4",
    )
    .bind(id)
    .bind(query.after)
    .bind(query.min_margin.unwrap_or(0.0))
    .bind(limit)
    .fetch_all(&state.db)
    .await?;
    let mut body = String::new();
    for (pair_id, match_id, prompt, chosen, rejected, margin, consistent, license, created_at) in rows {
        let line = serde_json::json!({
            "prompt": prompt, "chosen": chosen, "rejected": rejected,
            "id": pair_id, "match_id": match_id, "space": slug.as_str(), "margin": margin,
            "consistent": consistent, "license": license, "created_at": created_at,
        });
        body.push_str(&line.to_string());
        body.push('\n');
    }
    Ok(HttpResponse::Ok().content_type("application/x-ndjson").body(body))
}
