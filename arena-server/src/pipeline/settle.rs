//! The settle stage: in one transaction per match, the rating updates, the
//! payout of the pot, the preference pairs, the match status, and the hash
//! of the match record chained to the Space's previous settled match.
//! `verify_log` recomputes that chain from the stored rows.

use super::{Pipeline, Stage, StageWork};
use crate::events::{Event, Events};
use crate::ledger::{self, Leg};
use crate::rating;
use futures_util::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use skillratings::weng_lin::WengLinRating;
use sqlx::PgConnection;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Splits a pot: the house cut first (rounded down), then the rest by rank.
/// Tied agents share the shares of the places they occupy equally. Every
/// amount is rounded down; what rounding leaves goes to the house, so the
/// payouts and the house's take always sum to the pot exactly.
pub fn split(pot: i64, house_cut: f64, shares: &[f64], ranks: &[usize]) -> (Vec<i64>, i64) {
    let n = ranks.len();
    let house_first = (pot as f64 * house_cut).floor() as i64;
    let distributable = pot - house_first;
    let mut payouts = vec![0i64; n];
    for (i, &rank) in ranks.iter().enumerate() {
        // Places rank-1 .. rank-1+tied share their shares.
        let tied = ranks.iter().filter(|&&r| r == rank).count();
        let start = rank.saturating_sub(1);
        let total: f64 = (start..start + tied).map(|place| shares.get(place).copied().unwrap_or(0.0)).sum();
        // Shares in parts per million, so 0.7 of 90 is 63, not 62.99….
        let ppm = (total * 1e6).round() as i128;
        payouts[i] = (distributable as i128 * ppm / (1_000_000 * tied as i128)) as i64;
    }
    let paid: i64 = payouts.iter().sum();
    // Floating error can never make payouts exceed the pot.
    if paid > distributable {
        let mut over = paid - distributable;
        for p in payouts.iter_mut().rev() {
            let take = over.min(*p);
            *p -= take;
            over -= take;
        }
    }
    let paid: i64 = payouts.iter().sum();
    (payouts, pot - paid)
}

pub struct SettleStage;

impl StageWork for SettleStage {
    fn stage(&self) -> Stage {
        Stage::Settle
    }

    fn run<'a>(
        &'a self,
        p: &'a Pipeline,
        matches: &'a [Uuid],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Vec<Uuid>>> + Send + 'a>> {
        Box::pin(async move {
            // A transaction per match, several at once: a transaction holds
            // one match's locks only, so settlements never deadlock each
            // other or the matchmaker; matches of one Space still queue on
            // the Space's chain row.
            let results: Vec<(Uuid, anyhow::Result<Option<Event>>)> =
                futures_util::stream::iter(matches.iter().copied())
                    .map(|id| async move {
                        let result = async {
                            let mut tx = p.db.begin().await?;
                            let outcome = settle_one(p, &mut tx, id).await?;
                            tx.commit().await?;
                            Ok(outcome)
                        }
                        .await;
                        (id, result)
                    })
                    .buffer_unordered(SETTLE_CONCURRENCY)
                    .collect()
                    .await;
            let mut done = Vec::new();
            for (id, result) in results {
                match result {
                    Ok(outcome) => {
                        done.push(id);
                        if let Some(event) = outcome {
                            Events::publish(&p.redis, &event).await;
                        }
                    }
                    Err(err) => tracing::warn!(match_id = %id, error = ?err, "settlement failed; will retry"),
                }
            }
            Ok(done)
        })
    }
}

/// Matches settled at once by one settle worker.
pub const SETTLE_CONCURRENCY: usize = 6;

#[derive(sqlx::FromRow)]
struct Seat {
    slot: i16,
    agent_id: Uuid,
    owner_id: Uuid,
    mu: f64,
    sigma: f64,
}

/// Settles one match; None when it was not waiting for settlement.
async fn settle_one(p: &Pipeline, conn: &mut PgConnection, match_id: Uuid) -> anyhow::Result<Option<Event>> {
    let head: Option<(Uuid, i32, i64, String, String, serde_json::Value)> = sqlx::query_as(
        "select s.id, m.space_version, m.pot, m.status, s.slug, v.verdict
         from matches m join spaces s on s.id = m.space_id join verdicts v on v.match_id = m.id
         where m.id = $1 for update of m",
    )
    .bind(match_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((space_id, version, pot, status, slug, verdict)) = head else { return Ok(None) };
    if status != "judged" {
        return Ok(None);
    }
    let space = p.spaces.get(&p.db, space_id, version).await?;
    let seats: Vec<Seat> = sqlx::query_as(
        "select ma.slot, ma.agent_id, ma.owner_id, e.mu, e.sigma
         from match_agents ma join entries e on e.agent_id = ma.agent_id and e.space_id = $2
         where ma.match_id = $1 order by ma.slot for update of e",
    )
    .bind(match_id)
    .bind(space_id)
    .fetch_all(&mut *conn)
    .await?;
    let ranks: Vec<usize> = seats
        .iter()
        .map(|s| verdict["ranks"][s.slot.to_string()].as_u64().map(|r| r as usize))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| anyhow::anyhow!("the verdict does not rank every slot"))?;
    let before: Vec<WengLinRating> =
        seats.iter().map(|s| WengLinRating { rating: s.mu, uncertainty: s.sigma }).collect();
    let after = rating::update(&before, &ranks);
    let (payouts, house) = split(pot, space.payout.house_cut, &space.payout.shares, &ranks);

    // Ratings and results.
    let slots: Vec<i16> = seats.iter().map(|s| s.slot).collect();
    let agent_ids: Vec<Uuid> = seats.iter().map(|s| s.agent_id).collect();
    let mus: Vec<f64> = after.iter().map(|r| r.rating).collect();
    let sigmas: Vec<f64> = after.iter().map(|r| r.uncertainty).collect();
    let rank_col: Vec<i32> = ranks.iter().map(|&r| r as i32).collect();
    sqlx::query(
        "update match_agents ma set mu_after = u.mu, sigma_after = u.sigma, rank = u.rank, payout = u.payout
         from unnest($2::smallint[], $3::float8[], $4::float8[], $5::int[], $6::bigint[]) as u(slot, mu, sigma, rank, payout)
         where ma.match_id = $1 and ma.slot = u.slot",
    )
    .bind(match_id)
    .bind(&slots)
    .bind(&mus)
    .bind(&sigmas)
    .bind(&rank_col)
    .bind(&payouts)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "update entries e set mu = u.mu, sigma = u.sigma, matches = e.matches + 1,
                open_match = case when e.open_match = $2 then null else e.open_match end
         from unnest($3::uuid[], $4::float8[], $5::float8[]) as u(agent, mu, sigma)
         where e.space_id = $1 and e.agent_id = u.agent",
    )
    .bind(space_id)
    .bind(match_id)
    .bind(&agent_ids)
    .bind(&mus)
    .bind(&sigmas)
    .execute(&mut *conn)
    .await?;

    // Preference pairs, as the judge built them (already above the margin).
    let (mut chosen, mut rejected, mut margins, mut consistent, mut details) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for pair in verdict["pairs"].as_array().into_iter().flatten() {
        let slot = |key: &str| pair[key].as_str().and_then(|s| s.parse::<i16>().ok());
        let (Some(c), Some(r)) = (slot("chosen"), slot("rejected")) else { continue };
        chosen.push(c);
        rejected.push(r);
        margins.push(pair["margin"].as_f64().unwrap_or(0.0));
        consistent.push(pair["consistent"].as_bool().unwrap_or(false));
        details.push(pair.clone());
    }
    if !chosen.is_empty() {
        let ids: Vec<Uuid> = chosen.iter().map(|_| Uuid::new_v4()).collect();
        sqlx::query(
            "insert into pairs (id, match_id, space_id, chosen_slot, rejected_slot, margin, consistent, license, detail)
             select p.id, $2, $3, p.chosen, p.rejected, p.margin, p.consistent, $4, p.detail
             from unnest($1::uuid[], $5::smallint[], $6::smallint[], $7::float8[], $8::bool[], $9::jsonb[])
                  as p(id, chosen, rejected, margin, consistent, detail)
             on conflict do nothing",
        )
        .bind(&ids)
        .bind(match_id)
        .bind(space_id)
        .bind(&space.license)
        .bind(&chosen)
        .bind(&rejected)
        .bind(&margins)
        .bind(&consistent)
        .bind(&details)
        .execute(&mut *conn)
        .await?;
    }

    // The chain: the Space's row orders its settlements. Taken late, so the
    // row is held for as short a time as possible, and as NO KEY UPDATE: the
    // pairs inserted above hold KEY SHARE on it (their foreign key), which a
    // FOR UPDATE here would deadlock against another settlement's.
    let (seq, chain_head): (i64, String) =
        sqlx::query_as("select chain_seq, chain_head from spaces where id = $1 for no key update")
            .bind(space_id)
            .fetch_one(&mut *conn)
            .await?;
    let seq = seq + 1;
    let record = record(&mut *conn, match_id, seq, &chain_head).await?;
    let hash = chain_hash(&chain_head, &record);
    sqlx::query(
        "update matches set status = 'settled', seq = $2, prev_hash = $3, record_hash = $4, settled_at = clock_timestamp(),
                updated_at = now() where id = $1",
    )
    .bind(match_id)
    .bind(seq)
    .bind(&chain_head)
    .bind(&hash)
    .execute(&mut *conn)
    .await?;
    sqlx::query("update spaces set chain_seq = $2, chain_head = $3 where id = $1")
        .bind(space_id)
        .bind(seq)
        .bind(&hash)
        .execute(&mut *conn)
        .await?;
    // Money last: the house account is every settlement's hot row.
    let owners: Vec<Uuid> = seats.iter().map(|s| s.owner_id).collect();
    let rows: Vec<(Option<Uuid>, Uuid)> = sqlx::query_as(
        "select user_id, id from accounts where (kind = 'user' and user_id = any($1)) or (kind = 'pot' and match_id = $2)",
    )
    .bind(&owners)
    .bind(match_id)
    .fetch_all(&mut *conn)
    .await?;
    let pot_account = rows
        .iter()
        .find(|(user, _)| user.is_none())
        .map(|(_, id)| *id)
        .ok_or_else(|| anyhow::anyhow!("match {match_id} has no pot"))?;
    let accounts: Vec<(Uuid, Uuid)> = rows.iter().filter_map(|(user, id)| user.map(|u| (u, *id))).collect();
    let mut legs = vec![Leg::new(pot_account, -pot), Leg::new(ledger::HOUSE, house)];
    for (seat, payout) in seats.iter().zip(&payouts) {
        let account = accounts
            .iter()
            .find(|(u, _)| *u == seat.owner_id)
            .map(|(_, a)| *a)
            .ok_or_else(|| anyhow::anyhow!("owner {} has no account", seat.owner_id))?;
        legs.push(Leg::new(account, *payout));
    }
    legs.retain(|l| l.amount != 0);
    ledger::post(&mut *conn, &format!("payout:{match_id}"), "payout", Some(match_id), "match payout", &legs).await?;

    let detail = serde_json::json!({
        "ranking": verdict["ranking"],
        "payouts": slots.iter().zip(&payouts).map(|(s, p)| (s.to_string(), *p)).collect::<BTreeMap<_, _>>(),
    });
    Ok(Some(Event { match_id, space: slug, status: "settled".into(), detail: Some(detail) }))
}

/// The canonical record of a settled match, rebuilt from the stored rows:
/// who played which version, what each wrote (hashed), the verdict (hashed),
/// ranks, rating changes, payouts and pairs.
pub async fn record(conn: &mut PgConnection, match_id: Uuid, seq: i64, prev_hash: &str) -> anyhow::Result<String> {
    let (space_id, space_version, prompt, reference, pot, seats, verdict_sha256, pairs): (
        Uuid,
        i32,
        String,
        Option<String>,
        i64,
        serde_json::Value,
        Option<String>,
        serde_json::Value,
    ) = sqlx::query_as(
        "select m.space_id, m.space_version, m.prompt, m.reference, m.pot,
                (select coalesce(json_agg(json_build_array(ma.slot, ma.agent_id, ma.agent_version, ma.owner_id,
                        ma.entry_fee, ma.mu_before::text, ma.sigma_before::text, ma.mu_after::text, ma.sigma_after::text,
                        ma.rank, ma.payout, encode(sha256(convert_to(o.text, 'UTF8')), 'hex')) order by ma.slot), '[]')
                 from match_agents ma left join outputs o on o.match_id = ma.match_id and o.slot = ma.slot
                 where ma.match_id = m.id),
                (select encode(sha256(convert_to(v.verdict::text, 'UTF8')), 'hex') from verdicts v where v.match_id = m.id),
                (select coalesce(json_agg(json_build_array(p.chosen_slot, p.rejected_slot, p.margin::text)
                        order by p.chosen_slot, p.rejected_slot), '[]')
                 from pairs p where p.match_id = m.id)
         from matches m where m.id = $1",
    )
    .bind(match_id)
    .fetch_one(&mut *conn)
    .await?;
    // Floats travel as PostgreSQL's text (shortest round-trip form), so the
    // record reads the same however it is rebuilt.
    let record = serde_json::json!({
        "match": match_id, "space": space_id, "space_version": space_version, "seq": seq, "prev": prev_hash,
        "prompt": prompt, "reference": reference, "pot": pot, "seats": seats,
        "verdict_sha256": verdict_sha256, "pairs": pairs,
    });
    Ok(record.to_string())
}

pub fn chain_hash(prev: &str, record: &str) -> String {
    hex::encode(
        Sha256::new().chain_update(prev.as_bytes()).chain_update(b"\n").chain_update(record.as_bytes()).finalize(),
    )
}

/// What `verify_log` found.
#[derive(Debug, Serialize)]
pub struct ChainReport {
    pub space: String,
    pub checked: i64,
    /// The first broken link: (seq, match id, what is wrong).
    pub broken: Option<(i64, Uuid, String)>,
    pub head: String,
}

/// Recomputes a Space's chain from its settled matches in order.
pub async fn verify_log(pool: &sqlx::PgPool, slug: &str) -> anyhow::Result<ChainReport> {
    let (space_id, head_seq, head): (Uuid, i64, String) =
        sqlx::query_as("select id, chain_seq, chain_head from spaces where slug = $1")
            .bind(slug)
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no Space {slug:?}"))?;
    let links: Vec<(Uuid, Option<i64>, Option<String>, Option<String>)> = sqlx::query_as(
        "select id, seq, prev_hash, record_hash from matches where space_id = $1 and status = 'settled' order by seq",
    )
    .bind(space_id)
    .fetch_all(pool)
    .await?;
    let mut conn = pool.acquire().await?;
    let mut prev = String::new();
    let mut checked = 0;
    let mut broken = None;
    for (expected_seq, (id, seq, prev_hash, record_hash)) in (1_i64..).zip(links) {
        let problem = if seq != Some(expected_seq) {
            Some(format!("sequence number {seq:?}, expected {expected_seq}"))
        } else if prev_hash.as_deref() != Some(prev.as_str()) {
            Some("its previous-hash does not match the record before it".to_owned())
        } else {
            let record = record(&mut conn, id, expected_seq, &prev).await?;
            let hash = chain_hash(&prev, &record);
            if record_hash.as_deref() != Some(hash.as_str()) {
                Some("the stored record no longer hashes to its recorded hash (outputs, verdict, ratings, payouts or pairs changed)".to_owned())
            } else {
                prev = hash;
                None
            }
        };
        if let Some(problem) = problem {
            broken = Some((expected_seq, id, problem));
            break;
        }
        checked += 1;
    }
    if broken.is_none() && (checked != head_seq || prev != head) {
        broken = Some((
            checked + 1,
            Uuid::nil(),
            format!("the Space's chain head says {head_seq} records ending in {head}"),
        ));
    }
    Ok(ChainReport { space: slug.to_owned(), checked, broken, head })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_conserves_the_pot_for_any_ranks() {
        let shares = [0.6, 0.3, 0.1];
        for pot in [0_i64, 1, 7, 40, 1001, 99_999] {
            for cut in [0.0, 0.05, 0.5] {
                for ranks in [vec![1, 2, 3, 4], vec![1, 1, 3, 4], vec![1, 1, 1, 1], vec![2, 1], vec![1, 2, 2, 4]] {
                    let (payouts, house) = split(pot, cut, &shares, &ranks);
                    assert_eq!(payouts.iter().sum::<i64>() + house, pot, "{pot} {cut} {ranks:?}");
                    assert!(payouts.iter().all(|&p| p >= 0) && house >= 0);
                }
            }
        }
    }

    #[test]
    fn split_pays_by_rank_and_shares_ties() {
        let (p, house) = split(100, 0.1, &[0.7, 0.3], &[2, 1, 3]);
        assert_eq!(p, vec![27, 63, 0]);
        assert_eq!(house, 10);
        let (p, _) = split(100, 0.0, &[0.7, 0.3], &[1, 1, 3]);
        assert_eq!(p, vec![50, 50, 0]);
    }

    #[test]
    fn the_hash_covers_the_previous_link() {
        assert_ne!(chain_hash("", "r"), chain_hash("x", "r"));
        assert_ne!(chain_hash("x", "r"), chain_hash("x", "s"));
    }
}
