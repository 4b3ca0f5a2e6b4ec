//! The matchmaker: forms matches for every active Space, rating-aware and
//! never with two agents of one owner, within the Space's concurrency.
//! A round takes the Space's advisory lock, picks groups
//! (`domain::pairing`), and forms them (`store::formation`): all of the
//! round's matches in one transaction, or one match at a time if anything
//! changed since the contenders were read.

use super::relay;
use crate::context::Context;
use crate::domain::pairing::{Contender, pick_groups};
use crate::domain::space::Space;
use crate::domain::{MatchId, MatchStatus, SpaceId, UserId};
use crate::queue::{Event, Events};
use crate::store::formation::{self, FormationError};
use crate::store::matches;
use crate::store::spaces::{self, SpaceCache};
use rand::Rng;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// One matchmaking round over every active Space; returns the matches formed.
pub async fn round(pool: &PgPool, spaces: &SpaceCache) -> anyhow::Result<Vec<MatchId>> {
    let active = spaces::active(pool).await?;
    // Spaces are independent: form their matches concurrently.
    let rounds = active.into_iter().map(|s| async move {
        let space = match spaces.get(pool, s.id, s.current_version).await {
            Ok(space) => space,
            Err(err) => {
                tracing::error!(space_id = %s.id, version = s.current_version, error = %err, "cannot load Space; skipping it");
                return Vec::new();
            }
        };
        match form_for_space(pool, s.id, s.current_version, s.owner_id, &space).await {
            Ok(ids) => ids,
            Err(err) => {
                tracing::warn!(space_id = %s.id, error = %err, "matchmaking round failed for a Space");
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
    space_id: SpaceId,
    version: i32,
    space_owner: UserId,
    space: &Arc<Space>,
) -> anyhow::Result<Vec<MatchId>> {
    let mut conn = pool.acquire().await?;
    // One matchmaker per Space at a time, across every instance; a session
    // lock, released below (or by the session's end if this process dies).
    if !formation::try_lock(&mut conn, space_id).await? {
        return Ok(Vec::new());
    }
    let formed = form_locked(&mut conn, space_id, version, space_owner, space).await;
    formation::unlock(&mut conn, space_id).await?;
    formed
}

async fn form_locked(
    conn: &mut sqlx::PgConnection,
    space_id: SpaceId,
    version: i32,
    space_owner: UserId,
    space: &Arc<Space>,
) -> anyhow::Result<Vec<MatchId>> {
    // Paused since the round began: form nothing.
    if !formation::is_active(&mut *conn, space_id).await? {
        return Ok(Vec::new());
    }
    let open = formation::open_matches(&mut *conn, space_id).await?;
    let room = (space.matchmaking.max_concurrent_matches as i64 - open).max(0) as usize;
    if room == 0 {
        return Ok(Vec::new());
    }
    let fee = space.entry_fee;
    let candidates = formation::contenders(&mut *conn, space_id, fee).await?;
    let k = space.agents_per_match as usize;
    let groups = {
        let mut rng = rand::rng();
        pick_groups(&candidates, k, space.matchmaking.rating_window, room, &mut rng)
    };
    // Drop groups an owner could not pay for as well as the ones before.
    let mut left: HashMap<UserId, i64> = candidates.iter().map(|c| (c.owner_id, c.balance)).collect();
    let groups: Vec<Vec<&Contender>> = groups
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
    match formation::form_many(&mut tx, space_id, version, space_owner, space, &groups, &prompts).await {
        Ok(ids) => {
            tx.commit().await?;
            return Ok(ids);
        }
        Err(FormationError::Skip(why)) => {
            tracing::debug!(%space_id, why, "batch formation fell back to one match at a time");
            tx.rollback().await?;
        }
        Err(FormationError::Db(err)) => return Err(err.into()),
    }
    let mut formed = Vec::new();
    for (members, prompt_index) in groups.into_iter().zip(prompts) {
        let mut tx = sqlx::Acquire::begin(&mut *conn).await?;
        match formation::form_many(&mut tx, space_id, version, space_owner, space, &[members], &[prompt_index]).await {
            Ok(ids) => {
                tx.commit().await?;
                formed.extend(ids);
            }
            Err(FormationError::Skip(why)) => {
                tracing::debug!(%space_id, why, "match not formed");
                tx.rollback().await?;
            }
            Err(FormationError::Db(err)) => return Err(err.into()),
        }
    }
    Ok(formed)
}

/// Runs the matchmaker every `matchmaker_interval_ms` until `stop` fires.
pub async fn run(ctx: Context, mut stop: tokio::sync::watch::Receiver<bool>) {
    let period = Duration::from_millis(ctx.settings.matchmaker_interval_ms.max(10));
    loop {
        match round(&ctx.db, &ctx.spaces).await {
            Ok(formed) if !formed.is_empty() => {
                if let Err(err) = relay::flush_outbox(&ctx).await {
                    tracing::warn!(error = %err, "outbox relay failed");
                }
                let slugs = matches::slugs(&ctx.db, &formed).await.unwrap_or_default();
                let events: Vec<Event> =
                    slugs.into_iter().map(|m| Event::new(m.id, m.slug, MatchStatus::Formed)).collect();
                Events::publish_many(&ctx.redis, &events).await;
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "matchmaking round failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.changed() => break,
        }
    }
}
