//! A Space's leaderboard as the API serves it: the online Weng-Lin rating
//! of every entered agent beside the Bradley–Terry fit with bootstrap
//! intervals (`domain::leaderboard`), recomputed at most once a minute per
//! Space and cached in Redis.

use super::error::ApiError;
use crate::context::Context;
use crate::domain::leaderboard::{Leaderboard, REFRESH_S, ROUNDS, Row, battles, bootstrap, elo, head_to_head};

/// Agents of the head-to-head matrix: the best-rated few.
pub const HEAD_TO_HEAD_AGENTS: usize = 8;
use crate::domain::{AgentId, SpaceId, rating};
use crate::store::leaderboard as source;
use redis::AsyncCommands;
use std::collections::HashMap;

async fn compute(state: &Context, space_id: SpaceId) -> Result<Leaderboard, ApiError> {
    let entries = source::standings(&state.db, space_id).await?;
    let placings = source::placings(&state.db, space_id).await?;
    let index: HashMap<AgentId, usize> = entries.iter().enumerate().map(|(i, e)| (e.agent_id, i)).collect();
    let battles = battles(&placings, &index);
    let n = entries.len();
    let played: Vec<bool> = (0..n).map(|i| battles.iter().any(|b| b.a == i || b.b == i)).collect();
    let (point, low, high) = if battles.is_empty() {
        (vec![f64::NAN; n], vec![f64::NAN; n], vec![f64::NAN; n])
    } else {
        let battles = battles.clone();
        tokio::task::spawn_blocking(move || bootstrap(n, &battles, ROUNDS, 42)).await.map_err(ApiError::internal)?
    };
    let known = |i: usize, v: f64| (played[i] && v.is_finite()).then(|| elo(v).round());
    let mut rows: Vec<Row> = entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| Row {
            agent_id: e.agent_id,
            name: e.name,
            owner: e.owner,
            rating: rating::display(e.mu),
            conservative: rating::display(e.mu - 3.0 * e.sigma),
            mu: e.mu,
            sigma: e.sigma,
            matches: e.matches,
            bt: known(i, point[i]),
            bt_low: known(i, low[i]),
            bt_high: known(i, high[i]),
        })
        .collect();
    rows.sort_by(|a, b| b.rating.total_cmp(&a.rating));
    let keep: Vec<(usize, AgentId)> = rows
        .iter()
        .take(HEAD_TO_HEAD_AGENTS)
        .filter_map(|r| index.get(&r.agent_id).map(|i| (*i, r.agent_id)))
        .collect();
    let head_to_head = head_to_head(&battles, &keep);
    Ok(Leaderboard {
        rows,
        battles: battles.len(),
        bootstrap_rounds: ROUNDS,
        computed_at: chrono::Utc::now(),
        head_to_head,
    })
}

/// The cached leaderboard, recomputed when older than `REFRESH_S`.
pub async fn get(state: &Context, space_id: SpaceId) -> Result<Leaderboard, ApiError> {
    let key = state.redis.key(&format!("leaderboard:{space_id}"));
    let mut conn = state.redis.conn();
    let cached: Option<String> = conn.get(&key).await.unwrap_or(None);
    if let Some(board) = cached.and_then(|c| serde_json::from_str(&c).ok()) {
        return Ok(board);
    }
    // One fit per Space at a time: the others wait and read its result.
    let _flight = state.flights.hold(&key).await;
    let cached: Option<String> = conn.get(&key).await.unwrap_or(None);
    if let Some(board) = cached.and_then(|c| serde_json::from_str(&c).ok()) {
        return Ok(board);
    }
    state.metrics.leaderboard_fits.inc();
    let board = compute(state, space_id).await?;
    if let Ok(text) = serde_json::to_string(&board) {
        let _: Result<(), _> = conn.set_ex(&key, text, REFRESH_S).await;
    }
    Ok(board)
}
