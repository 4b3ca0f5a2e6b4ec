//! Matches: listing, one match in full, and live events over SSE.

use crate::error::ApiError;
use crate::events::Event;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use bytes::Bytes;
use serde::Deserialize;
use std::time::Duration;
use uuid::Uuid;

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
pub async fn list(state: web::Data<AppState>, query: web::Query<ListQuery>) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit", "limit is 1..=500"));
    }
    if let Some(status) = &query.status
        && !["formed", "generated", "judged", "settled", "failed"].contains(&status.as_str())
    {
        return Err(ApiError::invalid("status", "status is formed, generated, judged, settled or failed"));
    }
    let rows: Vec<(
        Uuid,
        String,
        i32,
        String,
        i64,
        chrono::DateTime<chrono::Utc>,
        Option<chrono::DateTime<chrono::Utc>>,
    )> = sqlx::query_as(
        "select m.id, s.slug, m.space_version, m.status, m.pot, m.created_at, m.settled_at
             from matches m join spaces s on s.id = m.space_id
             where ($1::text is null or s.slug = $1) and ($2::text is null or m.status = $2)
             order by m.created_at desc limit $3",
    )
    .bind(&query.space)
    .bind(&query.status)
    .bind(limit)
    .fetch_all(&state.db)
    .await?;
    let list: Vec<_> = rows
        .into_iter()
        .map(|(id, space, version, status, pot, created_at, settled_at)| {
            serde_json::json!({"id": id, "space": space, "space_version": version, "status": status, "pot": pot,
                               "created_at": created_at, "settled_at": settled_at})
        })
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

type SeatRow =
    (i16, Uuid, String, String, i32, i64, f64, Option<f64>, Option<i32>, Option<i64>, Option<String>, Option<String>);

/// GET /api/v1/matches/{id}
pub async fn get(state: web::Data<AppState>, path: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let row: Option<(
        String,
        i32,
        String,
        String,
        Option<String>,
        i64,
        Option<String>,
        Option<i64>,
        Option<String>,
        chrono::DateTime<chrono::Utc>,
        Option<chrono::DateTime<chrono::Utc>>,
    )> = sqlx::query_as(
        "select s.slug, m.space_version, m.status, m.prompt, m.reference, m.pot, m.error, m.seq, m.record_hash,
                    m.created_at, m.settled_at
             from matches m join spaces s on s.id = m.space_id where m.id = $1",
    )
    .bind(id)
    .fetch_optional(&state.db)
    .await?;
    let (space, version, status, prompt, reference, pot, error, seq, record_hash, created_at, settled_at) =
        row.ok_or_else(|| ApiError::NotFound("match".into()))?;
    let seats: Vec<SeatRow> = sqlx::query_as(
        "select ma.slot, ma.agent_id, a.name, u.username, ma.agent_version, ma.entry_fee, ma.mu_before, ma.mu_after,
                ma.rank, ma.payout, o.text, o.finish
         from match_agents ma join agents a on a.id = ma.agent_id join users u on u.id = ma.owner_id
         left join outputs o on o.match_id = ma.match_id and o.slot = ma.slot
         where ma.match_id = $1 order by ma.slot",
    )
    .bind(id)
    .fetch_all(&state.db)
    .await?;
    let verdict: Option<serde_json::Value> = sqlx::query_scalar("select verdict from verdicts where match_id = $1")
        .bind(id)
        .fetch_optional(&state.db)
        .await?;
    let seats: Vec<_> = seats
        .into_iter()
        .map(|(slot, agent, name, owner, version, fee, mu_before, mu_after, rank, payout, output, finish)| {
            serde_json::json!({
                "slot": slot, "agent_id": agent, "agent": name, "owner": owner, "agent_version": version,
                "entry_fee": fee, "rating_before": crate::rating::display(mu_before),
                "rating_after": mu_after.map(crate::rating::display), "rank": rank, "payout": payout,
                "output": output, "finish": finish,
                "score": verdict.as_ref().and_then(|v| v["scores"][slot.to_string()].as_f64()),
                "passed_hard": verdict.as_ref().and_then(|v| v["passed_hard"][slot.to_string()].as_bool()),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "id": id, "space": space, "space_version": version, "status": status, "prompt": prompt,
        "reference": reference, "pot": pot, "error": error, "seq": seq, "record_hash": record_hash,
        "created_at": created_at, "settled_at": settled_at, "seats": seats,
        "verdict": verdict,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    #[serde(default)]
    space: Option<String>,
    #[serde(rename = "match", default)]
    match_id: Option<Uuid>,
}

fn sse(event: &Event) -> Bytes {
    let data = serde_json::to_string(event).unwrap_or_default();
    Bytes::from(format!("event: {}\ndata: {data}\n\n", event.status))
}

/// GET /api/v1/events — Server-Sent Events for match progress, optionally
/// for one Space or one match. A comment line every 15 s keeps proxies
/// from closing an idle stream.
pub async fn events(state: web::Data<AppState>, query: web::Query<EventsQuery>) -> HttpResponse {
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
