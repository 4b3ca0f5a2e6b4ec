//! What a Space's leaderboard is computed from: its entries with their
//! online ratings, and every seat of its settled matches.

use crate::domain::leaderboard::Placing;
use crate::domain::{AgentId, MatchId, MatchStatus, SpaceId};
use sqlx::PgPool;

/// An entered agent with its online rating.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Standing {
    pub agent_id: AgentId,
    pub name: String,
    pub owner: String,
    pub mu: f64,
    pub sigma: f64,
    pub matches: i32,
}

pub async fn standings(pool: &PgPool, space: SpaceId) -> Result<Vec<Standing>, sqlx::Error> {
    sqlx::query_as(
        "select e.agent_id, a.name, u.username as owner, e.mu, e.sigma, e.matches
         from entries e join agents a on a.id = e.agent_id join users u on u.id = a.owner_id
         where e.space_id = $1 order by e.mu desc",
    )
    .bind(space)
    .fetch_all(pool)
    .await
}

/// Every seat of the Space's settled matches, grouped by match in
/// settlement order.
pub async fn placings(pool: &PgPool, space: SpaceId) -> Result<Vec<Placing>, sqlx::Error> {
    let rows: Vec<(MatchId, AgentId, i32)> = sqlx::query_as(
        "select ma.match_id, ma.agent_id, ma.rank from match_agents ma join matches m on m.id = ma.match_id
         where m.space_id = $1 and m.status = $2 order by m.seq, ma.slot",
    )
    .bind(space)
    .bind(MatchStatus::Settled)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(match_id, agent_id, rank)| Placing { match_id, agent_id, rank }).collect())
}
