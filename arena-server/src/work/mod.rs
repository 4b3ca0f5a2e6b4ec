//! The background work: the match pipeline's stages (generate → judge →
//! settle), the matchmaker, the outbox relay, the reconciler, the trainer
//! the training policies and the open workers' leases and audits — all built on one stream runner
//! (`runner`) over the store and the queues. Nothing here knows HTTP.

pub mod dry_run;
pub mod exports;
pub mod games;
pub mod gauges;
pub mod generate;
pub mod generator;
pub mod grpo;
pub mod judge;
pub mod matchmaker;
pub mod policies;
pub mod reconciler;
pub mod relay;
pub mod runner;
pub mod settle;
pub mod studio;
pub mod test_double;
pub mod trainer;
pub mod turns;
pub mod votes;
pub mod workers;

use crate::context::Context;
use crate::domain::{MatchId, MatchStatus};
use crate::queue::{Event, Events};

/// Fails a match (refunding every fee) in a transaction of its own and
/// tells the live pages; a match already settled or failed is left alone.
pub async fn fail_match(ctx: &Context, match_id: MatchId, reason: &str) -> anyhow::Result<()> {
    let mut tx = ctx.db.begin().await?;
    let failed = crate::store::matches::fail(&mut tx, match_id, reason).await?;
    tx.commit().await?;
    if let Some(space) = failed {
        Events::publish(&ctx.redis, &Event::new(match_id, space, MatchStatus::Failed)).await;
    }
    Ok(())
}
