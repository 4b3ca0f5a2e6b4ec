//! The generate stage: every agent of a match answers the prompt with its
//! pinned version (system prompt, sampling, adapter), all in the runtime's
//! one batch. Outputs are unique per match and slot, so a redelivered
//! message stores nothing twice.

use super::{Pipeline, Stage, StageWork};
use crate::events::{Event, Events};
use crate::routes::agents::AgentSampling;
use agent_runtime::chat::Message as ChatMessage;
use agent_runtime::engine::{Engine, Prompt, Request, SubmitError};
use agent_runtime::sampling::SamplingParams;
use futures_util::future::{BoxFuture, join_all};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// One agent's turn.
#[derive(Debug, Clone)]
pub struct GenJob {
    pub system: String,
    pub prompt: String,
    pub adapter: Option<PathBuf>,
    pub params: SamplingParams,
    /// The prompt's reference answer; only the stub generator looks at it.
    pub reference: Option<String>,
    pub slot: usize,
}

#[derive(Debug, Clone)]
pub struct GenOutput {
    pub text: String,
    pub finish: String,
    pub tokens: usize,
}

/// Whatever produces the agents' answers.
pub trait Generator: Send + Sync + 'static {
    fn generate(&self, jobs: Vec<GenJob>) -> BoxFuture<'static, Vec<anyhow::Result<GenOutput>>>;
}

/// The real thing: the agent runtime's continuously batched engine.
pub struct EngineGenerator {
    pub engine: Engine,
}

impl Generator for EngineGenerator {
    fn generate(&self, jobs: Vec<GenJob>) -> BoxFuture<'static, Vec<anyhow::Result<GenOutput>>> {
        let engine = self.engine.clone();
        Box::pin(async move {
            let runs = jobs.into_iter().map(|job| {
                let engine = engine.clone();
                async move {
                    let mut messages = Vec::new();
                    if !job.system.is_empty() {
                        messages.push(ChatMessage::system(&job.system));
                    }
                    messages.push(ChatMessage::user(&job.prompt));
                    let request = Request {
                        prompt: Prompt::Chat(messages),
                        adapter: job.adapter,
                        params: job.params,
                        logprobs: false,
                    };
                    // The engine's queue is bounded: wait for room rather
                    // than fail the match.
                    let rx = loop {
                        match engine.submit(request.clone()) {
                            Ok(rx) => break rx,
                            Err(SubmitError::OverCapacity { .. }) => {
                                tokio::time::sleep(Duration::from_millis(50)).await
                            }
                            Err(err) => return Err(anyhow::anyhow!(err)),
                        }
                    };
                    let completion = rx.await.map_err(|_| anyhow::anyhow!("the engine dropped the request"))??;
                    let finish = serde_json::to_value(completion.finish)?.as_str().unwrap_or("length").to_owned();
                    Ok(GenOutput { text: completion.text, finish, tokens: completion.tokens.len() })
                }
            });
            join_all(runs).await
        })
    }
}

/// A test double for control-plane benchmarks and tests that are not about
/// the model: answers instantly, the reference answer from even slots and a
/// wrong one from odd slots. Never used by `arena serve`.
pub struct StubGenerator;

impl Generator for StubGenerator {
    fn generate(&self, jobs: Vec<GenJob>) -> BoxFuture<'static, Vec<anyhow::Result<GenOutput>>> {
        let outputs = jobs
            .into_iter()
            .map(|job| {
                let text = match (&job.reference, job.slot % 2) {
                    (Some(reference), 0) => format!("The answer is {reference}."),
                    (Some(_), _) => "I am not sure, maybe 7 or 12.".to_owned(),
                    (None, n) => format!("Stub answer {n} to: {}", job.prompt.chars().take(40).collect::<String>()),
                };
                Ok(GenOutput { tokens: text.split_whitespace().count(), text, finish: "end_of_turn".into() })
            })
            .collect();
        Box::pin(std::future::ready(outputs))
    }
}

/// A per-match seed: the agent's seed mixed with the match and slot, so
/// matches differ and a replay of one match gives the same text.
pub fn match_seed(agent_seed: u64, match_id: Uuid, slot: usize) -> u64 {
    let digest = Sha256::new().chain_update(match_id.as_bytes()).chain_update((slot as u64).to_le_bytes()).finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    agent_seed ^ u64::from_le_bytes(bytes)
}

pub struct GenerateStage {
    pub generator: Arc<dyn Generator>,
}

#[derive(sqlx::FromRow)]
struct Seat {
    match_id: Uuid,
    slug: String,
    space_id: Uuid,
    space_version: i32,
    prompt: String,
    reference: Option<String>,
    slot: i16,
    system_prompt: String,
    sampling: serde_json::Value,
    adapter_sha256: Option<String>,
}

impl StageWork for GenerateStage {
    fn stage(&self) -> Stage {
        Stage::Generate
    }

    fn run<'a>(
        &'a self,
        p: &'a Pipeline,
        matches: &'a [Uuid],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Vec<Uuid>>> + Send + 'a>> {
        Box::pin(async move {
            let open: Vec<Uuid> = sqlx::query_scalar("select id from matches where id = any($1) and status = 'formed'")
                .bind(matches)
                .fetch_all(&p.db)
                .await?;
            // Everything else is past this stage (or unknown): done.
            let mut done: Vec<Uuid> = matches.iter().filter(|m| !open.contains(m)).copied().collect();
            if open.is_empty() {
                return Ok(done);
            }
            let seats: Vec<Seat> = sqlx::query_as(
                "select m.id as match_id, s.slug, m.space_id, m.space_version, m.prompt, m.reference, ma.slot,
                        v.system_prompt, v.sampling, v.adapter_sha256
                 from matches m join spaces s on s.id = m.space_id join match_agents ma on ma.match_id = m.id
                 join agent_versions v on v.agent_id = ma.agent_id and v.version = ma.agent_version
                 where m.id = any($1) order by m.id, ma.slot",
            )
            .bind(&open)
            .fetch_all(&p.db)
            .await?;
            let mut jobs = Vec::with_capacity(seats.len());
            for seat in &seats {
                let space = p.spaces.get(&p.db, seat.space_id, seat.space_version).await?;
                let sampling: AgentSampling = serde_json::from_value(seat.sampling.clone())?;
                let adapter = match &seat.adapter_sha256 {
                    Some(sha) => Some(crate::adapters::materialize(&p.db, &p.spaces.data_dir(), sha).await?),
                    None => None,
                };
                let slot = seat.slot as usize;
                jobs.push(GenJob {
                    system: seat.system_prompt.clone(),
                    prompt: seat.prompt.clone(),
                    adapter,
                    params: sampling
                        .params(space.max_new_tokens as usize, match_seed(sampling.seed, seat.match_id, slot)),
                    reference: seat.reference.clone(),
                    slot,
                });
            }
            let outputs = self.generator.generate(jobs).await;
            let mut ok_matches: Vec<Uuid> = Vec::new();
            let (mut ids, mut slots, mut texts, mut finishes, mut tokens) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for id in &open {
                let mine: Vec<(&Seat, &anyhow::Result<GenOutput>)> =
                    seats.iter().zip(&outputs).filter(|(s, _)| s.match_id == *id).collect();
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
                    ids.push(*id);
                    slots.push(seat.slot);
                    // PostgreSQL text cannot hold NUL.
                    texts.push(output.text.replace('\0', ""));
                    finishes.push(output.finish.clone());
                    tokens.push(output.tokens as i32);
                }
                ok_matches.push(*id);
            }
            if ok_matches.is_empty() {
                return Ok(done);
            }
            let mut tx = p.db.begin().await?;
            sqlx::query(
                "insert into outputs (match_id, slot, text, finish, tokens)
                 select * from unnest($1::uuid[], $2::smallint[], $3::text[], $4::text[], $5::int[])
                 on conflict (match_id, slot) do nothing",
            )
            .bind(&ids)
            .bind(&slots)
            .bind(&texts)
            .bind(&finishes)
            .bind(&tokens)
            .execute(&mut *tx)
            .await?;
            let moved = super::advance(&mut tx, Stage::Generate, &ok_matches).await?;
            tx.commit().await?;
            let events: Vec<Event> = moved
                .iter()
                .map(|id| {
                    let space = seats.iter().find(|s| s.match_id == *id).map(|s| s.slug.clone()).unwrap_or_default();
                    Event { match_id: *id, space, status: "generated".into(), detail: None }
                })
                .collect();
            Events::publish_many(&p.redis, &events).await;
            done.extend(ok_matches);
            Ok(done)
        })
    }
}
