//! Settlement in SQL: in one transaction per Space's share of a batch, the
//! rating updates, the payout of each pot, the preference pairs, the match
//! status, and each match record's hash chained to the Space's previous
//! settled match. `verify_log` recomputes that chain from the stored rows.

use super::ledger::{self, Leg};
use super::spaces::SpaceCache;
use crate::domain::record::{MatchRecord, chain_hash, compose};
use crate::domain::{AgentId, MatchId, MatchStatus, SpaceId, payout, rating};
use serde::Serialize;
use skillratings::weng_lin::WengLinRating;
use sqlx::{PgConnection, PgPool};
use std::collections::BTreeMap;
use uuid::Uuid;

/// A match this call settled: its Space and what the live pages show
/// (ranking and payouts by slot).
#[derive(Debug, Clone)]
pub struct Settled {
    pub match_id: MatchId,
    pub space: String,
    pub detail: Option<serde_json::Value>,
}

/// The judged matches of `ids`, grouped by Space (settlement runs per Space).
pub async fn judged_by_space(pool: &PgPool, ids: &[MatchId]) -> Result<BTreeMap<SpaceId, Vec<MatchId>>, sqlx::Error> {
    let waiting: Vec<(MatchId, SpaceId)> =
        sqlx::query_as("select id, space_id from matches where id = any($1) and status = $2 order by space_id, id")
            .bind(ids)
            .bind(MatchStatus::Judged)
            .fetch_all(pool)
            .await?;
    let mut by_space: BTreeMap<SpaceId, Vec<MatchId>> = BTreeMap::new();
    for (id, space) in waiting {
        by_space.entry(space).or_default().push(id);
    }
    Ok(by_space)
}

#[derive(sqlx::FromRow)]
struct Head {
    id: MatchId,
    space_id: SpaceId,
    space_version: i32,
    pot: i64,
    slug: String,
    /// The verdict's `ranks` and `ranking` only: the rest stays in PostgreSQL.
    ranks: serde_json::Value,
    ranking: serde_json::Value,
}

#[derive(sqlx::FromRow)]
struct Seat {
    match_id: MatchId,
    slot: i16,
    agent_id: AgentId,
    account: Uuid,
    mu: f64,
    sigma: f64,
}

/// Settles matches of one Space in one transaction. Locks are taken in one
/// order everywhere (match rows, the agents' entries, the Space's chain
/// row, then every account at once in id order), so concurrent batches and
/// the matchmaker never deadlock.
pub async fn settle_batch(pool: &PgPool, spaces: &SpaceCache, ids: &[MatchId]) -> anyhow::Result<Vec<Settled>> {
    let mut tx = pool.begin().await?;
    let heads: Vec<Head> = sqlx::query_as(
        "select m.id, m.space_id, m.space_version, m.pot, s.slug, v.verdict->'ranks' as ranks,
                v.verdict->'ranking' as ranking
         from matches m join spaces s on s.id = m.space_id join verdicts v on v.match_id = m.id
         where m.id = any($1) and m.status = $2 order by m.id for update of m",
    )
    .bind(ids)
    .bind(MatchStatus::Judged)
    .fetch_all(&mut *tx)
    .await?;
    if heads.is_empty() {
        return Ok(Vec::new());
    }
    let live: Vec<MatchId> = heads.iter().map(|h| h.id).collect();
    let space_id = heads[0].space_id;
    anyhow::ensure!(heads.iter().all(|h| h.space_id == space_id), "a settle batch spans Spaces");
    let seats: Vec<Seat> = sqlx::query_as(
        "select ma.match_id, ma.slot, ma.agent_id, acc.id as account, e.mu, e.sigma
         from match_agents ma
         join entries e on e.agent_id = ma.agent_id and e.space_id = $2
         join accounts acc on acc.kind = 'user' and acc.user_id = ma.owner_id
         where ma.match_id = any($1) order by ma.match_id, ma.slot for update of e",
    )
    .bind(&live)
    .bind(space_id)
    .fetch_all(&mut *tx)
    .await?;
    let pots: Vec<(MatchId, Uuid)> =
        sqlx::query_as("select match_id, id from accounts where kind = 'pot' and match_id = any($1)")
            .bind(&live)
            .fetch_all(&mut *tx)
            .await?;

    // Per match: ratings, payouts, pairs, postings.
    let (mut u_match, mut u_slot, mut u_mu, mut u_sigma, mut u_rank, mut u_payout, mut u_agent) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut postings = Vec::new();
    let mut details = BTreeMap::new();
    let mut licenses = Vec::with_capacity(heads.len());
    for head in &heads {
        let space = spaces.get(pool, head.space_id, head.space_version).await?;
        licenses.push(space.license.clone());
        let mine: Vec<&Seat> = seats.iter().filter(|s| s.match_id == head.id).collect();
        let ranks: Vec<usize> = mine
            .iter()
            .map(|s| head.ranks[s.slot.to_string()].as_u64().map(|r| r as usize))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| anyhow::anyhow!("match {}: the verdict does not rank every slot", head.id))?;
        let before: Vec<WengLinRating> =
            mine.iter().map(|s| WengLinRating { rating: s.mu, uncertainty: s.sigma }).collect();
        let after = rating::update(&before, &ranks);
        let (payouts, house) = payout::split(head.pot, space.payout.house_cut, &space.payout.shares, &ranks);
        for (((seat, r), rank), payout) in mine.iter().zip(&after).zip(&ranks).zip(&payouts) {
            u_match.push(head.id);
            u_slot.push(seat.slot);
            u_agent.push(seat.agent_id);
            u_mu.push(r.rating);
            u_sigma.push(r.uncertainty);
            u_rank.push(*rank as i32);
            u_payout.push(*payout);
        }
        let pot_account = pots
            .iter()
            .find(|(m, _)| *m == head.id)
            .map(|(_, a)| *a)
            .ok_or_else(|| anyhow::anyhow!("match {} has no pot", head.id))?;
        let mut legs = vec![Leg::new(pot_account, -head.pot), Leg::new(ledger::HOUSE, house)];
        legs.extend(mine.iter().zip(&payouts).map(|(seat, payout)| Leg::new(seat.account, *payout)));
        legs.retain(|l| l.amount != 0);
        postings.push(ledger::Posting {
            idempotency_key: format!("payout:{}", head.id),
            kind: "payout",
            match_id: Some(head.id),
            memo: "match payout".to_owned(),
            legs,
        });
        details.insert(
            head.id,
            serde_json::json!({
                "ranking": head.ranking,
                "payouts": mine.iter().zip(&payouts).map(|(s, p)| (s.slot.to_string(), *p)).collect::<BTreeMap<_, _>>(),
            }),
        );
    }
    sqlx::query(
        "update match_agents ma set mu_after = u.mu, sigma_after = u.sigma, rank = u.rank, payout = u.payout
         from unnest($1::uuid[], $2::smallint[], $3::float8[], $4::float8[], $5::int[], $6::bigint[])
              as u(match_id, slot, mu, sigma, rank, payout)
         where ma.match_id = u.match_id and ma.slot = u.slot",
    )
    .bind(&u_match)
    .bind(&u_slot)
    .bind(&u_mu)
    .bind(&u_sigma)
    .bind(&u_rank)
    .bind(&u_payout)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "update entries e set mu = u.mu, sigma = u.sigma, matches = e.matches + 1,
                open_match = case when e.open_match = u.match_id then null else e.open_match end
         from unnest($2::uuid[], $3::float8[], $4::float8[], $5::uuid[]) as u(agent, mu, sigma, match_id)
         where e.space_id = $1 and e.agent_id = u.agent",
    )
    .bind(space_id)
    .bind(&u_agent)
    .bind(&u_mu)
    .bind(&u_sigma)
    .bind(&u_match)
    .execute(&mut *tx)
    .await?;
    // Preference pairs straight from the stored verdicts (the judge kept
    // only those above the Space's margin); the license is the Space's. The
    // verifier results stay in the verdict, not copied into every pair.
    // Only real preferences are kept (see `domain::dataset::DropReason`):
    // a chosen answer with text, two different answers, one conditioning
    // on both sides — a referee game's whole-game pair compares seats that
    // answered different views, so it is counted as dropped instead. What
    // is dropped is counted per Space and reason in `pair_drops`.
    sqlx::query(
        "with c as (
             select v.match_id, l.license, p,
                    coalesce(p->>'chosen_text', oc.text) as chosen_text,
                    coalesce(p->>'rejected_text', orj.text) as rejected_text
             from unnest($2::uuid[], $3::text[]) as l(match_id, license)
             join verdicts v on v.match_id = l.match_id
             cross join lateral jsonb_array_elements(v.verdict->'pairs') as p
             cross join lateral (select case when p->>'chosen' ~ '^[0-9]+$' and p->>'rejected' ~ '^[0-9]+$'
                                             then (p->>'chosen')::smallint end as cs,
                                        case when p->>'chosen' ~ '^[0-9]+$' and p->>'rejected' ~ '^[0-9]+$'
                                             then (p->>'rejected')::smallint end as rs) k
             left join outputs oc on oc.match_id = coalesce((p->>'chosen_match')::uuid, v.match_id) and oc.slot = k.cs
             left join outputs orj on orj.match_id = coalesce((p->>'rejected_match')::uuid, v.match_id)
                                  and orj.slot = k.rs
             where k.cs is not null
         ), judged as (
             select c.*, case when p->>'kind' = 'game' then 'different_views'
                              when btrim(coalesce(chosen_text, '')) = '' then 'empty_chosen'
                              when btrim(chosen_text) = btrim(coalesce(rejected_text, '')) then 'identical_answers'
                         end as dropped
             from c
         ), kept as (
             insert into pairs (id, match_id, space_id, chosen_slot, rejected_slot, margin, consistent, license,
                                detail, kind, decision_key, step, chosen_match_id, rejected_match_id, prompt,
                                chosen_text, rejected_text, label_source)
             select gen_random_uuid(), match_id, $1, (p->>'chosen')::smallint, (p->>'rejected')::smallint,
                    (p->>'margin')::float8, coalesce((p->>'consistent')::bool, false), license,
                    p - 'chosen_verifiers' - 'rejected_verifiers' - 'prompt' - 'chosen_text' - 'rejected_text',
                    case when p->>'kind' = 'decision' then 'decision' else 'whole' end, coalesce(p->>'key', ''),
                    (p->>'step')::int, (p->>'chosen_match')::uuid, (p->>'rejected_match')::uuid, p->>'prompt',
                    p->>'chosen_text', p->>'rejected_text',
                    -- A referee's or a hard check's decision, or scores with
                    -- no AI judge behind them: the verifiers labelled it.
                    case when p->>'kind' = 'decision' or (p->>'margin')::float8 >= 1
                              or (p->>'p_chosen_first' is null and p->>'p_chosen_second' is null
                                  and p->>'judge_trained_sha256' is null)
                         then 'verifier' else 'judge' end
             from judged where dropped is null
             on conflict do nothing
             returning 1
         )
         insert into pair_drops (space_id, reason, pairs)
         select $1, dropped, count(*) from judged where dropped is not null group by dropped
         on conflict (space_id, reason) do update set pairs = pair_drops.pairs + excluded.pairs",
    )
    .bind(space_id)
    .bind(&live)
    .bind(&licenses)
    .execute(&mut *tx)
    .await?;

    // The chain: the Space's row orders its settlements. NO KEY UPDATE, not
    // FOR UPDATE: the pairs above hold KEY SHARE on it through their foreign
    // key, which FOR UPDATE would deadlock against another batch's.
    let (mut seq, mut head_hash): (i64, String) =
        sqlx::query_as("select chain_seq, chain_head from spaces where id = $1 for no key update")
            .bind(space_id)
            .fetch_one(&mut *tx)
            .await?;
    let parts = records(&mut tx, &live).await?;
    let (mut c_id, mut c_seq, mut c_prev, mut c_hash) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for id in &live {
        seq += 1;
        let record = compose(parts.get(id).ok_or_else(|| anyhow::anyhow!("no record for {id}"))?, seq, &head_hash);
        let hash = chain_hash(&head_hash, &record);
        c_id.push(*id);
        c_seq.push(seq);
        c_prev.push(head_hash.clone());
        c_hash.push(hash.clone());
        head_hash = hash;
    }
    sqlx::query(
        "update matches m set status = $5, seq = c.seq, prev_hash = c.prev, record_hash = c.hash,
                settled_at = clock_timestamp(), updated_at = now()
         from unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[]) as c(id, seq, prev, hash)
         where m.id = c.id",
    )
    .bind(&c_id)
    .bind(&c_seq)
    .bind(&c_prev)
    .bind(&c_hash)
    .bind(MatchStatus::Settled)
    .execute(&mut *tx)
    .await?;
    sqlx::query("update spaces set chain_seq = $2, chain_head = $3 where id = $1")
        .bind(space_id)
        .bind(seq)
        .bind(&head_hash)
        .execute(&mut *tx)
        .await?;

    // Money last: every account at once, in id order.
    ledger::post_many(&mut tx, &postings).await?;
    tx.commit().await?;
    Ok(heads.iter().map(|h| Settled { match_id: h.id, space: h.slug.clone(), detail: details.remove(&h.id) }).collect())
}

/// The stored facts of a settled match that its record covers.
#[derive(sqlx::FromRow)]
struct RecordParts {
    id: MatchId,
    space_id: SpaceId,
    space_version: i32,
    prompt: String,
    reference: Option<String>,
    pot: i64,
    seats: serde_json::Value,
    verdict_sha256: Option<String>,
    pairs: serde_json::Value,
}

/// Reads the record parts of many matches in one query: who played which
/// version, what each wrote (hashed; with the sha256 of the open worker's
/// signed record when one generated it), the verdict (hashed), ranks,
/// rating changes, payouts and pairs. Floats travel as PostgreSQL's text (its
/// shortest round-trip form), so a record reads the same however it is
/// rebuilt.
pub async fn records(conn: &mut PgConnection, ids: &[MatchId]) -> anyhow::Result<BTreeMap<MatchId, MatchRecord>> {
    let rows: Vec<RecordParts> = sqlx::query_as(
        "select m.id, m.space_id, m.space_version, m.prompt, m.reference, m.pot,
                (select coalesce(json_agg(case when j.record_sha256 is null
                        then json_build_array(ma.slot, ma.agent_id, ma.agent_version, ma.owner_id,
                        ma.entry_fee, ma.mu_before::text, ma.sigma_before::text, ma.mu_after::text, ma.sigma_after::text,
                        ma.rank, ma.payout, encode(sha256(convert_to(o.text, 'UTF8')), 'hex'))
                        else json_build_array(ma.slot, ma.agent_id, ma.agent_version, ma.owner_id,
                        ma.entry_fee, ma.mu_before::text, ma.sigma_before::text, ma.mu_after::text, ma.sigma_after::text,
                        ma.rank, ma.payout, encode(sha256(convert_to(o.text, 'UTF8')), 'hex'), j.record_sha256) end
                        order by ma.slot), '[]')
                 from match_agents ma left join outputs o on o.match_id = ma.match_id and o.slot = ma.slot
                 left join worker_jobs j on j.id = o.worker_job_id
                 where ma.match_id = m.id) as seats,
                (select encode(sha256(convert_to(v.verdict::text, 'UTF8')), 'hex') from verdicts v
                 where v.match_id = m.id) as verdict_sha256,
                (select coalesce(json_agg(case when p.decision_key = ''
                                               then json_build_array(p.chosen_slot, p.rejected_slot, p.margin::text)
                                               else json_build_array(p.chosen_slot, p.rejected_slot, p.margin::text,
                                                                     p.decision_key) end
                        order by p.chosen_slot, p.rejected_slot, p.decision_key), '[]')
                 from pairs p where p.match_id = m.id) as pairs
         from matches m where m.id = any($1)",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let record = MatchRecord {
                id: r.id,
                space_id: r.space_id,
                space_version: r.space_version,
                prompt: r.prompt,
                reference: r.reference,
                pot: r.pot,
                seats: r.seats,
                verdict_sha256: r.verdict_sha256,
                pairs: r.pairs,
            };
            (r.id, record)
        })
        .collect())
}

/// What `verify_log` found.
#[derive(Debug, Serialize)]
pub struct ChainReport {
    pub space: String,
    pub checked: i64,
    /// The first broken link: (seq, match id, what is wrong).
    pub broken: Option<(i64, MatchId, String)>,
    pub head: String,
}

/// One settled match's place in its Space's chain, as stored.
#[derive(sqlx::FromRow)]
struct Link {
    id: MatchId,
    seq: Option<i64>,
    prev_hash: Option<String>,
    record_hash: Option<String>,
}

/// Recomputes a Space's chain from its settled matches in order.
pub async fn verify_log(pool: &sqlx::PgPool, slug: &str) -> anyhow::Result<ChainReport> {
    let (space_id, head_seq, head): (SpaceId, i64, String) =
        sqlx::query_as("select id, chain_seq, chain_head from spaces where slug = $1")
            .bind(slug)
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no Space {slug:?}"))?;
    let links: Vec<Link> = sqlx::query_as(
        "select id, seq, prev_hash, record_hash from matches where space_id = $1 and status = $2 order by seq",
    )
    .bind(space_id)
    .bind(MatchStatus::Settled)
    .fetch_all(pool)
    .await?;
    let mut conn = pool.acquire().await?;
    let mut prev = String::new();
    let mut checked = 0;
    let mut broken = None;
    for (expected_seq, Link { id, seq, prev_hash, record_hash }) in (1_i64..).zip(links) {
        let problem = if seq != Some(expected_seq) {
            Some(format!("sequence number {seq:?}, expected {expected_seq}"))
        } else if prev_hash.as_deref() != Some(prev.as_str()) {
            Some("its previous-hash does not match the record before it".to_owned())
        } else {
            let parts = records(&mut conn, &[id]).await?;
            let record =
                compose(parts.get(&id).ok_or_else(|| anyhow::anyhow!("match {id} vanished"))?, expected_seq, &prev);
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
            MatchId(Uuid::nil()),
            format!("the Space's chain head says {head_seq} records ending in {head}"),
        ));
    }
    Ok(ChainReport { space: slug.to_owned(), checked, broken, head })
}
