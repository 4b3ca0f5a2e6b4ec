//! The votes' integrity check: every minute (web role) the outlier test
//! (`domain::votes::flag_voters`) reads the last 30 days of votes, sets the
//! voters' flags to what it finds, and re-aggregates the human pairs of
//! every match a changed voter voted on — a flagged voter's votes stop
//! counting, a cleared voter's count again.

use crate::context::Context;
use crate::domain::SpaceId;
use crate::domain::votes;
use crate::store::votes as store;
use std::collections::HashMap;
use std::time::Duration;

/// Days of votes the outlier test reads.
pub const WINDOW_DAYS: i32 = 30;
/// The most votes it reads (the newest).
pub const MAX_VOTES: i64 = 200_000;

/// One pass: returns how many voters' flags changed.
pub async fn check(ctx: &Context) -> anyhow::Result<usize> {
    let facts = store::vote_facts(&ctx.db, WINDOW_DAYS, MAX_VOTES).await?;
    if facts.is_empty() {
        return Ok(0);
    }
    let flags = tokio::task::spawn_blocking(move || votes::flag_voters(&facts)).await?;
    // The licence each Space's human pairs carry (its current version's).
    let mut licenses: HashMap<SpaceId, Option<String>> = HashMap::new();
    for s in store::voting_spaces(&ctx.db).await? {
        let version = crate::store::spaces::current_version(&ctx.db, s.id).await?;
        if let Ok(space) = ctx.spaces.get(&ctx.db, s.id, version).await {
            licenses.insert(s.id, space.license.clone());
        }
    }
    Ok(store::set_flags(&ctx.db, &flags, &licenses).await?)
}

/// Runs `check` every minute until `stop`.
pub async fn run_integrity(ctx: Context, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = stop.changed() => return,
        }
        match check(&ctx).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(voters = n, "voter flags changed"),
            Err(err) => tracing::warn!(error = %err, "the votes' integrity check failed"),
        }
    }
}
