//! Matches: listing, one match in full, and live events over SSE.

use crate::context::Context;
use crate::domain::space::Visibility;
use crate::domain::user::Role;
use crate::domain::{MatchId, MatchStatus, rating};
use crate::http::auth::{Caller, MaybeCaller};
use crate::http::error::ApiError;
use crate::store::matches;
use actix_web::{HttpResponse, web};
use bytes::Bytes;
use serde::Deserialize;
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    space: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

/// GET /api/v1/matches — newest first.
pub async fn list(state: web::Data<Context>, query: web::Query<ListQuery>) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit", "limit is 1..=500"));
    }
    let status = match &query.status {
        None => None,
        Some(s) => Some(
            MatchStatus::parse(s)
                .ok_or_else(|| ApiError::invalid("status", "status is formed, generated, judged, settled or failed"))?,
        ),
    };
    let list = matches::list(&state.db, query.space.as_deref(), status, limit).await?;
    Ok(HttpResponse::Ok().json(list))
}

/// Whether `caller` may read a match's outputs, verdict, pairs and a
/// game's answers and views: the match's players, the Space's designer and
/// admins always; anyone else only in a public Space that gives its pairs
/// away — where a Space sells its pairs (`[data] price_per_pair > 0`) or
/// is private, what it sells is not readable for free, and a buyer reads
/// only the matches whose pairs they bought.
pub async fn may_read_outputs(
    state: &Context,
    caller: Option<&Caller>,
    head: &matches::MatchHead,
    seats: &[matches::SeatView],
) -> Result<bool, ApiError> {
    let insider = caller.is_some_and(|c| {
        c.is_admin() || c.user_id == head.designer_id || seats.iter().any(|s| s.owner_id == c.user_id)
    });
    if insider {
        return Ok(true);
    }
    let space = state.spaces.get(&state.db, head.space_id, head.space_version).await.map_err(ApiError::internal)?;
    if space.visibility == Visibility::Public && space.data.per_pair == 0 {
        return Ok(true);
    }
    match caller {
        Some(c) if c.role == Role::Buyer => {
            Ok(crate::store::exports::bought_from(&state.db, c.user_id, head.id).await?)
        }
        _ => Ok(false),
    }
}

/// GET /api/v1/matches/{id} — outputs and the verdict only for those the
/// Space's `[pairs] visibility` lets read them (`outputs_hidden` says so).
pub async fn get(
    state: web::Data<Context>,
    caller: MaybeCaller,
    path: web::Path<MatchId>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let head = matches::head(&state.db, id).await?.ok_or_else(|| ApiError::NotFound("match".into()))?;
    let mut seats = matches::seats(&state.db, id).await?;
    let readable = may_read_outputs(&state, caller.0.as_ref(), &head, &seats).await?;
    let verdict = if readable { matches::verdict(&state.db, id).await? } else { None };
    if !readable {
        for seat in &mut seats {
            seat.output = None;
        }
    }
    let seats: Vec<_> = seats
        .into_iter()
        .map(|s| {
            let slot = s.slot.to_string();
            serde_json::json!({
                "slot": s.slot, "agent_id": s.agent_id, "agent": s.agent, "owner": s.owner,
                "agent_version": s.agent_version, "entry_fee": s.entry_fee,
                "rating_before": rating::display(s.mu_before), "rating_after": s.mu_after.map(rating::display),
                "rank": s.rank, "payout": s.payout, "output": s.output, "finish": s.finish,
                "score": verdict.as_ref().and_then(|v| v["scores"][&slot].as_f64()),
                "passed_hard": verdict.as_ref().and_then(|v| v["passed_hard"][&slot].as_bool()),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "id": id, "space": head.space, "space_version": head.space_version, "status": head.status,
        "prompt": head.prompt, "reference": head.reference, "pot": head.pot, "error": head.error, "seq": head.seq,
        "record_hash": head.record_hash, "created_at": head.created_at, "settled_at": head.settled_at,
        "seats": seats, "verdict": verdict, "outputs_hidden": !readable,
    })))
}

/// A multi-turn match's turns as the API and the pages show them: every
/// answer in order with the referee's reading, the board after each step
/// for a grid game, and the outcome once there is one. `readable` false
/// leaves out the answers' text and views (the Space's visibility).
pub async fn game_turns(
    state: &Context,
    id: MatchId,
    head: &matches::MatchHead,
    readable: bool,
    page: &TurnsQuery,
) -> Result<serde_json::Value, ApiError> {
    let space = state.spaces.get(&state.db, head.space_id, head.space_version).await.map_err(ApiError::internal)?;
    let Some(referee) = &space.game else {
        return Err(ApiError::NotFound("turns: this match's Space is not multi-turn".into()));
    };
    let from = page.from.unwrap_or(0);
    if from < 0 {
        return Err(ApiError::invalid("from", "from is a step number, 0 or more"));
    }
    let limit = page.limit.unwrap_or(DEFAULT_TURN_STEPS);
    if !(1..=MAX_TURN_STEPS).contains(&limit) {
        return Err(ApiError::invalid("limit", format!("limit is 1 to {MAX_TURN_STEPS} steps")));
    }
    let views = page.views.unwrap_or(false);
    let rows = crate::store::turns::window(&state.db, id, from, limit + 1, views && readable).await?;
    let more = rows.len() as i64 > limit;
    let rows = &rows[..rows.len().min(limit as usize)];
    let last = crate::store::turns::last(&state.db, id).await?;
    // A judged game's per-round scores, once judged.
    let rounds = matches::verdict(&state.db, id).await?.map(|mut v| v["rounds"].take()).unwrap_or_default();
    let grid = match &referee.rules {
        referee::Rules::Grid(g) => Some(g),
        _ => None,
    };
    let mut turns = Vec::new();
    for row in rows {
        // Where outputs are hidden, so is everything that tells the moves:
        // the boards, the referee's notes, the per-round scores.
        let board = grid.filter(|_| readable).and_then(|g| g.board(&row.state.0.game).ok());
        for m in &row.moves.0 {
            turns.push(serde_json::json!({
                "step": row.step, "turn": row.turn, "seat": m.seat, "legal": m.legal,
                "note": readable.then_some(&m.note), "tokens": m.tokens, "at": row.created_at,
                "text": readable.then_some(&m.text), "view": (readable && views).then_some(&m.view),
                "board_after": board,
            }));
        }
    }
    let rounds = if readable { rounds } else { serde_json::Value::Null };
    let start_board = grid.and_then(|g| referee.builtin_start(&head.prompt).and_then(|s| g.board(&s.game).ok()));
    Ok(serde_json::json!({
        "id": id, "status": head.status, "kind": referee.rules.kind(), "max_turns": referee.turns.max_turns,
        "start_board": start_board, "turns": turns,
        "from": from, "next_from": more.then(|| rows.last().map(|r| r.step + 1)).flatten(),
        "steps": last.as_ref().map_or(0, |(step, _)| step + 1),
        "outcome": last.as_ref().and_then(|(_, s)| s.0.outcome.as_ref()).map(|o| if readable {
            serde_json::json!(o)
        } else {
            serde_json::json!({ "scores": o.scores, "judged": o.judged })
        }),
        "illegal": last.as_ref().map(|(_, s)| s.0.illegal.clone()),
        "rounds": rounds,
        "outputs_hidden": !readable,
    }))
}

/// Steps one page of turns holds unless `limit` says otherwise.
pub const DEFAULT_TURN_STEPS: i64 = 50;
/// The most steps one page of turns holds.
pub const MAX_TURN_STEPS: i64 = 200;

/// A window of a game's steps.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnsQuery {
    /// The first step (0 unless given).
    #[serde(default)]
    pub from: Option<i32>,
    /// Steps at most ([`DEFAULT_TURN_STEPS`] unless given, at most
    /// [`MAX_TURN_STEPS`]).
    #[serde(default)]
    pub limit: Option<i64>,
    /// Also each view the seats were shown (up to 12,000 characters each).
    #[serde(default)]
    pub views: Option<bool>,
}

/// GET /api/v1/matches/{id}/turns — a multi-turn match's turns so far.
pub async fn turns(
    state: web::Data<Context>,
    caller: MaybeCaller,
    path: web::Path<MatchId>,
    query: web::Query<TurnsQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let head = matches::head(&state.db, id).await?.ok_or_else(|| ApiError::NotFound("match".into()))?;
    let seats = matches::seats(&state.db, id).await?;
    let readable = may_read_outputs(&state, caller.0.as_ref(), &head, &seats).await?;
    Ok(HttpResponse::Ok().json(game_turns(&state, id, &head, readable, &query).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    #[serde(default)]
    space: Option<String>,
    #[serde(rename = "match", default)]
    match_id: Option<MatchId>,
}

/// How often an idle stream sends a comment line.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// GET /api/v1/events — Server-Sent Events for match progress, optionally
/// for one Space or one match. A comment line every `KEEP_ALIVE` keeps
/// proxies from closing an idle stream, and finds clients that left (their
/// slot is freed then).
pub async fn events(
    state: web::Data<Context>,
    req: actix_web::HttpRequest,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let slot = state.streams.take(&crate::http::auth::client_address(&req)).map_err(ApiError::OverCapacity)?;
    let rx = state.events.subscribe();
    let EventsQuery { space, match_id } = query.into_inner();
    // The slot lives in the stream's state: it is freed when the client goes.
    let stream = futures_util::stream::unfold((rx, slot), move |(mut rx, slot)| {
        let space = space.clone();
        async move {
            loop {
                let next = tokio::select! {
                    r = rx.recv() => r,
                    _ = tokio::time::sleep(KEEP_ALIVE) => {
                        return Some((Ok::<_, actix_web::Error>(Bytes::from_static(b": keep-alive\n\n")), (rx, slot)));
                    }
                };
                match next {
                    Ok(live) => {
                        let event = &live.event;
                        let wanted = space.as_ref().is_none_or(|s| *s == event.space)
                            && match_id.is_none_or(|m| m == event.match_id);
                        if wanted {
                            return Some((Ok(live.sse.clone()), (rx, slot)));
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let note = format!("event: lagged\ndata: {{\"missed\": {n}}}\n\n");
                        return Some((Ok(Bytes::from(note)), (rx, slot)));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream))
}
