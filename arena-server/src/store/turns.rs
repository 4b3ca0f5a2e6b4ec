//! A multi-turn match's stored steps (`match_turns`): one row per step
//! with the answers as the referee read them and the state after it.

use crate::domain::MatchId;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

/// One seat's answer in a step, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredMove {
    pub seat: usize,
    /// What the seat was shown (its prompt for this turn); empty where a
    /// read left it out ([`resume_rows`]).
    #[serde(default)]
    pub view: String,
    pub text: String,
    pub legal: bool,
    pub note: String,
    pub tokens: i32,
    pub finish: String,
}

/// A stored step.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TurnRow {
    pub match_id: MatchId,
    pub step: i32,
    pub turn: i32,
    pub moves: sqlx::types::Json<Vec<StoredMove>>,
    pub state: sqlx::types::Json<referee::State>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Every step of the given matches, by match and step.
pub async fn rows(pool: &PgPool, ids: &[MatchId]) -> Result<Vec<TurnRow>, sqlx::Error> {
    sqlx::query_as(
        "select match_id, step, turn, moves, state, created_at from match_turns
         where match_id = any($1) order by match_id, step",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
}

/// Every step of the given matches without the views the seats were
/// shown: what resuming a game needs (a view can be 12,000 characters; a
/// step reads every earlier step of its match).
pub async fn resume_rows(pool: &PgPool, ids: &[MatchId]) -> Result<Vec<TurnRow>, sqlx::Error> {
    sqlx::query_as(
        "select match_id, step, turn,
                (select coalesce(jsonb_agg(m - 'view' order by k), '[]'::jsonb)
                 from jsonb_array_elements(moves) with ordinality as e(m, k)) as moves,
                state, created_at
         from match_turns where match_id = any($1) order by match_id, step",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
}

/// Stores a step (the state without its transcript: the moves of the
/// steps are it); false when that (match, step) is already stored (another
/// worker did it), in which case nothing changed.
pub async fn insert(
    conn: &mut PgConnection,
    match_id: MatchId,
    step: i32,
    turn: i32,
    moves: &[StoredMove],
    state: &referee::State,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "insert into match_turns (match_id, step, turn, moves, state) values ($1, $2, $3, $4, $5)
         on conflict (match_id, step) do nothing",
    )
    .bind(match_id)
    .bind(step)
    .bind(turn)
    .bind(sqlx::types::Json(moves))
    .bind(sqlx::types::Json(&referee::State { transcript: Vec::new(), ..state.clone() }))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks formed matches as moving (the reconciler re-enqueues only matches
/// whose status has not moved for a while; a game in progress has).
pub async fn touch(conn: &mut PgConnection, ids: &[MatchId]) -> Result<(), sqlx::Error> {
    sqlx::query("update matches set updated_at = now() where id = any($1) and status = 'formed'")
        .bind(ids)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The state after the last stored step, its transcript rebuilt from every
/// step's moves, and the next step's number; `None` before the first step.
pub fn resume(rows: &[TurnRow]) -> Option<(referee::State, i32)> {
    let last = rows.last()?;
    let mut state = last.state.0.clone();
    state.transcript = rows
        .iter()
        .flat_map(|r| {
            r.moves.0.iter().map(move |m| referee::Entry {
                turn: r.turn as u32,
                seat: m.seat,
                text: m.text.clone(),
                legal: m.legal,
                note: m.note.clone(),
            })
        })
        .collect();
    Some((state, last.step + 1))
}
