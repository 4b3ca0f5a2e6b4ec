//! `GET /healthz`: the state of PostgreSQL, Redis and the model, checked
//! concurrently, each within a deadline. 200 when all are up, 503 otherwise.

use crate::context::Context;
use crate::queue::Redis;
use actix_web::{HttpResponse, web};
use agent_runtime::model_file::VerifiedModel;
use serde::Serialize;
use sqlx::PgPool;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const CHECK_DEADLINE: Duration = Duration::from_secs(2);

/// The model file the app verified at start; health re-checks that it is
/// still in place.
#[derive(Debug, Clone)]
pub struct ModelState {
    pub verified: VerifiedModel,
}

#[derive(Debug, Serialize)]
pub struct Health {
    /// `ok` when every check is up, else `unavailable`.
    pub status: &'static str,
    pub version: &'static str,
    pub checks: Checks,
}

#[derive(Debug, Serialize)]
pub struct Checks {
    pub postgres: Check,
    pub redis: Check,
    pub model: Check,
}

#[derive(Debug, Serialize)]
pub struct Check {
    /// `up` or `down`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

impl Check {
    fn up(latency: Duration, detail: Option<serde_json::Value>) -> Check {
        Check { status: "up", latency_ms: Some(latency.as_secs_f64() * 1e3), error: None, detail }
    }
    fn down(error: String) -> Check {
        Check { status: "down", latency_ms: None, error: Some(error), detail: None }
    }
    fn is_up(&self) -> bool {
        self.status == "up"
    }
}

async fn timed<F, E>(check: F) -> Check
where
    F: Future<Output = Result<Option<serde_json::Value>, E>>,
    E: std::fmt::Display,
{
    let start = Instant::now();
    match tokio::time::timeout(CHECK_DEADLINE, check).await {
        Ok(Ok(detail)) => Check::up(start.elapsed(), detail),
        Ok(Err(err)) => Check::down(err.to_string()),
        Err(_) => Check::down(format!("no answer within {} s", CHECK_DEADLINE.as_secs())),
    }
}

fn check_model(model: &ModelState) -> Result<Option<serde_json::Value>, String> {
    let path: &PathBuf = &model.verified.path;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() != model.verified.size {
        return Err(format!(
            "{} changed since start: {} bytes, verified {}",
            path.display(),
            meta.len(),
            model.verified.size
        ));
    }
    Ok(Some(serde_json::json!({
        // The file's name, not where it lives on this machine.
        "file": path.file_name().map(|n| n.to_string_lossy().into_owned()),
        "sha256": model.verified.sha256,
        "bytes": model.verified.size,
    })))
}

pub async fn check_all(db: &PgPool, redis: &Redis, model: &ModelState) -> Health {
    let (postgres, redis, model) = tokio::join!(
        timed(async { crate::store::ping(db).await.map(|()| None) }),
        timed(async { redis.ping().await.map(|()| None) }),
        timed(async { check_model(model) }),
    );
    let all_up = postgres.is_up() && redis.is_up() && model.is_up();
    Health {
        status: if all_up { "ok" } else { "unavailable" },
        version: env!("CARGO_PKG_VERSION"),
        checks: Checks { postgres, redis, model },
    }
}

#[tracing::instrument(skip_all)]
pub async fn get(ctx: web::Data<Context>, model: web::Data<ModelState>) -> HttpResponse {
    let metrics = &ctx.metrics;
    // The pipeline's pool answers for PostgreSQL: a flood that holds every
    // connection of the API's pool must not make a healthy database look down.
    let health = check_all(&ctx.work_db, &ctx.redis, &model).await;
    for (name, check) in
        [("postgres", &health.checks.postgres), ("redis", &health.checks.redis), ("model", &health.checks.model)]
    {
        metrics.dependency_up.with_label_values(&[name]).set(i64::from(check.is_up()));
        if let Some(error) = &check.error {
            tracing::warn!(dependency = name, %error, "health check failed");
        }
    }
    if health.status == "ok" {
        HttpResponse::Ok().json(health)
    } else {
        HttpResponse::ServiceUnavailable().json(health)
    }
}
