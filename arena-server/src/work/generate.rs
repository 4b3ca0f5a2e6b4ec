//! The generate stage: every agent of a match answers the prompt with its
//! pinned version (system prompt, sampling, adapter), all in the runtime's
//! one batch. Outputs are unique per match and slot, so a redelivered
//! message stores nothing twice.

pub use super::generator::{EngineGenerator, GenJob, GenOutput, Generator, match_seed};
use super::generator::{job_for, refusal};
use super::runner::{RunnerSpec, Work};
use crate::context::Context;
use crate::domain::{MatchId, MatchStatus, Stage};
use crate::queue::{Event, Events};
use crate::store::matches::{self, NewOutput};
use futures_util::future::BoxFuture;
use std::sync::Arc;
use uuid::Uuid;

/// How long the runtime's claim on a match it generates holds.
const RUNTIME_CLAIM_S: u64 = 120;

pub struct GenerateStage {
    pub generator: Arc<dyn Generator>,
}

impl Work for GenerateStage {
    fn spec(&self, ctx: &Context) -> RunnerSpec {
        RunnerSpec::match_stage(Stage::Generate, ctx)
    }

    fn run<'a>(&'a self, ctx: &'a Context, subjects: &'a [Uuid]) -> BoxFuture<'a, anyhow::Result<Vec<Uuid>>> {
        Box::pin(async move {
            let ids: Vec<MatchId> = subjects.iter().map(|s| MatchId(*s)).collect();
            // The runtime claims what it generates: a match an open worker
            // holds a lease on is not generated twice (it comes back through
            // the reconciler if the lease lapses).
            let open = crate::store::workers::claim_for_runtime(&ctx.db, &ids, RUNTIME_CLAIM_S).await?;
            // Everything else is past this stage (or unknown): done.
            let mut done: Vec<Uuid> = subjects.iter().filter(|m| !open.contains(&MatchId(**m))).copied().collect();
            if open.is_empty() {
                return Ok(done);
            }
            let seats = matches::generate_seats(&ctx.db, &open).await?;
            // Multi-turn matches play one step each; their requests and the
            // one-answer matches' go to the engine at the same time.
            let mut games: Vec<MatchId> = Vec::new();
            for id in &open {
                if let Some(seat) = seats.iter().find(|s| s.match_id == *id)
                    && let Ok(space) = ctx.spaces.get(&ctx.db, seat.space_id, seat.space_version).await
                    && space.game.is_some()
                {
                    games.push(*id);
                }
            }
            let (game_seats, seats): (Vec<_>, Vec<_>) = seats.into_iter().partition(|s| games.contains(&s.match_id));
            let open: Vec<MatchId> = open.into_iter().filter(|id| !games.contains(id)).collect();
            let (answered, stepped) = futures_util::future::join(
                self.one_answer(ctx, open, seats),
                super::turns::step(ctx, self.generator.as_ref(), &games, &game_seats),
            )
            .await;
            done.extend(answered?);
            done.extend(stepped?);
            Ok(done)
        })
    }
}

impl GenerateStage {
    /// One-answer matches: every seat answers the prompt once.
    async fn one_answer(
        &self,
        ctx: &Context,
        open: Vec<MatchId>,
        seats: Vec<matches::GenerateSeat>,
    ) -> anyhow::Result<Vec<Uuid>> {
        let mut done: Vec<Uuid> = Vec::new();
        if open.is_empty() {
            return Ok(done);
        }
        {
            {
                // One match's trouble (its Space version, an adapter) is that
                // match's alone: the rest of the batch goes on.
                let mut broken: Vec<MatchId> = Vec::new();
                let mut jobs = Vec::with_capacity(seats.len());
                let mut job_seats: Vec<&matches::GenerateSeat> = Vec::with_capacity(seats.len());
                for seat in &seats {
                    if broken.contains(&seat.match_id) {
                        continue;
                    }
                    match job_for(ctx, seat).await {
                        Ok(job) => {
                            jobs.push(job);
                            job_seats.push(seat);
                        }
                        Err(err) => {
                            tracing::warn!(match_id = %seat.match_id, error = %err, "cannot prepare the match; will retry");
                            broken.push(seat.match_id);
                        }
                    }
                }
                let keep: Vec<usize> = (0..jobs.len()).filter(|&i| !broken.contains(&job_seats[i].match_id)).collect();
                let jobs: Vec<GenJob> = keep.iter().map(|&i| jobs[i].clone()).collect();
                let job_seats: Vec<&matches::GenerateSeat> = keep.iter().map(|&i| job_seats[i]).collect();
                let outputs = self.generator.generate(jobs).await;
                let mut ok_matches: Vec<MatchId> = Vec::new();
                let mut refused: Vec<(MatchId, String)> = Vec::new();
                let mut rows: Vec<NewOutput> = Vec::new();
                for id in open.iter().filter(|m| !broken.contains(m)) {
                    let mine: Vec<(&&matches::GenerateSeat, &anyhow::Result<GenOutput>)> =
                        job_seats.iter().zip(&outputs).filter(|(s, _)| s.match_id == *id).collect();
                    // A request the runtime refuses (a prompt longer than the
                    // context, say) is refused again on every retry: fail the
                    // match now, with the reason.
                    if let Some(why) = mine.iter().find_map(|(_, o)| o.as_ref().err().and_then(refusal)) {
                        refused.push((*id, format!("the runtime refused an agent's request: {why}")));
                        continue;
                    }
                    if mine.iter().any(|(_, o)| o.is_err()) {
                        for (_, o) in &mine {
                            if let Err(err) = o {
                                tracing::warn!(match_id = %id, error = %err, "generation failed; will retry");
                            }
                        }
                        continue;
                    }
                    for (seat, output) in mine {
                        let Ok(output) = output else { continue };
                        rows.push(NewOutput {
                            match_id: *id,
                            slot: seat.slot,
                            text: output.text.clone(),
                            finish: output.finish.clone(),
                            tokens: output.tokens as i32,
                        });
                    }
                    ok_matches.push(*id);
                }
                for (id, why) in &refused {
                    super::fail_match(ctx, *id, why).await?;
                    done.push(id.0);
                }
                if ok_matches.is_empty() {
                    return Ok(done);
                }
                let mut tx = ctx.db.begin().await?;
                matches::insert_outputs(&mut tx, &rows).await?;
                let moved = matches::advance(&mut tx, Stage::Generate, &ok_matches).await?;
                tx.commit().await?;
                let events: Vec<Event> = moved
                    .iter()
                    .map(|id| {
                        let space =
                            seats.iter().find(|s| s.match_id == *id).map(|s| s.slug.clone()).unwrap_or_default();
                        Event::new(*id, space, MatchStatus::Generated)
                    })
                    .collect();
                Events::publish_many(&ctx.redis, &events).await;
                done.extend(ok_matches.iter().map(|m| m.0));
                Ok(done)
            }
        }
    }
}
