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
