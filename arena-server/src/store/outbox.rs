//! The outbox: hand-overs written in the same transaction as the work they
//! follow, relayed to Redis after commit (`work::relay`). A row stays until
//! its message was added to the stream.

use crate::domain::Topic;
use sqlx::PgConnection;
use uuid::Uuid;

/// Writes the hand-over of `subject` (a match or job id) to `topic` in the
/// caller's transaction.
pub async fn enqueue(conn: &mut PgConnection, topic: Topic, subject: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("insert into outbox (stream, subject) values ($1, $2)")
        .bind(topic.name())
        .bind(subject)
        .execute(conn)
        .await?;
    Ok(())
}

/// The same for many subjects.
pub async fn enqueue_many(conn: &mut PgConnection, topic: Topic, subjects: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query("insert into outbox (stream, subject) select $1, unnest($2::uuid[])")
        .bind(topic.name())
        .bind(subjects)
        .execute(conn)
        .await?;
    Ok(())
}

/// One hand-over waiting to be relayed. `topic` is None for a stream name
/// this build does not know (the relay drops it).
#[derive(Debug, Clone, Copy)]
pub struct Handover {
    pub topic: Option<Topic>,
    pub subject: Uuid,
}

/// Takes up to `limit` rows out of the outbox in the caller's transaction
/// (rows other relays hold are skipped); they are gone once it commits.
pub async fn take(conn: &mut PgConnection, limit: i64) -> Result<Vec<Handover>, sqlx::Error> {
    let rows: Vec<(String, Uuid)> = sqlx::query_as(
        "delete from outbox where id in (select id from outbox order by id limit $1 for update skip locked)
         returning stream, subject",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(stream, subject)| Handover { topic: Topic::parse(&stream), subject }).collect())
}
