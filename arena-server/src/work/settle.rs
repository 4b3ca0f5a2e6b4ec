//! The settle stage: ratings, payouts, preference pairs and the chained
//! match record, in one transaction per Space's share of a batch (the SQL
//! is `store::settlement`). A batch that fails is retried match by match,
//! so one bad match cannot hold up the others.

use super::runner::{RunnerSpec, Work};
use crate::context::Context;
use crate::domain::{MatchId, MatchStatus, Stage};
use crate::queue::{Event, Events};
use crate::store::settlement::{self, Settled};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use uuid::Uuid;

/// Spaces settled at once by one settle worker.
pub const SETTLE_CONCURRENCY: usize = 4;

pub struct SettleStage;

fn events(settled: Vec<Settled>) -> Vec<Event> {
    settled
        .into_iter()
        .map(|s| Event { match_id: s.match_id, space: s.space, status: MatchStatus::Settled, detail: s.detail })
        .collect()
}

impl Work for SettleStage {
    fn spec(&self, ctx: &Context) -> RunnerSpec {
        RunnerSpec::match_stage(Stage::Settle, ctx)
    }

    fn run<'a>(&'a self, ctx: &'a Context, subjects: &'a [Uuid]) -> BoxFuture<'a, anyhow::Result<Vec<Uuid>>> {
        Box::pin(async move {
            let ids: Vec<MatchId> = subjects.iter().map(|s| MatchId(*s)).collect();
            let by_space = settlement::judged_by_space(&ctx.db, &ids).await?;
            // Everything not waiting for settlement is already done.
            let mut done: Vec<Uuid> = subjects
                .iter()
                .filter(|m| !by_space.values().any(|ids| ids.contains(&MatchId(**m))))
                .copied()
                .collect();
            // One transaction per Space's share of the batch, the Spaces at
            // once. A match that cannot be settled is retried alone.
            let results: Vec<(Vec<MatchId>, anyhow::Result<Vec<Settled>>)> =
                futures_util::stream::iter(by_space.into_values())
                    .map(|ids| async move {
                        let result = settlement::settle_batch(&ctx.db, &ctx.spaces, &ids).await;
                        (ids, result)
                    })
                    .buffer_unordered(SETTLE_CONCURRENCY)
                    .collect()
                    .await;
            for (ids, result) in results {
                match result {
                    Ok(settled) => {
                        done.extend(ids.iter().map(|m| m.0));
                        Events::publish_many(&ctx.redis, &events(settled)).await;
                    }
                    Err(err) if ids.len() > 1 => {
                        tracing::warn!(error = ?err, matches = ids.len(), "batch settlement failed; settling one by one");
                        for id in ids {
                            match settlement::settle_batch(&ctx.db, &ctx.spaces, &[id]).await {
                                Ok(settled) => {
                                    done.push(id.0);
                                    Events::publish_many(&ctx.redis, &events(settled)).await;
                                }
                                Err(err) => {
                                    tracing::warn!(match_id = %id, error = ?err, "settlement failed; will retry")
                                }
                            }
                        }
                    }
                    Err(err) => tracing::warn!(matches = ?ids, error = ?err, "settlement failed; will retry"),
                }
            }
            Ok(done)
        })
    }
}
