//! `arena doctor`: checks every dependency and prints, for each, what is
//! wrong and how to fix it.

use crate::app::config::{ModelSettings, Settings, redact_url};
use crate::queue::Redis;
use crate::store as db;
use agent_runtime::model_file;
use std::path::Path;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(3);
/// Below this much free space on the data directory's disk, training runs and
/// adapter uploads start failing.
pub const MIN_FREE_BYTES: u64 = 2 << 30;

/// One line of the report.
#[derive(Debug)]
pub struct Finding {
    pub name: &'static str,
    pub ok: bool,
    pub summary: String,
    pub fix: Option<String>,
}

impl Finding {
    fn ok(name: &'static str, summary: String) -> Finding {
        Finding { name, ok: true, summary, fix: None }
    }
    fn bad(name: &'static str, summary: String, fix: impl Into<String>) -> Finding {
        Finding { name, ok: false, summary, fix: Some(fix.into()) }
    }
}

pub async fn run(settings: &Settings) -> Vec<Finding> {
    let config = Finding::ok(
        "config",
        match &settings.source_file {
            Some(path) => format!("read {}", path.display()),
            None => "no arena.toml; defaults and environment".to_owned(),
        },
    );
    let (postgres, redis) = tokio::join!(check_postgres(settings), check_redis(settings));
    let model_settings = settings.model.clone();
    let model = tokio::task::spawn_blocking(move || check_model(&model_settings))
        .await
        .unwrap_or_else(|e| Finding::bad("model", format!("check crashed: {e}"), "report this as a bug"));
    let embedder_settings = settings.model.clone();
    let embedder = tokio::task::spawn_blocking(move || check_embedder(&embedder_settings))
        .await
        .unwrap_or_else(|e| Finding::bad("embedder", format!("check crashed: {e}"), "report this as a bug"));
    let disk = check_disk(&settings.data_dir);
    vec![config, postgres, redis, model, embedder, disk]
}

async fn check_postgres(settings: &Settings) -> Finding {
    let url = redact_url(&settings.database.url);
    let pool = match db::connect(&settings.database, TIMEOUT).await {
        Ok(pool) => pool,
        Err(err) => {
            return Finding::bad(
                "postgres",
                format!("cannot connect to {url}: {}", root_cause(&err)),
                "start it with `scripts/up` (or `scripts/test`), or set DATABASE_URL to a running server",
            );
        }
    };
    let version = db::server_version(&pool).await.unwrap_or_default();
    match db::pending(&pool).await {
        Ok(pending) if pending.is_empty() => {
            Finding::ok("postgres", format!("PostgreSQL {version} at {url}, migrations up to date"))
        }
        Ok(pending) => Finding::bad(
            "postgres",
            format!("PostgreSQL {version} at {url}: {} migration(s) not applied", pending.len()),
            "run `arena migrate` (`arena serve` also migrates at start)",
        ),
        Err(err) => {
            Finding::bad("postgres", format!("reading migrations at {url}: {err}"), "check the database user's rights")
        }
    }
}

async fn check_redis(settings: &Settings) -> Finding {
    let url = redact_url(&settings.redis.url);
    let redis = match Redis::connect(&settings.redis, TIMEOUT).await {
        Ok(redis) => redis,
        Err(err) => {
            return Finding::bad(
                "redis",
                format!("cannot connect to {url}: {}", root_cause(&err)),
                "start it with `scripts/up` (or `scripts/test`), or set REDIS_URL to a running server",
            );
        }
    };
    match redis.server_version().await {
        Ok(version) => {
            Finding::ok("redis", format!("Redis {version} at {url}, key prefix {:?}", settings.redis.prefix))
        }
        Err(err) => Finding::bad("redis", format!("{url} does not answer INFO: {err}"), "check the Redis server's log"),
    }
}

fn check_model(model: &ModelSettings) -> Finding {
    match model_file::verify(&model.path, model.expected()) {
        Ok(verified) => Finding::ok(
            "model",
            format!(
                "{} ({:.1} MB, GGUF v{}, sha256 {}{})",
                verified.path.display(),
                verified.size as f64 / 1e6,
                verified.gguf_version,
                &verified.sha256[..16],
                if model.sha256.is_some() { ", verified" } else { ", no expected checksum configured" }
            ),
        ),
        Err(err) => Finding::bad(
            "model",
            err.to_string(),
            format!("arena model fetch --out {}  (or set ARENA_MODEL_PATH to a GGUF file)", model.path.display()),
        ),
    }
}

/// The judge's sentence-embedding model, beside the default model.
fn check_embedder(model: &ModelSettings) -> Finding {
    let dir = judge::embed::default_dir(&model.path);
    match model_file::verify_bundle(&model_file::EMBEDDING_MODEL, &dir) {
        Ok(sha) => {
            Finding::ok("embedder", format!("{} (all-MiniLM-L6-v2, sha256 {}, verified)", dir.display(), &sha[..16]))
        }
        Err(err) => {
            Finding::bad("embedder", err.to_string(), format!("arena model fetch --out {}", model.path.display()))
        }
    }
}

fn check_disk(data_dir: &Path) -> Finding {
    // The data directory may not exist yet: measure the nearest ancestor.
    let probe = data_dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("."));
    match fs4::available_space(probe) {
        Ok(free) if free >= MIN_FREE_BYTES => {
            Finding::ok("disk", format!("{:.1} GiB free for {}", free as f64 / (1u64 << 30) as f64, data_dir.display()))
        }
        Ok(free) => Finding::bad(
            "disk",
            format!("only {:.2} GiB free for {}", free as f64 / (1u64 << 30) as f64, data_dir.display()),
            format!("free at least {} GiB there, or set ARENA_DATA_DIR to a larger disk", MIN_FREE_BYTES >> 30),
        ),
        Err(err) => {
            Finding::bad("disk", format!("cannot measure free space at {}: {err}", probe.display()), "check the path")
        }
    }
}

fn root_cause(err: &dyn std::error::Error) -> String {
    let mut cause: &dyn std::error::Error = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The report as printed: one line per check, a fix under each failure.
/// `arena doctor`: prints the findings; false when any check failed.
pub async fn check(settings: &Settings) -> bool {
    let findings = run(settings).await;
    print!("{}", render(&findings));
    findings.iter().all(|f| f.ok)
}

pub fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        out.push_str(&format!("{} {:<9} {}\n", if f.ok { "ok  " } else { "FAIL" }, f.name, f.summary));
        if let Some(fix) = &f.fix {
            out.push_str(&format!("               fix: {fix}\n"));
        }
    }
    let failed = findings.iter().filter(|f| !f.ok).count();
    if failed == 0 {
        out.push_str("all checks passed\n");
    } else {
        out.push_str(&format!("{failed} check(s) failed\n"));
    }
    out
}
