//! The match pipeline on Redis Streams: generate → judge → settle.
//!
//! PostgreSQL is the truth; Redis only says "look at match X". A stage
//! reads its stream through a consumer group (at-least-once), does its work
//! idempotently on the match (a match past the stage is acknowledged and
//! skipped), and in the same transaction as its result writes an outbox row
//! for the next stage, which is relayed to Redis after commit. Messages a
//! dead consumer left pending are reclaimed with XAUTOCLAIM; a message
//! delivered `max_deliveries` times goes to the dead-letter stream and its
//! match fails with every fee refunded. The reconciler re-enqueues matches
//! whose status stalled, so losing Redis's data loses no work.

pub mod generate;
pub mod judging;
pub mod settle;

use crate::config::ArenaSettings;
use crate::events::{Event, Events};
use crate::kv::Redis;
use crate::ledger::{self, Leg};
use crate::space_store::SpaceCache;
use redis::AsyncCommands;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamPendingCountReply, StreamReadOptions, StreamReadReply,
};
use sqlx::{PgConnection, PgPool};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A pipeline stage; each has a stream and a consumer group of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Generate,
    Judge,
    Settle,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Generate, Stage::Judge, Stage::Settle];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Generate => "generate",
            Stage::Judge => "judge",
            Stage::Settle => "settle",
        }
    }

    pub fn parse(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The stage that moves a match on from `status`.
    pub fn for_status(status: &str) -> Option<Stage> {
        match status {
            "formed" => Some(Stage::Generate),
            "generated" => Some(Stage::Judge),
            "judged" => Some(Stage::Settle),
            _ => None,
        }
    }

    /// The status a match has when this stage has work on it.
    pub fn input_status(self) -> &'static str {
        match self {
            Stage::Generate => "formed",
            Stage::Judge => "generated",
            Stage::Settle => "judged",
        }
    }

    pub fn stream(self, redis: &Redis) -> String {
        redis.key(&format!("stream:{}", self.name()))
    }
}

/// The dead-letter stream.
pub fn dead_stream(redis: &Redis) -> String {
    redis.key("stream:dead")
}

/// Everything a stage worker needs.
#[derive(Clone)]
pub struct Pipeline {
    pub db: PgPool,
    pub redis: Redis,
    pub spaces: SpaceCache,
    pub settings: ArenaSettings,
    pub metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    /// This process's consumer name: unique, so a restarted worker never
    /// mistakes another's pending messages for its own.
    pub consumer: String,
}

impl Pipeline {
    pub fn new(db: PgPool, redis: Redis, spaces: SpaceCache, settings: ArenaSettings) -> Pipeline {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "arena".to_owned());
        let consumer = format!("{host}-{}-{}", std::process::id(), &Uuid::new_v4().simple().to_string()[..8]);
        Pipeline { db, redis, spaces, settings, metrics: None, consumer }
    }
}

/// Moves matches `stage` finished from its input status to the next one,
/// stamps the time, and writes the hand-over to the following stage, in the
/// caller's transaction. Returns the matches it moved: one already past the
/// stage (a redelivery) is left alone. Settlement has its own bookkeeping.
pub async fn advance(conn: &mut PgConnection, stage: Stage, ids: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
    let (sql, next) = match stage {
        Stage::Generate => (
            "update matches set status = 'generated', updated_at = now(), generated_at = clock_timestamp()
             where id = any($1) and status = 'formed' returning id",
            Stage::Judge,
        ),
        Stage::Judge => (
            "update matches set status = 'judged', updated_at = now(), judged_at = clock_timestamp()
             where id = any($1) and status = 'generated' returning id",
            Stage::Settle,
        ),
        Stage::Settle => return Ok(Vec::new()),
    };
    let moved: Vec<Uuid> = sqlx::query_scalar(sql).bind(ids).fetch_all(&mut *conn).await?;
    enqueue_many(conn, next, &moved).await?;
    Ok(moved)
}

/// Writes the hand-over to `stage` in the caller's transaction.
pub async fn enqueue(conn: &mut PgConnection, stage: Stage, match_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("insert into outbox (stream, subject) values ($1, $2)")
        .bind(stage.name())
        .bind(match_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The same for many matches.
pub async fn enqueue_many(conn: &mut PgConnection, stage: Stage, matches: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query("insert into outbox (stream, subject) select $1, unnest($2::uuid[])")
        .bind(stage.name())
        .bind(matches)
        .execute(conn)
        .await?;
    Ok(())
}

/// Relays outbox rows to their streams; rows stay until XADD succeeded.
/// Safe to run from every worker at once (rows are claimed with SKIP LOCKED).
pub async fn flush_outbox(pool: &PgPool, redis: &Redis) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let mut tx = pool.begin().await?;
        let rows: Vec<(String, Uuid)> = sqlx::query_as(
            "delete from outbox where id in (select id from outbox order by id limit 500 for update skip locked)
             returning stream, subject",
        )
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(total);
        }
        let mut pipe = redis::pipe();
        for (stream, subject) in &rows {
            if stream == crate::training::STREAM {
                pipe.xadd(crate::training::stream(redis), "*", &[("job", subject.to_string())]).ignore();
                continue;
            }
            let Some(stage) = Stage::parse(stream) else { continue };
            pipe.xadd(stage.stream(redis), "*", &[("match", subject.to_string())]).ignore();
        }
        let mut conn = redis.conn();
        let _: () = pipe.query_async(&mut conn).await?;
        tx.commit().await?;
        total += rows.len();
    }
}

/// Creates the stage's stream and group if missing (after a Redis restart
/// or flush they are gone).
pub async fn ensure_group(redis: &Redis, stage: Stage) -> redis::RedisResult<()> {
    create_group(redis, &stage.stream(redis), stage.name()).await
}

/// Creates `stream` and its consumer `group` if missing; one that exists
/// already is fine.
pub async fn create_group(redis: &Redis, stream: &str, group: &str) -> redis::RedisResult<()> {
    let mut conn = redis.conn();
    let created: redis::RedisResult<()> = conn.xgroup_create_mkstream(stream, group, "0").await;
    match created {
        Ok(()) => Ok(()),
        Err(err) if err.code() == Some("BUSYGROUP") => Ok(()),
        Err(err) => Err(err),
    }
}

/// A connection of its own for blocking stream reads, retried every second
/// until it opens; None if `stop` fires first.
pub async fn stream_reader(
    redis: &Redis,
    who: &str,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<redis::aio::ConnectionManager> {
    loop {
        match redis.dedicated().await {
            Ok(conn) => return Some(conn),
            Err(err) => {
                tracing::warn!(worker = who, error = %err, "cannot open a stream connection; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return None,
                }
            }
        }
    }
}

/// A message: its stream id and the match it names.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub match_id: Option<Uuid>,
}

fn parse_ids(ids: Vec<redis::streams::StreamId>) -> Vec<Message> {
    ids.into_iter()
        .map(|entry| {
            let match_id = entry.get::<String>("match").and_then(|m| Uuid::parse_str(&m).ok());
            Message { id: entry.id, match_id }
        })
        .collect()
}

/// New messages for this consumer, waiting up to `block` on `conn` (a
/// dedicated connection: see `Redis::dedicated`).
pub async fn read(
    p: &Pipeline,
    conn: &mut redis::aio::ConnectionManager,
    stage: Stage,
    count: usize,
    block: Duration,
) -> redis::RedisResult<Vec<Message>> {
    let options =
        StreamReadOptions::default().group(stage.name(), &p.consumer).count(count).block(block.as_millis() as usize);
    let reply: redis::RedisResult<StreamReadReply> =
        conn.xread_options(&[stage.stream(&p.redis)], &[">"], &options).await;
    match reply {
        Ok(reply) => Ok(reply.keys.into_iter().flat_map(|k| parse_ids(k.ids)).collect()),
        Err(err) if err.code() == Some("NOGROUP") => {
            ensure_group(&p.redis, stage).await?;
            Ok(Vec::new())
        }
        Err(err) => Err(err),
    }
}

/// Takes over messages idle for `reclaim_idle_ms`; those already delivered
/// `max_deliveries` times are dead-lettered (and their matches failed).
pub async fn reclaim(p: &Pipeline, stage: Stage, count: usize) -> anyhow::Result<Vec<Message>> {
    let stream = stage.stream(&p.redis);
    let mut conn = p.redis.conn();
    let idle = p.settings.reclaim_idle_ms;
    let stale: redis::RedisResult<StreamPendingCountReply> = redis::cmd("XPENDING")
        .arg(&stream)
        .arg(stage.name())
        .arg("IDLE")
        .arg(idle)
        .arg("-")
        .arg("+")
        .arg(count)
        .query_async(&mut conn)
        .await;
    let stale = match stale {
        Ok(stale) => stale,
        Err(err) if err.code() == Some("NOGROUP") => {
            ensure_group(&p.redis, stage).await?;
            return Ok(Vec::new());
        }
        Err(err) => return Err(err.into()),
    };
    for pending in stale.ids.iter().filter(|id| id.times_delivered >= p.settings.max_deliveries as usize) {
        dead_letter(p, stage, &pending.id, pending.times_delivered).await?;
    }
    let reply: StreamAutoClaimReply = conn
        .xautoclaim_options(
            &stream,
            stage.name(),
            &p.consumer,
            idle,
            "0-0",
            StreamAutoClaimOptions::default().count(count),
        )
        .await?;
    Ok(parse_ids(reply.claimed))
}

/// Moves one message to the dead-letter stream and fails its match.
async fn dead_letter(p: &Pipeline, stage: Stage, id: &str, deliveries: usize) -> anyhow::Result<()> {
    let stream = stage.stream(&p.redis);
    let mut conn = p.redis.conn();
    let entries: Vec<redis::streams::StreamId> = {
        let reply: redis::streams::StreamRangeReply = conn.xrange(&stream, id, id).await?;
        reply.ids
    };
    let match_id = parse_ids(entries).into_iter().next().and_then(|m| m.match_id);
    let reason = format!("{} stage: delivered {deliveries} times without success", stage.name());
    let _: String = conn
        .xadd(
            dead_stream(&p.redis),
            "*",
            &[
                ("stage", stage.name().to_owned()),
                ("message", id.to_owned()),
                ("match", match_id.map(|m| m.to_string()).unwrap_or_default()),
                ("reason", reason.clone()),
            ],
        )
        .await?;
    if let Some(match_id) = match_id {
        let mut tx = p.db.begin().await?;
        let failed = fail_match(&mut tx, match_id, &reason).await?;
        tx.commit().await?;
        if let Some(space) = failed {
            Events::publish(&p.redis, &Event { match_id, space, status: "failed".into(), detail: None }).await;
        }
    }
    let _: i64 = conn.xack(&stream, stage.name(), &[id]).await?;
    tracing::error!(stage = stage.name(), message = id, ?match_id, deliveries, "dead-lettered");
    Ok(())
}

/// Fails an unsettled match: refunds every entry fee and the sponsor pool
/// from its pot and frees its agents. Returns the Space's slug when it
/// changed anything; a match already settled or failed is left alone.
pub async fn fail_match(conn: &mut PgConnection, match_id: Uuid, reason: &str) -> anyhow::Result<Option<String>> {
    let row: Option<(String, Uuid, i64, String, Uuid)> = sqlx::query_as(
        "select m.status, m.space_id, m.pot, s.slug, s.owner_id from matches m join spaces s on s.id = m.space_id
         where m.id = $1 for update of m",
    )
    .bind(match_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((status, space_id, pot, slug, designer)) = row else { return Ok(None) };
    if status == "settled" || status == "failed" {
        return Ok(None);
    }
    let fees: Vec<(Uuid, i64)> = sqlx::query_as(
        "select acc.id, ma.entry_fee from match_agents ma
         join accounts acc on acc.kind = 'user' and acc.user_id = ma.owner_id
         where ma.match_id = $1 order by ma.slot",
    )
    .bind(match_id)
    .fetch_all(&mut *conn)
    .await?;
    let pot_account: Uuid = sqlx::query_scalar("select id from accounts where kind = 'pot' and match_id = $1")
        .bind(match_id)
        .fetch_one(&mut *conn)
        .await?;
    let mut legs: Vec<Leg> = fees.iter().filter(|(_, fee)| *fee > 0).map(|(acc, fee)| Leg::new(*acc, *fee)).collect();
    let sponsor = pot - fees.iter().map(|(_, fee)| fee).sum::<i64>();
    if sponsor > 0 {
        let account = ledger::user_account(&mut *conn, designer).await?;
        legs.push(Leg::new(account, sponsor));
    }
    if pot > 0 {
        legs.push(Leg::new(pot_account, -pot));
    }
    ledger::post(&mut *conn, &format!("refund:{match_id}"), "refund", Some(match_id), reason, &legs).await?;
    sqlx::query("update matches set status = 'failed', error = $2, updated_at = now() where id = $1")
        .bind(match_id)
        .bind(reason)
        .execute(&mut *conn)
        .await?;
    sqlx::query("update entries set open_match = null where space_id = $1 and open_match = $2")
        .bind(space_id)
        .bind(match_id)
        .execute(&mut *conn)
        .await?;
    Ok(Some(slug))
}

/// Acknowledges handled messages.
pub async fn ack(p: &Pipeline, stage: Stage, ids: &[String]) -> redis::RedisResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut conn = p.redis.conn();
    let _: i64 = conn.xack(stage.stream(&p.redis), stage.name(), ids).await?;
    Ok(())
}

/// What a stage does with a batch of matches: the ids it finished (or found
/// already finished). Matches it could not finish stay pending and are
/// retried after `reclaim_idle_ms`.
pub trait StageWork: Send + Sync + 'static {
    fn stage(&self) -> Stage;
    fn run<'a>(
        &'a self,
        p: &'a Pipeline,
        matches: &'a [Uuid],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Vec<Uuid>>> + Send + 'a>>;
}

/// Runs one stage worker until `stop` fires.
pub async fn run_worker(
    p: Pipeline,
    work: std::sync::Arc<dyn StageWork>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let stage = work.stage();
    if let Err(err) = ensure_group(&p.redis, stage).await {
        tracing::warn!(stage = stage.name(), error = %err, "cannot create the consumer group yet");
    }
    let Some(mut reader) = stream_reader(&p.redis, stage.name(), &mut stop).await else { return };
    let mut last_reclaim = Instant::now();
    let reclaim_every = Duration::from_millis((p.settings.reclaim_idle_ms / 2).clamp(100, 10_000));
    tracing::info!(stage = stage.name(), consumer = %p.consumer, "stage worker started");
    loop {
        if *stop.borrow() {
            break;
        }
        let mut messages = Vec::new();
        if last_reclaim.elapsed() >= reclaim_every {
            last_reclaim = Instant::now();
            match reclaim(&p, stage, p.settings.stage_batch).await {
                Ok(m) => messages = m,
                Err(err) => tracing::warn!(stage = stage.name(), error = %err, "reclaim failed"),
            }
        }
        if messages.is_empty() {
            let read = tokio::select! {
                r = read(&p, &mut reader, stage, p.settings.stage_batch, Duration::from_millis(500)) => r,
                _ = stop.changed() => break,
            };
            match read {
                Ok(m) => messages = m,
                Err(err) => {
                    tracing::warn!(stage = stage.name(), error = %err, "reading the stream failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        if messages.is_empty() {
            continue;
        }
        // A message without a valid match id is noise: acknowledge it.
        let (valid, junk): (Vec<Message>, Vec<Message>) = messages.into_iter().partition(|m| m.match_id.is_some());
        let junk_ids: Vec<String> = junk.into_iter().map(|m| m.id).collect();
        let _ = ack(&p, stage, &junk_ids).await;
        let mut ids: Vec<Uuid> = valid.iter().filter_map(|m| m.match_id).collect();
        ids.sort();
        ids.dedup();
        let started = Instant::now();
        match work.run(&p, &ids).await {
            Ok(done) => {
                let acked: Vec<String> = valid
                    .iter()
                    .filter(|m| m.match_id.is_some_and(|id| done.contains(&id)))
                    .map(|m| m.id.clone())
                    .collect();
                if let Err(err) = flush_outbox(&p.db, &p.redis).await {
                    tracing::warn!(error = %err, "outbox relay failed; the reconciler will pick the work up");
                }
                if let Err(err) = ack(&p, stage, &acked).await {
                    tracing::warn!(stage = stage.name(), error = %err, "ack failed; messages will be redelivered");
                }
                if let Some(m) = &p.metrics {
                    m.observe_stage(stage.name(), started.elapsed(), done.len());
                }
            }
            Err(err) => tracing::warn!(stage = stage.name(), error = ?err, "stage batch failed; will retry"),
        }
    }
    tracing::info!(stage = stage.name(), "stage worker stopped");
}

/// Re-enqueues matches whose status has not moved for `reconcile_after_s`,
/// and relays any outbox rows left behind. Returns how many it re-enqueued.
pub async fn reconcile(p: &Pipeline) -> anyhow::Result<usize> {
    flush_outbox(&p.db, &p.redis).await?;
    crate::training::reconcile(p).await?;
    let stalled: Vec<(Uuid, String)> = sqlx::query_as(
        "update matches set updated_at = now()
         where id in (select id from matches where status in ('formed', 'generated', 'judged')
                      and updated_at < now() - make_interval(secs => $1) limit 1000)
         returning id, status",
    )
    .bind(p.settings.reconcile_after_s as f64)
    .fetch_all(&p.db)
    .await?;
    if stalled.is_empty() {
        return Ok(0);
    }
    for stage in Stage::ALL {
        ensure_group(&p.redis, stage).await?;
    }
    let mut pipe = redis::pipe();
    for (id, status) in &stalled {
        if let Some(stage) = Stage::for_status(status) {
            pipe.xadd(stage.stream(&p.redis), "*", &[("match", id.to_string())]).ignore();
        }
    }
    let mut conn = p.redis.conn();
    let _: () = pipe.query_async(&mut conn).await?;
    tracing::info!(count = stalled.len(), "reconciler re-enqueued stalled matches");
    Ok(stalled.len())
}

/// Runs the reconciler every `period` until `stop` fires.
pub async fn run_reconciler(p: Pipeline, period: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.changed() => break,
        }
        if let Err(err) = reconcile(&p).await {
            tracing::warn!(error = %err, "reconciler pass failed");
        }
    }
}

/// Refreshes the queue gauges (open matches by status, pending messages per
/// stream) every `period` until `stop` fires.
pub async fn run_gauges(p: Pipeline, period: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(metrics) = p.metrics.clone() else { return };
    loop {
        let open: Result<Vec<(String, i64)>, _> = sqlx::query_as(
            "select status, count(*) from matches where status in ('formed', 'generated', 'judged') group by status",
        )
        .fetch_all(&p.db)
        .await;
        if let Ok(open) = open {
            for status in ["formed", "generated", "judged"] {
                let n = open.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
                metrics.open_matches.with_label_values(&[status]).set(n);
            }
        }
        let mut conn = p.redis.conn();
        for stage in Stage::ALL {
            let summary: redis::RedisResult<(i64, redis::Value, redis::Value, redis::Value)> =
                redis::cmd("XPENDING").arg(stage.stream(&p.redis)).arg(stage.name()).query_async(&mut conn).await;
            if let Ok((pending, _, _, _)) = summary {
                metrics.stream_pending.with_label_values(&[stage.name()]).set(pending);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.changed() => break,
        }
    }
}

/// Runs the matchmaker every `matchmaker_interval_ms` until `stop` fires.
pub async fn run_matchmaker(p: Pipeline, mut stop: tokio::sync::watch::Receiver<bool>) {
    let period = Duration::from_millis(p.settings.matchmaker_interval_ms.max(10));
    loop {
        match crate::matchmaking::round(&p.db, &p.spaces).await {
            Ok(formed) if !formed.is_empty() => {
                if let Err(err) = flush_outbox(&p.db, &p.redis).await {
                    tracing::warn!(error = %err, "outbox relay failed");
                }
                let slugs: Vec<(Uuid, String)> = sqlx::query_as(
                    "select m.id, s.slug from matches m join spaces s on s.id = m.space_id where m.id = any($1)",
                )
                .bind(&formed)
                .fetch_all(&p.db)
                .await
                .unwrap_or_default();
                let events: Vec<Event> = slugs
                    .into_iter()
                    .map(|(match_id, space)| Event { match_id, space, status: "formed".into(), detail: None })
                    .collect();
                Events::publish_many(&p.redis, &events).await;
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "matchmaking round failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.changed() => break,
        }
    }
}
