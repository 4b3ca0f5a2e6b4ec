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

use super::generator::{GenJob, GenOutput, Generator, job_for, refusal};
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
    super::generator::match_seed(agent_seed, match_id, slot) ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
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
    // A Space whose referee keeps failing its matches is paused (its
    // designer is told why in the studio).
    let space_of = |id: MatchId| seats.iter().find(|s| s.match_id == id).map(|s| s.space_id);
    let mut broken: Vec<crate::domain::SpaceId> =
        failed.iter().filter(|(_, why)| why.starts_with("the referee")).filter_map(|(id, _)| space_of(*id)).collect();
    broken.sort_by_key(|s| s.0);
    broken.dedup();
    for space in broken {
        if let Some(slug) = crate::store::spaces::pause_if_referee_keeps_failing(&ctx.db, space).await? {
            tracing::warn!(space = %slug, "paused: its referee keeps failing its matches");
        }
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

/// Decision pairs one match may make (retries first, then same views).
pub const MAX_DECISION_PAIRS: usize = 16;
/// Earlier moves at one view a match's move is compared with.
pub const PARTNERS_PER_VIEW: i64 = 4;

/// A finished game's moves as [`turns::GameDecision`]s, each with the view
/// its seat was shown (`rows` read with their views; `slots[i]` is seat
/// i's slot; each move scored with its seat's final score). Moves whose
/// view was not kept are left out.
pub fn decisions(
    match_id: MatchId,
    rows: &[turns::TurnRow],
    state: &State,
    slots: &[i16],
) -> Vec<(turns::GameDecision, String)> {
    use sha2::{Digest, Sha256};
    let score = |seat: usize| state.outcome.as_ref().and_then(|o| o.scores.get(seat).copied()).unwrap_or(0.0);
    rows.iter()
        .flat_map(|r| r.moves.0.iter().map(move |m| (r.step, m)))
        .filter(|(_, m)| !m.view.is_empty() && m.seat < slots.len())
        .map(|(step, m)| {
            let decision = turns::GameDecision {
                match_id,
                step,
                slot: slots[m.seat],
                view_sha256: hex::encode(Sha256::digest(m.view.as_bytes())),
                answer: m.text.clone(),
                note: m.note.clone(),
                legal: m.legal,
                score: score(m.seat),
            };
            (decision, m.view.clone())
        })
        .collect()
}

/// The decision pairs a finished game makes, as verdict pairs (what
/// settlement stores): for each illegal attempt a seat was asked to retry,
/// the legal answer it then gave at that turn over the attempt (the first
/// view as the prompt); and for each move whose view an earlier game's
/// move also answered (`earlier`, other matches only), the move whose
/// seat's game ended better by more than `min_margin` over the other —
/// when the two are different moves (a legality or the referee's reading
/// differs). At most [`MAX_DECISION_PAIRS`].
pub fn decision_pairs(
    rows: &[turns::TurnRow],
    slots: &[i16],
    mine: &[(turns::GameDecision, String)],
    earlier: &[turns::GameDecision],
    min_margin: f64,
) -> Vec<serde_json::Value> {
    use serde_json::json;
    let mut pairs = Vec::new();
    // Retries: an illegal move, then the same seat's next legal one in the
    // same turn.
    for (i, r) in rows.iter().enumerate() {
        for m in r.moves.0.iter().filter(|m| !m.legal && !m.view.is_empty()) {
            let later = rows[i + 1..].iter().take_while(|n| n.turn == r.turn);
            let Some((step, good)) = later
                .flat_map(|n| n.moves.0.iter().map(move |g| (n.step, g)))
                .find(|(_, g)| g.seat == m.seat && g.legal)
            else {
                continue;
            };
            let Some(&slot) = slots.get(m.seat) else { continue };
            pairs.push(json!({
                "kind": "decision", "source": "retry", "key": format!("retry:{}:{slot}:{step}", r.step),
                "chosen": slot.to_string(), "rejected": slot.to_string(), "margin": 1.0, "consistent": true,
                "step": r.step, "chosen_step": step,
                "prompt": m.view, "chosen_text": good.text, "rejected_text": m.text,
                "chosen_passed": true, "rejected_passed": false, "rejected_note": m.note,
            }));
        }
    }
    // Same views: another seat's move at the view this one answered — in
    // this game (simultaneous moves at one shared view) first, then in
    // earlier games.
    let own = mine
        .iter()
        .flat_map(|(d, view)| {
            mine.iter()
                .map(|(e, _)| e)
                .filter(move |e| e.view_sha256 == d.view_sha256 && (e.step, e.slot) < (d.step, d.slot))
                .map(move |e| (d, view, e))
        })
        .filter(|(d, _, e)| e.slot != d.slot);
    let others = mine.iter().flat_map(|(d, view)| {
        earlier
            .iter()
            .filter(move |e| e.view_sha256 == d.view_sha256 && e.match_id != d.match_id)
            .map(move |e| (d, view, e))
    });
    for (d, view, e) in own.chain(others) {
        let same_move = e.legal == d.legal && (e.note == d.note || e.answer.trim() == d.answer.trim());
        let margin = d.score - e.score;
        if same_move || margin.abs() <= min_margin {
            continue;
        }
        let (chosen, rejected) = if margin > 0.0 { (d, e) } else { (e, d) };
        let other = |x: &turns::GameDecision| (x.match_id != d.match_id).then(|| x.match_id.to_string());
        pairs.push(json!({
            "kind": "decision", "source": "same_view",
            "key": format!("view:{}:{}:{}:{}:{}", d.step, d.slot, e.match_id, e.step, e.slot),
            "chosen": chosen.slot.to_string(), "rejected": rejected.slot.to_string(),
            "chosen_match": other(chosen), "rejected_match": other(rejected),
            "margin": margin.abs(), "consistent": true, "step": d.step,
            "prompt": view, "chosen_text": chosen.answer, "rejected_text": rejected.answer,
            "chosen_passed": chosen.legal, "rejected_passed": rejected.legal,
            "chosen_score": chosen.score, "rejected_score": rejected.score,
        }));
    }
    pairs.truncate(MAX_DECISION_PAIRS);
    pairs
}

/// A finished game's decision pairs, its moves kept beside them: its
/// steps read with their views, paired with earlier games' moves at the
/// same views. Runs in the verdicts' transaction under
/// [`turns::lock_decisions`] for the Space, so games judged one after
/// another in it (or in concurrent batches) see each other's moves.
pub async fn game_decisions(
    conn: &mut sqlx::PgConnection,
    id: MatchId,
    space: crate::domain::SpaceId,
    state: &State,
    slots: &[i16],
    min_margin: f64,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let rows = turns::rows(&mut *conn, &[id]).await?;
    let mine = decisions(id, &rows, state, slots);
    let mut views: Vec<String> = mine.iter().map(|(d, _)| d.view_sha256.clone()).collect();
    views.sort();
    views.dedup();
    let earlier = turns::same_views(&mut *conn, space, &views, id, PARTNERS_PER_VIEW).await?;
    let pairs = decision_pairs(&rows, slots, &mine, &earlier, min_margin);
    let moves: Vec<turns::GameDecision> = mine.into_iter().map(|(d, _)| d).collect();
    turns::insert_decisions(&mut *conn, space, &moves).await?;
    Ok(pairs)
}

/// Rounds a judged game's speeches are scored in, at most.
pub const MAX_JUDGED_ROUNDS: usize = 8;

/// A judged game's speeches by round: round i holds each seat's i-th
/// legal answer, for the rounds every seat spoke in (at most
/// [`MAX_JUDGED_ROUNDS`]).
pub fn rounds(state: &State, seats: usize) -> Vec<Vec<String>> {
    let mut by_seat: Vec<Vec<&str>> = vec![Vec::new(); seats];
    for e in state.transcript.iter().filter(|e| e.legal && e.seat < seats) {
        by_seat[e.seat].push(&e.text);
    }
    let n = by_seat.iter().map(Vec::len).min().unwrap_or(0).min(MAX_JUDGED_ROUNDS);
    (0..n).map(|i| by_seat.iter().map(|s| s[i].to_owned()).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::space::Space;
    use crate::store::turns::{StoredMove, TurnRow};
    use judge::files::SpaceFiles;
    use std::path::Path;

    fn referee(illegal: &str) -> Referee {
        let text = format!(
            "name = \"game\"\nagents_per_match = 2\n[prompts]\ninline = [\"Play.\"]\n[turns]\n[referee]\nkind = \"tic-tac-toe\"\n{illegal}\n[judge]\nmode = \"none\"\n"
        );
        Space::parse(&text, &SpaceFiles::new(), Path::new(".")).expect("valid").game.expect("a game")
    }

    /// Plays `answers` (one per step, for the seat to move) as the pipeline
    /// stores them: one row per step, each move with its view.
    fn play(referee: &Referee, id: MatchId, answers: &[&str]) -> (Vec<TurnRow>, State) {
        let mut state = referee.start("Play.").unwrap();
        let mut rows = Vec::new();
        for (step, answer) in answers.iter().enumerate() {
            let seat = referee.to_move(&state).unwrap()[0];
            let view = referee.view(&state, "Play.", seat).unwrap();
            let next = referee.play(&state, &[(seat, answer.to_string())]).unwrap();
            let entry = next.transcript.last().unwrap();
            let moves = vec![StoredMove {
                seat,
                view,
                text: answer.to_string(),
                legal: entry.legal,
                note: entry.note.clone(),
                tokens: 1,
                finish: "stop".into(),
            }];
            rows.push(TurnRow {
                match_id: id,
                step: step as i32,
                turn: state.turn as i32,
                moves: sqlx::types::Json(moves),
                state: sqlx::types::Json(next.clone()),
                created_at: chrono::Utc::now(),
            });
            state = next;
            if state.outcome.is_some() {
                break;
            }
        }
        (rows, state)
    }

    #[test]
    fn a_retried_move_pairs_the_legal_answer_over_the_illegal_attempt_at_the_first_view() {
        let r = referee("illegal = \"retry\"\nretries = 2");
        let id = MatchId(Uuid::new_v4());
        // X: 5; O: 5 (taken), then "none", then 1; X: 9 …
        let (rows, state) = play(&r, id, &["5", "5", "no idea", "1", "9", "2", "3", "4", "6", "7", "8"]);
        assert!(state.outcome.is_some());
        let slots = [4i16, 7];
        let mine = decisions(id, &rows, &state, &slots);
        assert_eq!(mine.len(), rows.len(), "one decision per stored move");
        let pairs = decision_pairs(&rows, &slots, &mine, &[], 0.1);
        assert_eq!(pairs.len(), 2, "two illegal attempts, each under the legal retry: {pairs:#?}");
        for (p, bad) in pairs.iter().zip(["5", "no idea"]) {
            assert_eq!((p["chosen"].as_str(), p["rejected"].as_str()), (Some("7"), Some("7")));
            assert_eq!((p["chosen_text"].as_str(), p["rejected_text"].as_str()), (Some("1"), Some(bad)));
            assert_eq!((p["chosen_passed"].as_bool(), p["rejected_passed"].as_bool()), (Some(true), Some(false)));
            assert_eq!(p["prompt"].as_str(), Some(rows[p["step"].as_i64().unwrap() as usize].moves.0[0].view.as_str()));
        }
        assert!(!pairs[0]["prompt"].as_str().unwrap().contains("not a legal move"), "the first view, no complaint");
        assert!(pairs[1]["prompt"].as_str().unwrap().contains("not a legal move"), "the retry's own view");
        assert_ne!(pairs[0]["key"], pairs[1]["key"]);

        // Under forfeit an illegal move ends the game: nothing to retry.
        let f = referee("illegal = \"forfeit\"");
        let (rows, state) = play(&f, id, &["5", "5"]);
        let mine = decisions(id, &rows, &state, &slots);
        assert!(decision_pairs(&rows, &slots, &mine, &[], 0.1).is_empty());
    }

    #[test]
    fn moves_at_the_same_view_in_two_games_pair_the_one_whose_game_ended_better() {
        let r = referee("illegal = \"forfeit\"");
        let (a, b, c) = (MatchId(Uuid::new_v4()), MatchId(Uuid::new_v4()), MatchId(Uuid::new_v4()));
        let slots = [0i16, 1];
        // Game a: X plays 5 and O forfeits at once (O's view after "5").
        let (rows_a, end_a) = play(&r, a, &["5", "5"]);
        // Game b: X plays 5, O plays 1 … X wins 5-9-… no: O wins on 1-2-3.
        let (rows_b, end_b) = play(&r, b, &["5", "1", "9", "2", "4", "3"]);
        // Game c: X opens at 1 (its first view is the same as a's and b's).
        let (rows_c, end_c) = play(&r, c, &["1", "1"]);
        let da = decisions(a, &rows_a, &end_a, &slots);
        let db = decisions(b, &rows_b, &end_b, &slots);
        let dc = decisions(c, &rows_c, &end_c, &slots);
        assert_eq!(da[0].0.view_sha256, dc[0].0.view_sha256, "the empty board is one view");
        assert_eq!(da[1].0.view_sha256, db[1].0.view_sha256, "O after X at 5 is one view");
        let earlier: Vec<_> = da.iter().chain(&dc).map(|(d, _)| d.clone()).collect();
        let pairs = decision_pairs(&rows_b, &slots, &db, &earlier, 0.1);
        // b's X at 5 (lost) vs a's X at 5 (won): the same move, no pair. b's
        // X at 5 (lost) vs c's X at 1 (won by O's forfeit): c's move
        // chosen. b's O at 1 (won) vs a's O at 5 (illegal, lost): b's chosen.
        assert_eq!(pairs.len(), 2, "{pairs:#?}");
        let first = pairs.iter().find(|p| p["step"] == 0).expect("the opening move");
        assert_eq!((first["chosen_text"].as_str(), first["rejected_text"].as_str()), (Some("1"), Some("5")));
        assert_eq!(first["chosen_match"].as_str(), Some(c.to_string().as_str()));
        assert!(first["rejected_match"].is_null(), "the rejected move is this game's");
        let second = pairs.iter().find(|p| p["step"] == 1).expect("O's reply");
        assert_eq!((second["chosen_text"].as_str(), second["rejected_text"].as_str()), (Some("1"), Some("5")));
        assert!(second["chosen_match"].is_null());
        assert_eq!(second["rejected_match"].as_str(), Some(a.to_string().as_str()));
        assert_eq!((second["chosen_passed"].as_bool(), second["rejected_passed"].as_bool()), (Some(true), Some(false)));
        assert!(pairs.iter().all(|p| p["margin"].as_f64() == Some(1.0)));
        // A margin at or under the Space's minimum makes none; a game's own
        // moves never pair with themselves.
        assert!(decision_pairs(&rows_b, &slots, &db, &earlier, 1.0).is_empty());
        let own: Vec<_> = db.iter().map(|(d, _)| d.clone()).collect();
        assert!(decision_pairs(&rows_b, &slots, &db, &own, 0.1).is_empty());
    }
}
