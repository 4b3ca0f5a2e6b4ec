//! Preference pairs as buyers export them.

use crate::domain::{MatchId, PairId, SpaceId};
use sqlx::PgPool;

/// One pair with its prompt and both answers, in TRL's shape plus
/// provenance.
#[derive(Debug, sqlx::FromRow)]
pub struct PairLine {
    pub id: PairId,
    pub match_id: MatchId,
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
    pub margin: f64,
    pub consistent: bool,
    pub license: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// A Space's pairs made after `after`, with a margin of at least
/// `min_margin`, oldest first, at most `limit`, sent into `to` one row at
/// a time as PostgreSQL sends them (with a bounded channel, memory stays
/// bounded however many there are). A receiver that went away stops the
/// read; an error midway is sent as the last item.
pub async fn export_to(
    pool: PgPool,
    space: SpaceId,
    after: Option<chrono::DateTime<chrono::Utc>>,
    min_margin: f64,
    limit: i64,
    to: tokio::sync::mpsc::Sender<Result<PairLine, sqlx::Error>>,
) {
    use futures_util::StreamExt;
    let mut rows =
        sqlx::query_as::<_, PairLine>(EXPORT).bind(space).bind(after).bind(min_margin).bind(limit).fetch(&pool);
    while let Some(row) = rows.next().await {
        let failed = row.is_err();
        if to.send(row).await.is_err() || failed {
            break;
        }
    }
}

const EXPORT: &str =
    "select p.id, p.match_id, m.prompt, oc.text as chosen, orj.text as rejected, p.margin, p.consistent,
                p.license, p.created_at
         from pairs p
         join matches m on m.id = p.match_id
         join outputs oc on oc.match_id = p.match_id and oc.slot = p.chosen_slot
         join outputs orj on orj.match_id = p.match_id and orj.slot = p.rejected_slot
         where p.space_id = $1 and ($2::timestamptz is null or p.created_at > $2) and p.margin >= $3
         order by p.created_at, p.id limit $4";

/// Every pair there is.
pub async fn count(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("select count(*) from pairs").fetch_one(pool).await
}
