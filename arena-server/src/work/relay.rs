//! The outbox relay: moves hand-overs from PostgreSQL to their streams
//! after the transaction that wrote them committed. Rows stay until XADD
//! succeeded; every worker may relay at once (rows are taken with SKIP
//! LOCKED).

use crate::context::Context;
use crate::queue::streams;
use crate::store::outbox;

/// Relays every waiting hand-over; returns how many.
pub async fn flush_outbox(ctx: &Context) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let mut tx = ctx.db.begin().await?;
        let rows = outbox::take(&mut tx, 500).await?;
        if rows.is_empty() {
            return Ok(total);
        }
        let messages: Vec<_> = rows.iter().filter_map(|r| r.topic.map(|t| (t, r.subject))).collect();
        streams::add_many(&ctx.redis, &messages).await?;
        tx.commit().await?;
        total += rows.len();
    }
}
