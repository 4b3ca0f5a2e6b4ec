//! `arena export`: an operator's export of preference pairs to a folder
//! (the files and the dataset card buyers get, without a sale).

use super::args::{ExportArgs, ExportFormat};
use crate::app::config::Settings;
use crate::domain::dataset::{Format, dataset_card};
use crate::store::pairs as pair_store;
use crate::work::exports as export_work;
use anyhow::Context as _;
use std::sync::atomic::AtomicI64;

/// Writes the pairs `args.filter` selects into `args.out` with their card;
/// prints each file's rows, bytes and sha256.
pub async fn run(args: &ExportArgs, settings: &Settings) -> anyhow::Result<()> {
    let pool = &super::pool(settings).await?;
    let filter = args.filter();
    filter.check().map_err(|e| anyhow::anyhow!("{e}"))?;
    let kind = match (args.format, args.gzip) {
        (ExportFormat::Parquet, false) => dataset_files::Kind::Parquet,
        (ExportFormat::Parquet, true) => anyhow::bail!("--gzip applies to JSON Lines; Parquet is compressed inside"),
        (ExportFormat::Jsonl, gzip) => dataset_files::Kind::Jsonl { gzip },
    };
    let (shape, format) = if args.conversational {
        (dataset_files::Shape::Conversational, Format::Conversational)
    } else {
        (dataset_files::Shape::Standard, Format::Standard)
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    for name in [kind.file_name(), "README.md"] {
        anyhow::ensure!(
            !args.out.join(name).exists(),
            "{} exists: choose an empty --out",
            args.out.join(name).display()
        );
    }
    pair_store::enrich(pool).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(512);
    tokio::spawn(pair_store::export_filtered(pool.clone(), filter.clone(), args.limit, tx));
    let (out, scrub) = (args.out.clone(), args.scrub_pii);
    let written =
        tokio::task::spawn_blocking(move || export_work::write_pairs(rx, &out, kind, shape, scrub, &AtomicI64::new(0)))
            .await??;
    let parts = pair_store::card(pool, &filter).await?;
    let card = dataset_card(&filter, format, &written.name, &parts);
    std::fs::write(args.out.join("README.md"), &card)?;
    println!("{}: {} pairs, {} bytes, sha256 {}", written.name, written.rows, written.bytes, written.sha256);
    println!(
        "README.md: {} bytes, sha256 {}",
        card.len(),
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(card.as_bytes()))
    );
    Ok(())
}
