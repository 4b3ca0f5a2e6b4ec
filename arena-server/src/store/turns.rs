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
pub async fn rows(conn: &mut PgConnection, ids: &[MatchId]) -> Result<Vec<TurnRow>, sqlx::Error> {
    sqlx::query_as(
        "select match_id, step, turn, moves, state, created_at from match_turns
         where match_id = any($1) order by match_id, step",
    )
    .bind(ids)
    .fetch_all(conn)
    .await
}

/// At most `limit` steps of one match from step `from` on, with the views
/// the seats were shown only when `views` says so.
pub async fn window(
    pool: &PgPool,
    id: MatchId,
    from: i32,
    limit: i64,
    views: bool,
) -> Result<Vec<TurnRow>, sqlx::Error> {
    sqlx::query_as(
        "select match_id, step, turn,
                case when $4 then moves
                     else (select coalesce(jsonb_agg(m - 'view' order by k), '[]'::jsonb)
                           from jsonb_array_elements(moves) with ordinality as e(m, k)) end as moves,
                state, created_at
         from match_turns where match_id = $1 and step >= $2 order by step limit $3",
    )
    .bind(id)
    .bind(from)
    .bind(limit)
    .bind(views)
    .fetch_all(pool)
    .await
}

/// The number of a match's last stored step and the state after it.
pub async fn last(pool: &PgPool, id: MatchId) -> Result<Option<(i32, sqlx::types::Json<referee::State>)>, sqlx::Error> {
    sqlx::query_as("select step, state from match_turns where match_id = $1 order by step desc limit 1")
        .bind(id)
        .fetch_optional(pool)
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

/// One move of a finished, referee-decided game, kept so that a later
/// game's move at the same view can be paired with it (the view by its
/// sha256; `score` is the moving seat's final score in its game).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct GameDecision {
    pub match_id: MatchId,
    pub step: i32,
    pub slot: i16,
    pub view_sha256: String,
    pub answer: String,
    pub note: String,
    pub legal: bool,
    pub score: f64,
}

/// Takes the lock under which a Space's judged games are paired with
/// earlier games' moves and their own moves kept, until the transaction
/// ends: two judge batches of one Space then pair exactly as they would
/// one after the other (the second reads what the first kept).
pub async fn lock_decisions(conn: &mut PgConnection, space: crate::domain::SpaceId) -> Result<(), sqlx::Error> {
    sqlx::query("select pg_advisory_xact_lock(hashtextextended('game_decisions:' || $1::text, 0))")
        .bind(space)
        .execute(conn)
        .await?;
    Ok(())
}

/// Keeps a judged game's moves (a redelivered match stores nothing twice),
/// stamped with the clock (not the transaction's start), so moves kept one
/// after another in one transaction keep their order.
pub async fn insert_decisions(
    conn: &mut PgConnection,
    space: crate::domain::SpaceId,
    decisions: &[GameDecision],
) -> Result<(), sqlx::Error> {
    if decisions.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&GameDecision) -> String| decisions.iter().map(f).collect::<Vec<String>>();
    let ids: Vec<MatchId> = decisions.iter().map(|d| d.match_id).collect();
    let steps: Vec<i32> = decisions.iter().map(|d| d.step).collect();
    let slots: Vec<i16> = decisions.iter().map(|d| d.slot).collect();
    let legal: Vec<bool> = decisions.iter().map(|d| d.legal).collect();
    let scores: Vec<f64> = decisions.iter().map(|d| d.score).collect();
    sqlx::query(
        "insert into game_decisions (space_id, match_id, step, slot, view_sha256, answer, note, legal, score,
                                     created_at)
         select $1, *, clock_timestamp()
         from unnest($2::uuid[], $3::int[], $4::smallint[], $5::text[], $6::text[], $7::text[],
                     $8::bool[], $9::float8[])
         on conflict do nothing",
    )
    .bind(space)
    .bind(&ids)
    .bind(&steps)
    .bind(&slots)
    .bind(col(|d| d.view_sha256.clone()))
    .bind(col(|d| d.answer.clone()))
    .bind(col(|d| d.note.clone()))
    .bind(&legal)
    .bind(&scores)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Moves of one view read before the distinct ones are picked: bounds the
/// work for a view every game passes through (an empty board).
pub const VIEW_SCAN: i64 = 512;

/// Earlier games' moves in `space` at any of `views` (sha256s): per view,
/// the newest move of each distinct kind (legality, the referee's note,
/// the answer) among its newest [`VIEW_SCAN`], the newest `per_view` of
/// those, `not_in` left out. Distinct kinds, not just the newest moves: a
/// view where many games made one move must still offer the one game
/// that did otherwise (identical moves make no pair).
pub async fn same_views(
    conn: &mut PgConnection,
    space: crate::domain::SpaceId,
    views: &[String],
    not_in: MatchId,
    per_view: i64,
) -> Result<Vec<GameDecision>, sqlx::Error> {
    sqlx::query_as(
        "select d.match_id, d.step, d.slot, d.view_sha256, d.answer, d.note, d.legal, d.score
         from unnest($2::text[]) as h(view)
         cross join lateral (
             select * from (
                 select distinct on (r.legal, r.note, btrim(r.answer)) r.*
                 from (select * from game_decisions g
                       where g.space_id = $1 and g.view_sha256 = h.view and g.match_id <> $3
                       order by g.created_at desc, g.match_id, g.step, g.slot limit $5) r
                 order by r.legal, r.note, btrim(r.answer), r.created_at desc, r.match_id, r.step, r.slot) k
             order by k.created_at desc, k.match_id, k.step, k.slot limit $4) d",
    )
    .bind(space)
    .bind(views)
    .bind(not_in)
    .bind(per_view)
    .bind(VIEW_SCAN)
    .fetch_all(conn)
    .await
}
