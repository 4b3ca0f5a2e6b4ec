//! Preference pairs as buyers export them.

use crate::domain::dataset::{CardPart, PairFacts, PairFilter};
use crate::domain::{AgentId, MatchId, PairId, SpaceId};
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

/// The joins and the WHERE clause of a `PairFilter`, in the order of
/// `bind_filter`'s binds ($1..$10). `domain::dataset::PairFilter::keeps`
/// is its definition.
const FILTERED: &str = "
         from pairs p
         join matches m on m.id = p.match_id
         join spaces s on s.id = p.space_id
         join match_agents mc on mc.match_id = p.match_id and mc.slot = p.chosen_slot
         join match_agents mr on mr.match_id = p.match_id and mr.slot = p.rejected_slot
         join outputs oc on oc.match_id = p.match_id and oc.slot = p.chosen_slot
         join outputs orj on orj.match_id = p.match_id and orj.slot = p.rejected_slot
         where (cardinality($1::text[]) = 0 or s.slug = any($1))
           and ($2::int is null or m.space_version = $2)
           and ($3::timestamptz is null or p.created_at >= $3)
           and ($4::timestamptz is null or p.created_at <= $4)
           and ($5::float8 is null or p.margin >= $5)
           and (not $6 or p.consistent)
           and ($7::float8 is null or (mc.mu_before * 40 >= $7 and mr.mu_before * 40 >= $7))
           and ($8::float8 is null or (mc.mu_before * 40 <= $8 and mr.mu_before * 40 <= $8))
           and ($9::int is null or (char_length(oc.text) >= $9 and char_length(orj.text) >= $9))
           and ($10::int is null or (char_length(oc.text) <= $10 and char_length(orj.text) <= $10))";

fn bind_filter<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    f: &'q PairFilter,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(&f.spaces)
        .bind(f.space_version)
        .bind(f.from)
        .bind(f.to)
        .bind(f.min_margin)
        .bind(f.agreed_only)
        .bind(f.min_rating)
        .bind(f.max_rating)
        .bind(f.min_chars)
        .bind(f.max_chars)
}

/// How many pairs `filter` selects.
pub async fn count_filtered(pool: &PgPool, filter: &PairFilter) -> Result<i64, sqlx::Error> {
    let sql = format!("select count(*) {FILTERED}");
    let (n,): (i64,) = bind_filter(sqlx::query_as(&sql), filter).fetch_one(pool).await?;
    Ok(n)
}

/// One exported pair: TRL's fields and the provenance a buyer checks.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DataPair {
    pub id: PairId,
    pub match_id: MatchId,
    pub space: String,
    pub space_version: i32,
    pub prompt: String,
    pub system: String,
    pub chosen: String,
    pub rejected: String,
    pub margin: f64,
    pub consistent: bool,
    pub license: Option<String>,
    /// The judge's readings in both orders and its identity.
    pub detail: serde_json::Value,
    /// Each answer's verifier and guard results (from the match's verdict).
    pub chosen_verifiers: Option<serde_json::Value>,
    pub rejected_verifiers: Option<serde_json::Value>,
    pub chosen_agent: AgentId,
    pub chosen_version: i32,
    pub chosen_rating: f64,
    pub rejected_agent: AgentId,
    pub rejected_version: i32,
    pub rejected_rating: f64,
    pub record_hash: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// The pairs `filter` selects, oldest first, at most `limit`, sent into
/// `to` as PostgreSQL sends them (bounded memory, as `export_to`).
pub async fn export_filtered(
    pool: PgPool,
    filter: PairFilter,
    limit: i64,
    to: tokio::sync::mpsc::Sender<Result<DataPair, sqlx::Error>>,
) {
    use futures_util::StreamExt;
    let sql = format!(
        "select p.id, p.match_id, s.slug as space, m.space_version, m.prompt, coalesce(vc.system_prompt, '') as system,
                oc.text as chosen, orj.text as rejected, p.margin, p.consistent, p.license, p.detail,
                vd.verdict->'verifiers'->(p.chosen_slot::text) as chosen_verifiers,
                vd.verdict->'verifiers'->(p.rejected_slot::text) as rejected_verifiers,
                mc.agent_id as chosen_agent, mc.agent_version as chosen_version, mc.mu_before * 40 as chosen_rating,
                mr.agent_id as rejected_agent, mr.agent_version as rejected_version,
                mr.mu_before * 40 as rejected_rating, m.record_hash, p.created_at
         {FILTERED}
         order by p.created_at, p.id limit $11",
    )
    .replace(
        "join outputs oc on",
        "left join agent_versions vc on vc.agent_id = mc.agent_id and vc.version = mc.agent_version
         left join verdicts vd on vd.match_id = p.match_id
         join outputs oc on",
    );
    let mut rows = bind_filter(sqlx::query_as::<_, DataPair>(&sql), &filter).bind(limit).fetch(&pool);
    while let Some(row) = rows.next().await {
        let failed = row.is_err();
        if to.send(row).await.is_err() || failed {
            break;
        }
    }
}

/// What a filter looks at, for every pair (tests hold the SQL filter to
/// `PairFilter::keeps` over these).
pub async fn all_facts(pool: &PgPool) -> Result<Vec<PairFacts>, sqlx::Error> {
    let sql = format!(
        "select s.slug as space, m.space_version, p.created_at, p.margin, p.consistent,
                mc.mu_before * 40 as chosen_rating, mr.mu_before * 40 as rejected_rating,
                char_length(oc.text) as chosen_chars, char_length(orj.text) as rejected_chars
         {FILTERED}"
    );
    // The same joins as every filtered read, with nothing filtered.
    let everything = PairFilter::default();
    bind_filter(sqlx::query_as(&sql), &everything).fetch_all(pool).await
}

/// A Space's preference data at a glance.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DatasetSummary {
    pub space: String,
    pub pairs: i64,
    /// Share of pairs whose judge orders agreed.
    pub agreed: f64,
    pub license: Option<String>,
    /// Pairs per margin bucket: [0, 0.2), [0.2, 0.4) … [1.8, 2].
    pub margins: Vec<i64>,
}

/// Every Space that has pairs, most pairs first.
pub async fn datasets(pool: &PgPool) -> Result<Vec<DatasetSummary>, sqlx::Error> {
    sqlx::query_as(
        "select s.slug as space, count(*) as pairs, avg(case when p.consistent then 1.0 else 0.0 end)::float8 as agreed,
                max(p.license) as license,
                array(select count(q.id) from generate_series(0, 9) b
                      left join pairs q on q.space_id = s.id and least(floor(q.margin / 0.2)::int, 9) = b
                      group by b order by b) as margins
         from pairs p join spaces s on s.id = p.space_id
         group by s.id, s.slug order by count(*) desc, s.slug",
    )
    .fetch_all(pool)
    .await
}

/// A card's row per Space: what `domain::dataset::CardPart` holds, by
/// column name (the Space's hash chain as it stands now).
impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for CardPart {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<CardPart, sqlx::Error> {
        use sqlx::Row;
        Ok(CardPart {
            space: row.try_get("space")?,
            pairs: row.try_get("pairs")?,
            versions: row.try_get("versions")?,
            licenses: row.try_get("licenses")?,
            judge_models: row.try_get("judge_models")?,
            judge_templates: row.try_get("judge_templates")?,
            chain_seq: row.try_get("chain_seq")?,
            chain_head: row.try_get("chain_head")?,
        })
    }
}

/// What a filter looks at in a pair, by column name.
impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for PairFacts {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<PairFacts, sqlx::Error> {
        use sqlx::Row;
        Ok(PairFacts {
            space: row.try_get("space")?,
            space_version: row.try_get("space_version")?,
            created_at: row.try_get("created_at")?,
            margin: row.try_get("margin")?,
            consistent: row.try_get("consistent")?,
            chosen_rating: row.try_get("chosen_rating")?,
            rejected_rating: row.try_get("rejected_rating")?,
            chosen_chars: row.try_get("chosen_chars")?,
            rejected_chars: row.try_get("rejected_chars")?,
        })
    }
}

/// Per Space, what a dataset card says of the pairs `filter` selects.
pub async fn card(pool: &PgPool, filter: &PairFilter) -> Result<Vec<CardPart>, sqlx::Error> {
    let sql = format!(
        "select s.slug as space, count(*) as pairs,
                array_agg(distinct m.space_version order by m.space_version) as versions,
                array_remove(array_agg(distinct p.license), null) as licenses,
                array_remove(array_agg(distinct p.detail->>'judge_model_sha256'), null) as judge_models,
                array_remove(array_agg(distinct p.detail->>'judge_template_sha256'), null) as judge_templates,
                max(s.chain_seq) as chain_seq, max(s.chain_head) as chain_head
         {FILTERED}
         group by s.slug order by s.slug"
    );
    bind_filter(sqlx::query_as(&sql), filter).fetch_all(pool).await
}
