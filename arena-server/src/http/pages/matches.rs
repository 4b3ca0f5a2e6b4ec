//! `/matches/{id}`: the prompt; every output side by side with its rank,
//! score and payout; each verifier's result and reason; the AI judge's
//! reading in both orders; the pairs; rating changes; the record hash and
//! the previous match of the Space's chain. A running match follows live.
//! Outputs and the verdict only for those the Space's visibility allows
//! (the API's own rule, `handlers::matches::may_read_outputs`).

use super::{Chrome, Ctx, PageError, Visit, render, when};
use crate::domain::{MatchId, MatchStatus, rating};
use crate::http::handlers::matches::may_read_outputs;
use crate::store::matches;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize, Default)]
struct VerdictView {
    #[serde(default)]
    scores: BTreeMap<String, f64>,
    #[serde(default)]
    passed_hard: BTreeMap<String, bool>,
    #[serde(default)]
    verifiers: BTreeMap<String, Vec<CheckView>>,
    #[serde(default)]
    judge: JudgeView,
    #[serde(default)]
    pairs: Vec<PairView>,
    #[serde(default)]
    confidence: f64,
}

#[derive(Deserialize, Default)]
struct JudgeView {
    #[serde(default)]
    mode: String,
    #[serde(default)]
    comparisons: Vec<ComparisonView>,
}

#[derive(Deserialize, Clone)]
pub struct CheckView {
    pub name: String,
    pub hard: bool,
    pub passed: bool,
    pub reason: String,
}

#[derive(Deserialize)]
struct ComparisonView {
    a: String,
    b: String,
    p_a_first: f64,
    p_a_second: Option<f64>,
    consistent: bool,
    #[serde(default)]
    s: Option<f64>,
    #[serde(default)]
    z: Option<f64>,
    outcome: f64,
}

#[derive(Deserialize)]
struct PairView {
    chosen: String,
    rejected: String,
    margin: f64,
    p_chosen_first: Option<f64>,
    p_chosen_second: Option<f64>,
    consistent: bool,
    /// "game" for a referee game's whole-game pair, which is not kept (the
    /// seats answered different views).
    #[serde(default)]
    kind: Option<String>,
}

pub struct Seat {
    pub slot: String,
    pub agent_id: String,
    pub agent: String,
    pub owner: String,
    pub version: i32,
    pub rank: Option<i32>,
    pub score: String,
    pub passed_hard: Option<bool>,
    pub payout: Option<i64>,
    pub rating: String,
    pub output: Option<String>,
    pub finish: String,
    pub checks: Vec<CheckView>,
    /// The open worker that generated the answer, and whether its record
    /// was audited; none: the built-in runtime.
    pub worker: Option<String>,
}

pub struct Reading {
    pub a: String,
    pub b: String,
    pub first: String,
    pub second: String,
    pub consistent: bool,
    /// The debiased pairwise reading and the trained judge's z ("—" if none).
    pub s: String,
    pub z: String,
    pub outcome: String,
}

pub struct PairLine {
    pub chosen: String,
    pub rejected: String,
    pub margin: String,
    pub orders: String,
    pub consistent: bool,
}

/// One answer in a game's turn list.
pub struct TurnLine {
    pub step: usize,
    pub who: String,
    pub text: Option<String>,
    pub legal: bool,
    pub note: String,
    /// At or before the step shown.
    pub played: bool,
    /// A judged game's score of this speech against the others of its
    /// round (in [0, 1]), once judged.
    pub round_score: Option<String>,
}

/// A multi-turn match's game: the board at the step shown, links to step
/// through it, and every turn.
pub struct GameView {
    pub kind: String,
    pub outcome: Option<String>,
    pub illegal: String,
    /// Steps stored, and the one shown (0 = the start).
    pub steps: usize,
    pub shown: usize,
    pub prev: Option<usize>,
    pub next: Option<usize>,
    /// Rows of cells, top first ("" for an empty cell), for a grid game.
    pub board: Vec<Vec<String>>,
    pub turns: Vec<TurnLine>,
}

/// The game of match `id` at step `step` (the last when none), or `None`
/// for a one-answer Space.
async fn game_view(
    state: &Ctx,
    id: MatchId,
    head: &matches::MatchHead,
    readable: bool,
    names: &[String],
    step: Option<usize>,
) -> Result<Option<GameView>, PageError> {
    let space = state.spaces.get(&state.db, head.space_id, head.space_version).await.map_err(PageError::internal)?;
    let Some(referee) = &space.game else { return Ok(None) };
    let rows = crate::store::turns::resume_rows(&state.db, &[id]).await?;
    let steps = rows.len();
    let shown = step.unwrap_or(steps).min(steps);
    // Where outputs are hidden, so is the board after any move.
    let game_state = match shown {
        0 => referee.builtin_start(&head.prompt).map(|s| s.game),
        n if readable => Some(rows[n - 1].state.0.game.clone()),
        _ => None,
    };
    let board: Vec<Vec<String>> = match &referee.rules {
        referee::Rules::Grid(g) => {
            let cells: Vec<char> =
                game_state.as_ref().and_then(|s| s["cells"].as_str()).unwrap_or_default().chars().collect();
            cells
                .chunks(g.width())
                .map(|row| row.iter().map(|c| if *c == '.' { String::new() } else { c.to_string() }).collect())
                .collect()
        }
        _ => Vec::new(),
    };
    let kind = referee.rules.kind();
    let name =
        |seat: usize| format!("{} ({})", referee::seat_name(seat), names.get(seat).map(String::as_str).unwrap_or("?"));
    // Round scores: seat s's i-th legal speech is its speech of round i.
    let rounds = if readable {
        matches::verdict(&state.db, id).await?.map(|mut v| v["rounds"].take()).unwrap_or_default()
    } else {
        serde_json::Value::Null
    };
    let mut spoken: Vec<usize> = Vec::new();
    let mut round_score = |seat: usize, legal: bool| -> Option<String> {
        if !legal {
            return None;
        }
        if spoken.len() <= seat {
            spoken.resize(seat + 1, 0);
        }
        let i = spoken[seat];
        spoken[seat] += 1;
        let score = rounds.get(i)?.get("scores")?.get(seat.to_string())?.as_f64()?;
        Some(format!("round {}: {score:.2}", i + 1))
    };
    let turns = rows
        .iter()
        .enumerate()
        .flat_map(|(k, row)| row.moves.0.iter().map(move |m| (k + 1, m.clone())))
        .map(|(k, m)| TurnLine {
            step: k,
            who: name(m.seat),
            text: readable.then(|| m.text.clone()),
            legal: m.legal,
            note: if readable { m.note.clone() } else { String::new() },
            played: k <= shown,
            round_score: round_score(m.seat, m.legal),
        })
        .collect();
    let last = rows.last().map(|r| &r.state.0);
    Ok(Some(GameView {
        kind: kind.to_owned(),
        outcome: last.and_then(|s| s.outcome.as_ref()).filter(|_| readable).map(|o| o.reason.clone()),
        illegal: last
            .map(|s| {
                s.illegal.iter().enumerate().map(|(i, n)| format!("{}: {n}", name(i))).collect::<Vec<_>>().join(", ")
            })
            .unwrap_or_default(),
        steps,
        shown,
        prev: shown.checked_sub(1),
        next: (shown < steps).then_some(shown + 1),
        board,
        turns,
    }))
}

#[derive(Deserialize)]
pub struct StepQuery {
    /// The step of a game to show (0: the start).
    step: Option<usize>,
}

#[derive(Template)]
#[template(path = "match.html")]
struct MatchPage {
    chrome: Chrome,
    body: MatchBody,
}

#[derive(Template)]
#[template(path = "partials/match_body.html")]
struct MatchBody {
    id: String,
    space: String,
    version: i32,
    status: String,
    running: bool,
    error: Option<String>,
    prompt: String,
    reference: Option<String>,
    pot: i64,
    created: String,
    settled: Option<String>,
    seats: Vec<Seat>,
    hidden: bool,
    judge_mode: String,
    confidence: String,
    readings: Vec<Reading>,
    pairs: Vec<PairLine>,
    record_hash: Option<String>,
    prev_hash: Option<String>,
    prev_id: Option<String>,
    game: Option<GameView>,
}

fn percent(p: f64) -> String {
    format!("{:.0}%", p * 100.0)
}

async fn body(state: &Ctx, visit: &Visit, id: MatchId, step: Option<usize>) -> Result<MatchBody, PageError> {
    let head = matches::head(&state.db, id).await?.ok_or(PageError::NotFound)?;
    let seats = matches::seats(&state.db, id).await?;
    let readable = may_read_outputs(state, visit.caller.as_ref(), &head, &seats).await?;
    let verdict: VerdictView = if readable {
        matches::verdict(&state.db, id).await?.and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default()
    } else {
        VerdictView::default()
    };
    let name_of = |slot: &str| {
        seats.iter().find(|s| s.slot.to_string() == slot).map_or_else(|| format!("seat {slot}"), |s| s.agent.clone())
    };
    let readings = verdict
        .judge
        .comparisons
        .iter()
        .map(|c| Reading {
            a: name_of(&c.a),
            b: name_of(&c.b),
            first: percent(c.p_a_first),
            second: c.p_a_second.map_or_else(|| "—".to_owned(), percent),
            consistent: c.consistent,
            s: c.s.map_or_else(|| "—".to_owned(), |s| format!("{s:+.2}")),
            z: c.z.map_or_else(|| "—".to_owned(), |z| format!("{z:+.2}")),
            outcome: percent(c.outcome),
        })
        .collect();
    let pairs = verdict
        .pairs
        .iter()
        .map(|p| PairLine {
            chosen: name_of(&p.chosen),
            rejected: name_of(&p.rejected),
            margin: format!("{:.3}", p.margin),
            orders: match (p.p_chosen_first, p.p_chosen_second) {
                (Some(a), Some(b)) => format!("{} shown first, {} shown second", percent(a), percent(b)),
                (Some(a), None) => format!("{} (one order)", percent(a)),
                _ if p.kind.as_deref() == Some("game") => {
                    "decided by the game's outcome (not kept as data: the seats answered different views)".to_owned()
                }
                _ if verdict.judge.mode == "referee" => "decided by the game's outcome".to_owned(),
                _ => "decided by the checks".to_owned(),
            },
            consistent: p.consistent,
        })
        .collect();
    let workers = crate::store::workers::seat_workers(&state.db, id).await?;
    let seat_views = seats
        .iter()
        .map(|s| {
            let slot = s.slot.to_string();
            let worker = workers.iter().find(|w| w.slot == s.slot).map(|w| {
                let how = if w.audited { "audited: replayed exactly" } else { "not audited" };
                format!("{} ({how}; record {})", w.worker, w.record_sha256.as_deref().map_or("", |h| &h[..12]))
            });
            Seat {
                worker,
                agent_id: s.agent_id.to_string(),
                agent: s.agent.clone(),
                owner: s.owner.clone(),
                version: s.agent_version,
                rank: s.rank,
                score: verdict.scores.get(&slot).map_or_else(String::new, |v| format!("{v:.3}")),
                passed_hard: verdict.passed_hard.get(&slot).copied(),
                payout: s.payout,
                rating: match s.mu_after {
                    Some(after) => {
                        let (b, a) = (rating::display(s.mu_before), rating::display(after));
                        format!("{b:.0} → {a:.0} ({:+.0})", a - b)
                    }
                    None => format!("{:.0}", rating::display(s.mu_before)),
                },
                output: if readable { s.output.clone() } else { None },
                finish: s.finish.clone().unwrap_or_default(),
                checks: verdict.verifiers.get(&slot).cloned().unwrap_or_default(),
                slot,
            }
        })
        .collect();
    let names: Vec<String> = seats.iter().map(|s| s.agent.clone()).collect();
    let game = game_view(state, id, &head, readable, &names, step).await?;
    let running = !matches!(head.status, MatchStatus::Settled | MatchStatus::Failed);
    Ok(MatchBody {
        id: id.to_string(),
        space: head.space.clone(),
        version: head.space_version,
        status: head.status.as_str().to_owned(),
        running,
        error: head.error.clone(),
        prompt: head.prompt.clone(),
        reference: head.reference.clone(),
        pot: head.pot,
        created: when(&head.created_at),
        settled: head.settled_at.as_ref().map(when),
        seats: seat_views,
        hidden: !readable,
        judge_mode: verdict.judge.mode.clone(),
        confidence: format!("{:.2}", verdict.confidence),
        readings,
        pairs,
        record_hash: head.record_hash.clone(),
        prev_hash: head.prev_hash.clone().filter(|h| !h.is_empty()),
        prev_id: head.prev_id.map(|p| p.to_string()),
        game,
    })
}

pub async fn page(
    state: Ctx,
    visit: Visit,
    path: web::Path<MatchId>,
    query: web::Query<StepQuery>,
) -> Result<HttpResponse, PageError> {
    let body = body(&state, &visit, path.into_inner(), query.step).await?;
    render(&visit.chrome, &MatchPage { chrome: visit.chrome.clone(), body })
}

/// The match's body alone, for the live view.
pub async fn live(state: Ctx, visit: Visit, path: web::Path<MatchId>) -> Result<HttpResponse, PageError> {
    let html = body(&state, &visit, path.into_inner(), None).await?.render().map_err(PageError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(html))
}
