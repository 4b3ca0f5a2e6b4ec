//! Battles and votes over HTTP: take a battle (a signed ballot and two
//! nameless answers), vote once, see the reveal, report a battle; a Space's
//! judge-vs-people audit for its designer; the integrity view for admins.
//! The pages call the same actions (`next_battle`, `cast_vote`, `audit_of`).

use crate::context::Context;
use crate::domain::user::Scope;
use crate::domain::votes::{self, Audit, Ballot, BallotError, Call, Choice, Reason, ReportReason};
use crate::domain::{MatchId, SpaceId};
use crate::http::auth::{Caller, client_address};
use crate::http::error::ApiError;
use crate::store::votes::{self as store, Battle, Reveal};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

/// A battle as it is shown: nothing in it names an agent, an owner, a
/// rating or a verdict.
#[derive(Debug, Clone)]
pub struct Card {
    pub ballot: String,
    pub space: String,
    pub space_name: String,
    pub criterion: String,
    pub prompt: String,
    pub a: String,
    pub b: String,
    /// The least time, in milliseconds, a vote on this card takes to count.
    pub read_floor_ms: i64,
}

/// The next battle for the caller (in `space`, or any voting Space), its
/// ballot sealed; None when nothing is left to vote on.
pub async fn next_battle(state: &Context, caller: &Caller, space: Option<&str>) -> Result<Option<Card>, ApiError> {
    caller.require(Scope::Vote)?;
    if let Some(slug) = space
        && !store::voting_spaces(&state.db).await?.iter().any(|s| s.slug == slug)
    {
        return Err(ApiError::NotFound(format!("a Space {slug:?} that takes votes")));
    }
    let mut rng = rand::rng();
    let Some(battle) =
        store::pick(&state.db, caller.user_id, space, state.settings.vote_gold_pct as f64 / 100.0, &mut rng).await?
    else {
        return Ok(None);
    };
    let key = store::ballot_key(&state.db).await?;
    let Battle { space, match_id, prompt, a, b, gold, .. } = battle;
    let ballot = Ballot {
        id: uuid::Uuid::new_v4(),
        voter: caller.user_id.as_uuid(),
        match_id: match_id.as_uuid(),
        // A gold ballot binds the known-better answer as `a` and the decoy
        // apart, with the side it is shown on.
        a: if gold == Some(true) { b.slot } else { a.slot },
        b: if gold == Some(true) {
            b.slot
        } else if gold.is_some() {
            a.slot
        } else {
            b.slot
        },
        decoy: match gold {
            Some(true) => Some((a.match_id.as_uuid(), a.slot)),
            Some(false) => Some((b.match_id.as_uuid(), b.slot)),
            None => None,
        },
        gold_second: gold == Some(true),
        issued_ms: chrono::Utc::now().timestamp_millis(),
    };
    let words = votes::words(&prompt) + votes::words(&a.text) + votes::words(&b.text);
    Ok(Some(Card {
        ballot: ballot.seal(&key),
        space: space.slug,
        space_name: space.name,
        criterion: space.criterion,
        prompt,
        a: a.text,
        b: b.text,
        read_floor_ms: votes::reading_floor_ms(
            words,
            state.settings.vote_read_base_ms,
            state.settings.vote_read_ms_per_word,
        ),
    }))
}

/// Casts the caller's vote on a ballot: the ballot checked (signed for this
/// voter, not expired, not used), the voter's standing in the match
/// (no owner of an agent in it, nor its designer unless the Space allows),
/// then stored with the reason it does not count, if any, and aggregated.
pub async fn cast_vote(
    state: &Context,
    caller: &Caller,
    address: &str,
    token: &str,
    choice: &str,
) -> Result<Reveal, ApiError> {
    caller.write(state, Scope::Vote).await?;
    let choice = Choice::parse(choice)?;
    let key = store::ballot_key(&state.db).await?;
    let now = chrono::Utc::now();
    let ballot = Ballot::open(token, &key, caller.user_id.as_uuid(), now.timestamp_millis()).map_err(|e| match e {
        BallotError::Forged | BallotError::Expired => ApiError::invalid("ballot", e.to_string()),
        BallotError::NotYours => ApiError::Forbidden(e.to_string()),
    })?;
    let shown = store::shown(&state.db, &ballot).await?.ok_or_else(|| ApiError::NotFound("battle".into()))?;
    if !shown.votes_open {
        return Err(ApiError::conflict("ballot", "this Space no longer takes votes"));
    }
    if shown.owners.contains(&caller.user_id) {
        return Err(ApiError::Forbidden("you own an agent in this battle: your vote would not be neutral".into()));
    }
    if shown.designer_id == caller.user_id && !shown.designer_votes {
        return Err(ApiError::Forbidden("this Space's designer does not vote on its matches".into()));
    }
    let elapsed_ms = now.timestamp_millis() - ballot.issued_ms;
    let words = votes::words(&shown.prompt) + votes::words(&shown.a) + votes::words(&shown.b);
    let floor = votes::reading_floor_ms(words, state.settings.vote_read_base_ms, state.settings.vote_read_ms_per_word);
    let reason = if choice == Choice::Skip {
        Some(Reason::Skipped)
    } else if elapsed_ms < floor {
        Some(Reason::TooFast)
    } else if votes::identity_leak(&format!("{}\n{}", shown.a, shown.b), &shown.names).is_some() {
        Some(Reason::Identity)
    } else if ballot.decoy.is_some() {
        Some(Reason::Gold)
    } else {
        None
    };
    let space = state.spaces.get(&state.db, shown.space_id, shown.space_version).await.map_err(ApiError::internal)?;
    let address = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(format!("{address}\n{}", now.date_naive()).as_bytes()))
    };
    let new = store::NewVote {
        ballot: &ballot,
        space_id: shown.space_id,
        choice,
        reason,
        elapsed_ms,
        address: &address,
        daily_cap: state.settings.vote_daily_cap,
        address_cap: state.settings.vote_address_daily_cap,
        license: space.license.as_deref(),
    };
    match store::cast(&state.db, new).await {
        Ok(_) => {}
        Err(store::CastError::AlreadyVoted) => {
            return Err(ApiError::conflict("ballot", "you already voted on this battle's match"));
        }
        Err(store::CastError::Db(e)) => return Err(e.into()),
    }
    store::reveal(&state.db, ballot.id, caller.user_id)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("a vote just stored is not found")))
}

/// The reveal as JSON (the API's answer to a vote).
pub fn reveal_json(r: &Reveal) -> serde_json::Value {
    let seat = |s: &Option<store::RevealSeat>| {
        s.as_ref().map(|s| json!({"agent": s.agent, "owner": s.owner, "rating": s.rating.round()}))
    };
    let total: i64 = r.crowd.iter().sum();
    json!({
        "vote": r.vote_id,
        "match": r.match_id,
        "choice": r.choice,
        "counted": r.counted,
        "reason": r.reason,
        "a": seat(&r.a),
        "b": seat(&r.b),
        "gold": r.gold.map(|second| json!({"known_better": if second { "b" } else { "a" }})),
        "judge": if r.gold.is_some() { None } else { Some(json!({"call": call_word(r.judge), "confidence": r.confidence})) },
        "crowd": {"a": r.crowd[0], "b": r.crowd[1], "tie": r.crowd[2], "votes": total},
        "agrees_with_judge": agrees(r, r.judge),
        "agrees_with_crowd": crowd_call(r).and_then(|c| agrees(r, c)),
    })
}

/// "a", "b" or "tie".
pub fn call_word(c: Call) -> &'static str {
    match c {
        Call::First => "a",
        Call::Second => "b",
        Call::Tie => "tie",
    }
}

/// The crowd's majority in the order shown (None: no counted vote).
pub fn crowd_call(r: &Reveal) -> Option<Call> {
    let [a, b, t] = r.crowd;
    if a + b + t == 0 {
        return None;
    }
    Some(if a > b && a >= t {
        Call::First
    } else if b > a && b >= t {
        Call::Second
    } else {
        Call::Tie
    })
}

/// Whether the voter's choice matches `call` (None for a skip or a gold check).
pub fn agrees(r: &Reveal, call: Call) -> Option<bool> {
    if r.gold.is_some() {
        return None;
    }
    r.choice.call().map(|mine| mine == call)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BattleQuery {
    #[serde(default)]
    space: Option<String>,
}

/// GET /api/v1/battles — a battle to vote on (204 when none is left).
pub async fn battle(
    state: web::Data<Context>,
    caller: Caller,
    query: web::Query<BattleQuery>,
) -> Result<HttpResponse, ApiError> {
    let space = query.space.as_deref().filter(|s| !s.is_empty());
    if let Some(s) = space
        && s.len() > 64
    {
        return Err(ApiError::invalid("space", "a Space's slug has at most 64 characters"));
    }
    match next_battle(&state, &caller, space).await? {
        None => Ok(HttpResponse::NoContent().finish()),
        Some(c) => Ok(HttpResponse::Ok().json(json!({
            "ballot": c.ballot, "space": c.space, "space_name": c.space_name, "criterion": c.criterion,
            "prompt": c.prompt, "a": c.a, "b": c.b, "read_floor_ms": c.read_floor_ms,
        }))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoteBody {
    ballot: String,
    choice: String,
}

/// POST /api/v1/votes — vote on a ballot: 201 with the reveal.
pub async fn vote(
    state: web::Data<Context>,
    caller: Caller,
    req: HttpRequest,
    body: web::Json<VoteBody>,
) -> Result<HttpResponse, ApiError> {
    let reveal = cast_vote(&state, &caller, &client_address(&req), &body.ballot, &body.choice).await?;
    Ok(HttpResponse::Created().json(reveal_json(&reveal)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    vote: uuid::Uuid,
    reason: String,
}

/// Reports the battle of the caller's own vote.
pub async fn report_vote(state: &Context, caller: &Caller, vote: uuid::Uuid, reason: &str) -> Result<(), ApiError> {
    caller.write(state, Scope::Vote).await?;
    let reason = ReportReason::parse(reason)?;
    if store::report(&state.db, vote, caller.user_id, reason).await? {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("vote {vote}")))
    }
}

/// POST /api/v1/reports — report the answers of a battle one voted on.
pub async fn report(
    state: web::Data<Context>,
    caller: Caller,
    body: web::Json<ReportBody>,
) -> Result<HttpResponse, ApiError> {
    report_vote(&state, &caller, body.vote, &body.reason).await?;
    Ok(HttpResponse::Created().json(json!({"vote": body.vote, "reported": true})))
}

/// The audit of a Space's judge against people.
pub async fn audit_of(state: &Context, space: SpaceId) -> Result<Audit, ApiError> {
    Ok(votes::audit(&store::audit_votes(&state.db, space).await?))
}

/// GET /api/v1/spaces/{slug}/audit — the judge against people, for the
/// Space's designer and admins (anyone else: not found).
pub async fn audit(
    state: web::Data<Context>,
    caller: Caller,
    slug: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Design)?;
    let space = crate::store::spaces::id_and_owner(&state.db, &slug)
        .await?
        .filter(|s| s.owner_id == caller.user_id || caller.is_admin())
        .ok_or_else(|| ApiError::NotFound(format!("Space {:?}", slug.as_str())))?;
    let audit = audit_of(&state, space.id).await?;
    let (counted, voters) = store::space_counts(&state.db, space.id).await?;
    Ok(HttpResponse::Ok().json(json!({
        "space": slug.as_str(), "counted_votes": counted, "voters": voters,
        "audit_share_pct": votes::AUDIT_SHARE_PCT, "audit": audit,
    })))
}

/// GET /api/v1/votes/integrity — excluded votes by reason and day, flagged
/// and unreliable voters, gold accuracy, reports (admins).
pub async fn integrity(state: web::Data<Context>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Admin)?;
    if !caller.is_admin() {
        return Err(ApiError::Forbidden("admins only".into()));
    }
    let days = store::reasons_by_day(&state.db, 14).await?;
    let voters = store::voter_lines(&state.db, 50).await?;
    let (gold_total, gold_right) = store::gold_accuracy(&state.db).await?;
    let reports = store::reports(&state.db, 50).await?;
    Ok(HttpResponse::Ok().json(json!({
        "days": days.iter().map(|(d, r, n)| json!({"day": d, "reason": r, "votes": n})).collect::<Vec<_>>(),
        "voters": voters.iter().map(|v| json!({
            "username": v.username, "votes": v.votes, "gold_total": v.gold_total, "gold_right": v.gold_right,
            "flagged": v.flagged, "flag_reason": v.flag_reason,
        })).collect::<Vec<_>>(),
        "gold": {"total": gold_total, "right": gold_right},
        "reports": reports.iter().map(|r| json!({
            "match": r.match_id, "reporter": r.reporter, "reason": r.reason, "at": r.created_at,
        })).collect::<Vec<_>>(),
    })))
}

/// A match a vote is about, for the pages' links.
pub fn match_link(id: MatchId) -> String {
    format!("/matches/{id}")
}
