//! Data exports as paid jobs. Paying fixes the export: in one database
//! transaction the selected pairs are written down (`data_export_pairs`),
//! the buyer is debited and the Spaces' designers, the owners of the agents
//! in the pairs and the house are credited (one ledger transaction under
//! the buyer's idempotency key), and the export row is queued. A retry with
//! the same key finds that export and pays nothing again; two concurrent
//! requests with one key meet on the unique key, and the second finds the
//! first's export. The files are written afterwards from the fixed pairs,
//! so a failed or interrupted run can be run again and writes the same rows.

use crate::domain::dataset::{DataPrice, PairFilter, SpaceSale, split_sale};
use crate::domain::{SpaceId, UserId};
use crate::store::ledger::{self, LedgerError, Leg};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// Exports a buyer may have queued or running at once.
pub const MAX_IN_FLIGHT: i64 = 2;
/// Characters of an idempotency key.
pub const MAX_KEY_CHARS: usize = 128;

/// What a buyer asks for.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub buyer: UserId,
    pub idempotency_key: String,
    pub filter: PairFilter,
    /// "jsonl" or "parquet".
    pub format: &'static str,
    /// "standard" or "conversational".
    pub shape: &'static str,
    pub gzip: bool,
    pub scrub_pii: bool,
    /// At most this many pairs (oldest first).
    pub limit: i64,
    /// What the buyer was shown and agreed to pay; a higher price refuses
    /// the export (the data may have grown since).
    pub max_price: Option<i64>,
    /// The licences the buyer accepted: every licence of the pairs the
    /// paying transaction selects must be among them.
    pub accept_licenses: Vec<String>,
}

/// Free exports (of Spaces that give their pairs away) one buyer may make
/// in 24 hours: each is a full scan and files on the server's disk.
pub const FREE_EXPORTS_PER_DAY: i64 = 20;

/// An export as recorded.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Export {
    pub id: Uuid,
    #[serde(skip)]
    pub buyer_id: UserId,
    pub filter: serde_json::Value,
    pub format: String,
    pub shape: String,
    pub gzip: bool,
    pub scrub_pii: bool,
    pub licenses: Vec<String>,
    pub pairs: i64,
    pub price: i64,
    pub status: crate::domain::ExportStatus,
    pub rows_written: i64,
    pub files: serde_json::Value,
    pub error: Option<String>,
    /// When its files were deleted, past the operator's retention period
    /// (`arena.export_retention_days`); the row and its pairs are kept.
    pub expired_at: Option<chrono::DateTime<chrono::Utc>>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Why an export was not made. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ExportRefused {
    #[error("the filter selects no pairs")]
    Empty,
    #[error("these pairs cost {price} credits, more than the {max_price} agreed")]
    PriceRose { price: i64, max_price: i64 },
    #[error("the buyer holds {balance} credits; these {pairs} pairs cost {price}")]
    CannotPay { balance: i64, price: i64, pairs: i64 },
    #[error("{0} exports are already queued or running; wait for one to finish")]
    TooMany(i64),
    #[error("the selected pairs carry the licence {missing:?}, which was not accepted (they carry: {all})")]
    Licence { missing: String, all: String },
    #[error("{0} free exports in the last 24 hours: at most {FREE_EXPORTS_PER_DAY}; try again later")]
    FreeQuota(i64),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The quote for a filter: how many pairs (up to `limit`) and what they cost.
#[derive(Debug, Clone, Serialize)]
pub struct Quote {
    pub pairs: i64,
    pub price: i64,
    pub licenses: Vec<String>,
}

/// Each Space's price and designer, with its pair count and the answers
/// each owner has among `pairs` (a temp table of pair ids).
async fn sale_parts(conn: &mut sqlx::PgConnection) -> Result<Vec<SpaceSale<UserId>>, sqlx::Error> {
    // Human pairs may carry their own price (`[votes] price_per_pair`):
    // each Space's sale is in two parts, priced apart.
    let spaces: Vec<(SpaceId, bool, UserId, i64, f64, f64, i64)> = sqlx::query_as(
        "select s.id, p.label_source = 'human' as human, s.owner_id,
                case when p.label_source = 'human' then coalesce(v.human_price, v.data_price) else v.data_price end,
                v.data_designer_share, v.data_players_share, count(*)
         from sale_pairs sp join pairs p on p.id = sp.pair_id
         join spaces s on s.id = p.space_id
         join space_versions v on v.space_id = s.id and v.version = s.current_version
         group by 1, 2, 3, 4, 5, 6
         order by 1, 2",
    )
    .fetch_all(&mut *conn)
    .await?;
    let answers: Vec<(SpaceId, bool, UserId, i64)> = sqlx::query_as(
        "select p.space_id, p.label_source = 'human', ma.owner_id, count(*)
         from sale_pairs sp join pairs p on p.id = sp.pair_id
         join match_agents ma on (ma.match_id = coalesce(p.chosen_match_id, p.match_id) and ma.slot = p.chosen_slot)
                                or (ma.match_id = coalesce(p.rejected_match_id, p.match_id) and ma.slot = p.rejected_slot)
         group by 1, 2, 3",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(spaces
        .into_iter()
        .map(|(space, human, designer, per_pair, designer_share, players_share, pairs)| SpaceSale {
            price: DataPrice { per_pair, designer_share, players_share },
            pairs,
            designer,
            answers: answers
                .iter()
                .filter(|(s, h, _, _)| *s == space && *h == human)
                .map(|(_, _, o, n)| (*o, *n))
                .collect(),
        })
        .collect())
}

/// Fills the transaction's `sale_pairs` with the pairs `filter` selects,
/// oldest first, at most `limit`.
async fn select_pairs(conn: &mut sqlx::PgConnection, filter: &PairFilter, limit: i64) -> Result<i64, sqlx::Error> {
    sqlx::query("create temp table sale_pairs (seq bigint, pair_id uuid) on commit drop").execute(&mut *conn).await?;
    let ids = super::pairs::filtered_ids_sql();
    let sql = format!(
        "with chosen as (insert into sale_pairs (seq, pair_id)
                         select row_number() over (order by created_at, id), id from ({ids} limit $21) picked
                         returning 1)
         select count(*) from chosen"
    );
    let (n,): (i64,) =
        super::pairs::bind_filter(sqlx::query_as(&sql), filter).bind(limit).fetch_one(&mut *conn).await?;
    Ok(n)
}

async fn licenses(conn: &mut sqlx::PgConnection) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "select distinct coalesce(p.license, 'not stated') from sale_pairs sp join pairs p on p.id = sp.pair_id order by 1",
    )
    .fetch_all(&mut *conn)
    .await
}

/// What the pairs `filter` selects would cost now (nothing is written).
pub async fn quote(pool: &PgPool, filter: &PairFilter, limit: i64) -> Result<Quote, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let pairs = select_pairs(&mut tx, filter, limit).await?;
    let split = split_sale(&sale_parts(&mut tx).await?);
    let licenses = licenses(&mut tx).await?;
    tx.rollback().await?;
    Ok(Quote { pairs, price: split.total, licenses })
}

/// Pays for and queues an export, or finds the one made under the same
/// key. Returns the export and whether this call made it.
pub async fn create(pool: &PgPool, req: &ExportRequest) -> Result<(Export, bool), ExportRefused> {
    if let Some(found) = by_key(pool, req.buyer, &req.idempotency_key).await? {
        return Ok((found, false));
    }
    let mut tx = pool.begin().await?;
    // One paying export per buyer at a time: the in-flight count and the
    // balance are read under this lock.
    sqlx::query("select pg_advisory_xact_lock(hashtextextended('data-export:' || $1::text, 0))")
        .bind(req.buyer)
        .execute(&mut *tx)
        .await?;
    if let Some(found) = by_key_in(&mut tx, req.buyer, &req.idempotency_key).await? {
        return Ok((found, false));
    }
    let in_flight: i64 =
        sqlx::query_scalar("select count(*) from data_exports where buyer_id = $1 and status in ('queued', 'running')")
            .bind(req.buyer)
            .fetch_one(&mut *tx)
            .await?;
    if in_flight >= MAX_IN_FLIGHT {
        return Err(ExportRefused::TooMany(in_flight));
    }
    let pairs = select_pairs(&mut tx, &req.filter, req.limit).await?;
    if pairs == 0 {
        return Err(ExportRefused::Empty);
    }
    let split = split_sale(&sale_parts(&mut tx).await?);
    if let Some(max_price) = req.max_price
        && split.total > max_price
    {
        return Err(ExportRefused::PriceRose { price: split.total, max_price });
    }
    let licenses = licenses(&mut tx).await?;
    // Checked here, on the pairs this transaction pays for (the data may
    // have grown since the quote the buyer read).
    if let Some(missing) = licenses.iter().find(|l| !req.accept_licenses.contains(l)) {
        return Err(ExportRefused::Licence { missing: missing.clone(), all: licenses.join(", ") });
    }
    if split.total == 0 {
        let free_today: i64 = sqlx::query_scalar(
            "select count(*) from data_exports
             where buyer_id = $1 and price = 0 and created_at > now() - interval '24 hours'",
        )
        .bind(req.buyer)
        .fetch_one(&mut *tx)
        .await?;
        if free_today >= FREE_EXPORTS_PER_DAY {
            return Err(ExportRefused::FreeQuota(free_today));
        }
    }
    let id = Uuid::new_v4();
    sqlx::query(
        "insert into data_exports (id, buyer_id, idempotency_key, filter, format, shape, gzip, scrub_pii, licenses,
                                   pairs, price, status)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'queued')",
    )
    .bind(id)
    .bind(req.buyer)
    .bind(&req.idempotency_key)
    .bind(serde_json::to_value(&req.filter).unwrap_or_default())
    .bind(req.format)
    .bind(req.shape)
    .bind(req.gzip)
    .bind(req.scrub_pii)
    .bind(&licenses)
    .bind(pairs)
    .bind(split.total)
    .execute(&mut *tx)
    .await?;
    sqlx::query("insert into data_export_pairs (export_id, seq, pair_id) select $1, seq, pair_id from sale_pairs")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if split.total > 0 {
        let buyer_account = ledger::user_account(&mut tx, req.buyer).await.map_err(ledger_err)?;
        let mut legs = vec![Leg::new(buyer_account, -split.total), Leg::new(ledger::HOUSE, split.house)];
        for (user, amount) in &split.credits {
            legs.push(Leg::new(ledger::user_account(&mut tx, *user).await.map_err(ledger_err)?, *amount));
        }
        let key = format!("data-export:{id}");
        let memo = format!("{pairs} preference pairs (export {id})");
        match ledger::post(&mut tx, &key, "data_sale", None, &memo, &legs).await {
            Ok(_) => {}
            Err(LedgerError::InsufficientFunds { balance, .. }) => {
                return Err(ExportRefused::CannotPay { balance, price: split.total, pairs });
            }
            Err(e) => return Err(ledger_err(e)),
        }
    }
    let export = by_key_in(&mut tx, req.buyer, &req.idempotency_key).await?.ok_or(sqlx::Error::RowNotFound)?;
    tx.commit().await?;
    Ok((export, true))
}

fn ledger_err(e: LedgerError) -> ExportRefused {
    match e {
        LedgerError::Db(e) => ExportRefused::Db(e),
        other => ExportRefused::Db(sqlx::Error::Protocol(other.to_string())),
    }
}

const COLUMNS: &str = "id, buyer_id, filter, format, shape, gzip, scrub_pii, licenses, pairs, price, status,
                       rows_written, files, error, created_at, finished_at, expired_at";

async fn by_key(pool: &PgPool, buyer: UserId, key: &str) -> Result<Option<Export>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    by_key_in(&mut conn, buyer, key).await
}

async fn by_key_in(conn: &mut sqlx::PgConnection, buyer: UserId, key: &str) -> Result<Option<Export>, sqlx::Error> {
    sqlx::query_as(&format!("select {COLUMNS} from data_exports where buyer_id = $1 and idempotency_key = $2"))
        .bind(buyer)
        .bind(key)
        .fetch_optional(conn)
        .await
}

/// One export, whoever's it is (callers check the buyer).
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Export>, sqlx::Error> {
    sqlx::query_as(&format!("select {COLUMNS} from data_exports where id = $1")).bind(id).fetch_optional(pool).await
}

/// A buyer's exports, newest first.
pub async fn list(pool: &PgPool, buyer: UserId, limit: i64) -> Result<Vec<Export>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {COLUMNS} from data_exports where buyer_id = $1 order by created_at desc, id limit $2"
    ))
    .bind(buyer)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Exports to (re)run: queued, or left running by a process that stopped.
pub async fn unfinished(pool: &PgPool) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("select id from data_exports where status in ('queued', 'running') order by created_at")
        .fetch_all(pool)
        .await
}

/// Marks an export running (from queued, or again after a restart).
pub async fn start(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update data_exports set status = 'running', rows_written = 0 where id = $1 and status in ('queued', 'running')",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn progress(pool: &PgPool, id: Uuid, rows: i64) -> Result<(), sqlx::Error> {
    sqlx::query("update data_exports set rows_written = $2 where id = $1 and status = 'running'")
        .bind(id)
        .bind(rows)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn finish(pool: &PgPool, id: Uuid, rows: i64, files: &serde_json::Value) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update data_exports set status = 'done', rows_written = $2, files = $3, finished_at = now()
         where id = $1 and status = 'running'",
    )
    .bind(id)
    .bind(rows)
    .bind(files)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records a failed run. The buyer has paid for fixed pairs, so a failed
/// export is run again (`unfinished` lists it after `retry`), never refunded
/// with the data half-delivered.
pub async fn fail(pool: &PgPool, id: Uuid, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query("update data_exports set status = 'failed', error = $2, finished_at = now() where id = $1")
        .bind(id)
        .bind(crate::domain::shown::without_paths(error))
        .execute(pool)
        .await?;
    Ok(())
}

/// Queues a failed export again (its owner asks; the pairs are fixed).
pub async fn retry(pool: &PgPool, id: Uuid, buyer: UserId) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update data_exports set status = 'queued', error = null, finished_at = null, files = '[]', rows_written = 0
         where id = $1 and buyer_id = $2 and status = 'failed'",
    )
    .bind(id)
    .bind(buyer)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Credits a user has earned from data sales, and from how many sales.
pub async fn data_income(pool: &PgPool, user: UserId) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "select coalesce(sum(e.amount), 0)::bigint, count(*)
         from ledger_entries e
         join ledger_transactions t on t.id = e.transaction_id
         join accounts a on a.id = e.account_id
         where t.kind = 'data_sale' and a.kind = 'user' and a.user_id = $1 and e.amount > 0",
    )
    .bind(user)
    .fetch_one(pool)
    .await
}

/// Whether `buyer` paid for a pair made by match `id` (an export of theirs
/// holds one): they may read that match in full.
pub async fn bought_from(pool: &PgPool, buyer: UserId, id: crate::domain::MatchId) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "select exists (select 1 from pairs p
                        join data_export_pairs ep on ep.pair_id = p.id
                        join data_exports e on e.id = ep.export_id
                        where p.match_id = $2 and e.buyer_id = $1)",
    )
    .bind(buyer)
    .bind(id)
    .fetch_one(pool)
    .await
}

/// Exports finished more than `days` ago whose files are still kept.
pub async fn past_retention(pool: &PgPool, days: u32) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "select id from data_exports
         where expired_at is null and status in ('done', 'failed')
           and coalesce(finished_at, created_at) < now() - make_interval(days => $1)",
    )
    .bind(days as i32)
    .fetch_all(pool)
    .await
}

/// Records that export `id`'s files were deleted (the row, its pairs and
/// its payment stay).
pub async fn expire(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("update data_exports set expired_at = now() where id = $1 and expired_at is null")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}
