//! `arena verify-log SPACE`: recompute a Space's chain of settled-match
//! hashes and name the first broken link.

use super::args::VerifyLogArgs;
use crate::app::config::Settings;
use crate::store::settlement;
use std::process::ExitCode;

pub async fn run(args: &VerifyLogArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let report = settlement::verify_log(&super::pool(settings).await?, &args.space).await?;
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
