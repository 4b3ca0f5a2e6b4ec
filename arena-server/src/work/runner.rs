//! The one stream runner every worker is built on: it reads its topic's
//! stream through the consumer group, hands the subjects to its [`Work`],
//! relays the outbox, and acknowledges.
//!
//! PostgreSQL is the truth; Redis only says "look at X". A stage's work is
//! idempotent on its subject (a match past the stage is acknowledged and
//! skipped) and writes its result and the next stage's outbox row in one
//! transaction. Messages a dead consumer left pending are reclaimed with
//! XAUTOCLAIM; a message whose work failed `max_deliveries` times goes to
//! the dead-letter stream and the work gives its subject up (a match fails
//! with every fee refunded). The trainer's messages are acknowledged as
//! soon as they are read instead: its job row, claimed with a heartbeat, is
//! the work, and the reconciler offers an abandoned job again.

use super::relay;
use crate::context::Context;
use crate::domain::Topic;
use crate::queue::streams::{self, StreamMessage};
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How the runner treats a topic's messages.
#[derive(Debug, Clone, Copy)]
pub struct RunnerSpec {
    pub topic: Topic,
    /// Messages taken at once.
    pub batch: usize,
    /// Acknowledge on read (the subject's row tracks the work), rather than
    /// when the work says the subject is done.
    pub ack_on_read: bool,
    /// Cancel the work in hand when the worker is stopped (its subject is
    /// picked up again by whoever takes over), rather than letting it finish.
    pub cancel_on_stop: bool,
}

impl RunnerSpec {
    /// A match stage's: `stage_batch` matches at once, acknowledged when
    /// done, finished when the worker is stopped.
    pub fn match_stage(stage: crate::domain::Stage, ctx: &Context) -> RunnerSpec {
        RunnerSpec {
            topic: Topic::Stage(stage),
            batch: ctx.settings.stage_batch,
            ack_on_read: false,
            cancel_on_stop: false,
        }
    }
}

/// What a worker does with the subjects of its messages.
pub trait Work: Send + Sync + 'static {
    fn spec(&self, ctx: &Context) -> RunnerSpec;

    /// Works on `subjects`; returns the ones it finished (or found already
    /// finished). The others stay pending and are retried after
    /// `reclaim_idle_ms` (unless the spec acknowledges on read).
    fn run<'a>(&'a self, ctx: &'a Context, subjects: &'a [Uuid]) -> BoxFuture<'a, anyhow::Result<Vec<Uuid>>>;

    /// Gives a subject up after its message was delivered too often. By
    /// default the subject is a match: it fails, every fee refunded.
    fn abandon<'a>(&'a self, ctx: &'a Context, subject: Uuid, reason: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(super::fail_match(ctx, crate::domain::MatchId(subject), reason))
    }
}

/// Deliveries after which a message is dead-lettered even without counted
/// failures, as a multiple of `max_deliveries`: a worker that crashes on a
/// message (and so never reports its failure) must not loop for ever.
pub const DELIVERY_BACKSTOP: usize = 4;

/// Takes over messages idle for `reclaim_idle_ms`. One whose work failed
/// `max_deliveries` times is dead-lettered (and its subject given up): a
/// failure is counted when the work said it could not finish the subject,
/// not when a message is merely delivered again — a slow but alive worker's
/// messages are reclaimed without counting against them. A message
/// delivered `DELIVERY_BACKSTOP × max_deliveries` times goes too.
pub async fn reclaim(ctx: &Context, work: &dyn Work, count: usize) -> anyhow::Result<Vec<StreamMessage>> {
    let topic = work.spec(ctx).topic;
    let idle = ctx.settings.reclaim_idle_ms;
    let limit = ctx.settings.max_deliveries as usize;
    let stale = streams::idle_pending(&ctx.redis, topic, idle, count).await?;
    for pending in &stale {
        let subject = streams::subject_of(&ctx.redis, topic, &pending.id).await?;
        let failed = match subject {
            Some(subject) => streams::failures(&ctx.redis, topic, subject).await? as usize,
            None => 0,
        };
        let why = if failed >= limit {
            Some(format!("{} stage: failed {failed} times (delivered {} times)", topic.name(), pending.times_delivered))
        } else if pending.times_delivered >= DELIVERY_BACKSTOP * limit {
            Some(format!("{} stage: delivered {} times without success", topic.name(), pending.times_delivered))
        } else {
            None
        };
        if let Some(why) = why {
            dead_letter(ctx, work, &pending.id, subject, why).await?;
        }
    }
    Ok(streams::claim_idle(&ctx.redis, topic, &ctx.consumer, idle, count).await?)
}

/// Moves one message to the dead-letter stream and gives its subject up.
async fn dead_letter(
    ctx: &Context,
    work: &dyn Work,
    id: &str,
    subject: Option<Uuid>,
    reason: String,
) -> anyhow::Result<()> {
    let topic = work.spec(ctx).topic;
    streams::add_dead(
        &ctx.redis,
        &[
            ("stage", topic.name().to_owned()),
            ("message", id.to_owned()),
            (topic.field(), subject.map(|m| m.to_string()).unwrap_or_default()),
            ("reason", reason.clone()),
        ],
    )
    .await?;
    if let Some(subject) = subject {
        work.abandon(ctx, subject, &reason).await?;
    }
    streams::ack(&ctx.redis, topic, &[id.to_owned()]).await?;
    if let Some(subject) = subject {
        let _ = streams::clear_failures(&ctx.redis, topic, &[subject]).await;
    }
    tracing::error!(topic = topic.name(), message = id, ?subject, %reason, "dead-lettered");
    Ok(())
}

/// Runs one worker until `stop` fires.
pub async fn run(ctx: Context, work: Arc<dyn Work>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let spec = work.spec(&ctx);
    let topic = spec.topic;
    if let Err(err) = streams::ensure_group(&ctx.redis, topic).await {
        tracing::warn!(topic = topic.name(), error = %err, "cannot create the consumer group yet");
    }
    let Some(mut reader) = streams::reader(&ctx.redis, topic.name(), &mut stop).await else { return };
    let mut last_reclaim = Instant::now();
    let reclaim_every = Duration::from_millis((ctx.settings.reclaim_idle_ms / 2).clamp(100, 10_000));
    tracing::info!(topic = topic.name(), consumer = %ctx.consumer, "worker started");
    loop {
        if *stop.borrow() {
            break;
        }
        let mut messages = Vec::new();
        if !spec.ack_on_read && last_reclaim.elapsed() >= reclaim_every {
            last_reclaim = Instant::now();
            match reclaim(&ctx, work.as_ref(), spec.batch).await {
                Ok(m) => messages = m,
                Err(err) => tracing::warn!(topic = topic.name(), error = %err, "reclaim failed"),
            }
        }
        if messages.is_empty() {
            let block = Duration::from_millis(if spec.ack_on_read { 1000 } else { 500 });
            let read = tokio::select! {
                r = streams::read(&ctx.redis, &mut reader, topic, &ctx.consumer, spec.batch, block) => r,
                _ = stop.changed() => break,
            };
            match read {
                Ok(m) => messages = m,
                Err(err) => {
                    tracing::warn!(topic = topic.name(), error = %err, "reading the stream failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        if messages.is_empty() {
            continue;
        }
        // A message without a valid subject is noise: acknowledge it.
        let (valid, junk): (Vec<StreamMessage>, Vec<StreamMessage>) =
            messages.into_iter().partition(|m| m.subject.is_some());
        let mut to_ack: Vec<String> = junk.into_iter().map(|m| m.id).collect();
        if spec.ack_on_read {
            to_ack.extend(valid.iter().map(|m| m.id.clone()));
        }
        let _ = streams::ack(&ctx.redis, topic, &to_ack).await;
        let mut ids: Vec<Uuid> = valid.iter().filter_map(|m| m.subject).collect();
        ids.sort();
        ids.dedup();
        let started = Instant::now();
        let outcome = if spec.cancel_on_stop {
            tokio::select! {
                out = work.run(&ctx, &ids) => Some(out),
                _ = stop.changed() => None,
            }
        } else {
            Some(work.run(&ctx, &ids).await)
        };
        match outcome {
            None => break,
            Some(Ok(done)) => {
                if let Err(err) = relay::flush_outbox(&ctx).await {
                    tracing::warn!(error = %err, "outbox relay failed; the reconciler will pick the work up");
                }
                if !spec.ack_on_read {
                    let failed: Vec<Uuid> = ids.iter().filter(|id| !done.contains(id)).copied().collect();
                    let _ = streams::count_failures(&ctx.redis, topic, &failed).await;
                    let _ = streams::clear_failures(&ctx.redis, topic, &done).await;
                    let acked: Vec<String> = valid
                        .iter()
                        .filter(|m| m.subject.is_some_and(|id| done.contains(&id)))
                        .map(|m| m.id.clone())
                        .collect();
                    if let Err(err) = streams::ack(&ctx.redis, topic, &acked).await {
                        tracing::warn!(topic = topic.name(), error = %err, "ack failed; messages will be redelivered");
                    }
                }
                ctx.metrics.observe_stage(topic.name(), started.elapsed(), done.len());
            }
            Some(Err(err)) => {
                tracing::warn!(topic = topic.name(), error = ?err, "batch failed; will retry");
                if !spec.ack_on_read {
                    let _ = streams::count_failures(&ctx.redis, topic, &ids).await;
                }
            }
        }
    }
    tracing::info!(topic = topic.name(), "worker stopped");
}
