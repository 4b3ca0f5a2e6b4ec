//! Spaces: listing, publishing (every change is a new version), pausing,
//! versions, the leaderboard, and the preference-pair export.

use crate::context::Context;
use crate::domain::user::Scope;
use crate::domain::{SpaceId, UserId};
use crate::http::auth::{Caller, MaybeCaller};
use crate::http::error::ApiError;
use crate::http::leaderboard;
use crate::store::{pairs as pair_store, spaces as space_store};
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use std::collections::BTreeMap;

/// GET /api/v1/spaces
pub async fn list(state: web::Data<Context>) -> Result<HttpResponse, ApiError> {
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
#[tracing::instrument(skip(state, req, payload, caller), fields(user = %caller.username))]
pub async fn publish(
    state: web::Data<Context>,
    caller: Caller,
    req: actix_web::HttpRequest,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    use futures_util::StreamExt;
    caller.write(&state, Scope::Design).await?;
    let json = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")));
    if !json {
        return Err(ApiError::MediaType("send the Space as JSON (Content-Type: application/json)".into()));
    }
    let limit = judge::files::MAX_FILES_BYTES + 1024 * 1024;
    let mut bytes = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::Payload(e.to_string()))?;
        if bytes.len() + chunk.len() > limit {
            return Err(ApiError::Payload(format!(
                "a Space and its files are at most {} bytes",
                judge::files::MAX_FILES_BYTES
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    let body: Publish =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::invalid("body", format!("malformed JSON body: {e}")))?;
    let published = publish_space(&state, &caller, &body.source, &body.files).await?;
    let status = if published.created { actix_web::http::StatusCode::CREATED } else { actix_web::http::StatusCode::OK };
    Ok(HttpResponse::build(status).json(published))
}

/// Publishes `source` with `files` as `caller` — a new Space, or the next
/// version of their own (an admin's: any) — within their storage quota, as
/// the API and the studio's three publishing forms do it. The caller's
/// write is counted (`Caller::write`) before: the API counts it before it
/// reads the body.
pub async fn publish_space(
    state: &Context,
    caller: &Caller,
    source: &str,
    files: &BTreeMap<String, String>,
) -> Result<space_store::Published, ApiError> {
    caller.require(Scope::Design)?;
    Ok(space_store::publish(&state.db, caller.publisher(state.settings.storage_quota_bytes), source, files).await?)
}

async fn space_id(state: &Context, slug: &str) -> Result<(SpaceId, UserId), ApiError> {
    let space = space_store::id_and_owner(&state.db, slug).await?;
    space.map(|s| (s.id, s.owner_id)).ok_or_else(|| ApiError::NotFound(format!("Space {slug:?}")))
}

/// GET /api/v1/spaces/{slug}
pub async fn get(state: web::Data<Context>, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let row = space_store::by_slug(&state.db, &slug)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Space {:?}", slug.as_str())))?;
    let source = space_store::source(&state.db, row.id, row.current_version).await?;
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
    state: web::Data<Context>,
    caller: Caller,
    slug: web::Path<String>,
    body: web::Json<Patch>,
) -> Result<HttpResponse, ApiError> {
    caller.write(&state, Scope::Design).await?;
    let (id, owner) = space_id(&state, &slug).await?;
    if owner != caller.user_id && !caller.is_admin() {
        return Err(ApiError::Forbidden("this Space belongs to another designer".into()));
    }
    space_store::set_active(&state.db, id, body.active).await?;
    get(state, slug).await
}

/// GET /api/v1/spaces/{slug}/versions
pub async fn versions(state: web::Data<Context>, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (id, _) = space_id(&state, &slug).await?;
    Ok(HttpResponse::Ok().json(space_store::versions(&state.db, id).await?))
}

/// GET /api/v1/spaces/{slug}/versions/{version} — the TOML and its files.
pub async fn version(state: web::Data<Context>, path: web::Path<(String, i32)>) -> Result<HttpResponse, ApiError> {
    let (slug, version) = path.into_inner();
    let (id, _) = space_id(&state, &slug).await?;
    let v = space_store::version(&state.db, id, version)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("version {version}")))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "space": slug, "version": version, "sha256": v.sha256, "created_at": v.created_at,
        "source": v.source, "files": v.files,
    })))
}

/// GET /api/v1/spaces/{slug}/analytics — the Space's live numbers, for its
/// designer and admins (anyone else: not found).
pub async fn analytics(
    state: web::Data<Context>,
    caller: Caller,
    slug: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Design)?;
    let (id, owner) = space_id(&state, &slug).await?;
    if owner != caller.user_id && !caller.is_admin() {
        return Err(ApiError::NotFound(format!("Space {:?}", slug.as_str())));
    }
    Ok(HttpResponse::Ok().json(crate::store::analytics::of_space(&state.db, id).await?))
}

/// GET /api/v1/spaces/{slug}/leaderboard
pub async fn leaderboard(state: web::Data<Context>, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
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
    state: web::Data<Context>,
    caller: MaybeCaller,
    slug: web::Path<String>,
    query: web::Query<PairsQuery>,
) -> Result<HttpResponse, ApiError> {
    let caller = caller.0.ok_or(ApiError::Unauthenticated)?;
    caller.require(Scope::Export)?;
    let (id, _) = space_id(&state, &slug).await?;
    if !super::data::free_spaces(&state).await?.contains(&*slug) {
        let price =
            space_store::data_terms(&state.db).await?.into_iter().find(|(_, s, _, _)| *s == *slug).map_or(0, |t| t.3);
        return Err(ApiError::PaymentRequired(if price > 0 {
            format!(
                "Space {:?} sells its pairs at {price} credits each: buy an export (POST /api/v1/data/exports)",
                slug.as_str()
            )
        } else {
            format!(
                "Space {:?} is private: its pairs are sold only as an export (POST /api/v1/data/exports)",
                slug.as_str()
            )
        }));
    }
    let limit = query.limit.unwrap_or(1000);
    if !(1..=100_000).contains(&limit) {
        return Err(ApiError::invalid("limit", "limit is 1..=100000"));
    }
    // Streamed: rows go out as PostgreSQL sends them, through a small
    // bounded channel, so an export of 100,000 pairs is never in memory.
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(pair_store::export_to(state.db.clone(), id, query.after, query.min_margin.unwrap_or(0.0), limit, tx));
    let slug = slug.into_inner();
    let body = futures_util::stream::unfold(rx, move |mut rx| {
        let slug = slug.clone();
        async move {
            let item = match rx.recv().await? {
                Ok(p) => {
                    let line = serde_json::json!({
                        "prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected,
                        "id": p.id, "match_id": p.match_id, "space": slug, "margin": p.margin,
                        "consistent": p.consistent, "license": p.license, "created_at": p.created_at,
                    });
                    Ok(bytes::Bytes::from(format!("{line}\n")))
                }
                Err(err) => {
                    tracing::error!(error = %err, "pair export failed midway");
                    Err(std::io::Error::other("the export failed midway"))
                }
            };
            Some((item, rx))
        }
    });
    Ok(HttpResponse::Ok().content_type("application/x-ndjson").streaming(body))
}
