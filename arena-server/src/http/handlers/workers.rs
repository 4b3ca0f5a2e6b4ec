//! Open runtime workers over HTTP: register with a stake, lease work,
//! answer with signed records, heartbeat, leave; the caller's workers with
//! their money; content-addressed downloads for a worker holding a lease
//! that needs them; the audit commitments anyone may check.

use crate::context::Context;
use crate::domain::user::Scope;
use crate::domain::worker::{self, Registration};
use crate::http::auth::{Caller, count_attempt};
use crate::http::error::ApiError;
use crate::store::workers::{self as store, Worker};
use crate::work::workers::{self as work, AnswerRefused, LeaseRefused, Signed};
use actix_web::{HttpResponse, web};
use futures_util::StreamExt;
use serde::Deserialize;
use std::time::Duration;
use uuid::Uuid;

/// Active workers one user may have.
pub const MAX_WORKERS_PER_USER: usize = 16;
/// The largest answer a worker may send (64 jobs of long completions).
pub const MAX_ANSWER_BYTES: usize = 8 << 20;

/// The caller's own worker (admins: anyone's); a stranger gets 404.
async fn own(state: &Context, caller: &Caller, id: Uuid) -> Result<Worker, ApiError> {
    match store::get(&state.db, id).await? {
        Some(w) if w.owner_id == caller.user_id || caller.is_admin() => Ok(w),
        _ => Err(ApiError::NotFound(format!("worker {id}"))),
    }
}

/// POST /api/v1/workers — register a worker and lock its stake.
pub async fn register(
    state: web::Data<Context>,
    caller: Caller,
    body: web::Json<Registration>,
) -> Result<HttpResponse, ApiError> {
    caller.write(&state, Scope::Work).await?;
    let new = body.into_inner().check(state.settings.worker_min_stake)?;
    if new.model_sha256 != state.base_model {
        return Err(ApiError::invalid(
            "model_sha256",
            format!("this server runs model {}: start the worker with that file", state.base_model),
        ));
    }
    let active =
        store::list(&state.db, Some(caller.user_id)).await?.iter().filter(|w| w.worker.status == "active").count();
    if active >= MAX_WORKERS_PER_USER {
        return Err(ApiError::Conflict {
            field: "name".into(),
            message: format!("at most {MAX_WORKERS_PER_USER} active workers per user: remove one first"),
        });
    }
    let (w, created) = store::register(&state.db, caller.user_id, &new).await?;
    let body = serde_json::json!({
        "worker": w,
        "audit_rate": worker::audit_rate(w.clean_streak, state.settings.economics().audit_floor),
        "max_job_tokens": state.settings.economics().max_job_tokens(w.stake, w.clean_streak),
        "reference_recipe": work::reference_recipe(),
        "tier": if w.recipe == work::reference_recipe() { "exact" } else { "tolerant" },
    });
    Ok(if created { HttpResponse::Created().json(body) } else { HttpResponse::Ok().json(body) })
}

/// GET /api/v1/workers — the caller's workers (an admin's: every worker).
pub async fn list(state: web::Data<Context>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Read)?;
    let owner = if caller.is_admin() { None } else { Some(caller.user_id) };
    let workers = store::list(&state.db, owner).await?;
    let floor = state.settings.economics().audit_floor;
    let rows: Vec<serde_json::Value> = workers
        .iter()
        .map(|w| {
            let mut v = serde_json::to_value(w).unwrap_or_default();
            v["audit_rate"] = serde_json::json!(worker::audit_rate(w.worker.clean_streak, floor));
            v
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "workers": rows })))
}

/// DELETE /api/v1/workers/{id} — leave: no new leases; the stake comes back
/// after the escrow window.
pub async fn leave(state: web::Data<Context>, caller: Caller, path: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    caller.write(&state, Scope::Work).await?;
    let w = own(&state, &caller, path.into_inner()).await?;
    store::leave(&state.db, w.id).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "left": w.id,
        "stake_returned_after_s": state.settings.worker_escrow_s,
    })))
}

/// POST /api/v1/workers/{id}/heartbeat
pub async fn heartbeat(
    state: web::Data<Context>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.write(&state, Scope::Work).await?;
    let w = own(&state, &caller, path.into_inner()).await?;
    store::heartbeat(&state.db, w.id).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "status": w.status, "banned_until": w.banned_until })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseBody {
    /// Seconds to wait for work (0..=20, default 20).
    #[serde(default)]
    wait_s: Option<u64>,
    /// Jobs at most (default: the worker's max_batch).
    #[serde(default)]
    max_jobs: Option<usize>,
}

/// POST /api/v1/workers/{id}/lease — long-poll for a batch of jobs: 200
/// with the lease, 204 when none came in `wait_s`.
pub async fn lease(
    state: web::Data<Context>,
    caller: Caller,
    path: web::Path<Uuid>,
    body: web::Json<LeaseBody>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Work)?;
    let w = own(&state, &caller, path.into_inner()).await?;
    let wait = body.wait_s.unwrap_or(worker::MAX_WAIT_S);
    if wait > worker::MAX_WAIT_S {
        return Err(ApiError::invalid("wait_s", format!("wait_s is 0..={}", worker::MAX_WAIT_S)));
    }
    let max_jobs = body.max_jobs.unwrap_or(w.max_batch as usize);
    if max_jobs == 0 || max_jobs > w.max_batch as usize {
        return Err(ApiError::invalid("max_jobs", format!("max_jobs is 1..={} (the worker's max_batch)", w.max_batch)));
    }
    // One waiting call per worker, across server processes; calls counted.
    count_attempt(&state, &format!("lease:{}", w.id), 240).await?;
    let key = state.redis.key(&format!("worker-polling:{}", w.id));
    let mut conn = state.redis.conn();
    let took: Option<String> = redis::cmd("SET")
        .arg(&key)
        .arg(1)
        .arg("NX")
        .arg("EX")
        .arg(worker::MAX_WAIT_S + 5)
        .query_async(&mut conn)
        .await?;
    if took.is_none() {
        return Err(ApiError::Conflict {
            field: "worker".into(),
            message: "another lease call for this worker is waiting".into(),
        });
    }
    let result = work::lease(&state, &w, max_jobs, Duration::from_secs(wait)).await;
    let _: Result<(), _> = redis::cmd("DEL").arg(&key).query_async(&mut conn).await;
    match result.map_err(ApiError::internal)? {
        Ok(Some(out)) => Ok(HttpResponse::Ok().json(out)),
        Ok(None) => Ok(HttpResponse::NoContent().finish()),
        Err(LeaseRefused::Banned(until)) => Err(ApiError::Forbidden(LeaseRefused::Banned(until).to_string())),
        Err(refused @ LeaseRefused::Stake(..)) => Err(ApiError::Forbidden(refused.to_string())),
        Err(refused @ LeaseRefused::Left) => {
            Err(ApiError::Conflict { field: "worker".into(), message: refused.to_string() })
        }
        Err(refused @ LeaseRefused::WrongModel { .. }) => Err(ApiError::invalid("model_sha256", refused.to_string())),
        Err(refused @ LeaseRefused::Open(_)) => {
            Err(ApiError::Conflict { field: "lease".into(), message: refused.to_string() })
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerBody {
    results: Vec<Signed>,
}

/// POST /api/v1/leases/{id}/result — a lease's signed records, all at once.
pub async fn result(
    state: web::Data<Context>,
    caller: Caller,
    path: web::Path<Uuid>,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Work)?;
    let lease_id = path.into_inner();
    let lease =
        store::lease(&state.db, lease_id).await?.ok_or_else(|| ApiError::NotFound(format!("lease {lease_id}")))?;
    let w = own(&state, &caller, lease.worker_id).await.map_err(|_| ApiError::NotFound(format!("lease {lease_id}")))?;
    let mut bytes = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::Payload(e.to_string()))?;
        if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(ApiError::Payload(format!("an answer is at most {MAX_ANSWER_BYTES} bytes")));
        }
        bytes.extend_from_slice(&chunk);
    }
    let body: AnswerBody =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::invalid("body", format!("malformed JSON body: {e}")))?;
    if body.results.len() > worker::MAX_BATCH as usize {
        return Err(ApiError::invalid("results", format!("at most {} records", worker::MAX_BATCH)));
    }
    match work::answer(&state, &w, lease_id, body.results).await.map_err(ApiError::internal)? {
        Ok(answered) => Ok(HttpResponse::Ok().json(answered)),
        Err(refused @ AnswerRefused::Closed(_)) => {
            Err(ApiError::Conflict { field: "lease".into(), message: refused.to_string() })
        }
        Err(AnswerRefused::Invalid(why)) => Err(ApiError::invalid("results", why)),
    }
}

/// GET /api/v1/blobs/{sha256} — the base model, to a caller with an active
/// worker; an adapter (its weights then its canonical config, the config's
/// length in `X-Arena-Config-Bytes`; the body's sha256 is the adapter's),
/// only to a caller whose worker holds an open lease that needs it.
/// Anything else is 404.
pub async fn blob(
    state: web::Data<Context>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Work)?;
    let sha = path.into_inner();
    let missing = || ApiError::NotFound(format!("blob {sha}"));
    if !worker::is_sha256(&sha) {
        return Err(missing());
    }
    let workers = store::list(&state.db, Some(caller.user_id)).await?;
    if sha == state.base_model {
        if !workers.iter().any(|w| w.worker.status == "active") {
            return Err(missing());
        }
        let file = tokio::fs::File::open(state.playground.model_path()).await.map_err(ApiError::internal)?;
        let len = file.metadata().await.map_err(ApiError::internal)?.len();
        let chunks = futures_util::stream::unfold(file, |mut file| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 1 << 20];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<_, std::io::Error>(web::Bytes::from(buf)), file))
                }
                Err(e) => Some((Err(e), file)),
            }
        });
        return Ok(HttpResponse::Ok()
            .content_type("application/octet-stream")
            .insert_header(("Content-Length", len.to_string()))
            .streaming(chunks));
    }
    let leases: Vec<Uuid> = workers.iter().filter_map(|w| w.open_lease).collect();
    if !store::lease_needs(&state.db, &leases, &sha).await? {
        return Err(missing());
    }
    let (config, weights) = crate::store::adapters::parts(&state.db, &sha).await?.ok_or_else(missing)?;
    let config_len = config.len();
    let mut body = weights;
    body.extend_from_slice(config.as_bytes());
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(("X-Arena-Config-Bytes", config_len.to_string()))
        .body(body))
}

/// GET /api/v1/audit-secrets — each day's commitment to the secret that
/// picks audited matches, and the secret once the day is over.
pub async fn audit_secrets(state: web::Data<Context>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(serde_json::json!({ "days": store::audit_days(&state.db).await? })))
}
