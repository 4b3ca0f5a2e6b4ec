//! Matches: listing, one match in full, and live events over SSE.

use crate::context::Context;
use crate::domain::{MatchId, MatchStatus, rating};
use crate::http::error::ApiError;
use crate::queue::Event;
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

/// GET /api/v1/matches/{id}
pub async fn get(state: web::Data<Context>, path: web::Path<MatchId>) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let head = matches::head(&state.db, id).await?.ok_or_else(|| ApiError::NotFound("match".into()))?;
    let seats = matches::seats(&state.db, id).await?;
    let verdict = matches::verdict(&state.db, id).await?;
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
        "seats": seats, "verdict": verdict,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    #[serde(default)]
    space: Option<String>,
    #[serde(rename = "match", default)]
    match_id: Option<MatchId>,
}

fn sse(event: &Event) -> Bytes {
    let data = serde_json::to_string(event).unwrap_or_default();
    Bytes::from(format!("event: {}\ndata: {data}\n\n", event.status.as_str()))
}

/// GET /api/v1/events — Server-Sent Events for match progress, optionally
/// for one Space or one match. A comment line every 15 s keeps proxies
/// from closing an idle stream.
pub async fn events(state: web::Data<Context>, query: web::Query<EventsQuery>) -> HttpResponse {
    let rx = state.events.subscribe();
    let EventsQuery { space, match_id } = query.into_inner();
    let stream = futures_util::stream::unfold(rx, move |mut rx| {
        let space = space.clone();
        async move {
            loop {
                let next = tokio::select! {
                    r = rx.recv() => r,
                    _ = tokio::time::sleep(Duration::from_secs(15)) => {
                        return Some((Ok::<_, actix_web::Error>(Bytes::from_static(b": keep-alive\n\n")), rx));
                    }
                };
                match next {
                    Ok(event) => {
                        let wanted = space.as_ref().is_none_or(|s| *s == event.space)
                            && match_id.is_none_or(|m| m == event.match_id);
                        if wanted {
                            return Some((Ok(sse(&event)), rx));
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let note = format!("event: lagged\ndata: {{\"missed\": {n}}}\n\n");
                        return Some((Ok(Bytes::from(note)), rx));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream)
}
