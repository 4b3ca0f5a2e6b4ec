//! What generates answers: the `Generator` interface the generate stage,
//! games and dry runs call (the runtime's engine, or a named test double),
//! its job and output types, and how a seat's job is made from its pinned
//! version.

use crate::context::Context;
use crate::store::matches;
use agent_runtime::chat::Message as ChatMessage;
use agent_runtime::engine::{Engine, Prompt, Request, SubmitError};
use agent_runtime::sampling::SamplingParams;
use futures_util::future::{BoxFuture, join_all};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
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
                    let request = Request {
                        prompt: chat_prompt(&job.system, &job.prompt),
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

/// The chat an agent answers: its system prompt (when it has one) and the
/// match's prompt. Open workers get it as token ids rendered from this.
pub fn chat_prompt(system: &str, prompt: &str) -> Prompt {
    let mut messages = Vec::new();
    if !system.is_empty() {
        messages.push(ChatMessage::system(system));
    }
    messages.push(ChatMessage::user(prompt));
    Prompt::Chat(messages)
}

/// A per-match seed: the agent's seed mixed with the match and slot, so
/// matches differ and a replay of one match gives the same text.
pub fn match_seed(agent_seed: u64, match_id: Uuid, slot: usize) -> u64 {
    let digest = Sha256::new().chain_update(match_id.as_bytes()).chain_update((slot as u64).to_le_bytes()).finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    agent_seed ^ u64::from_le_bytes(bytes)
}

/// The runtime's reason when it refused the request itself (bad input,
/// not a passing fault).
pub fn refusal(err: &anyhow::Error) -> Option<String> {
    err.chain().find_map(|cause| match cause.downcast_ref::<agent_runtime::RuntimeError>() {
        Some(agent_runtime::RuntimeError::Request(why)) => Some(why.clone()),
        _ => None,
    })
}

/// One seat's request: its pinned version's prompt, sampling and adapter.
pub async fn job_for(ctx: &Context, seat: &matches::GenerateSeat) -> anyhow::Result<GenJob> {
    let space = ctx.spaces.get(&ctx.db, seat.space_id, seat.space_version).await?;
    let adapter = match &seat.adapter_sha256 {
        Some(sha) => Some(crate::store::adapters::materialize(&ctx.db, &ctx.data_dir, sha).await?),
        None => None,
    };
    let slot = seat.slot as usize;
    Ok(GenJob {
        system: seat.system_prompt.clone(),
        prompt: seat.prompt.clone(),
        adapter,
        params: seat
            .sampling
            .params(space.max_new_tokens as usize, match_seed(seat.sampling.seed, seat.match_id.0, slot)),
        reference: seat.reference.clone(),
        slot,
    })
}
