//! The queue gauges an operator watches: open matches by status, pending
//! messages per stage stream.

use crate::context::Context;
use crate::domain::{MatchStatus, Stage, Topic};
use crate::queue::streams;
use crate::store::matches;
use std::time::Duration;

/// Refreshes the gauges every `period` until `stop` fires.
pub async fn run(ctx: Context, period: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        if let Ok(open) = matches::open_counts(&ctx.db).await {
            for status in MatchStatus::OPEN {
                let n = open.iter().find(|c| c.status == status).map_or(0, |c| c.count);
                ctx.metrics.open_matches.with_label_values(&[status.as_str()]).set(n);
            }
        }
        for stage in Stage::ALL {
            if let Ok(pending) = streams::pending_count(&ctx.redis, Topic::Stage(stage)).await {
                ctx.metrics.stream_pending.with_label_values(&[stage.name()]).set(pending);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.changed() => break,
        }
    }
}
