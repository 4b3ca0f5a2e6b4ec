//! The engine's prefix cache on the real model file: what it reuses, and
//! that reuse changes no bit of any sequence (tokens and log-probabilities
//! equal those of a runtime with the cache off).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use agent_runtime::chat::Message;
use agent_runtime::lora::Adapter;
use agent_runtime::model::Target;
use agent_runtime::sampling::SamplingParams;
use agent_runtime::{Completion, Engine, EngineConfig, Prompt, Request, Runtime};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn model_path() -> PathBuf {
    std::env::var_os("ARENA_MODEL_PATH").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../.arena/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    })
}

/// A runtime with the cache on (the default) and one with it off.
fn runtimes() -> (Arc<Runtime>, Arc<Runtime>) {
    let on = Runtime::load(&model_path(), 2).unwrap();
    let off = Runtime::load(&model_path(), 2).unwrap();
    off.set_prefix_budget(0);
    (Arc::new(on), Arc::new(off))
}

const SYSTEM: &str = "You are the referee's helper in a word game played by two teams. Read the rules, \
    keep score honestly, answer in one short sentence, and never reveal the secret word before the round \
    ends. When a player breaks a rule, say which rule and stop there.";

fn chat(system: &str, turns: &[(&str, &str)], user: &str) -> Prompt {
    let mut messages = vec![Message::system(system)];
    for (u, a) in turns {
        messages.push(Message::user(*u));
        messages.push(Message::assistant(*a));
    }
    messages.push(Message::user(user));
    Prompt::Chat(messages)
}

fn request(prompt: Prompt, adapter: Option<&Path>, params: SamplingParams) -> Request {
    Request { prompt, adapter: adapter.map(Path::to_owned), params, logprobs: true }
}

fn sampled(seed: u64, n: usize) -> SamplingParams {
    SamplingParams { temperature: 0.9, top_k: 0, top_p: 1.0, max_new_tokens: n, seed, ..SamplingParams::default() }
}

fn same_bits(a: &Completion, b: &Completion, what: &str) {
    assert_eq!(a.tokens, b.tokens, "{what}: tokens");
    let bits = |c: &Completion| c.logprobs.as_ref().map(|l| l.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    assert_eq!(bits(a), bits(b), "{what}: log-probabilities");
    assert_eq!(a.finish, b.finish, "{what}: finish");
}

/// Requests sharing heads of every kind, run one after the other on the
/// cached runtime (so each finds what the earlier ones left), equal the
/// uncached runtime's bit for bit: a system prompt shared by other
/// questions, a conversation's next message (its head is the last
/// answer's own keys and values), a prompt longer than one prefill chunk
/// that shares only part of its first chunk, greedy and seeded sampling,
/// with an adapter and without.
#[test]
fn cached_heads_change_no_bit_of_any_sequence() {
    let (on, off) = runtimes();
    let dir = tempfile::tempdir().unwrap();
    let adapter = dir.path().join("a");
    Adapter::random(on.config(), &Target::ALL, 8, 41, 0.05, 0.02).save(&adapter, None).unwrap();
    let long_rules = format!("{SYSTEM} {}", "Each round has a clue, a guess and a verdict. ".repeat(30));
    let mut requests = Vec::new();
    for adapter in [None, Some(adapter.as_path())] {
        requests.push(request(chat(SYSTEM, &[], "Who keeps the score?"), adapter, SamplingParams::greedy(16)));
        requests.push(request(chat(SYSTEM, &[], "Can I say the secret word?"), adapter, sampled(7, 16)));
        requests.push(request(chat(SYSTEM, &[], "Can I say the secret word?"), adapter, sampled(8, 16)));
        requests.push(request(chat(&long_rules, &[], "How long is a round?"), adapter, SamplingParams::greedy(12)));
        requests.push(request(chat(&long_rules, &[], "What ends a round?"), adapter, sampled(3, 12)));
    }
    let mut done = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        let cached = on.generate(r.clone()).unwrap();
        let plain = off.generate(r.clone()).unwrap();
        same_bits(&cached, &plain, &format!("request {i}"));
        done.push((r.clone(), cached));
    }
    // Next messages of the first two conversations: their heads are the
    // earlier prompts with the answers as generated.
    for (r, answer) in done.iter().take(2) {
        let Prompt::Chat(messages) = &r.prompt else { unreachable!() };
        let mut next = messages.clone();
        next.push(Message::assistant(answer.text.clone()));
        next.push(Message::user("And after that?"));
        let r2 = request(Prompt::Chat(next), r.adapter.as_deref(), SamplingParams::greedy(12));
        same_bits(&on.generate(r2.clone()).unwrap(), &off.generate(r2).unwrap(), "next message");
    }
    let long = on.prompt_tokens(&requests[3].prompt).unwrap().len();
    assert!(long > agent_runtime::engine::PREFILL_CHUNK, "the long prompt spans chunks: {long} tokens");
    let s = on.prefix_stats();
    assert!(s.hits >= 8, "later requests start from cached heads: {s:?}");
    assert!(s.reused_tokens >= long as u64, "the long head is reused, not fed again: {s:?}");
    assert_eq!(off.prefix_stats().hits, 0, "a budget of 0 is off: {:?}", off.prefix_stats());
}

/// A GRPO-style group: eight samples of one prompt submitted together.
/// The prompt is computed once (the others wait for it and feed only its
/// last token); every sample equals its uncached twin.
#[test]
fn a_group_of_samples_computes_its_prompt_once() {
    let (on, off) = runtimes();
    let prompt = chat(SYSTEM, &[], "Invent a clue for the word 'lighthouse'.");
    let n = on.prompt_tokens(&prompt).unwrap().len();
    let engine = Engine::start(on.clone(), EngineConfig { max_batch: 8, queue_capacity: 16 });
    let requests: Vec<Request> = (0..8).map(|k| request(prompt.clone(), None, sampled(100 + k, 20))).collect();
    let receivers: Vec<_> = requests.iter().map(|r| engine.submit(r.clone()).unwrap()).collect();
    let together: Vec<Completion> = receivers.into_iter().map(|rx| rx.blocking_recv().unwrap().unwrap()).collect();
    for (i, (r, got)) in requests.iter().zip(&together).enumerate() {
        same_bits(got, &off.generate(r.clone()).unwrap(), &format!("sample {i}"));
    }
    let s = on.prefix_stats();
    assert_eq!(s.reused_tokens, 7 * (n as u64 - 1), "seven samples reuse all but the last prompt token: {s:?}");
    assert_eq!(s.fed_tokens, n as u64 + 7, "the prompt is fed once, then one token per sample: {s:?}");
    let distinct: std::collections::HashSet<_> = together.iter().map(|c| c.tokens.clone()).collect();
    assert!(distinct.len() > 1, "eight seeds give more than one answer");
}

/// Keys and values belong to the weights that computed them: one prompt
/// under two adapters and the base shares nothing.
#[test]
fn another_adapter_never_reuses_a_head() {
    let (on, off) = runtimes();
    let dir = tempfile::tempdir().unwrap();
    let prompt = chat(SYSTEM, &[], "Who keeps the score?");
    let mut last = on.prefix_stats();
    for seed in [None, Some(1u64), Some(2)] {
        let adapter = seed.map(|s| {
            let path = dir.path().join(format!("a{s}"));
            Adapter::random(on.config(), &Target::ALL, 8, s, 0.05, 0.02).save(&path, None).unwrap();
            path
        });
        let r = request(prompt.clone(), adapter.as_deref(), SamplingParams::greedy(8));
        same_bits(&on.generate(r.clone()).unwrap(), &off.generate(r).unwrap(), "adapter {seed:?}");
        let now = on.prefix_stats();
        assert_eq!(now.hits, last.hits, "no reuse across weights: {now:?}");
        last = now;
    }
}
