//! The CUDA backend against the CPU one on the same GGUF file: the greedy
//! continuations of a few chat prompts, one with a random rank-16 adapter,
//! token for token (where they part,
//! the CPU's gap between its top two logits there, to tell a near tie from
//! a fault), and each backend's decode speed for one sequence.
//!
//!     scripts/cuda-build --example cuda_check
//!     target-cuda/release/examples/cuda_check MODEL.gguf [TOKENS]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a check run by hand: a bad argument may panic

use agent_runtime::chat::Message;
use agent_runtime::model::{Logits, SeqStep};
use agent_runtime::sampling::SamplingParams;
use agent_runtime::{Backend, Prompt, Request, Runtime};

const PROMPTS: [&str; 3] = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers and explain why they are prime.",
];

fn main() {
    let mut args = std::env::args().skip(1);
    let path = std::path::PathBuf::from(args.next().expect("MODEL.gguf"));
    let tokens: usize = args.next().map(|a| a.parse().unwrap()).unwrap_or(48);
    let cpu = Runtime::load(&path, 2).unwrap();
    let gpu = Runtime::load_on(&path, 2, Backend::Cuda(0)).unwrap();
    // A random rank-16 adapter on every linear layer, saved in the PEFT
    // layout, for the last run.
    let dir = tempfile::tempdir().unwrap();
    let targets = agent_runtime::model::Target::ALL;
    agent_runtime::lora::Adapter::random(cpu.config(), &targets, 16, 5, 0.05, 0.05).save(dir.path(), None).unwrap();
    let request = |text: &str, adapter: bool| Request {
        prompt: Prompt::Chat(vec![Message::user(text)]),
        adapter: adapter.then(|| dir.path().to_owned()),
        params: SamplingParams::greedy(tokens),
        logprobs: false,
    };
    let mut all_same = true;
    for (text, adapter) in PROMPTS.iter().map(|&p| (p, false)).chain([(PROMPTS[0], true)]) {
        let a = cpu.generate(request(text, adapter)).unwrap();
        let b = gpu.generate(request(text, adapter)).unwrap();
        let same = a.tokens.iter().zip(&b.tokens).take_while(|(x, y)| x == y).count();
        let speed = |c: &agent_runtime::Completion| {
            c.tokens.len().saturating_sub(1) as f64 / (c.total - c.prefill).as_secs_f64().max(1e-9)
        };
        let mut line = format!(
            "{text:?}{}: {same} of {} tokens equal; decode tok/s cpu {:.1}, cuda {:.1}",
            if adapter { " (rank-16 adapter)" } else { "" },
            a.tokens.len().min(b.tokens.len()),
            speed(&a),
            speed(&b)
        );
        if same < a.tokens.len().min(b.tokens.len()) {
            let mut context = cpu.prompt_tokens(&request(text, adapter).prompt).unwrap();
            context.extend(&a.tokens[..same]);
            let lora = adapter.then(|| cpu.adapter(dir.path()).unwrap());
            let mut cache = cpu.model.new_cache();
            let logits = cpu
                .model
                .forward(&mut [SeqStep {
                    tokens: &context,
                    cache: &mut cache,
                    adapter: lora.as_deref(),
                    logits: Logits::Last,
                }])
                .unwrap()
                .remove(0);
            let mut sorted = logits.clone();
            sorted.sort_by(|x, y| y.total_cmp(x));
            line += &format!("; they part where the CPU's top two logits differ by {:.3}", sorted[0] - sorted[1]);
            all_same = false;
        }
        println!("{line}\n  cpu:  {:?}\n  cuda: {:?}", a.text, b.text);
    }
    println!("{}", if all_same { "all continuations equal" } else { "some continuations part (see the gaps)" });
}
