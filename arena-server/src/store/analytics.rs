//! What a designer watches of a live Space: matches per hour, entries,
//! pair yield, the judge's decisiveness and ties, verifier pass rates,
//! the rating spread, money in and out, and the slowest pipeline stage —
//! all read from the stored matches, verdicts, pairs and ledger rows.

use crate::domain::{SpaceId, UserId};
use serde::Serialize;
use sqlx::PgPool;
use std::collections::BTreeMap;

/// A Space of the designer's studio list.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DesignerSpace {
    pub slug: String,
    pub current_version: i32,
    pub active: bool,
    /// Why the platform paused it, if it did.
    pub paused_reason: Option<String>,
    pub settled_24h: i64,
    pub pairs: i64,
    pub decisiveness: Option<f64>,
}

/// The designer's Spaces (an admin's: every Space), by name.
pub async fn designer_spaces(pool: &PgPool, owner: UserId, all: bool) -> Result<Vec<DesignerSpace>, sqlx::Error> {
    sqlx::query_as(
        "select s.slug, s.current_version, s.active, s.paused_reason,
                (select count(*) from matches m where m.space_id = s.id and m.status = 'settled'
                   and m.settled_at > now() - interval '24 hours') as settled_24h,
                (select count(*) from pairs p where p.space_id = s.id) as pairs,
                (select avg((v.verdict->>'confidence')::float8) from verdicts v join matches m on m.id = v.match_id
                   where m.space_id = s.id) as decisiveness
         from spaces s where s.owner_id = $1 or $2 order by s.slug",
    )
    .bind(owner)
    .bind(all)
    .fetch_all(pool)
    .await
}

/// A Space's live numbers.
#[derive(Debug, Clone, Serialize)]
pub struct Analytics {
    /// Settled matches per hour over the last 24 hours (hours without any
    /// are absent), oldest first.
    pub per_hour: Vec<(chrono::DateTime<chrono::Utc>, i64)>,
    pub settled: i64,
    pub failed: i64,
    pub in_flight: i64,
    pub agents_entered: i64,
    pub pairs: i64,
    /// Share of settled matches with at least one pair.
    pub pair_yield: f64,
    /// Mean verdict confidence (0: coin flips, 1: decided).
    pub judge_decisiveness: Option<f64>,
    /// Share of judged matches whose ranking has a tie.
    pub tie_share: Option<f64>,
    /// Per verifier or guard: the share of answers that passed.
    pub verifier_pass_rates: BTreeMap<String, f64>,
    /// Per verifier or guard: the pass rate of each hour's settled matches
    /// over the last 24 hours, oldest first.
    pub verifier_hourly: BTreeMap<String, Vec<(chrono::DateTime<chrono::Utc>, f64)>>,
    /// Rating points of the entered agents: lowest, highest, standard deviation.
    pub rating_min: Option<f64>,
    pub rating_max: Option<f64>,
    pub rating_sd: Option<f64>,
    /// Credits: entry fees paid in, payouts paid out, the house's take, the
    /// sponsor pool added, of settled matches.
    pub fees_in: i64,
    pub payouts_out: i64,
    pub house_cut: i64,
    pub sponsored: i64,
    /// Mean seconds per stage of settled matches: formed → generated →
    /// judged → settled; the slowest named.
    pub stage_seconds: BTreeMap<String, f64>,
    pub slowest_stage: Option<String>,
    /// The data-quality report: pairs the verdicts proposed that settlement
    /// dropped, by reason (`domain::dataset::DropReason`).
    pub pairs_dropped: BTreeMap<String, i64>,
}

pub async fn of_space(pool: &PgPool, space: SpaceId) -> Result<Analytics, sqlx::Error> {
    let per_hour: Vec<(chrono::DateTime<chrono::Utc>, i64)> = sqlx::query_as(
        "select date_trunc('hour', settled_at) as h, count(*) from matches
         where space_id = $1 and status = 'settled' and settled_at > now() - interval '24 hours'
         group by h order by h",
    )
    .bind(space)
    .fetch_all(pool)
    .await?;
    let (settled, failed, in_flight): (i64, i64, i64) = sqlx::query_as(
        "select count(*) filter (where status = 'settled'), count(*) filter (where status = 'failed'),
                count(*) filter (where status not in ('settled', 'failed'))
         from matches where space_id = $1",
    )
    .bind(space)
    .fetch_one(pool)
    .await?;
    let (agents_entered, rating_min, rating_max, rating_sd): (i64, Option<f64>, Option<f64>, Option<f64>) =
        sqlx::query_as(
            "select count(*), min(mu * 40), max(mu * 40), stddev_pop(mu * 40) from entries
             where space_id = $1 and active",
        )
        .bind(space)
        .fetch_one(pool)
        .await?;
    let (pairs, with_pairs): (i64, i64) =
        sqlx::query_as("select count(*), count(distinct p.match_id) from pairs p where p.space_id = $1")
            .bind(space)
            .fetch_one(pool)
            .await?;
    let (judge_decisiveness, tie_share): (Option<f64>, Option<f64>) = sqlx::query_as(
        "select avg((v.verdict->>'confidence')::float8),
                avg(case when (select count(distinct r.value) from jsonb_each(v.verdict->'ranks') r)
                              < (select count(*) from jsonb_each(v.verdict->'ranks')) then 1.0 else 0.0 end)::float8
         from verdicts v join matches m on m.id = v.match_id where m.space_id = $1",
    )
    .bind(space)
    .fetch_one(pool)
    .await?;
    let rates: Vec<(String, f64)> = sqlx::query_as(
        "select r->>'name', avg(case when (r->>'passed')::bool then 1.0 else 0.0 end)::float8
         from verdicts v join matches m on m.id = v.match_id
         cross join lateral jsonb_each(v.verdict->'verifiers') s(slot, results)
         cross join lateral jsonb_array_elements(s.results) r
         where m.space_id = $1 group by 1 order by 1",
    )
    .bind(space)
    .fetch_all(pool)
    .await?;
    let hourly: Vec<(String, chrono::DateTime<chrono::Utc>, f64)> = sqlx::query_as(
        "select r->>'name', date_trunc('hour', m.settled_at) as h,
                avg(case when (r->>'passed')::bool then 1.0 else 0.0 end)::float8
         from verdicts v join matches m on m.id = v.match_id
         cross join lateral jsonb_each(v.verdict->'verifiers') s(slot, results)
         cross join lateral jsonb_array_elements(s.results) r
         where m.space_id = $1 and m.status = 'settled' and m.settled_at > now() - interval '24 hours'
         group by 1, 2 order by 1, 2",
    )
    .bind(space)
    .fetch_all(pool)
    .await?;
    let mut verifier_hourly: BTreeMap<String, Vec<(chrono::DateTime<chrono::Utc>, f64)>> = BTreeMap::new();
    for (name, hour, rate) in hourly {
        verifier_hourly.entry(name).or_default().push((hour, rate));
    }
    let (fees_in, payouts_out, pots): (i64, i64, i64) = sqlx::query_as(
        "select coalesce(sum(ma.entry_fee), 0)::bigint, coalesce(sum(ma.payout), 0)::bigint,
                coalesce((select sum(pot) from matches where space_id = $1 and status = 'settled'), 0)::bigint
         from match_agents ma join matches m on m.id = ma.match_id
         where m.space_id = $1 and m.status = 'settled'",
    )
    .bind(space)
    .fetch_one(pool)
    .await?;
    let stages: (Option<f64>, Option<f64>, Option<f64>) = sqlx::query_as(
        "select avg(extract(epoch from generated_at - created_at))::float8,
                avg(extract(epoch from judged_at - generated_at))::float8,
                avg(extract(epoch from settled_at - judged_at))::float8
         from matches where space_id = $1 and status = 'settled'",
    )
    .bind(space)
    .fetch_one(pool)
    .await?;
    let mut stage_seconds = BTreeMap::new();
    for (name, v) in [("generate", stages.0), ("judge", stages.1), ("settle", stages.2)] {
        if let Some(v) = v {
            stage_seconds.insert(name.to_owned(), v);
        }
    }
    let slowest_stage = stage_seconds.iter().max_by(|a, b| a.1.total_cmp(b.1)).map(|(name, _)| name.clone());
    let pairs_dropped = crate::store::pairs::drops(pool, space).await?.into_iter().collect();
    Ok(Analytics {
        pairs_dropped,
        per_hour,
        settled,
        failed,
        in_flight,
        agents_entered,
        pairs,
        pair_yield: if settled > 0 { with_pairs as f64 / settled as f64 } else { 0.0 },
        judge_decisiveness,
        tie_share,
        verifier_pass_rates: rates.into_iter().collect(),
        verifier_hourly,
        rating_min,
        rating_max,
        rating_sd,
        fees_in,
        payouts_out,
        house_cut: pots - payouts_out,
        sponsored: pots - fees_in,
        stage_seconds,
        slowest_stage,
    })
}
