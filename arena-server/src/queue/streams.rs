//! The work queues: one Redis stream per [`Topic`] (`stream:generate`,
//! `stream:judge`, `stream:settle`, `stream:train`), each read by one
//! consumer group, and the dead-letter stream. A message carries one
//! field, the id of its subject (a match or a training job).

use super::redis::Redis;
use crate::domain::Topic;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamPendingCountReply, StreamRangeReply, StreamReadOptions,
    StreamReadReply,
};
use std::time::Duration;
use uuid::Uuid;

/// The stream's key.
pub fn stream_key(redis: &Redis, topic: Topic) -> String {
    redis.key(&format!("stream:{}", topic.name()))
}

/// The dead-letter stream's key.
pub fn dead_stream(redis: &Redis) -> String {
    redis.key("stream:dead")
}

/// A message: its stream id and the subject it names (None when the field
/// is missing or not a UUID).
#[derive(Debug, Clone)]
pub struct StreamMessage {
    pub id: String,
    pub subject: Option<Uuid>,
}

fn parse_ids(topic: Topic, ids: Vec<redis::streams::StreamId>) -> Vec<StreamMessage> {
    ids.into_iter()
        .map(|entry| {
            let subject = entry.get::<String>(topic.field()).and_then(|m| Uuid::parse_str(&m).ok());
            StreamMessage { id: entry.id, subject }
        })
        .collect()
}

/// Creates the topic's stream and consumer group if missing (after a Redis
/// restart or flush they are gone); one that exists already is fine.
pub async fn ensure_group(redis: &Redis, topic: Topic) -> redis::RedisResult<()> {
    let mut conn = redis.conn();
    let created: redis::RedisResult<()> =
        conn.xgroup_create_mkstream(stream_key(redis, topic), topic.group(), "0").await;
    match created {
        Ok(()) => Ok(()),
        Err(err) if err.code() == Some("BUSYGROUP") => Ok(()),
        Err(err) => Err(err),
    }
}

/// A connection of its own for blocking stream reads, retried every second
/// until it opens; None if `stop` fires first.
pub async fn reader(
    redis: &Redis,
    who: &str,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<ConnectionManager> {
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

/// New messages for `consumer`, waiting up to `block` on `conn` (a
/// dedicated connection: see `Redis::dedicated`). A missing group is
/// created and the read answers nothing.
pub async fn read(
    redis: &Redis,
    conn: &mut ConnectionManager,
    topic: Topic,
    consumer: &str,
    count: usize,
    block: Duration,
) -> redis::RedisResult<Vec<StreamMessage>> {
    let options =
        StreamReadOptions::default().group(topic.group(), consumer).count(count).block(block.as_millis() as usize);
    let reply: redis::RedisResult<StreamReadReply> =
        conn.xread_options(&[stream_key(redis, topic)], &[">"], &options).await;
    match reply {
        Ok(reply) => Ok(reply.keys.into_iter().flat_map(|k| parse_ids(topic, k.ids)).collect()),
        Err(err) if err.code() == Some("NOGROUP") => {
            ensure_group(redis, topic).await?;
            Ok(Vec::new())
        }
        Err(err) => Err(err),
    }
}

/// A message delivered and not acknowledged.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: String,
    pub consumer: String,
    pub times_delivered: usize,
}

/// Up to `count` messages pending for at least `idle_ms`.
pub async fn idle_pending(redis: &Redis, topic: Topic, idle_ms: u64, count: usize) -> redis::RedisResult<Vec<Pending>> {
    let mut conn = redis.conn();
    let stale: redis::RedisResult<StreamPendingCountReply> = redis::cmd("XPENDING")
        .arg(stream_key(redis, topic))
        .arg(topic.group())
        .arg("IDLE")
        .arg(idle_ms)
        .arg("-")
        .arg("+")
        .arg(count)
        .query_async(&mut conn)
        .await;
    match stale {
        Ok(stale) => Ok(stale
            .ids
            .into_iter()
            .map(|p| Pending { id: p.id, consumer: p.consumer, times_delivered: p.times_delivered })
            .collect()),
        Err(err) if err.code() == Some("NOGROUP") => {
            ensure_group(redis, topic).await?;
            Ok(Vec::new())
        }
        Err(err) => Err(err),
    }
}

/// Takes over for `consumer` up to `count` messages idle for `idle_ms`.
pub async fn claim_idle(
    redis: &Redis,
    topic: Topic,
    consumer: &str,
    idle_ms: u64,
    count: usize,
) -> redis::RedisResult<Vec<StreamMessage>> {
    let mut conn = redis.conn();
    let reply: StreamAutoClaimReply = conn
        .xautoclaim_options(
            stream_key(redis, topic),
            topic.group(),
            consumer,
            idle_ms,
            "0-0",
            StreamAutoClaimOptions::default().count(count),
        )
        .await?;
    Ok(parse_ids(topic, reply.claimed))
}

/// The subject of one message, read back by its stream id.
pub async fn subject_of(redis: &Redis, topic: Topic, id: &str) -> redis::RedisResult<Option<Uuid>> {
    let mut conn = redis.conn();
    let reply: StreamRangeReply = conn.xrange(stream_key(redis, topic), id, id).await?;
    Ok(parse_ids(topic, reply.ids).into_iter().next().and_then(|m| m.subject))
}

/// Adds an entry to the dead-letter stream.
pub async fn add_dead(redis: &Redis, fields: &[(&str, String)]) -> redis::RedisResult<()> {
    let mut conn = redis.conn();
    let _: String = conn.xadd(dead_stream(redis), "*", fields).await?;
    Ok(())
}

/// Acknowledges handled messages.
pub async fn ack(redis: &Redis, topic: Topic, ids: &[String]) -> redis::RedisResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut conn = redis.conn();
    let _: i64 = conn.xack(stream_key(redis, topic), topic.group(), ids).await?;
    Ok(())
}

/// Adds one message per (topic, subject), in one round trip.
pub async fn add_many(redis: &Redis, messages: &[(Topic, Uuid)]) -> redis::RedisResult<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (topic, subject) in messages {
        pipe.xadd(stream_key(redis, *topic), "*", &[(topic.field(), subject.to_string())]).ignore();
    }
    let mut conn = redis.conn();
    pipe.query_async(&mut conn).await
}

/// The key counting how often work on `subject` failed in `topic`.
fn failures_key(redis: &Redis, topic: Topic, subject: Uuid) -> String {
    redis.key(&format!("failures:{}:{subject}", topic.name()))
}

/// Counts one failed attempt on each subject (kept a day after the last).
pub async fn count_failures(redis: &Redis, topic: Topic, subjects: &[Uuid]) -> redis::RedisResult<()> {
    if subjects.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for subject in subjects {
        let key = failures_key(redis, topic, *subject);
        pipe.incr(&key, 1).ignore().expire(&key, 24 * 3600).ignore();
    }
    let mut conn = redis.conn();
    pipe.query_async(&mut conn).await
}

/// Forgets the failures of subjects whose work is done.
pub async fn clear_failures(redis: &Redis, topic: Topic, subjects: &[Uuid]) -> redis::RedisResult<()> {
    if subjects.is_empty() {
        return Ok(());
    }
    let keys: Vec<String> = subjects.iter().map(|s| failures_key(redis, topic, *s)).collect();
    let mut conn = redis.conn();
    conn.del(keys).await
}

/// How often work on `subject` failed in `topic`.
pub async fn failures(redis: &Redis, topic: Topic, subject: Uuid) -> redis::RedisResult<u64> {
    let mut conn = redis.conn();
    let n: Option<u64> = conn.get(failures_key(redis, topic, subject)).await?;
    Ok(n.unwrap_or(0))
}

/// How many messages of the topic are delivered and not acknowledged.
pub async fn pending_count(redis: &Redis, topic: Topic) -> redis::RedisResult<i64> {
    let mut conn = redis.conn();
    let (pending, _, _, _): (i64, redis::Value, redis::Value, redis::Value) =
        redis::cmd("XPENDING").arg(stream_key(redis, topic)).arg(topic.group()).query_async(&mut conn).await?;
    Ok(pending)
}
