//! Training policies: every `every`-policy whose agent took part in enough
//! new pairs gets a job (see `trainer` for the life of a job).

use super::relay;
use crate::context::Context;
use crate::domain::{JobId, JobTrigger};
use crate::store::{spaces, training};
use std::time::Duration;

/// One pass of the automatic policies; returns the jobs made.
pub async fn round(ctx: &Context) -> anyhow::Result<Vec<JobId>> {
    let due = training::due_policies(&ctx.db).await?;
    let mut made = Vec::new();
    for policy in due {
        let version = spaces::current_version(&ctx.db, policy.space_id).await?;
        let space = ctx.spaces.get(&ctx.db, policy.space_id, version).await?;
        let mut tx = ctx.db.begin().await?;
        let agent = policy.agent_id;
        match training::create_job(
            &mut tx,
            agent,
            training::JobPlace {
                space_id: policy.space_id,
                space: &space,
                space_version: version,
                credits_per_mtoken: ctx.settings.training_credits_per_mtoken,
            },
            &policy.settings,
            JobTrigger::Policy,
        )
        .await
        {
            Ok(id) => {
                tx.commit().await?;
                tracing::info!(%agent, job = %id, "training policy made a job");
                made.push(id);
            }
            Err(training::JobRefused::Db(e)) => return Err(e.into()),
            Err(why) => tracing::debug!(%agent, %why, "training policy due but no job made"),
        }
    }
    if !made.is_empty() {
        relay::flush_outbox(ctx).await?;
    }
    Ok(made)
}

/// Runs the policy round every `period` until `stop` fires.
pub async fn run(ctx: Context, period: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.changed() => break,
        }
        if let Err(err) = round(&ctx).await {
            tracing::warn!(error = %err, "training policy round failed");
        }
    }
}
