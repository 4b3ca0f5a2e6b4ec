//! Generation: requests, completions, and the continuous-batching engine.
//!
//! The engine owns the model on its own thread. Requests arrive through a
//! bounded queue (a full queue is an immediate "over capacity" error, never a
//! hang); each step runs every active sequence's next tokens in one batched
//! forward; new requests join between steps and finished ones leave.

use crate::candle_backend::{CandleModel, CandleSeq};
use crate::chat::{ChatTemplate, Message};
use crate::error::{Result, RuntimeError};
use crate::gguf::{Gguf, ModelConfig};
use crate::lora::{Adapter, AdapterCache, AdapterError, Limits};
use crate::model::{KvCache, Logits, Model, SeqStep};
use crate::prefix::{PrefixCache, PrefixStats};
use crate::sampling::{Sampler, SamplingParams, log_prob};
use crate::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Prompt tokens fed per sequence per step: a long prompt is prefilled in
/// chunks so it does not stall the sequences decoding beside it.
pub const PREFILL_CHUNK: usize = 256;
/// Rows per sequence whose logits [`Runtime::score_batch`] keeps at once.
pub const SCORE_CHUNK: usize = 64;

/// What to complete.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Prompt {
    /// Messages rendered with the model's chat template, ending where the
    /// assistant's answer begins. Special-token text inside a message is
    /// removed first, so a message cannot forge roles.
    Chat(Vec<Message>),
    /// Text used as is; special tokens written in it are honoured.
    Raw(String),
    Tokens(Vec<u32>),
}

#[derive(Debug, Clone)]
pub struct Request {
    pub prompt: Prompt,
    /// A PEFT adapter directory; none runs the base model.
    pub adapter: Option<PathBuf>,
    pub params: SamplingParams,
    /// Return each generated token's log-probability under the model.
    pub logprobs: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// The model ended its turn.
    EndOfTurn,
    /// A stop string appeared.
    Stop,
    /// max_new_tokens reached.
    Length,
    /// The context window is full.
    Context,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Completion {
    pub text: String,
    pub tokens: Vec<u32>,
    /// Each sampled token's log-probability under the distribution it was
    /// drawn from before top-k, top-p and the repetition penalty: the
    /// model's logits divided by the temperature (the logits as they are
    /// for greedy decoding). With [`Finish::EndOfTurn`] the last entry is
    /// the end-of-turn token's ([`Completion::end_token`]).
    pub logprobs: Option<Vec<f32>>,
    pub finish: Finish,
    /// The token that ended the turn, when one did (it is not in `tokens`).
    pub end_token: Option<u32>,
    pub prompt_tokens: usize,
    /// Time from joining the batch to the first new token.
    pub prefill: Duration,
    pub total: Duration,
}

/// Where generation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// This crate's own kernels (the default).
    Cpu,
    /// The GPU of this ordinal (cargo feature `cuda`; the forward is
    /// [`crate::candle_backend`]).
    Cuda(usize),
}

/// The model, its tokenizer and template, and the adapter cache.
pub struct Runtime {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    pub adapters: AdapterCache,
    pub path: PathBuf,
    pub(crate) end_of_turn: Vec<u32>,
    /// With [`Backend::Cuda`], the GPU copy that generation runs on (the CPU
    /// model still serves scoring and training).
    gpu: Option<CandleModel>,
    /// Keys and values of prompts (and finished sequences) already computed
    /// on the CPU path ([`crate::prefix`]).
    prefix: Mutex<PrefixCache>,
}

/// The prefix cache's default budget.
pub const PREFIX_CACHE_BYTES: usize = 256 << 20;

/// The environment variable that sets the prefix cache's budget in MiB
/// (0 turns it off).
pub const PREFIX_CACHE_VAR: &str = "ARENA_PREFIX_CACHE_MB";

/// The budget `ARENA_PREFIX_CACHE_MB` asks for, else the default.
fn prefix_budget() -> Result<usize> {
    match std::env::var(PREFIX_CACHE_VAR) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<usize>()
            .ok()
            .and_then(|mb| mb.checked_mul(1 << 20))
            .ok_or_else(|| RuntimeError::Request(format!("{PREFIX_CACHE_VAR}={v}: not a number of MiB"))),
        _ => Ok(PREFIX_CACHE_BYTES),
    }
}

impl Runtime {
    /// Loads `path` to generate on `backend`.
    pub fn load_on(path: &Path, threads: usize, backend: Backend) -> Result<Runtime> {
        match backend {
            Backend::Cpu => Runtime::load(path, threads),
            Backend::Cuda(_) if !cfg!(feature = "cuda") => Err(RuntimeError::Request(
                "this build has no CUDA backend: build with `--features cuda` (scripts/cuda-build)".to_owned(),
            )),
            Backend::Cuda(ordinal) => {
                let device = candle_core::Device::new_cuda(ordinal)?;
                Runtime::load_with(path, threads, Some(device))
            }
        }
    }

    /// Loads `path` to generate with the candle forward on `device`
    /// ([`crate::candle_backend`]; on candle's CPU device, for tests).
    pub fn load_with(path: &Path, threads: usize, device: Option<candle_core::Device>) -> Result<Runtime> {
        let mut rt = Runtime::load(path, threads)?;
        if let Some(device) = device {
            rt.gpu = Some(CandleModel::load(&mut Gguf::open(path)?, device)?);
        }
        Ok(rt)
    }

    /// Where generation runs.
    pub fn backend(&self) -> Backend {
        match self.gpu.as_ref().map(|g| g.device().location()) {
            Some(candle_core::DeviceLocation::Cuda { gpu_id }) => Backend::Cuda(gpu_id),
            _ => Backend::Cpu,
        }
    }

    pub fn load(path: &Path, threads: usize) -> Result<Runtime> {
        let mut gguf = Gguf::open(path)?;
        let tokenizer = Tokenizer::from_gguf(&gguf)?;
        let token_text = |id: Option<u32>| id.and_then(|i| tokenizer.token(i)).unwrap_or("").to_owned();
        let template_src = gguf.string("tokenizer.chat_template").unwrap_or(crate::chat::CHATML).to_owned();
        let template = ChatTemplate::new(&template_src, &token_text(tokenizer.bos), &token_text(tokenizer.eos))?;
        let model = Model::from_gguf(&mut gguf, threads)?;
        let mut end_of_turn: Vec<u32> = tokenizer.eos.into_iter().collect();
        for name in ["<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>", "</s>"] {
            if let Some(id) = tokenizer.id_of(name).filter(|id| tokenizer.is_special(*id)) {
                end_of_turn.push(id);
            }
        }
        end_of_turn.sort_unstable();
        end_of_turn.dedup();
        Ok(Runtime {
            model,
            tokenizer,
            template,
            adapters: AdapterCache::new(512 << 20, Limits::default()),
            path: path.to_owned(),
            end_of_turn,
            gpu: None,
            prefix: Mutex::new(PrefixCache::new(prefix_budget()?)),
        })
    }

    /// Sets the prefix cache's memory budget in bytes (0 turns it off).
    pub fn set_prefix_budget(&self, bytes: usize) {
        self.prefix_cache().set_budget(bytes);
    }

    /// Empties the prefix cache (its budget and counters stay).
    pub fn clear_prefix_cache(&self) {
        self.prefix_cache().clear();
    }

    /// The prefix cache's budget in bytes.
    pub fn prefix_budget(&self) -> usize {
        self.prefix_cache().budget()
    }

    /// The prefix cache's counters.
    pub fn prefix_stats(&self) -> PrefixStats {
        self.prefix_cache().stats()
    }

    fn prefix_cache(&self) -> std::sync::MutexGuard<'_, PrefixCache> {
        self.prefix.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts `a` from the longest cached head of its prompt, if that is
    /// longer than what it has: the prompt's last token is always fed, for
    /// the logits of the first new token.
    fn reuse_prefix(&self, a: &mut Active) {
        if a.gpu.is_some() {
            return;
        }
        let have = a.prompt_len - a.pending.len();
        let limit = a.prompt_len - 1;
        if have >= limit {
            return;
        }
        if let Some(cache) = self.prefix_cache().lookup(a.adapter.as_ref(), &a.context[..a.prompt_len], limit)
            && cache.len() > have
        {
            a.pending = a.context[cache.len()..a.prompt_len].to_vec();
            a.cache = cache;
        }
    }

    /// How many prompt tokens `a` would skip if it waited for `b`, still
    /// prefilling the same weights, to finish its prompt.
    fn gain_from_waiting(&self, a: &Active, b: &Active) -> usize {
        if a.gpu.is_some()
            || b.prefill.is_some()
            || !crate::prefix::same_adapter(a.adapter.as_ref(), b.adapter.as_ref())
        {
            return 0;
        }
        let prompt = &a.context[..a.prompt_len];
        let limit = a.prompt_len - 1;
        let cache = self.prefix_cache();
        if cache.budget() == 0 {
            return 0;
        }
        let have = (a.prompt_len - a.pending.len()).max(cache.reusable(a.adapter.as_ref(), prompt, limit));
        let shared = crate::prefix::shared_len(prompt, &b.context[..b.prompt_len]);
        shared.min(limit).saturating_sub(have)
    }

    /// A finished sequence's keys and values go to the prefix cache (a next
    /// message of the conversation, or a next turn, starts with them).
    fn retire(&self, a: Active) {
        if a.gpu.is_none() {
            let tokens = a.context;
            self.prefix_cache().insert(a.adapter.as_ref(), &tokens, a.cache);
        }
    }

    pub fn config(&self) -> &ModelConfig {
        &self.model.config
    }

    /// Removes special-token text (`<|im_start|>` …) from untrusted text.
    pub fn strip_special(&self, text: &str) -> String {
        let mut out = text.to_owned();
        loop {
            let before = out.len();
            for &id in self.tokenizer.special_ids() {
                if let Some(tok) = self.tokenizer.token(id).filter(|t| !t.is_empty()) {
                    out = out.replace(tok, "");
                }
            }
            if out.len() == before {
                return out;
            }
        }
    }

    pub fn prompt_tokens(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        match prompt {
            Prompt::Tokens(t) => Ok(t.clone()),
            Prompt::Raw(text) => self.tokenizer.encode(text, true, true),
            Prompt::Chat(messages) => {
                let clean: Vec<Message> = messages
                    .iter()
                    .map(|m| Message { role: m.role.clone(), content: self.strip_special(&m.content) })
                    .collect();
                let text = self.template.render(&clean, true)?;
                self.tokenizer.encode(&text, false, true)
            }
        }
    }

    pub fn adapter(&self, dir: &Path) -> Result<Arc<Adapter>, AdapterError> {
        self.adapters.get(dir, &self.model.config)
    }

    /// Runs one request to completion on the calling thread.
    pub fn generate(&self, request: Request) -> Result<Completion> {
        let mut active = vec![self.start(request)?];
        self.reuse_prefix(&mut active[0]);
        loop {
            self.step(&mut active)?;
            if let Some(done) = active[0].finished.take() {
                if let Some(a) = active.pop() {
                    self.retire(a);
                }
                return Ok(done);
            }
        }
    }

    /// The next-token logits after each of `prompts`, computed in one batch
    /// with the base model. The prompts' longest common token prefix is
    /// prefilled once and its cache copied to every prompt, so scoring many
    /// prompts that share a long head (a judge comparing answers to one
    /// question) costs little more than their distinct tails.
    pub fn next_token_logits(&self, prompts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let Some(shortest) = prompts.iter().map(Vec::len).min() else {
            return Ok(Vec::new());
        };
        if shortest == 0 {
            return Err(RuntimeError::Request("a prompt has no tokens".to_owned()));
        }
        if let Some(long) = prompts.iter().find(|p| p.len() >= self.model.max_positions()) {
            return Err(RuntimeError::Request(format!(
                "a prompt has {} tokens; the context holds {}",
                long.len(),
                self.model.max_positions()
            )));
        }
        // Every prompt keeps at least its last token to feed on its own.
        let first = &prompts[0];
        let mut shared = shortest - 1;
        for p in &prompts[1..] {
            shared = shared.min(first.iter().zip(p).take_while(|(a, b)| a == b).count());
        }
        let mut base = self.model.new_cache();
        for chunk in first[..shared].chunks(PREFILL_CHUNK) {
            let mut step = [SeqStep { tokens: chunk, cache: &mut base, adapter: None, logits: Logits::Last }];
            self.model.forward(&mut step)?;
        }
        let mut caches: Vec<KvCache> = prompts.iter().map(|_| base.clone()).collect();
        let mut fed = vec![shared; prompts.len()];
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); prompts.len()];
        loop {
            let mut live: Vec<(usize, usize)> = Vec::new();
            let mut steps: Vec<SeqStep<'_>> = Vec::new();
            for (i, cache) in caches.iter_mut().enumerate() {
                if fed[i] < prompts[i].len() {
                    let end = prompts[i].len().min(fed[i] + PREFILL_CHUNK);
                    live.push((i, end));
                    steps.push(SeqStep {
                        tokens: &prompts[i][fed[i]..end],
                        cache,
                        adapter: None,
                        logits: Logits::Last,
                    });
                }
            }
            if live.is_empty() {
                return Ok(out);
            }
            let logits = self.model.forward(&mut steps)?;
            drop(steps);
            for (&(i, end), logits) in live.iter().zip(logits) {
                fed[i] = end;
                if end == prompts[i].len() {
                    out[i] = logits;
                }
            }
        }
    }

    /// The log-probability of each token of `completion` after `prompt`
    /// (teacher-forced), under the model with `adapter` (or the base model):
    /// what DPO's reference pass and an evaluation of a given answer need.
    /// The sum is the completion's log-likelihood.
    pub fn completion_logprobs(
        &self,
        prompt: &[u32],
        completion: &[u32],
        adapter: Option<&Adapter>,
    ) -> Result<Vec<f32>> {
        if prompt.is_empty() {
            return Err(RuntimeError::Request("the prompt has no tokens".to_owned()));
        }
        if completion.is_empty() {
            return Ok(Vec::new());
        }
        let total = prompt.len() + completion.len();
        if total > self.model.max_positions() {
            return Err(RuntimeError::Request(format!(
                "prompt and completion have {total} tokens; the context holds {}",
                self.model.max_positions()
            )));
        }
        let vocab = self.config().vocab;
        let mut cache = self.model.new_cache();
        // Everything before the prompt's last token only fills the cache;
        // from there on every position's logits score the next token.
        for chunk in prompt[..prompt.len() - 1].chunks(PREFILL_CHUNK) {
            self.model.forward(&mut [SeqStep { tokens: chunk, cache: &mut cache, adapter, logits: Logits::Last }])?;
        }
        let scored: Vec<u32> = std::iter::once(prompt[prompt.len() - 1])
            .chain(completion[..completion.len() - 1].iter().copied())
            .collect();
        let mut out = Vec::with_capacity(completion.len());
        for (c, chunk) in scored.chunks(PREFILL_CHUNK).enumerate() {
            let logits = self
                .model
                .forward(&mut [SeqStep { tokens: chunk, cache: &mut cache, adapter, logits: Logits::All }])?
                .remove(0);
            for (i, row) in logits.chunks(vocab).enumerate() {
                out.push(log_prob(row, completion[c * PREFILL_CHUNK + i]));
            }
        }
        Ok(out)
    }

    /// Teacher-forced log-probabilities of many `(prefix, target)` items in
    /// one batch with the base model: for each item, the log-probability of
    /// every target token after the prefix and the target tokens before it.
    /// Items that share a head (8 tokens or more) are grouped and the head
    /// computed once per group, its cache copied, so scoring several answers
    /// to one question (the judge's likelihood signals) costs little more
    /// than their distinct tails.
    /// Logits are kept for the target positions only, in chunks of
    /// [`SCORE_CHUNK`] rows per sequence, so memory stays bounded.
    pub fn score_batch(&self, items: &[(Vec<u32>, Vec<u32>)]) -> Result<Vec<Vec<f32>>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        for (prefix, target) in items {
            if prefix.is_empty() {
                return Err(RuntimeError::Request("an item to score has no prefix tokens".to_owned()));
            }
            if prefix.len() + target.len() > self.model.max_positions() {
                return Err(RuntimeError::Request(format!(
                    "an item to score has {} tokens; the context holds {}",
                    prefix.len() + target.len(),
                    self.model.max_positions()
                )));
            }
        }
        let vocab = self.config().vocab;
        // Each item's full sequence; position p's logits score token p + 1.
        let seqs: Vec<Vec<u32>> = items.iter().map(|(p, t)| p.iter().chain(t).copied().collect()).collect();
        // Positions before `first_scored[i]` only fill the cache.
        let first_scored: Vec<usize> = items.iter().map(|(p, _)| p.len() - 1).collect();
        // Items that share a head of at least MIN_SHARED tokens form a
        // group whose head is prefilled once and its cache copied.
        const MIN_SHARED: usize = 8;
        let mut groups: Vec<(usize, usize, Vec<usize>)> = Vec::new(); // (leader, shared, members)
        for i in 0..items.len() {
            let joined = groups.iter_mut().find_map(|(leader, shared, members)| {
                let common = seqs[*leader].iter().zip(&seqs[i]).take_while(|(a, b)| a == b).count();
                let common = common.min(first_scored[i]).min(*shared);
                (common >= MIN_SHARED).then(|| {
                    *shared = common;
                    members.push(i);
                })
            });
            if joined.is_none() {
                groups.push((i, first_scored[i], vec![i]));
            }
        }
        groups.retain(|(_, _, members)| members.len() > 1);
        let mut bases: Vec<KvCache> = groups.iter().map(|_| self.model.new_cache()).collect();
        let mut done = 0;
        loop {
            let mut steps: Vec<SeqStep<'_>> = Vec::new();
            for ((leader, shared, _), base) in groups.iter().zip(bases.iter_mut()) {
                if done < *shared {
                    let end = (*shared).min(done + PREFILL_CHUNK);
                    steps.push(SeqStep {
                        tokens: &seqs[*leader][done..end],
                        cache: base,
                        adapter: None,
                        logits: Logits::Last,
                    });
                }
            }
            if steps.is_empty() {
                break;
            }
            self.model.forward(&mut steps)?;
            done += PREFILL_CHUNK;
        }
        let mut caches: Vec<KvCache> = Vec::with_capacity(items.len());
        let mut fed = vec![0usize; items.len()];
        for (i, fed_i) in fed.iter_mut().enumerate() {
            match groups.iter().position(|(_, _, members)| members.contains(&i)) {
                Some(g) => {
                    caches.push(bases[g].clone());
                    *fed_i = groups[g].1;
                }
                None => caches.push(self.model.new_cache()),
            }
        }
        let mut out: Vec<Vec<f32>> = items.iter().map(|(_, t)| Vec::with_capacity(t.len())).collect();
        loop {
            let mut live: Vec<(usize, usize, bool)> = Vec::new();
            let mut steps: Vec<SeqStep<'_>> = Vec::new();
            for (i, cache) in caches.iter_mut().enumerate() {
                // The last position's logits score nothing.
                let end_all = seqs[i].len() - 1;
                if fed[i] >= end_all {
                    continue;
                }
                let scoring = fed[i] >= first_scored[i];
                let end = if scoring {
                    end_all.min(fed[i] + SCORE_CHUNK)
                } else {
                    first_scored[i].min(fed[i] + PREFILL_CHUNK)
                };
                live.push((i, end, scoring));
                steps.push(SeqStep {
                    tokens: &seqs[i][fed[i]..end],
                    cache,
                    adapter: None,
                    logits: if scoring { Logits::All } else { Logits::Last },
                });
            }
            if live.is_empty() {
                return Ok(out);
            }
            let logits = self.model.forward(&mut steps)?;
            drop(steps);
            for (&(i, end, scoring), rows) in live.iter().zip(logits) {
                if scoring {
                    for (k, row) in rows.chunks(vocab).enumerate() {
                        out[i].push(log_prob(row, seqs[i][fed[i] + k + 1]));
                    }
                }
                fed[i] = end;
            }
        }
    }

    fn start(&self, request: Request) -> Result<Active> {
        request.params.validate().map_err(RuntimeError::Request)?;
        let prompt = self.prompt_tokens(&request.prompt)?;
        if prompt.is_empty() {
            return Err(RuntimeError::Request("the prompt has no tokens".to_owned()));
        }
        if prompt.len() >= self.model.max_positions() {
            return Err(RuntimeError::Request(format!(
                "the prompt has {} tokens; the context holds {}",
                prompt.len(),
                self.model.max_positions()
            )));
        }
        let adapter = match &request.adapter {
            Some(dir) => Some(self.adapter(dir)?),
            None => None,
        };
        let gpu = match &self.gpu {
            Some(model) => Some(model.new_seq(adapter.as_deref())?),
            None => None,
        };
        Ok(Active {
            gpu,
            cache: self.model.new_cache(),
            pending: prompt.clone(),
            prompt_len: prompt.len(),
            context: prompt,
            generated: Vec::new(),
            text: String::new(),
            logprobs: request.logprobs.then(Vec::new),
            sampler: Sampler::new(request.params),
            adapter,
            started: Instant::now(),
            prefill: None,
            finished: None,
        })
    }

    /// One batched forward over every active sequence; samples a token for
    /// each sequence whose prompt is fully fed and marks finished ones.
    fn step(&self, active: &mut [Active]) -> Result<()> {
        let feeds: Vec<usize> = active.iter().map(|a| a.pending.len().min(PREFILL_CHUNK)).collect();
        if let Some(model) = &self.gpu {
            // One forward per sequence, each on its own KV cache.
            let mut logits = Vec::with_capacity(active.len());
            for (a, &n) in active.iter_mut().zip(&feeds) {
                let Some(seq) = a.gpu.as_mut() else {
                    return Err(RuntimeError::Request("a sequence started off the GPU".to_owned()));
                };
                logits.push(model.forward(seq, &a.pending[..n])?);
            }
            return self.after_step(active, &feeds, logits);
        }
        let mut steps: Vec<SeqStep<'_>> = active
            .iter_mut()
            .zip(&feeds)
            .map(|(a, &n)| SeqStep {
                tokens: &a.pending[..n],
                cache: &mut a.cache,
                adapter: a.adapter.as_deref(),
                logits: Logits::Last,
            })
            .collect();
        let logits = self.model.forward(&mut steps)?;
        drop(steps);
        self.after_step(active, &feeds, logits)
    }

    /// Samples after a step's forward (`logits[i]` after the `feeds[i]`
    /// tokens fed to `active[i]`) and marks finished sequences.
    fn after_step(&self, active: &mut [Active], feeds: &[usize], logits: Vec<Vec<f32>>) -> Result<()> {
        for ((a, &n), mut logits) in active.iter_mut().zip(feeds).zip(logits) {
            a.pending.drain(..n);
            if !a.pending.is_empty() {
                continue;
            }
            if a.prefill.is_none() {
                a.prefill = Some(a.started.elapsed());
                if a.gpu.is_none() {
                    // The prompt's keys and values, for requests that share its head.
                    self.prefix_cache().insert(a.adapter.as_ref(), &a.context, a.cache.head(a.cache.len()));
                }
            }
            let raw = a.logprobs.is_some().then(|| logits.clone());
            let temperature = a.sampler.params().temperature;
            let token = a.sampler.sample(&mut logits, &a.context);
            if let (Some(lp), Some(mut raw)) = (&mut a.logprobs, raw) {
                if temperature > 0.0 && temperature != 1.0 {
                    raw.iter_mut().for_each(|v| *v /= temperature);
                }
                lp.push(log_prob(&raw, token));
            }
            a.context.push(token);
            a.finished = self.check_finish(a, token)?;
            if a.finished.is_none() {
                a.pending.push(token);
            }
        }
        Ok(())
    }

    fn check_finish(&self, a: &mut Active, token: u32) -> Result<Option<Completion>> {
        let params = a.sampler.params();
        let mut finish = None;
        if self.end_of_turn.contains(&token) {
            finish = Some(Finish::EndOfTurn);
        } else {
            a.generated.push(token);
        }
        let mut text = self.tokenizer.decode(&a.generated, true)?;
        a.text.clone_from(&text);
        if finish.is_none()
            && let Some(cut) = params.stop.iter().filter_map(|s| text.find(s.as_str())).min()
        {
            text.truncate(cut);
            finish = Some(Finish::Stop);
        }
        if finish.is_none() && a.generated.len() >= params.max_new_tokens {
            finish = Some(Finish::Length);
        }
        if finish.is_none() && a.context.len() >= self.model.max_positions() {
            finish = Some(Finish::Context);
        }
        Ok(finish.map(|finish| Completion {
            text,
            tokens: a.generated.clone(),
            logprobs: a.logprobs.clone(),
            finish,
            end_token: (finish == Finish::EndOfTurn).then(|| *a.context.last().unwrap_or(&0)),
            prompt_tokens: a.prompt_len,
            prefill: a.prefill.unwrap_or_default(),
            total: a.started.elapsed(),
        }))
    }
}

struct Active {
    cache: KvCache,
    /// The sequence's state on the GPU, when the runtime generates there.
    gpu: Option<CandleSeq>,
    /// Tokens still to feed: the prompt (in chunks), then the last sampled.
    pending: Vec<u32>,
    prompt_len: usize,
    context: Vec<u32>,
    generated: Vec<u32>,
    /// The generated tokens' text as of the last step (what streams out).
    text: String,
    logprobs: Option<Vec<f32>>,
    sampler: Sampler,
    adapter: Option<Arc<Adapter>>,
    started: Instant,
    prefill: Option<Duration>,
    finished: Option<Completion>,
}

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("over capacity: {queued} requests are already waiting; retry later")]
    OverCapacity { queued: usize },
    #[error("the engine has stopped")]
    Stopped,
}

#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Sequences decoded together.
    pub max_batch: usize,
    /// Requests that may wait for a slot.
    pub queue_capacity: usize,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig { max_batch: 8, queue_capacity: 64 }
    }
}

type Reply = tokio::sync::oneshot::Sender<Result<Completion>>;

/// Where a streaming request's text goes as it is generated: each message
/// is the text added since the last one.
pub type TextStream = tokio::sync::mpsc::UnboundedSender<String>;

/// A waiting request: what to do, where the completion goes, and where its
/// text streams (if it does).
type Job = (Request, Reply, Option<TextStream>);

/// A handle to the engine thread; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    tx: SyncSender<Job>,
    capacity: usize,
}

impl Engine {
    pub fn start(runtime: Arc<Runtime>, config: EngineConfig) -> Engine {
        let (tx, rx) = sync_channel(config.queue_capacity);
        let max_batch = config.max_batch.max(1);
        std::thread::Builder::new()
            .name("arena-engine".to_owned())
            .spawn(move || run_engine(&runtime, &rx, max_batch))
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!(error = %e, "cannot start the engine thread"));
        Engine { tx, capacity: config.queue_capacity }
    }

    /// Queues a request; the completion arrives on the returned channel.
    pub fn submit(&self, request: Request) -> Result<tokio::sync::oneshot::Receiver<Result<Completion>>, SubmitError> {
        self.enqueue(request, None)
    }

    /// Queues a request whose text streams as it is generated: the pieces
    /// arrive on the returned receiver (the last before the completion),
    /// the completion as with `submit`.
    #[allow(clippy::type_complexity)]
    pub fn submit_streaming(
        &self,
        request: Request,
    ) -> Result<
        (tokio::sync::mpsc::UnboundedReceiver<String>, tokio::sync::oneshot::Receiver<Result<Completion>>),
        SubmitError,
    > {
        let (text, pieces) = tokio::sync::mpsc::unbounded_channel();
        Ok((pieces, self.enqueue(request, Some(text))?))
    }

    fn enqueue(
        &self,
        request: Request,
        stream: Option<TextStream>,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<Completion>>, SubmitError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        match self.tx.try_send((request, reply, stream)) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(SubmitError::OverCapacity { queued: self.capacity }),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Stopped),
        }
    }
}

/// A streaming sequence's channel and how much of its text went out.
struct Streamed {
    to: TextStream,
    sent: usize,
    /// Bytes held back while the text grows: the longest stop string but
    /// one, so text a stop string will cut never goes out.
    hold: usize,
}

impl Streamed {
    /// Sends what `text` adds to what was sent, up to its last complete
    /// character (a byte-level token may end inside one); `last` sends all.
    fn send(&mut self, text: &str, last: bool) {
        let text = text.trim_end_matches('\u{FFFD}');
        let mut end = if last { text.len() } else { text.len().saturating_sub(self.hold) };
        while end > 0 && !text.is_char_boundary(end) {
            end -= 1;
        }
        if end > self.sent && text.is_char_boundary(self.sent) {
            let _ = self.to.send(text[self.sent..end].to_owned());
            self.sent = end;
        }
    }
}

/// Where a sequence's completion and text go.
type Outlet = (Reply, Option<Streamed>);

/// A new sequence waits (parked, outside the batch) while a sequence of the
/// same weights is still prefilling at least this many more of its prompt's
/// tokens: it then starts from that prompt's cached keys and values. This
/// is what makes a GRPO group's samples of one prompt, or a burst of
/// requests from one agent, compute their shared head once.
const PARK_MIN_GAIN: usize = 16;

fn run_engine(runtime: &Runtime, rx: &Receiver<Job>, max_batch: usize) {
    let mut active: Vec<Active> = Vec::new();
    let mut outlets: Vec<Outlet> = Vec::new();
    let mut parked: Vec<(Active, Outlet)> = Vec::new();
    loop {
        // Parked sequences whose leader has finished its prompt join the
        // batch, starting from the cache.
        let mut i = 0;
        while i < parked.len() {
            if active.iter().any(|b| runtime.gain_from_waiting(&parked[i].0, b) >= PARK_MIN_GAIN) {
                i += 1;
            } else {
                let (mut a, outlet) = parked.swap_remove(i);
                runtime.reuse_prefix(&mut a);
                active.push(a);
                outlets.push(outlet);
            }
        }
        if active.is_empty() {
            // Idle: block until work arrives (or every handle is dropped).
            match rx.recv() {
                Ok(job) => admit(runtime, job, &mut active, &mut outlets, &mut parked),
                Err(_) => return,
            }
        }
        while active.len() + parked.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => admit(runtime, job, &mut active, &mut outlets, &mut parked),
                Err(_) => break,
            }
        }
        if active.is_empty() {
            continue;
        }
        if let Err(err) = runtime.step(&mut active) {
            // A failed step fails every sequence in it, each with the cause.
            let message = err.to_string();
            for (reply, _) in outlets.drain(..) {
                let _ = reply.send(Err(RuntimeError::Request(format!("generation failed: {message}"))));
            }
            active.clear();
            continue;
        }
        let mut i = 0;
        while i < active.len() {
            if let Some(done) = active[i].finished.take() {
                let a = active.swap_remove(i);
                let (reply, stream) = outlets.swap_remove(i);
                if let Some(mut stream) = stream {
                    stream.send(&done.text, true);
                }
                let _ = reply.send(Ok(done));
                runtime.retire(a);
            } else {
                if let Some(stream) = outlets[i].1.as_mut() {
                    stream.send(&active[i].text, false);
                }
                i += 1;
            }
        }
    }
}

fn admit(
    runtime: &Runtime,
    (request, reply, stream): Job,
    active: &mut Vec<Active>,
    outlets: &mut Vec<Outlet>,
    parked: &mut Vec<(Active, Outlet)>,
) {
    let hold = request.params.stop.iter().map(|s| s.len().saturating_sub(1)).max().unwrap_or(0);
    match runtime.start(request) {
        Ok(a) => {
            let outlet = (reply, stream.map(|to| Streamed { to, sent: 0, hold }));
            if active.iter().any(|b| runtime.gain_from_waiting(&a, b) >= PARK_MIN_GAIN) {
                parked.push((a, outlet));
            } else {
                let mut a = a;
                runtime.reuse_prefix(&mut a);
                active.push(a);
                outlets.push(outlet);
            }
        }
        Err(err) => {
            let _ = reply.send(Err(err));
        }
    }
}
