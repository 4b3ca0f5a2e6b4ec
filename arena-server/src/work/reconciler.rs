//! The reconciler: what Redis lost, PostgreSQL still knows. It relays
//! outbox rows left behind, re-enqueues matches whose status has not moved
//! for `reconcile_after_s`, and offers again the training jobs nobody works
//! on (queued ones not looked at, running ones whose heartbeat went stale).

use super::{relay, trainer};
use crate::context::Context;
use crate::domain::{Stage, Topic};
use crate::queue::streams;
use crate::store::{matches, training};
use std::time::Duration;

/// One pass; returns how many matches it re-enqueued.
pub async fn reconcile(ctx: &Context) -> anyhow::Result<usize> {
    relay::flush_outbox(ctx).await?;
    reconcile_jobs(ctx).await?;
    let stalled = matches::touch_stalled(&ctx.db, ctx.settings.reconcile_after_s).await?;
    if stalled.is_empty() {
        return Ok(0);
    }
    for stage in Stage::ALL {
        streams::ensure_group(&ctx.redis, Topic::Stage(stage)).await?;
    }
    let messages: Vec<_> =
        stalled.iter().filter_map(|m| Stage::for_status(m.status).map(|stage| (Topic::Stage(stage), m.id.0))).collect();
    streams::add_many(&ctx.redis, &messages).await?;
    tracing::info!(count = stalled.len(), "reconciler re-enqueued stalled matches");
    Ok(stalled.len())
}

/// Offers again the training jobs nobody is working on; returns how many.
pub async fn reconcile_jobs(ctx: &Context) -> anyhow::Result<usize> {
    let stale = training::touch_abandoned(&ctx.db, ctx.settings.reconcile_after_s, trainer::stale_after_s(ctx)).await?;
    if stale.is_empty() {
        return Ok(0);
    }
    streams::ensure_group(&ctx.redis, Topic::Train).await?;
    let messages: Vec<_> = stale.iter().map(|id| (Topic::Train, id.0)).collect();
    streams::add_many(&ctx.redis, &messages).await?;
    tracing::info!(count = stale.len(), "reconciler offered training jobs again");
    Ok(stale.len())
}

/// Runs the reconciler every `period` until `stop` fires.
pub async fn run(ctx: Context, period: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.changed() => break,
        }
        if let Err(err) = reconcile(&ctx).await {
            tracing::warn!(error = %err, "reconciler pass failed");
        }
    }
}
