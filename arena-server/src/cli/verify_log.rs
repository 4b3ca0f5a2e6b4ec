//! `arena verify-log SPACE`: recompute a Space's chain of settled-match
//! hashes and name the first broken link.

use crate::store::settlement;
use sqlx::PgPool;
use std::process::ExitCode;

pub async fn run(pool: &PgPool, space: &str) -> anyhow::Result<ExitCode> {
    let report = settlement::verify_log(pool, space).await?;
    match &report.broken {
        None => {
            println!("{}: {} settled matches, chain intact, head {}", report.space, report.checked, report.head);
            Ok(ExitCode::SUCCESS)
        }
        Some((seq, id, why)) => {
            println!("{}: chain BROKEN at record {seq} (match {id}): {why}", report.space);
            println!("{} records before it verify", report.checked);
            Ok(ExitCode::FAILURE)
        }
    }
}
