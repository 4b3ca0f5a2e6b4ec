//! The rollout audit on the real model file: honest rollouts — sampled,
//! greedy, with stop strings, long prompts, distinct adapters in one batch,
//! on one and two threads — replay bit for bit on each kernel path; every
//! way of cheating the open workers' issue names is caught.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use agent_runtime::audit::{Claim, Fault, Tier};
use agent_runtime::chat::Message;
use agent_runtime::lora::Adapter;
use agent_runtime::model::Target;
use agent_runtime::sampling::SamplingParams;
use agent_runtime::{Completion, Engine, EngineConfig, Finish, Prompt, Request, Runtime};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn model_path() -> PathBuf {
    std::env::var_os("ARENA_MODEL_PATH").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../.arena/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    })
}

fn random_adapter(rt: &Runtime, seed: u64, b_scale: f32) -> Adapter {
    Adapter::random(rt.config(), &Target::ALL, 8, seed, 0.05, b_scale)
}

const LONG: &str = "You are a careful assistant for a small library in a quiet town. You answer questions about \
opening hours, the catalogue, inter-library loans, printing, the reading room, the children's corner, late fees, \
lost cards, donations, volunteering, the local history archive, the microfilm reader, the quiet study rooms, the \
community notice board, the book club that meets on Thursdays, the summer reading challenge, the e-book service, \
audiobooks, large-print books, the home delivery service for readers who cannot come in, the wifi password policy, \
accessibility, parking, bicycles, lockers, lost property, photography rules, food and drink, and the fire exits. ";

fn claim<'a>(prompt: &'a [u32], c: &'a Completion, params: &'a SamplingParams) -> Claim<'a> {
    Claim {
        prompt,
        tokens: &c.tokens,
        logprobs: c.logprobs.as_deref().unwrap_or(&[]),
        finish: c.finish,
        end_token: c.end_token,
        params,
    }
}

/// Honest rollouts of `path`'s kernels, generated in a batch of distinct
/// adapters on two threads and alone on one thread, replayed exactly.
fn honest_rollouts_replay_exactly(path: agent_runtime::quant::Kernels) {
    use agent_runtime::quant;
    if !path.available() {
        eprintln!("this CPU cannot run the {} kernels: nothing to check", path.name());
        return;
    }
    quant::force(path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let one = Arc::new(Runtime::load(&model_path(), 1).unwrap());
    let two = Arc::new(Runtime::load(&model_path(), 2).unwrap());
    let questions = [
        "What is the capital of France?",
        "Write a haiku about rain.",
        "Explain photosynthesis to a child.",
        "List three prime numbers.",
        "Why do cats purr?",
        "Give me a recipe for pancakes.",
    ];
    let mut requests = Vec::new();
    for (i, q) in questions.iter().enumerate() {
        let adapter = (i % 3 != 2).then(|| {
            let d = dir.path().join(format!("a{i}"));
            random_adapter(&one, 40 + i as u64, 0.03).save(&d, None).unwrap();
            d
        });
        let system = if i == 0 { LONG.repeat(2) } else { "Be brief.".to_owned() };
        let params = match i % 3 {
            0 => SamplingParams {
                temperature: 0.8,
                top_k: 40,
                top_p: 0.9,
                max_new_tokens: 40,
                seed: 7 + i as u64,
                ..Default::default()
            },
            1 => SamplingParams {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                repetition_penalty: 1.1,
                max_new_tokens: 40,
                seed: 99,
                stop: vec![".".into()],
                ..Default::default()
            },
            _ => SamplingParams::greedy(24),
        };
        requests.push(Request {
            prompt: Prompt::Chat(vec![Message::system(&system), Message::user(*q)]),
            adapter,
            params,
            logprobs: true,
        });
    }
    let prompt_len = two.prompt_tokens(&requests[0].prompt).unwrap().len();
    assert!(prompt_len > agent_runtime::engine::PREFILL_CHUNK, "the long prompt spans prefill chunks ({prompt_len})");
    let engine = Engine::start(two.clone(), EngineConfig { max_batch: 4, queue_capacity: 16 });
    let batched: Vec<Completion> = requests
        .iter()
        .map(|r| engine.submit(r.clone()).unwrap())
        .collect::<Vec<_>>()
        .into_iter()
        .map(|rx| rx.blocking_recv().unwrap().unwrap())
        .collect();
    let mut finishes = std::collections::BTreeSet::new();
    let mut positions = 0;
    for (r, done) in requests.iter().zip(&batched) {
        let alone = one.generate(r.clone()).unwrap();
        assert_eq!((&alone.tokens, &alone.logprobs), (&done.tokens, &done.logprobs), "one thread alone vs batch");
        let prompt = two.prompt_tokens(&r.prompt).unwrap();
        let adapter = r.adapter.as_ref().map(|d| two.adapter(d).unwrap());
        let replay = two.replay(&claim(&prompt, done, &r.params), adapter.as_deref(), Tier::Exact).unwrap();
        assert_eq!(replay.fault, None, "an honest rollout ({:?}) was rejected", done.finish);
        assert_eq!(replay.max_logprob_diff, 0.0);
        positions += replay.positions;
        finishes.insert(format!("{:?}", done.finish));
    }
    eprintln!("{}: {positions} positions replayed bit for bit; finishes {finishes:?}", path.name());
    assert!(finishes.len() >= 2, "the rollouts end in more than one way: {finishes:?}");
}

#[test]
fn honest_rollouts_replay_bit_for_bit_on_the_scalar_kernels() {
    honest_rollouts_replay_exactly(agent_runtime::quant::Kernels::Scalar);
}

#[test]
fn honest_rollouts_replay_bit_for_bit_on_the_avx2_kernels() {
    honest_rollouts_replay_exactly(agent_runtime::quant::Kernels::Avx2);
}

#[test]
fn honest_rollouts_replay_bit_for_bit_on_the_avx512_kernels() {
    honest_rollouts_replay_exactly(agent_runtime::quant::Kernels::Avx512);
}

/// Every cheat of the open-worker issue's list, made by hand from an honest
/// rollout, is caught by the exact replay, each for its own reason.
#[test]
fn every_kind_of_cheat_is_caught() {
    let rt = Runtime::load(&model_path(), 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mine, other) = (dir.path().join("mine"), dir.path().join("other"));
    random_adapter(&rt, 1, 0.05).save(&mine, None).unwrap();
    random_adapter(&rt, 2, 0.05).save(&other, None).unwrap();
    let adapter = rt.adapter(&mine).unwrap();
    let params = SamplingParams { temperature: 0.7, max_new_tokens: 48, seed: 1234, ..Default::default() };
    let prompt = rt.prompt_tokens(&Prompt::Chat(vec![Message::user("Tell me about the moon.")])).unwrap();
    let run = |adapter: Option<PathBuf>, params: SamplingParams| {
        rt.generate(Request { prompt: Prompt::Tokens(prompt.clone()), adapter, params, logprobs: true }).unwrap()
    };
    let honest = run(Some(mine.clone()), params.clone());
    assert!(honest.tokens.len() >= 16, "a long enough rollout to edit");
    let check = |c: &Completion| rt.replay(&claim(&prompt, c, &params), Some(&adapter), Tier::Exact).unwrap().fault;
    assert_eq!(check(&honest), None);

    let mut caught: Vec<(&str, Fault)> = Vec::new();
    let mut expect = |name: &'static str, c: Completion| {
        let fault = check(&c).unwrap_or_else(|| panic!("{name} was not caught"));
        caught.push((name, fault));
    };
    // Another adapter, none at all, another seed (a replayed or re-rolled
    // answer), another temperature, greedy decoding.
    expect("other-adapter", run(Some(other.clone()), params.clone()));
    expect("drop-adapter", run(None, params.clone()));
    expect("replay", run(Some(mine.clone()), SamplingParams { seed: 4321, ..params.clone() }));
    expect("temperature", run(Some(mine.clone()), SamplingParams { temperature: 1.0, ..params.clone() }));
    expect("greedy", run(Some(mine.clone()), SamplingParams::greedy(48)));
    // Prefill attack: generated without the adapter, log-probs reported
    // with it.
    let mut attack = run(None, params.clone());
    let mut lp = rt.completion_logprobs(&prompt, &attack.tokens, Some(&adapter)).unwrap();
    if let Some(end) = attack.end_token {
        let mut with_end = attack.tokens.clone();
        with_end.push(end);
        lp = rt.completion_logprobs(&prompt, &with_end, Some(&adapter)).unwrap();
    }
    attack.logprobs = Some(lp);
    expect("prefill-attack", attack);
    // Edited tokens: one substituted, one inserted, one deleted; text
    // appended; the answer cut short and called finished.
    let edit = |f: &dyn Fn(&mut Vec<u32>, &mut Vec<f32>)| {
        let mut c = honest.clone();
        let mut lp = c.logprobs.clone().unwrap();
        f(&mut c.tokens, &mut lp);
        c.logprobs = Some(lp);
        c
    };
    expect("edit-tokens (substitute)", edit(&|t, _| t[5] = if t[5] == 100 { 101 } else { 100 }));
    expect(
        "edit-tokens (insert)",
        edit(&|t, lp| {
            t.insert(5, 100);
            lp.insert(5, -1.0);
        }),
    );
    expect(
        "edit-tokens (delete)",
        edit(&|t, lp| {
            t.remove(5);
            lp.remove(5);
        }),
    );
    let mut appended = honest.clone();
    appended.tokens.extend(rt.tokenizer.encode(" Buy now!", false, false).unwrap());
    appended.logprobs = Some(vec![-0.5; appended.tokens.len() + usize::from(appended.end_token.is_some())]);
    expect("edit-tokens (append)", appended);
    let mut cut = honest.clone();
    cut.tokens.truncate(8);
    cut.finish = Finish::EndOfTurn;
    cut.end_token = Some(rt.end_of_turn()[0]);
    cut.logprobs = Some(honest.logprobs.clone().unwrap()[..9].to_vec());
    expect("truncate (as an end of turn)", cut.clone());
    cut.finish = Finish::Length;
    cut.end_token = None;
    cut.logprobs = Some(honest.logprobs.clone().unwrap()[..8].to_vec());
    expect("truncate (as the length limit)", cut);
    let mut bad = honest.clone();
    bad.logprobs.as_mut().unwrap()[3] = f32::NAN;
    expect("a log-probability that is not a number", bad);

    for (name, fault) in &caught {
        eprintln!("{name:<36} {fault}");
    }
    // The tolerant tier (another recipe's worker, the server's limits)
    // still passes the honest rollout and catches the same cheats.
    let tolerant = Tier::Tolerant { logprob: 0.004, near_tie: 0.094, max_near_ties: 4 };
    let loose = |c: &Completion| rt.replay(&claim(&prompt, c, &params), Some(&adapter), tolerant).unwrap();
    assert_eq!(loose(&honest).fault, None);
    assert!(loose(&run(None, params.clone())).fault.is_some(), "drop-adapter in the tolerant tier");
    assert!(loose(&run(Some(mine.clone()), SamplingParams { seed: 4321, ..params.clone() })).fault.is_some(), "replay");
    let reasons = |name: &str| caught.iter().find(|(n, _)| *n == name).map(|(_, f)| f.clone()).unwrap();
    assert!(matches!(reasons("drop-adapter"), Fault::Token { .. } | Fault::Logprob { .. }));
    assert!(matches!(reasons("truncate (as the length limit)"), Fault::Stop { .. }));
    assert!(matches!(reasons("a log-probability that is not a number"), Fault::Malformed { .. }));
}
