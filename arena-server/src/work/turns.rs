//! Multi-turn matches in the generate stage: one step per message. A step
//! reads the match's stored turns, rebuilds the game's state, asks the
//! seats to move (their requests join the engine's batch with every other
//! match's), lets the referee play the answers, and stores the step — in
//! the same transaction as the hand-over: the next step's message, or, when
//! the game is over, each seat's part as its output and the judge's
//! message. A redelivered message finds the step stored and does nothing;
//! a worker that died mid-step leaves no row, so the next delivery redoes
//! that step. A referee's error (a script's above all) fails the match and
//! refunds it.

use super::generate::{GenJob, GenOutput, Generator, job_for, refusal};
use crate::context::Context;
use crate::domain::{MatchId, MatchStatus, Stage, Topic};
use crate::queue::{Event, Events};
use crate::store::matches::{self, GenerateSeat, NewOutput};
use crate::store::{outbox, turns};
use referee::{Referee, State};
use std::collections::BTreeMap;
use std::sync::Arc;
use uuid::Uuid;

/// A match whose step is prepared: its state, who moves, and their jobs.
struct Pending<'a> {
    id: MatchId,
    slug: String,
    referee: Arc<Referee>,
    state: State,
    step: i32,
    seats: Vec<&'a GenerateSeat>,
    /// (seat, view) of the seats to move.
    movers: Vec<(usize, String)>,
}

/// A seed per (agent seed, match, slot, step): each turn samples afresh, a
/// replay samples the same.
fn step_seed(agent_seed: u64, match_id: Uuid, slot: usize, step: i32) -> u64 {
    super::generate::match_seed(agent_seed, match_id, slot) ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Runs `f` with the referee off the async threads (a script may take its
/// whole time limit).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, referee::RefereeError> + Send + 'static,
) -> anyhow::Result<Result<T, referee::RefereeError>> {
    Ok(tokio::task::spawn_blocking(f).await?)
}

/// Plays one step of each game match in `ids` (all formed, all of multi-turn
/// Spaces). Returns the subjects this call finished with.
pub async fn step(
    ctx: &Context,
    generator: &dyn Generator,
    ids: &[MatchId],
    seats: &[GenerateSeat],
) -> anyhow::Result<Vec<Uuid>> {
    let rows = turns::resume_rows(&ctx.db, ids).await?;
    let mut done: Vec<Uuid> = Vec::new();
    let mut failed: Vec<(MatchId, String)> = Vec::new();
    // Games stored as over but not handed on (cannot come of this stage,
    // whose last step and hand-over commit together; a row written by hand).
    let mut finished: Vec<(MatchId, String, State)> = Vec::new();
    let mut pending: Vec<Pending> = Vec::new();
    for &id in ids {
        let mine: Vec<&GenerateSeat> = seats.iter().filter(|s| s.match_id == id).collect();
        let Some(first) = mine.first() else { continue };
        let space = match ctx.spaces.get(&ctx.db, first.space_id, first.space_version).await {
            Ok(space) => space,
            Err(err) => {
                tracing::warn!(match_id = %id, error = %err, "cannot load the match's Space; will retry");
                continue;
            }
        };
        let Some(referee) = space.game.clone() else { continue };
        let referee = Arc::new(referee);
        let own: Vec<turns::TurnRow> = rows.iter().filter(|r| r.match_id == id).cloned().collect();
        let (state, step) = match turns::resume(&own) {
            Some(resumed) => resumed,
            None => {
                let (r, prompt) = (referee.clone(), first.prompt.clone());
                match blocking(move || r.start(&prompt)).await? {
                    Ok(state) => (state, 0),
                    Err(err) => {
                        failed.push((id, format!("the referee could not start the game: {err}")));
                        continue;
                    }
                }
            }
        };
        if state.outcome.is_some() {
            finished.push((id, first.slug.clone(), state));
            continue;
        }
        let (r, s, prompt) = (referee.clone(), state.clone(), first.prompt.clone());
        let movers = blocking(move || {
            let seats = r.to_move(&s)?;
            seats.into_iter().map(|seat| Ok((seat, r.view(&s, &prompt, seat)?))).collect::<Result<Vec<_>, _>>()
        })
        .await?;
        match movers {
            Ok(movers) => {
                pending.push(Pending { id, slug: first.slug.clone(), referee, state, step, seats: mine, movers })
            }
            Err(err) => failed.push((id, format!("the referee failed: {err}"))),
        }
    }

    // Every mover's request, in one call: they join the engine's batch.
    let mut jobs: Vec<GenJob> = Vec::new();
    let mut owner: Vec<usize> = Vec::new();
    let mut broken: Vec<usize> = Vec::new();
    for (k, p) in pending.iter().enumerate() {
        for (seat, view) in &p.movers {
            let Some(seat_row) = p.seats.get(*seat) else {
                broken.push(k);
                break;
            };
            match job_for(ctx, seat_row).await {
                Ok(mut job) => {
                    job.prompt = view.clone();
                    job.reference = None;
                    job.params.max_new_tokens = p.referee.turns.max_tokens as usize;
                    job.params.seed = step_seed(seat_row.sampling.seed, p.id.0, seat_row.slot as usize, p.step);
                    jobs.push(job);
                    owner.push(k);
                }
                Err(err) => {
                    tracing::warn!(match_id = %p.id, error = %err, "cannot prepare the turn; will retry");
                    broken.push(k);
                    break;
                }
            }
        }
    }
    let outputs = generator.generate(jobs).await;
    let mut by_match: BTreeMap<usize, Vec<&anyhow::Result<GenOutput>>> = BTreeMap::new();
    for (k, out) in owner.iter().zip(&outputs) {
        by_match.entry(*k).or_default().push(out);
    }

    let mut moved: Vec<(MatchId, String, MatchStatus)> = Vec::new();
    // Every match's step in one transaction: a batch of steps commits once.
    let mut tx = ctx.db.begin().await?;
    let mut next_steps: Vec<Uuid> = Vec::new();
    let mut finished_now: Vec<MatchId> = Vec::new();
    for (k, p) in pending.iter().enumerate() {
        if broken.contains(&k) {
            continue;
        }
        let outs = by_match.remove(&k).unwrap_or_default();
        if let Some(why) = outs.iter().find_map(|o| o.as_ref().err().and_then(refusal)) {
            failed.push((p.id, format!("the runtime refused an agent's request: {why}")));
            continue;
        }
        if outs.len() != p.movers.len() || outs.iter().any(|o| o.is_err()) {
            for o in &outs {
                if let Err(err) = o {
                    tracing::warn!(match_id = %p.id, error = %err, "generation failed; will retry");
                }
            }
            continue;
        }
        let answers: Vec<(usize, String)> = p
            .movers
            .iter()
            .zip(&outs)
            .map(|((seat, _), o)| (*seat, o.as_ref().map(|o| o.text.clone()).unwrap_or_default()))
            .collect();
        let (r, s, a) = (p.referee.clone(), p.state.clone(), answers);
        let next = match blocking(move || r.play(&s, &a)).await? {
            Ok(next) => next,
            Err(err) => {
                failed.push((p.id, format!("the referee failed: {err}")));
                continue;
            }
        };
        let entries = &next.transcript[p.state.transcript.len()..];
        let moves: Vec<turns::StoredMove> = entries
            .iter()
            .zip(p.movers.iter().zip(&outs))
            .map(|(e, ((_, view), o))| {
                let o = o.as_ref().ok();
                turns::StoredMove {
                    seat: e.seat,
                    view: view.clone(),
                    text: e.text.clone(),
                    legal: e.legal,
                    note: e.note.clone(),
                    tokens: o.map_or(0, |o| o.tokens as i32),
                    finish: o.map_or_else(String::new, |o| o.finish.clone()),
                }
            })
            .collect();
        if !turns::insert(&mut tx, p.id, p.step, p.state.turn as i32, &moves, &next).await? {
            // Another worker stored this step: its transaction handed on.
            done.push(p.id.0);
            continue;
        }
        if next.outcome.is_some() {
            let outputs = seat_outputs(p.id, &p.seats, &next, &rows, &moves);
            matches::insert_outputs(&mut tx, &outputs).await?;
            finished_now.push(p.id);
        } else {
            next_steps.push(p.id.0);
            moved.push((p.id, p.slug.clone(), MatchStatus::Formed));
        }
        done.push(p.id.0);
    }
    for (id, _, state) in &finished {
        let mine: Vec<&GenerateSeat> = seats.iter().filter(|s| s.match_id == *id).collect();
        matches::insert_outputs(&mut tx, &seat_outputs(*id, &mine, state, &rows, &[])).await?;
        finished_now.push(*id);
        done.push(id.0);
    }
    let advanced = matches::advance(&mut tx, Stage::Generate, &finished_now).await?;
    outbox::enqueue_many(&mut tx, Topic::Stage(Stage::Generate), &next_steps).await?;
    let formed: Vec<MatchId> = next_steps.iter().map(|u| MatchId(*u)).collect();
    turns::touch(&mut tx, &formed).await?;
    tx.commit().await?;
    let slugs = pending.iter().map(|p| (p.id, &p.slug)).chain(finished.iter().map(|(id, slug, _)| (*id, slug)));
    for (id, slug) in slugs.filter(|(id, _)| advanced.contains(id)) {
        moved.push((id, slug.clone(), MatchStatus::Generated));
    }
    for (id, why) in &failed {
        super::fail_match(ctx, *id, why).await?;
        done.push(id.0);
    }
    // A turn is an event too: live pages follow the game move by move.
    let events: Vec<Event> = moved.into_iter().map(|(id, slug, status)| Event::new(id, slug, status)).collect();
    Events::publish_many(&ctx.redis, &events).await;
    Ok(done)
}

/// Each seat's output once the game is over: its part of the transcript
/// (what the judge reads for a debate, and what whole-game pairs hold),
/// with the tokens it generated over the game.
fn seat_outputs(
    id: MatchId,
    seats: &[&GenerateSeat],
    state: &State,
    rows: &[turns::TurnRow],
    last: &[turns::StoredMove],
) -> Vec<NewOutput> {
    seats
        .iter()
        .enumerate()
        .map(|(seat, s)| {
            let tokens: i32 = rows
                .iter()
                .filter(|r| r.match_id == id)
                .flat_map(|r| r.moves.0.iter())
                .chain(last.iter())
                .filter(|m| m.seat == seat)
                .map(|m| m.tokens)
                .sum();
            let text = Referee::seat_transcript(state, seat);
            NewOutput {
                match_id: id,
                slot: s.slot,
                text: if text.trim().is_empty() { "(no move)".to_owned() } else { text },
                finish: "game_over".to_owned(),
                tokens,
            }
        })
        .collect()
}

/// A verdict from the referee's outcome, in the judge's shape (so
/// settlement, pages and pair exports read it as any other): seats ranked
/// by score, equal scores tied; a seat "passed" when it made no illegal
/// move; one whole-game pair per two seats whose scores differ by more
/// than the Space's `min_margin`, the better one chosen.
pub fn outcome_verdict(state: &State, slots: &[i16], min_margin: f64) -> serde_json::Value {
    use serde_json::json;
    let Some(outcome) = &state.outcome else { return serde_json::Value::Null };
    let ranks = referee::ranks(&outcome.scores);
    let mut order: Vec<usize> = (0..slots.len()).collect();
    order.sort_by_key(|&i| ranks.get(i).copied().unwrap_or(usize::MAX));
    let key = |i: usize| slots[i].to_string();
    let score = |i: usize| outcome.scores.get(i).copied().unwrap_or(0.0);
    let mut pairs = Vec::new();
    for i in 0..slots.len() {
        for j in 0..slots.len() {
            let margin = score(i) - score(j);
            if i != j && margin > min_margin {
                pairs.push(json!({
                    "chosen": key(i), "rejected": key(j), "margin": margin,
                    "p_chosen_first": null, "p_chosen_second": null, "consistent": true, "kind": "game",
                }));
            }
        }
    }
    let decisive = outcome.scores.iter().any(|s| *s != score(0));
    json!({
        "ranking": order.iter().map(|&i| key(i)).collect::<Vec<_>>(),
        "ranks": (0..slots.len()).map(|i| (key(i), ranks[i])).collect::<BTreeMap<_, _>>(),
        "scores": (0..slots.len()).map(|i| (key(i), score(i))).collect::<BTreeMap<_, _>>(),
        "passed_hard": (0..slots.len()).map(|i| (key(i), state.illegal.get(i).copied().unwrap_or(0) == 0)).collect::<BTreeMap<_, _>>(),
        "confidence": if decisive { 1.0 } else { 0.0 },
        "verifiers": (0..slots.len()).map(|i| (key(i), Vec::<serde_json::Value>::new())).collect::<BTreeMap<_, _>>(),
        "judge": { "mode": "referee", "comparisons": [], "reason": outcome.reason },
        "pairs": pairs,
        "truncated": {},
        "referee": { "reason": outcome.reason, "turns": state.turn, "illegal": state.illegal },
    })
}

/// The finished game of a match, read back from its stored turns.
pub async fn final_state(ctx: &Context, id: MatchId) -> anyhow::Result<Option<State>> {
    let rows = turns::resume_rows(&ctx.db, &[id]).await?;
    Ok(turns::resume(&rows).map(|(state, _)| state).filter(|s| s.outcome.is_some()))
}
