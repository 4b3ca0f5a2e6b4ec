//! Running paid data exports: the fixed pairs are read as PostgreSQL sends
//! them and written on a blocking thread through `dataset-files` (JSON
//! Lines, gzip optional, or Parquet), hashed as written, with the dataset
//! card beside them. Memory stays bounded by the channel and one Parquet
//! row group whatever the export's size. A run that fails is recorded;
//! one interrupted by a stop is found by `resume` and run again from the
//! start (the pairs are fixed, so the files come out the same).

use crate::domain::dataset::{Format, PairFilter, dataset_card};
use crate::store::exports as export_store;
use crate::store::pairs as pair_store;
use anyhow::Context as _;
use sqlx::PgPool;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use uuid::Uuid;

/// Exports one process writes at once; the rest wait their turn.
const RUNNING_AT_ONCE: usize = 2;

fn permits() -> &'static tokio::sync::Semaphore {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| tokio::sync::Semaphore::new(RUNNING_AT_ONCE))
}

/// Where an export's files live: under the data directory, named by the
/// export's id (never by anything a user wrote).
pub fn export_dir(data_dir: &Path, id: Uuid) -> PathBuf {
    data_dir.join("exports").join(id.to_string())
}

/// The names an export's files may have.
pub const FILE_NAMES: &[&str] = &["pairs.jsonl", "pairs.jsonl.gz", "pairs.parquet", "README.md"];

/// Deletes the files of every export finished more than `days` ago and
/// records it (downloads then answer 410 Gone); returns how many.
pub async fn expire_past_retention(db: &PgPool, data_dir: &Path, days: u32) -> anyhow::Result<usize> {
    let ids = export_store::past_retention(db, days).await?;
    for id in &ids {
        let dir = export_dir(data_dir, *id);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("deleting export {id}'s files")),
        }
        export_store::expire(db, *id).await?;
    }
    Ok(ids.len())
}

/// Expires exports past retention every `every` until `stop` (the web role).
pub async fn retention(
    db: PgPool,
    data_dir: PathBuf,
    days: u32,
    every: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match expire_past_retention(&db, &data_dir, days).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(exports = n, days, "deleted the files of exports past retention"),
            Err(e) => tracing::warn!(error = ?e, "export retention failed; will retry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Runs every export left queued or running (at startup).
pub async fn resume(db: PgPool, data_dir: PathBuf) {
    match export_store::unfinished(&db).await {
        Ok(ids) => {
            for id in ids {
                tokio::spawn(run_logged(db.clone(), data_dir.clone(), id));
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot list unfinished exports"),
    }
}

/// Runs one export, recording a failure on the export.
pub async fn run_logged(db: PgPool, data_dir: PathBuf, id: Uuid) {
    let Ok(_permit) = permits().acquire().await else { return };
    if let Err(e) = run(&db, &data_dir, id).await {
        tracing::error!(export = %id, error = ?e, "export failed");
        let _ = export_store::fail(&db, id, &format!("{e:#}")).await;
    }
}

/// Writes the pairs arriving on `rx` into `dir` as one file of `kind` and
/// `shape` (on a blocking thread: the writers do file I/O), counting rows
/// into `counter`. An error read from `rx` fails the file.
pub fn write_pairs(
    mut rx: tokio::sync::mpsc::Receiver<Result<pair_store::DataPair, sqlx::Error>>,
    dir: &Path,
    kind: dataset_files::Kind,
    shape: dataset_files::Shape,
    scrub: bool,
    counter: &AtomicI64,
) -> anyhow::Result<dataset_files::Written> {
    let mut sink = dataset_files::open(dir, kind, shape)?;
    while let Some(pair) = rx.blocking_recv() {
        sink.write(&pair.context("reading the pairs")?.into_row(scrub))?;
        counter.fetch_add(1, Ordering::Relaxed);
    }
    Ok(sink.finish()?)
}

/// Writes export `id`'s files and marks it done.
pub async fn run(db: &PgPool, data_dir: &Path, id: Uuid) -> anyhow::Result<()> {
    if !export_store::start(db, id).await? {
        return Ok(());
    }
    let export = export_store::get(db, id).await?.context("the export vanished")?;
    let dir = export_dir(data_dir, id);
    // A rerun starts from nothing.
    match tokio::fs::remove_dir_all(&dir).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context("clearing an earlier run's files"),
    }
    tokio::fs::create_dir_all(&dir).await.context("creating the export's directory")?;
    let kind = match (export.format.as_str(), export.gzip) {
        ("parquet", _) => dataset_files::Kind::Parquet,
        (_, gzip) => dataset_files::Kind::Jsonl { gzip },
    };
    let (shape, format) = match export.shape.as_str() {
        "conversational" => (dataset_files::Shape::Conversational, Format::Conversational),
        _ => (dataset_files::Shape::Standard, Format::Standard),
    };
    let scrub = export.scrub_pii;
    let (tx, rx) = tokio::sync::mpsc::channel(512);
    tokio::spawn(pair_store::export_pinned(db.clone(), id, tx));
    let written_rows = Arc::new(AtomicI64::new(0));
    let writer = tokio::task::spawn_blocking({
        let (dir, counter) = (dir.clone(), written_rows.clone());
        move || write_pairs(rx, &dir, kind, shape, scrub, &counter)
    });
    // Progress for the buyer's page while the writer works.
    let progress = {
        let db = db.clone();
        let rows = written_rows.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                let _ = export_store::progress(&db, id, rows.load(Ordering::Relaxed)).await;
            }
        })
    };
    let result = writer.await;
    progress.abort();
    let written = result.context("the writer thread")??;
    anyhow::ensure!(
        written.rows as i64 == export.pairs,
        "wrote {} pairs of the {} paid for (a pair was deleted?)",
        written.rows,
        export.pairs
    );
    let filter: PairFilter = serde_json::from_value(export.filter.clone()).unwrap_or_default();
    let parts = pair_store::card_pinned(db, id).await?;
    let mut card = dataset_card(&filter, format, &written.name, &parts);
    card.push_str(&format!(
        "\n\n## This export\n\n- Export `{id}`, made {} with {} pairs{}.\n- Licences the buyer accepted: {}.\n- Price paid: \
         {} credits, shared between the Spaces' designers, the owners of the agents in the pairs and the house.\n- \
         `{}`: {} bytes, sha256 `{}`.\n",
        export.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        export.pairs,
        if scrub { ", e-mail addresses, URLs and phone numbers replaced" } else { "" },
        export.licenses.join(", "),
        export.price,
        written.name,
        written.bytes,
        written.sha256
    ));
    let card_path = dir.join("README.md");
    tokio::fs::write(&card_path, &card).await.context("writing the card")?;
    let card_file = dataset_files::Written {
        name: "README.md".to_owned(),
        rows: 0,
        bytes: card.len() as u64,
        sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(card.as_bytes())),
    };
    let files = serde_json::to_value([&written, &card_file])?;
    export_store::finish(db, id, written.rows as i64, &files).await?;
    Ok(())
}
