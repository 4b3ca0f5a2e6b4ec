//! The judge stage: the Space's verifiers and AI judge rank the outputs of a
//! match. The verdict is unique per match, so a redelivered message stores
//! nothing twice. Judging runs on the judge crate's worker thread.

use super::runner::{RunnerSpec, Work};
use crate::context::Context;
use crate::domain::{MatchId, MatchStatus, SpaceId, Stage};
use crate::queue::{Event, Events};
use crate::store::matches;
use agent_runtime::SubmitError;
use futures_util::future::BoxFuture;
use judge::worker::JudgeWorker;
use judge::{Candidate, JudgeConfig, JudgeError, MatchInput};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

pub struct JudgeStage {
    pub worker: JudgeWorker,
    /// Each Space version's judge config, shared by its matches.
    configs: Mutex<HashMap<(SpaceId, i32), Arc<JudgeConfig>>>,
}

impl JudgeStage {
    pub fn new(worker: JudgeWorker) -> JudgeStage {
        JudgeStage { worker, configs: Mutex::default() }
    }

    async fn config(&self, ctx: &Context, space: SpaceId, version: i32) -> anyhow::Result<Arc<JudgeConfig>> {
        if let Some(c) = self.configs.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.get(&(space, version)) {
            return Ok(c.clone());
        }
        let loaded = ctx.spaces.get(&ctx.db, space, version).await?;
        let config = Arc::new(loaded.judge.clone());
        self.configs.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.insert((space, version), config.clone());
        Ok(config)
    }
}

impl JudgeStage {
    /// Hands one match to the judge's worker, waiting while it is full.
    async fn submit(
        &self,
        config: &Arc<JudgeConfig>,
        input: MatchInput,
    ) -> anyhow::Result<tokio::sync::oneshot::Receiver<Result<judge::Verdict, JudgeError>>> {
        loop {
            match self.worker.submit(config.clone(), input.clone()) {
                Ok(rx) => return Ok(rx),
                Err(SubmitError::OverCapacity { .. }) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(err) => anyhow::bail!("judge worker: {err}"),
            }
        }
    }
}

impl Work for JudgeStage {
    fn spec(&self, ctx: &Context) -> RunnerSpec {
        RunnerSpec::match_stage(Stage::Judge, ctx)
    }

    fn run<'a>(&'a self, ctx: &'a Context, subjects: &'a [Uuid]) -> BoxFuture<'a, anyhow::Result<Vec<Uuid>>> {
        Box::pin(async move {
            let ids: Vec<MatchId> = subjects.iter().map(|s| MatchId(*s)).collect();
            let open = matches::judge_open(&ctx.db, &ids).await?;
            let mut done: Vec<Uuid> =
                subjects.iter().filter(|m| !open.iter().any(|o| o.id.0 == **m)).copied().collect();
            if open.is_empty() {
                return Ok(done);
            }
            let open_ids: Vec<MatchId> = open.iter().map(|o| o.id).collect();
            let outputs = matches::outputs(&ctx.db, &open_ids).await?;
            let mut pending = Vec::new();
            let mut verdict_ids: Vec<MatchId> = Vec::new();
            let mut verdicts: Vec<String> = Vec::new();
            // Games the referee decided: paired with earlier games' moves
            // in the verdicts' transaction (see below).
            let mut games: Vec<(MatchId, SpaceId, referee::State, Vec<i16>, f64)> = Vec::new();
            for m in &open {
                // One match's trouble is that match's alone.
                let config = match self.config(ctx, m.space_id, m.space_version).await {
                    Ok(config) => config,
                    Err(err) => {
                        tracing::warn!(match_id = %m.id, error = %err, "cannot load the match's judge; will retry");
                        continue;
                    }
                };
                // A game the referee decided needs no judge: its outcome
                // ranks the seats.
                let game = match ctx.spaces.get(&ctx.db, m.space_id, m.space_version).await {
                    Ok(space) if space.game.is_some() => match super::turns::final_state(ctx, m.id).await {
                        Ok(state) => state,
                        Err(err) => {
                            tracing::warn!(match_id = %m.id, error = %err, "cannot read the game; will retry");
                            continue;
                        }
                    },
                    _ => None,
                };
                if let Some(state) = game.as_ref().filter(|s| s.outcome.as_ref().is_some_and(|o| !o.judged)) {
                    let slots: Vec<i16> = outputs.iter().filter(|o| o.match_id == m.id).map(|o| o.slot).collect();
                    games.push((m.id, m.space_id, state.clone(), slots, config.min_margin));
                    continue;
                }
                let candidates: Vec<Candidate> = outputs
                    .iter()
                    .filter(|o| o.match_id == m.id)
                    .map(|o| Candidate { id: o.slot.to_string(), text: o.text.clone() })
                    .collect();
                let slots: Vec<String> = candidates.iter().map(|c| c.id.clone()).collect();
                let input = MatchInput { prompt: m.prompt.clone(), reference: m.reference.clone(), candidates };
                let rx = self.submit(&config, input).await?;
                // A judged game (a debate) is also judged round by round:
                // the seats' speeches of each round ranked as one match.
                let mut rounds = Vec::new();
                if let Some(state) = &game {
                    for speeches in super::turns::rounds(state, slots.len()) {
                        let candidates =
                            slots.iter().zip(speeches).map(|(id, text)| Candidate { id: id.clone(), text }).collect();
                        let input = MatchInput { prompt: m.prompt.clone(), reference: m.reference.clone(), candidates };
                        rounds.push(self.submit(&config, input).await?);
                    }
                }
                pending.push((m, rx, rounds));
            }
            let mut failed: Vec<(MatchId, String)> = Vec::new();
            'matches: for (m, rx, rounds) in pending {
                match rx.await {
                    Ok(Ok(verdict)) => {
                        let mut verdict = serde_json::to_value(&verdict)?;
                        if !rounds.is_empty() {
                            let mut per_round = Vec::new();
                            for (i, round) in rounds.into_iter().enumerate() {
                                match round.await {
                                    Ok(Ok(v)) => per_round.push(serde_json::json!({
                                        "round": i + 1, "scores": v.scores, "ranking": v.ranking,
                                        "confidence": v.confidence,
                                    })),
                                    Ok(Err(JudgeError::Input(why))) => per_round.push(serde_json::json!({
                                        "round": i + 1, "error": why,
                                    })),
                                    Ok(Err(err)) => {
                                        tracing::warn!(match_id = %m.id, error = %err, "judging a round failed; will retry");
                                        continue 'matches;
                                    }
                                    Err(_) => {
                                        tracing::warn!(match_id = %m.id, "judge worker dropped a round; will retry");
                                        continue 'matches;
                                    }
                                }
                            }
                            verdict["rounds"] = serde_json::Value::Array(per_round);
                        }
                        verdict_ids.push(m.id);
                        verdicts.push(serde_json::to_string(&verdict)?);
                    }
                    // The match itself cannot be judged (e.g. an agent gave
                    // no output): fail it and refund, retrying is pointless.
                    Ok(Err(JudgeError::Input(why))) => failed.push((m.id, format!("judge refused the match: {why}"))),
                    Ok(Err(err)) => tracing::warn!(match_id = %m.id, error = %err, "judging failed; will retry"),
                    Err(_) => tracing::warn!(match_id = %m.id, "judge worker dropped the match; will retry"),
                }
            }
            let mut tx = ctx.db.begin().await?;
            // Decision pairs: retried moves, and moves at views earlier
            // games' moves answered too — each game in turn, under the
            // Space's lock, keeping its moves for the games after it.
            let mut spaces: Vec<SpaceId> = games.iter().map(|g| g.1).collect();
            spaces.sort_by_key(|s| s.0);
            spaces.dedup();
            for space in spaces {
                crate::store::turns::lock_decisions(&mut tx, space).await?;
            }
            for (id, space, state, slots, min_margin) in &games {
                let mut verdict = super::turns::outcome_verdict(state, slots, *min_margin);
                let pairs = super::turns::game_decisions(&mut tx, *id, *space, state, slots, *min_margin).await?;
                if let Some(all) = verdict.get_mut("pairs").and_then(|p| p.as_array_mut()) {
                    all.extend(pairs);
                }
                verdict_ids.push(*id);
                verdicts.push(serde_json::to_string(&verdict)?);
            }
            matches::insert_verdicts(&mut tx, &verdict_ids, &verdicts).await?;
            let moved = matches::advance(&mut tx, Stage::Judge, &verdict_ids).await?;
            let mut failed_slugs = Vec::new();
            for (id, why) in &failed {
                if let Some(slug) = matches::fail(&mut tx, *id, why).await? {
                    failed_slugs.push((*id, slug));
                }
            }
            tx.commit().await?;
            let events: Vec<Event> = moved
                .iter()
                .map(|id| {
                    let space = open.iter().find(|o| o.id == *id).map(|o| o.slug.clone()).unwrap_or_default();
                    Event::new(*id, space, MatchStatus::Judged)
                })
                .collect();
            Events::publish_many(&ctx.redis, &events).await;
            for (id, space) in failed_slugs {
                Events::publish(&ctx.redis, &Event::new(id, space, MatchStatus::Failed)).await;
            }
            done.extend(verdict_ids.iter().map(|m| m.0));
            done.extend(failed.iter().map(|(id, _)| id.0));
            Ok(done)
        })
    }
}
