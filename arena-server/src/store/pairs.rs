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
    "select p.id, p.match_id, coalesce(p.prompt, m.prompt) as prompt, coalesce(p.chosen_text, oc.text) as chosen,
                coalesce(p.rejected_text, orj.text) as rejected, p.margin, p.consistent,
                p.license, p.created_at
         from pairs p
         join matches m on m.id = p.match_id
         join outputs oc on oc.match_id = coalesce(p.chosen_match_id, p.match_id) and oc.slot = p.chosen_slot
         join outputs orj on orj.match_id = coalesce(p.rejected_match_id, p.match_id) and orj.slot = p.rejected_slot
         where p.space_id = $1 and ($2::timestamptz is null or p.created_at > $2) and p.margin >= $3
           and btrim(coalesce(p.chosen_text, oc.text)) <> ''
           and btrim(coalesce(p.chosen_text, oc.text)) <> btrim(coalesce(p.rejected_text, orj.text))
           and coalesce(p.detail->>'kind', '') <> 'game'
           and not p.withdrawn and not p.overruled
           and not (p.label_source = 'human' and exists (
                    select 1 from spaces s join space_versions hv on hv.space_id = s.id and hv.version = s.current_version
                    where s.id = p.space_id and hv.human_price > 0))
         order by p.created_at, p.id limit $4";

/// Every pair there is.
pub async fn count(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("select count(*) from pairs").fetch_one(pool).await
}

/// The joins every filtered or pinned read of pairs shares (after `from
/// pairs p`).
macro_rules! joins {
    () => {
        "join matches m on m.id = p.match_id
         join spaces s on s.id = p.space_id
         join match_agents mc on mc.match_id = coalesce(p.chosen_match_id, p.match_id) and mc.slot = p.chosen_slot
         join match_agents mr on mr.match_id = coalesce(p.rejected_match_id, p.match_id) and mr.slot = p.rejected_slot
         join outputs oc on oc.match_id = coalesce(p.chosen_match_id, p.match_id) and oc.slot = p.chosen_slot
         join outputs orj on orj.match_id = coalesce(p.rejected_match_id, p.match_id) and orj.slot = p.rejected_slot
         left join verdicts vd on vd.match_id = p.match_id
         left join agent_versions vc on vc.agent_id = mc.agent_id and vc.version = mc.agent_version"
    };
}

/// Whether the chosen answer passed every hard check: a decision pair's
/// own reading (its move was legal), else the match's verdict.
macro_rules! chosen_passed {
    () => {
        "coalesce((p.detail->>'chosen_passed')::bool,
                  (vd.verdict->'passed_hard'->>(p.chosen_slot::text))::bool, false)"
    };
}

/// As `chosen_passed!` for the rejected answer.
macro_rules! rejected_passed {
    () => {
        "coalesce((p.detail->>'rejected_passed')::bool,
                  (vd.verdict->'passed_hard'->>(p.rejected_slot::text))::bool, false)"
    };
}

/// Whether a pair is a human pair of a Space that prices human pairs.
macro_rules! priced_human {
    () => {
        "(p.label_source = 'human' and exists (select 1 from space_versions hv where hv.space_id = s.id
                                                and hv.version = s.current_version and hv.human_price > 0))"
    };
}

/// The joins and the WHERE clause of a `PairFilter`, in the order of
/// `bind_filter`'s binds ($1..$20). `domain::dataset::PairFilter::keeps`
/// is its definition.
const FILTERED: &str = concat!(
    "from pairs p ",
    joins!(),
    "
         where (cardinality($1::text[]) = 0 or s.slug = any($1))
           and ($2::int is null or m.space_version = $2)
           and ($3::timestamptz is null or p.created_at >= $3)
           and ($4::timestamptz is null or p.created_at <= $4)
           and ($5::float8 is null or p.margin >= $5)
           and (not $6 or p.consistent)
           and ($7::float8 is null or (mc.mu_before * 40 >= $7 and mr.mu_before * 40 >= $7))
           and ($8::float8 is null or (mc.mu_before * 40 <= $8 and mr.mu_before * 40 <= $8))
           and ($9::int is null or (char_length(coalesce(p.chosen_text, oc.text)) >= $9
                                    and char_length(coalesce(p.rejected_text, orj.text)) >= $9))
           and ($10::int is null or (char_length(coalesce(p.chosen_text, oc.text)) <= $10
                                     and char_length(coalesce(p.rejected_text, orj.text)) <= $10))
           and (cardinality($11::text[]) = 0 or coalesce(p.lang, 'und') = any($11))
           and (not $12 or p.duplicate_of is null)
           and ($13::bool is null or ",
    chosen_passed!(),
    " = $13)
           and ($14::bool is null or ",
    rejected_passed!(),
    " = $14)
           and ($15::text is null or p.kind = $15)
           and ($16::text is null or p.label_source = $16)
           and (not $17 or p.tier = 'human_verified')
           and ($18::bool is null or p.judge_agrees = $18)
           and ($19 or not p.overruled)
           and not p.withdrawn
           and not ($20 and ",
    priced_human!(),
    ")
           and btrim(coalesce(p.chosen_text, oc.text)) <> ''
           and btrim(coalesce(p.chosen_text, oc.text)) <> btrim(coalesce(p.rejected_text, orj.text))
           and coalesce(p.detail->>'kind', '') <> 'game'"
);

/// The pairs an export paid for, in the order they were fixed ($1: the
/// export).
const PINNED: &str =
    concat!("from data_export_pairs e join pairs p on p.id = e.pair_id ", joins!(), " where e.export_id = $1");

/// The columns of a `DataPair`.
const PAIR_COLUMNS: &str = "p.id, p.match_id, s.slug as space, m.space_version, coalesce(p.prompt, m.prompt) as prompt,
        coalesce(vc.system_prompt, '') as system, coalesce(p.chosen_text, oc.text) as chosen,
        coalesce(p.rejected_text, orj.text) as rejected, p.margin, p.consistent, p.kind, p.step,
        coalesce(p.chosen_match_id, p.match_id) as chosen_match_id,
        coalesce(p.rejected_match_id, p.match_id) as rejected_match_id,
        p.license, coalesce(p.lang, 'und') as language,
        (p.detail->>'p_chosen_first')::float8 as judge_p_chosen_first,
        (p.detail->>'p_chosen_second')::float8 as judge_p_chosen_second,
        p.detail->>'judge_model_sha256' as judge_model_sha256,
        p.detail->>'judge_template_sha256' as judge_template_sha256,
        p.detail->>'judge_trained_sha256' as judge_trained_sha256,
        (vd.verdict->'verifiers'->(p.chosen_slot::text))::text as chosen_verifiers,
        (vd.verdict->'verifiers'->(p.rejected_slot::text))::text as rejected_verifiers,
        mc.agent_id as chosen_agent, mc.agent_version as chosen_version, mc.mu_before * 40 as chosen_rating,
        mr.agent_id as rejected_agent, mr.agent_version as rejected_version, mr.mu_before * 40 as rejected_rating,
        m.record_hash, p.label_source, p.tier as human_tier, p.votes_chosen, p.votes_rejected, p.votes_tied,
        p.voter_reliability, p.judge_agrees, p.created_at";

pub(crate) fn bind_filter<'q, O>(
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
        .bind(&f.languages)
        .bind(f.dedupe)
        .bind(f.chosen_passed)
        .bind(f.rejected_passed)
        .bind(f.kind.map(|k| k.as_str()))
        .bind(f.label_source.map(|l| l.as_str()))
        .bind(f.human_verified)
        .bind(f.judge_agrees)
        .bind(f.include_overruled)
        .bind(f.free_reads)
}

/// The ids `filter` selects, oldest first (binds as `bind_filter`).
pub(crate) fn filtered_ids_sql() -> String {
    format!("select p.id, p.created_at {FILTERED} order by p.created_at, p.id")
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
    /// "whole" or "decision" (`domain::dataset::PairKind`).
    pub kind: String,
    /// A decision pair's step in its game.
    pub step: Option<i32>,
    /// The match each answer was given in.
    pub chosen_match_id: MatchId,
    pub rejected_match_id: MatchId,
    pub license: Option<String>,
    pub language: String,
    /// The judge's readings in both orders and its identity.
    pub judge_p_chosen_first: Option<f64>,
    pub judge_p_chosen_second: Option<f64>,
    pub judge_model_sha256: Option<String>,
    pub judge_template_sha256: Option<String>,
    /// The combined judge's artifact (sha256 of its file), when it decided.
    pub judge_trained_sha256: Option<String>,
    /// Each answer's verifier and guard results (from the match's verdict),
    /// as JSON text: passed through, never parsed.
    pub chosen_verifiers: Option<String>,
    pub rejected_verifiers: Option<String>,
    pub chosen_agent: AgentId,
    pub chosen_version: i32,
    pub chosen_rating: f64,
    pub rejected_agent: AgentId,
    pub rejected_version: i32,
    pub rejected_rating: f64,
    pub record_hash: Option<String>,
    /// "verifier", "judge" or "human", and a human pair's votes.
    pub label_source: String,
    pub human_tier: Option<String>,
    pub votes_chosen: Option<i32>,
    pub votes_rejected: Option<i32>,
    pub votes_tied: Option<i32>,
    pub voter_reliability: Option<f64>,
    pub judge_agrees: Option<bool>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl DataPair {
    /// The pair as a file row, the PII scrub applied to its texts when
    /// `scrub` says so.
    pub fn into_row(self, scrub: bool) -> dataset_files::Row {
        let clean = |t: String| if scrub { crate::domain::dataset::scrub_pii(&t) } else { t };
        dataset_files::Row {
            id: self.id.to_string(),
            match_id: self.match_id.to_string(),
            judge_p_chosen_first: self.judge_p_chosen_first,
            judge_p_chosen_second: self.judge_p_chosen_second,
            judge_model_sha256: self.judge_model_sha256,
            judge_template_sha256: self.judge_template_sha256,
            judge_trained_sha256: self.judge_trained_sha256,
            space: self.space,
            space_version: self.space_version,
            system: clean(self.system),
            prompt: clean(self.prompt),
            chosen: clean(self.chosen),
            rejected: clean(self.rejected),
            margin: self.margin,
            consistent: self.consistent,
            kind: self.kind,
            step: self.step,
            chosen_match_id: self.chosen_match_id.to_string(),
            rejected_match_id: self.rejected_match_id.to_string(),
            license: self.license,
            language: self.language,
            chosen_agent: self.chosen_agent.to_string(),
            chosen_version: self.chosen_version,
            chosen_rating: self.chosen_rating,
            rejected_agent: self.rejected_agent.to_string(),
            rejected_version: self.rejected_version,
            rejected_rating: self.rejected_rating,
            chosen_verifiers: self.chosen_verifiers,
            rejected_verifiers: self.rejected_verifiers,
            record_hash: self.record_hash,
            label_source: self.label_source,
            human_tier: self.human_tier,
            votes_chosen: self.votes_chosen,
            votes_rejected: self.votes_rejected,
            votes_tied: self.votes_tied,
            voter_reliability: self.voter_reliability,
            judge_agrees: self.judge_agrees,
            created_at_micros: self.created_at.timestamp_micros(),
            created_at: self.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        }
    }
}

/// Sends rows into `to` as PostgreSQL sends them; a receiver that went
/// away stops the read; an error midway is sent as the last item.
async fn pump<T: Send + Unpin>(
    mut rows: futures_util::stream::BoxStream<'_, Result<T, sqlx::Error>>,
    to: tokio::sync::mpsc::Sender<Result<T, sqlx::Error>>,
) {
    use futures_util::StreamExt;
    while let Some(row) = rows.next().await {
        let failed = row.is_err();
        if to.send(row).await.is_err() || failed {
            break;
        }
    }
}

/// The pairs `filter` selects, oldest first, at most `limit`, sent into
/// `to` as PostgreSQL sends them (bounded memory, as `export_to`).
pub async fn export_filtered(
    pool: PgPool,
    filter: PairFilter,
    limit: i64,
    to: tokio::sync::mpsc::Sender<Result<DataPair, sqlx::Error>>,
) {
    let sql = format!("select {PAIR_COLUMNS} {FILTERED} order by p.created_at, p.id limit $21");
    let rows = bind_filter(sqlx::query_as::<_, DataPair>(&sql), &filter).bind(limit).fetch(&pool);
    pump(rows, to).await;
}

/// Samples of Spaces whose pairs are sold ($1: their slugs, $2: pairs per
/// Space): the oldest of each, so the same few whatever a buyer filters —
/// a sample is a window onto a dataset, not a way through it.
const FIXED_SAMPLES: &str = concat!(
    "from pairs p ",
    joins!(),
    " where p.id in (select x.id from spaces s2
                      cross join lateral (select q.id from pairs q where q.space_id = s2.id
                                          order by q.created_at, q.id limit $2) x
                      where s2.slug = any($1))
     and btrim(coalesce(p.chosen_text, oc.text)) <> ''
     and btrim(coalesce(p.chosen_text, oc.text)) <> btrim(coalesce(p.rejected_text, orj.text))
     and coalesce(p.detail->>'kind', '') <> 'game'"
);

/// At most `per_space` fixed sample pairs of each of `spaces` (see
/// [`FIXED_SAMPLES`]), by Space.
pub async fn fixed_samples(pool: &PgPool, spaces: &[String], per_space: i64) -> Result<Vec<DataPair>, sqlx::Error> {
    let sql = format!("select {PAIR_COLUMNS} {FIXED_SAMPLES} order by s.slug, p.created_at, p.id");
    sqlx::query_as(&sql).bind(spaces).bind(per_space).fetch_all(pool).await
}

/// The SELECT of an export's pairs in their fixed order ($1: the export).
pub fn pinned_select_sql() -> String {
    format!("select {PAIR_COLUMNS} {PINNED} order by e.seq")
}

/// The pairs export `export` paid for, in their fixed order, sent into
/// `to` as PostgreSQL sends them.
pub async fn export_pinned(
    pool: PgPool,
    export: uuid::Uuid,
    to: tokio::sync::mpsc::Sender<Result<DataPair, sqlx::Error>>,
) {
    let sql = pinned_select_sql();
    let rows = sqlx::query_as::<_, DataPair>(&sql).bind(export).fetch(&pool);
    pump(rows, to).await;
}

/// What a filter looks at, for every pair (tests hold the SQL filter to
/// `PairFilter::keeps` over these).
pub async fn all_facts(pool: &PgPool) -> Result<Vec<PairFacts>, sqlx::Error> {
    let sql = format!(
        "select s.slug as space, m.space_version, p.created_at, p.margin, p.consistent,
                mc.mu_before * 40 as chosen_rating, mr.mu_before * 40 as rejected_rating,
                char_length(coalesce(p.chosen_text, oc.text)) as chosen_chars,
                char_length(coalesce(p.rejected_text, orj.text)) as rejected_chars,
                coalesce(p.lang, 'und') as language, p.duplicate_of is not null as duplicate,
                {} as chosen_passed, {} as rejected_passed, p.kind, p.label_source,
                coalesce(p.tier = 'human_verified', false) as human_verified, p.judge_agrees, p.overruled, p.withdrawn,
                {} as priced_human
         {FILTERED}",
        chosen_passed!(),
        rejected_passed!(),
        priced_human!()
    );
    // The same joins as every filtered read, with nothing filtered (a
    // withdrawn human pair is never selected by any filter).
    let everything = PairFilter { include_overruled: true, ..PairFilter::default() };
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
    /// Credits per pair the Space's current version charges.
    pub price: i64,
    /// Pairs per margin bucket: [0, 0.2), [0.2, 0.4) … [1.8, 2].
    pub margins: Vec<i64>,
}

/// Every Space that has pairs, most pairs first.
pub async fn datasets(pool: &PgPool) -> Result<Vec<DatasetSummary>, sqlx::Error> {
    sqlx::query_as(
        "select s.slug as space, count(*) as pairs, avg(case when p.consistent then 1.0 else 0.0 end)::float8 as agreed,
                max(p.license) as license, max(v.data_price) as price,
                array(select count(q.id) from generate_series(0, 9) b
                      left join pairs q on q.space_id = s.id and least(floor(q.margin / 0.2)::int, 9) = b
                      group by b order by b) as margins
         from pairs p join spaces s on s.id = p.space_id
         join space_versions v on v.space_id = s.id and v.version = s.current_version
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
            decision_pairs: row.try_get("decision_pairs")?,
            versions: row.try_get("versions")?,
            licenses: row.try_get("licenses")?,
            judge_models: row.try_get("judge_models")?,
            judge_templates: row.try_get("judge_templates")?,
            judge_trained: row.try_get("judge_trained")?,
            chain_seq: row.try_get("chain_seq")?,
            chain_head: row.try_get("chain_head")?,
            dropped: Vec::new(),
            verifier_pairs: row.try_get("verifier_pairs")?,
            judge_pairs: row.try_get("judge_pairs")?,
            human_pairs: row.try_get("human_pairs")?,
            judge_agreed: row.try_get("judge_agreed")?,
            judge_decided: row.try_get("judge_decided")?,
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
            language: row.try_get("language")?,
            duplicate: row.try_get("duplicate")?,
            chosen_passed: row.try_get("chosen_passed")?,
            rejected_passed: row.try_get("rejected_passed")?,
            kind: crate::domain::dataset::PairKind::parse(row.try_get("kind")?)
                .map_err(|e| sqlx::Error::Decode(e.to_string().into()))?,
            label_source: crate::domain::dataset::LabelSource::parse(row.try_get("label_source")?)
                .map_err(|e| sqlx::Error::Decode(e.to_string().into()))?,
            human_verified: row.try_get("human_verified")?,
            judge_agrees: row.try_get("judge_agrees")?,
            overruled: row.try_get("overruled")?,
            withdrawn: row.try_get("withdrawn")?,
            priced_human: row.try_get("priced_human")?,
        })
    }
}

const CARD_COLUMNS: &str = "select s.slug as space, count(*) as pairs,
                count(*) filter (where p.kind = 'decision') as decision_pairs,
                array_agg(distinct m.space_version order by m.space_version) as versions,
                array_remove(array_agg(distinct p.license), null) as licenses,
                array_remove(array_agg(distinct p.detail->>'judge_model_sha256'), null) as judge_models,
                array_remove(array_agg(distinct p.detail->>'judge_template_sha256'), null) as judge_templates,
                array_remove(array_agg(distinct p.detail->>'judge_trained_sha256'), null) as judge_trained,
                max(s.chain_seq) as chain_seq, max(s.chain_head) as chain_head,
                count(*) filter (where p.label_source = 'verifier') as verifier_pairs,
                count(*) filter (where p.label_source = 'judge') as judge_pairs,
                count(*) filter (where p.label_source = 'human') as human_pairs,
                count(*) filter (where p.judge_agrees) as judge_agreed,
                count(*) filter (where p.judge_agrees is not null) as judge_decided";

/// Per Space, what a dataset card says of the pairs `filter` selects.
pub async fn card(pool: &PgPool, filter: &PairFilter) -> Result<Vec<CardPart>, sqlx::Error> {
    let sql = format!("{CARD_COLUMNS} {FILTERED} group by s.slug order by s.slug");
    with_drops(pool, bind_filter(sqlx::query_as(&sql), filter).fetch_all(pool).await?).await
}

/// Per Space, what a dataset card says of the pairs an export paid for.
pub async fn card_pinned(pool: &PgPool, export: uuid::Uuid) -> Result<Vec<CardPart>, sqlx::Error> {
    let sql = format!("{CARD_COLUMNS} {PINNED} group by s.slug order by s.slug");
    with_drops(pool, sqlx::query_as(&sql).bind(export).fetch_all(pool).await?).await
}

/// `parts` with each Space's data-quality report.
async fn with_drops(pool: &PgPool, mut parts: Vec<CardPart>) -> Result<Vec<CardPart>, sqlx::Error> {
    let slugs: Vec<String> = parts.iter().map(|p| p.space.clone()).collect();
    let drops: Vec<(String, String, i64)> = sqlx::query_as(
        "select s.slug, d.reason, d.pairs from pair_drops d join spaces s on s.id = d.space_id
         where s.slug = any($1) order by s.slug, d.reason",
    )
    .bind(&slugs)
    .fetch_all(pool)
    .await?;
    for part in &mut parts {
        part.dropped =
            drops.iter().filter(|(s, _, _)| *s == part.space).map(|(_, reason, n)| (reason.clone(), *n)).collect();
    }
    Ok(parts)
}

/// Pairs one enrichment transaction handles.
const ENRICH_BATCH: i64 = 1_000;

/// Fills in what filters read that SQL cannot compute (each new pair's
/// language, SimHash and bands, and the earliest pair it nearly repeats),
/// oldest pairs first, until none is left. One enricher runs at a time
/// (an advisory lock), so "earlier" is well defined. Returns how many
/// pairs it enriched.
pub async fn enrich(pool: &PgPool) -> Result<u64, sqlx::Error> {
    use crate::domain::dataset::{MINHASHES, bands, language, minhash, near_duplicate};
    const LOCK: i64 = 0x6461_7461_656e_7269; // "dataenri"
    let mut done = 0u64;
    loop {
        let mut tx = pool.begin().await?;
        sqlx::query("select pg_advisory_xact_lock($1)").bind(LOCK).execute(&mut *tx).await?;
        let rows: Vec<(PairId, String, String, String)> = sqlx::query_as(
            "select p.id, coalesce(p.prompt, m.prompt), coalesce(p.chosen_text, oc.text),
                    coalesce(p.rejected_text, orj.text)
             from pairs p
             join matches m on m.id = p.match_id
             join outputs oc on oc.match_id = coalesce(p.chosen_match_id, p.match_id) and oc.slot = p.chosen_slot
             join outputs orj on orj.match_id = coalesce(p.rejected_match_id, p.match_id) and orj.slot = p.rejected_slot
             where p.lang is null order by p.created_at, p.id limit $1",
        )
        .bind(ENRICH_BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(done);
        }
        let facts: Vec<(&'static str, [u32; MINHASHES], [i32; 8])> = rows
            .iter()
            .map(|(_, prompt, chosen, rejected)| {
                let text = format!("{prompt}\n{chosen}\n{rejected}");
                let sig = minhash(prompt, chosen, rejected);
                (language(&text), sig, bands(&sig))
            })
            .collect();
        let all_bands: Vec<i32> = facts.iter().flat_map(|f| f.2).collect();
        // Earlier pairs sharing a band with any of these (and so, very
        // likely, every near duplicate), with the pair each repeats.
        let earlier: Vec<(PairId, Vec<i32>, Option<PairId>)> =
            sqlx::query_as("select id, minhash, duplicate_of from pairs where lang is not null and bands && $1::int[]")
                .bind(&all_bands)
                .fetch_all(&mut *tx)
                .await?;
        let as_sig = |v: &[i32]| v.iter().map(|x| *x as u32).collect::<Vec<u32>>();
        let mut seen: Vec<(Vec<u32>, PairId)> =
            earlier.into_iter().map(|(id, sig, dup)| (as_sig(&sig), dup.unwrap_or(id))).collect();
        let mut duplicate_of: Vec<Option<PairId>> = Vec::with_capacity(rows.len());
        for ((id, ..), (_, sig, _)) in rows.iter().zip(&facts) {
            let original = seen.iter().find(|(other, _)| near_duplicate(other, sig)).map(|(_, root)| *root);
            duplicate_of.push(original);
            seen.push((sig.to_vec(), original.unwrap_or(*id)));
        }
        let ids: Vec<PairId> = rows.iter().map(|r| r.0).collect();
        let langs: Vec<&str> = facts.iter().map(|f| f.0).collect();
        // Arrays of arrays go to PostgreSQL as text literals, one per pair.
        let literal = |v: &mut dyn Iterator<Item = i32>| {
            format!("{{{}}}", v.map(|x| x.to_string()).collect::<Vec<_>>().join(","))
        };
        let sigs: Vec<String> = facts.iter().map(|f| literal(&mut f.1.iter().map(|x| *x as i32))).collect();
        let band_lists: Vec<String> = facts.iter().map(|f| literal(&mut f.2.iter().copied())).collect();
        sqlx::query(
            "update pairs p set lang = u.lang, minhash = u.sig::int[], bands = u.bands::int[], duplicate_of = u.dup
             from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[]) as u(id, lang, sig, bands, dup)
             where p.id = u.id",
        )
        .bind(&ids)
        .bind(&langs)
        .bind(&sigs)
        .bind(&band_lists)
        .bind(&duplicate_of)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        done += rows.len() as u64;
    }
}

/// A Space's data-quality report: the pairs its verdicts proposed that
/// settlement dropped, by reason (see `domain::dataset::DropReason`).
pub async fn drops(pool: &PgPool, space: crate::domain::SpaceId) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as("select reason, pairs from pair_drops where space_id = $1 order by reason")
        .bind(space)
        .fetch_all(pool)
        .await
}
