//! Adapters by content hash: stored in PostgreSQL (the truth, reachable from
//! every machine) and unpacked on demand into `DATA_DIR/adapters/SHA256/` in
//! the PEFT layout the runtime loads.

use sqlx::PgPool;
use std::path::{Path, PathBuf};

/// The adapter's directory, written from the database the first time.
pub async fn materialize(pool: &PgPool, data_dir: &Path, sha256: &str) -> anyhow::Result<PathBuf> {
    anyhow::ensure!(sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()), "bad adapter hash {sha256:?}");
    let dir = data_dir.join("adapters").join(sha256);
    if dir.join("adapter_model.safetensors").exists() {
        return Ok(dir);
    }
    let (config, weights): (String, Vec<u8>) =
        sqlx::query_as("select config, weights from adapters where sha256 = $1").bind(sha256).fetch_one(pool).await?;
    let target = dir.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        // Unpack beside the target and rename, so a reader never sees half a file.
        let parent = target.parent().ok_or_else(|| anyhow::anyhow!("adapter dir has no parent"))?;
        std::fs::create_dir_all(parent)?;
        let tmp = tempfile::tempdir_in(parent)?;
        std::fs::write(tmp.path().join("adapter_config.json"), config)?;
        std::fs::write(tmp.path().join("adapter_model.safetensors"), weights)?;
        let tmp = tmp.keep();
        if std::fs::rename(&tmp, &target).is_err() {
            // Another worker won the race; theirs is identical.
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Ok(())
    })
    .await??;
    Ok(dir)
}

/// An adapter's canonical config and weights, as stored.
pub async fn parts(pool: &PgPool, sha256: &str) -> Result<Option<(String, Vec<u8>)>, sqlx::Error> {
    sqlx::query_as("select config, weights from adapters where sha256 = $1").bind(sha256).fetch_optional(pool).await
}

/// What an upload may be, at most.
pub const MAX_WEIGHTS_BYTES: usize = 64 * 1024 * 1024;
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;

/// Validates an adapter with the runtime's own validator (shapes against the
/// base model, dtype, finite values, known tensor names, size and rank
/// limits). Returns the adapter's identity (the runtime's sha256 of its
/// weights and config) and a summary, or a description of what is wrong.
pub fn validate(
    config: &[u8],
    weights: &[u8],
    model: &agent_runtime::gguf::ModelConfig,
) -> Result<(String, serde_json::Value, Vec<u8>), String> {
    // Stored as the identity hashes it (see `lora::canonical_config`).
    let config = agent_runtime::lora::canonical_config(config)
        .ok_or_else(|| "adapter_config.json is not valid JSON".to_owned())?;
    let dir = tempfile::tempdir().map_err(|e| format!("cannot stage the upload: {e}"))?;
    std::fs::write(dir.path().join("adapter_config.json"), &config).map_err(|e| e.to_string())?;
    std::fs::write(dir.path().join("adapter_model.safetensors"), weights).map_err(|e| e.to_string())?;
    let limits = agent_runtime::lora::Limits {
        max_file_bytes: MAX_WEIGHTS_BYTES as u64,
        max_config_bytes: MAX_CONFIG_BYTES as u64,
        ..Default::default()
    };
    let adapter = agent_runtime::lora::Adapter::load(dir.path(), model, &limits).map_err(|e| {
        // Name the file the user sent, not our staging path.
        e.to_string().replace(&dir.path().display().to_string(), "").trim_start_matches('/').to_owned()
    })?;
    let targets: Vec<&str> = adapter.targets().iter().map(|t| t.module()).collect();
    let summary = serde_json::json!({ "sha256": adapter.sha256, "rank": adapter.rank, "alpha": adapter.alpha,
                                      "targets": targets, "bytes": weights.len() });
    Ok((adapter.sha256.clone(), summary, config))
}

/// Stores a validated adapter by its sha256; true when it was new. The
/// upload counts against the uploader's quota whether or not the bytes were
/// known (so the answer says nothing of what others stored).
pub async fn insert(
    pool: &PgPool,
    sha256: &str,
    config: &str,
    weights: &[u8],
    by: crate::domain::UserId,
    quota_bytes: Option<i64>,
) -> Result<bool, super::StoreError> {
    let mut tx = pool.begin().await?;
    super::check_quota(&mut tx, by, weights.len() as i64, quota_bytes).await?;
    let inserted = sqlx::query(
        "insert into adapters (sha256, config, weights, bytes, uploaded_by) values ($1, $2, $3, $4, $5)
         on conflict (sha256) do nothing",
    )
    .bind(sha256)
    .bind(config)
    .bind(weights)
    .bind(weights.len() as i64)
    .bind(by)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(inserted.rows_affected() == 1)
}
