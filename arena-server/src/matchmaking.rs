//! The matchmaker: forms matches for every active Space, rating-aware and
//! never with two agents of one owner, within the Space's concurrency.
//! Each match is formed in one transaction (a savepoint inside the Space's
//! round): the match row, the pinned Space and agent versions, the entry
//! fees (and sponsor pool) moved into the match's pot, and the outbox row
//! that hands it to the `generate` stage.

use crate::ledger::{self, LedgerError, Leg};
use crate::pipeline::{self, Stage};
use crate::rating;
use crate::space::Space;
use crate::space_store::SpaceCache;
use rand::Rng;
use rand::seq::SliceRandom;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// An agent that could play now.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Candidate {
    pub agent_id: Uuid,
    pub owner_id: Uuid,
    pub version: i32,
    pub mu: f64,
    pub sigma: f64,
    /// The owner's account and its balance when the round began.
    pub account: Uuid,
    pub balance: i64,
}

/// Picks groups of `k` agents: each group starts from a random agent and
/// adds the nearest-rated agents of other owners within `window` rating
/// points. Agents are used at most once.
pub fn pick_groups<R: Rng>(
    candidates: &[Candidate],
    k: usize,
    window: f64,
    max_groups: usize,
    rng: &mut R,
) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.shuffle(rng);
    let mut used = vec![false; candidates.len()];
    let mut groups = Vec::new();
    for &anchor in &order {
        if groups.len() >= max_groups {
            break;
        }
        if used[anchor] {
            continue;
        }
        let a = &candidates[anchor];
        let mut near: Vec<usize> = (0..candidates.len())
            .filter(|&i| i != anchor && !used[i])
            .filter(|&i| (rating::display(candidates[i].mu) - rating::display(a.mu)).abs() <= window)
            .collect();
        near.sort_by(|&x, &y| {
            let dx = (candidates[x].mu - a.mu).abs();
            let dy = (candidates[y].mu - a.mu).abs();
            dx.total_cmp(&dy)
        });
        let mut group = vec![anchor];
        let mut owners = vec![a.owner_id];
        for i in near {
            if group.len() == k {
                break;
            }
            let c = &candidates[i];
            // Every member within the window of every other, not just the anchor.
            let fits =
                group.iter().all(|&g| (rating::display(candidates[g].mu) - rating::display(c.mu)).abs() <= window);
            if !owners.contains(&c.owner_id) && fits {
                group.push(i);
                owners.push(c.owner_id);
            }
        }
        if group.len() == k {
            for &g in &group {
                used[g] = true;
            }
            groups.push(group);
        }
    }
    groups
}

/// One matchmaking round over every active Space; returns the matches formed.
pub async fn round(pool: &PgPool, spaces: &SpaceCache) -> anyhow::Result<Vec<Uuid>> {
    let active: Vec<(Uuid, i32, Uuid)> =
        sqlx::query_as("select id, current_version, owner_id from spaces where active order by slug")
            .fetch_all(pool)
            .await?;
    // Spaces are independent: form their matches concurrently.
    let rounds = active.into_iter().map(|(space_id, version, owner)| async move {
        let space = match spaces.get(pool, space_id, version).await {
            Ok(space) => space,
            Err(err) => {
                tracing::error!(%space_id, version, error = %err, "cannot load Space; skipping it");
                return Vec::new();
            }
        };
        match form_for_space(pool, space_id, version, owner, &space).await {
            Ok(ids) => ids,
            Err(err) => {
                tracing::warn!(%space_id, error = %err, "matchmaking round failed for a Space");
                Vec::new()
            }
        }
    });
    Ok(futures_util::future::join_all(rounds).await.into_iter().flatten().collect())
}

/// Forms as many matches as the Space's concurrency and its eligible
/// agents allow.
pub async fn form_for_space(
    pool: &PgPool,
    space_id: Uuid,
    version: i32,
    space_owner: Uuid,
    space: &Arc<Space>,
) -> anyhow::Result<Vec<Uuid>> {
    let mut conn = pool.acquire().await?;
    // One matchmaker per Space at a time, across every instance; a session
    // lock, released below (or by the session's end if this process dies).
    let locked: bool = sqlx::query_scalar("select pg_try_advisory_lock(hashtextextended($1::text, 7))")
        .bind(space_id)
        .fetch_one(&mut *conn)
        .await?;
    if !locked {
        return Ok(Vec::new());
    }
    let formed = form_locked(&mut conn, space_id, version, space_owner, space).await;
    sqlx::query("select pg_advisory_unlock(hashtextextended($1::text, 7))").bind(space_id).execute(&mut *conn).await?;
    formed
}

/// Forms the Space's matches, each in a transaction of its own, so a match
/// is visible to the pipeline as soon as it is formed and no transaction
/// holds more than one match's locks.
async fn form_locked(
    conn: &mut sqlx::PgConnection,
    space_id: Uuid,
    version: i32,
    space_owner: Uuid,
    space: &Arc<Space>,
) -> anyhow::Result<Vec<Uuid>> {
    // Paused since the round began: form nothing.
    let active: bool =
        sqlx::query_scalar("select active from spaces where id = $1").bind(space_id).fetch_one(&mut *conn).await?;
    if !active {
        return Ok(Vec::new());
    }
    let open: i64 = sqlx::query_scalar(
        "select count(*) from matches where space_id = $1 and status in ('formed', 'generated', 'judged')",
    )
    .bind(space_id)
    .fetch_one(&mut *conn)
    .await?;
    let room = (space.matchmaking.max_concurrent_matches as i64 - open).max(0) as usize;
    if room == 0 {
        return Ok(Vec::new());
    }
    let fee = space.entry_fee;
    let candidates: Vec<Candidate> = sqlx::query_as(
        "select e.agent_id, e.owner_id, a.current_version as version, e.mu, e.sigma, acc.id as account, acc.balance
         from entries e
         join agents a on a.id = e.agent_id
         join accounts acc on acc.kind = 'user' and acc.user_id = e.owner_id
         where e.space_id = $1 and e.active and e.open_match is null and acc.balance >= $2",
    )
    .bind(space_id)
    .bind(fee)
    .fetch_all(&mut *conn)
    .await?;
    let k = space.agents_per_match as usize;
    let groups = {
        let mut rng = rand::rng();
        pick_groups(&candidates, k, space.matchmaking.rating_window, room, &mut rng)
    };
    // Drop groups an owner could not pay for as well as the ones before.
    let mut left: HashMap<Uuid, i64> = candidates.iter().map(|c| (c.owner_id, c.balance)).collect();
    let groups: Vec<Vec<&Candidate>> = groups
        .into_iter()
        .map(|g| g.into_iter().map(|i| &candidates[i]).collect::<Vec<_>>())
        .filter(|members| {
            let ok = members.iter().all(|m| left.get(&m.owner_id).is_some_and(|b| *b >= fee));
            if ok {
                for m in members {
                    *left.entry(m.owner_id).or_default() -= fee;
                }
            }
            ok
        })
        .collect();
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    // Held-out prompts are for promotion gates, never for matches.
    let pool = &space.match_prompts;
    let prompts: Vec<usize> = groups.iter().map(|_| pool[rand::rng().random_range(0..pool.len())]).collect();
    // Every match of the round in one transaction; if anything changed since
    // the candidates were read, each match on its own.
    let mut tx = sqlx::Acquire::begin(&mut *conn).await?;
    match form_many(&mut tx, space_id, version, space_owner, space, &groups, &prompts).await {
        Ok(ids) => {
            tx.commit().await?;
            return Ok(ids);
        }
        Err(FormError::Skip(why)) => {
            tracing::debug!(%space_id, why, "batch formation fell back to one match at a time");
            tx.rollback().await?;
        }
        Err(FormError::Db(err)) => return Err(err.into()),
    }
    let mut formed = Vec::new();
    for (members, prompt_index) in groups.into_iter().zip(prompts) {
        let mut tx = sqlx::Acquire::begin(&mut *conn).await?;
        match form_many(&mut tx, space_id, version, space_owner, space, &[members], &[prompt_index]).await {
            Ok(ids) => {
                tx.commit().await?;
                formed.extend(ids);
            }
            Err(FormError::Skip(why)) => {
                tracing::debug!(%space_id, why, "match not formed");
                tx.rollback().await?;
            }
            Err(FormError::Db(err)) => return Err(err.into()),
        }
    }
    Ok(formed)
}

enum FormError {
    /// This group cannot play now (someone cannot pay, or joined another match).
    Skip(String),
    Db(sqlx::Error),
}

impl From<sqlx::Error> for FormError {
    fn from(err: sqlx::Error) -> FormError {
        FormError::Db(err)
    }
}

/// Forms every group as a match in the caller's transaction, set-wise: the
/// agents' entries are locked, the matches, pots and seats inserted, all
/// fees moved by one ledger batch (accounts locked in id order), and the
/// matches handed to the generate stage.
async fn form_many(
    tx: &mut sqlx::PgConnection,
    space_id: Uuid,
    version: i32,
    space_owner: Uuid,
    space: &Space,
    groups: &[Vec<&Candidate>],
    prompts: &[usize],
) -> Result<Vec<Uuid>, FormError> {
    let agents: Vec<Uuid> = groups.iter().flatten().map(|m| m.agent_id).collect();
    let free: i64 = sqlx::query_scalar(
        "with locked as (select agent_id from entries where space_id = $1 and agent_id = any($2)
                         and active and open_match is null order by agent_id for update)
         select count(*) from locked",
    )
    .bind(space_id)
    .bind(&agents)
    .fetch_one(&mut *tx)
    .await?;
    if free as usize != agents.len() {
        return Err(FormError::Skip("an agent left or joined another match".into()));
    }
    let fee = space.entry_fee;
    let sponsor = space.payout.sponsor_pool;
    let designer_account = if sponsor > 0 {
        Some(
            sqlx::query_scalar::<_, Uuid>("select id from accounts where kind = 'user' and user_id = $1")
                .bind(space_owner)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| FormError::Skip("the designer has no account".into()))?,
        )
    } else {
        None
    };
    let ids: Vec<Uuid> = groups.iter().map(|_| Uuid::new_v4()).collect();
    let pot_accounts: Vec<Uuid> = groups.iter().map(|_| Uuid::new_v4()).collect();
    let pots: Vec<i64> = groups.iter().map(|g| fee * g.len() as i64 + sponsor).collect();
    let prompt_text: Vec<&str> = prompts.iter().map(|&i| space.prompts[i].prompt.as_str()).collect();
    let references: Vec<Option<&str>> = prompts.iter().map(|&i| space.prompts[i].reference.as_deref()).collect();
    let indexes: Vec<i32> = prompts.iter().map(|&i| i as i32).collect();
    sqlx::query(
        "insert into matches (id, space_id, space_version, status, prompt_index, prompt, reference, pot, created_at)
         select m.id, $2, $3, 'formed', m.idx, m.prompt, m.reference, m.pot, clock_timestamp()
         from unnest($1::uuid[], $4::int[], $5::text[], $6::text[], $7::bigint[]) as m(id, idx, prompt, reference, pot)",
    )
    .bind(&ids)
    .bind(space_id)
    .bind(version)
    .bind(&indexes)
    .bind(&prompt_text)
    .bind(&references)
    .bind(&pots)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into accounts (id, kind, match_id) select a, 'pot', m from unnest($1::uuid[], $2::uuid[]) as x(a, m)",
    )
    .bind(&pot_accounts)
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    let postings: Vec<ledger::Posting> = groups
        .iter()
        .zip(&ids)
        .zip(&pot_accounts)
        .zip(&pots)
        .filter(|(_, pot)| **pot > 0)
        .map(|(((members, id), pot_account), pot)| {
            let mut legs: Vec<Leg> = members.iter().filter(|_| fee > 0).map(|m| Leg::new(m.account, -fee)).collect();
            if let Some(designer) = designer_account {
                legs.push(Leg::new(designer, -sponsor));
            }
            legs.push(Leg::new(*pot_account, *pot));
            ledger::Posting {
                idempotency_key: format!("entry:{id}"),
                kind: "entry_fees",
                match_id: Some(*id),
                memo: "entry fees".to_owned(),
                legs,
            }
        })
        .collect();
    match ledger::post_many(&mut *tx, &postings).await {
        Ok(_) => {}
        Err(LedgerError::Db(err)) => return Err(FormError::Db(err)),
        Err(other) => return Err(FormError::Skip(other.to_string())),
    }
    let (mut s_match, mut s_slot, mut s_agent, mut s_version, mut s_owner, mut s_mu, mut s_sigma) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (members, id) in groups.iter().zip(&ids) {
        for (slot, m) in members.iter().enumerate() {
            s_match.push(*id);
            s_slot.push(slot as i16);
            s_agent.push(m.agent_id);
            s_version.push(m.version);
            s_owner.push(m.owner_id);
            s_mu.push(m.mu);
            s_sigma.push(m.sigma);
        }
    }
    sqlx::query(
        "insert into match_agents (match_id, slot, agent_id, agent_version, owner_id, entry_fee, mu_before, sigma_before)
         select m.match_id, m.slot, m.agent, m.version, m.owner, $8, m.mu, m.sigma
         from unnest($1::uuid[], $2::smallint[], $3::uuid[], $4::int[], $5::uuid[], $6::float8[], $7::float8[])
              as m(match_id, slot, agent, version, owner, mu, sigma)",
    )
    .bind(&s_match)
    .bind(&s_slot)
    .bind(&s_agent)
    .bind(&s_version)
    .bind(&s_owner)
    .bind(&s_mu)
    .bind(&s_sigma)
    .bind(fee)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "update entries e set open_match = u.match_id from unnest($2::uuid[], $3::uuid[]) as u(agent, match_id)
         where e.space_id = $1 and e.agent_id = u.agent",
    )
    .bind(space_id)
    .bind(&s_agent)
    .bind(&s_match)
    .execute(&mut *tx)
    .await?;
    pipeline::enqueue_many(&mut *tx, Stage::Generate, &ids).await?;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn candidates(rng: &mut StdRng, n: usize, owners: usize, spread: f64) -> Vec<Candidate> {
        let owner_ids: Vec<Uuid> = (0..owners).map(|_| Uuid::new_v4()).collect();
        (0..n)
            .map(|_| Candidate {
                agent_id: Uuid::new_v4(),
                owner_id: owner_ids[rng.random_range(0..owners)],
                version: 1,
                mu: 25.0 + rng.random_range(-spread..=spread),
                sigma: 8.3,
                account: Uuid::new_v4(),
                balance: 100,
            })
            .collect()
    }

    #[test]
    fn groups_respect_owners_size_window_and_use_each_agent_once() {
        for seed in 0..200 {
            let mut rng = StdRng::seed_from_u64(seed);
            let n = rng.random_range(0..40);
            let owners = rng.random_range(1..12);
            let k = rng.random_range(2..=8);
            let window = rng.random_range(50.0..800.0);
            let pool = candidates(&mut rng, n, owners, 15.0);
            let groups = pick_groups(&pool, k, window, 100, &mut rng);
            let mut seen = std::collections::HashSet::new();
            for group in &groups {
                assert_eq!(group.len(), k, "seed {seed}");
                let owners: std::collections::HashSet<Uuid> = group.iter().map(|&i| pool[i].owner_id).collect();
                assert_eq!(owners.len(), k, "seed {seed}: two agents of one owner");
                for &a in group {
                    assert!(seen.insert(a), "seed {seed}: an agent in two matches");
                    for &b in group {
                        let gap = (rating::display(pool[a].mu) - rating::display(pool[b].mu)).abs();
                        assert!(gap <= window, "seed {seed}: gap {gap} > window {window}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_wide_window_and_many_owners_forms_every_possible_match() {
        let mut rng = StdRng::seed_from_u64(1);
        let pool: Vec<Candidate> = (0..12)
            .map(|i| Candidate {
                agent_id: Uuid::new_v4(),
                owner_id: Uuid::from_u128(i),
                version: 1,
                mu: 25.0,
                sigma: 8.3,
                account: Uuid::new_v4(),
                balance: 100,
            })
            .collect();
        assert_eq!(pick_groups(&pool, 4, 1e9, 100, &mut rng).len(), 3);
        assert_eq!(pick_groups(&pool, 4, 1e9, 2, &mut rng).len(), 2, "at most the room left");
        let one_owner: Vec<Candidate> = pool.iter().map(|c| Candidate { owner_id: Uuid::nil(), ..c.clone() }).collect();
        assert!(pick_groups(&one_owner, 2, 1e9, 100, &mut rng).is_empty());
    }
}
