//! The CUDA backend against the CPU one on the same GGUF file: the greedy
//! continuations of a few chat prompts, token for token (where they part,
//! the CPU's gap between its top two logits there, to tell a near tie from
//! a fault), and each backend's decode speed for one sequence.
//!
//!     scripts/cuda-build --example cuda_check
//!     target-cuda/release/examples/cuda_check MODEL.gguf [TOKENS]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a check run by hand: a bad argument may panic

use agent_runtime::chat::Message;
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
    let request = |text: &str| Request {
        prompt: Prompt::Chat(vec![Message::user(text)]),
        adapter: None,
        params: SamplingParams::greedy(tokens),
        logprobs: false,
    };
    let mut all_same = true;
    for text in PROMPTS {
        let a = cpu.generate(request(text)).unwrap();
        let b = gpu.generate(request(text)).unwrap();
        let same = a.tokens.iter().zip(&b.tokens).take_while(|(x, y)| x == y).count();
        let speed = |c: &agent_runtime::Completion| {
            c.tokens.len().saturating_sub(1) as f64 / (c.total - c.prefill).as_secs_f64().max(1e-9)
        };
        let mut line = format!(
            "{text:?}: {same} of {} tokens equal; decode tok/s cpu {:.1}, cuda {:.1}",
            a.tokens.len().min(b.tokens.len()),
            speed(&a),
            speed(&b)
        );
        if same < a.tokens.len().min(b.tokens.len()) {
            let mut context = cpu.prompt_tokens(&request(text).prompt).unwrap();
            context.extend(&a.tokens[..same]);
            let logits = cpu.next_token_logits(&[context]).unwrap().remove(0);
            let mut sorted = logits.clone();
            sorted.sort_by(|x, y| y.total_cmp(x));
            line += &format!("; they part where the CPU's top two logits differ by {:.3}", sorted[0] - sorted[1]);
            all_same = false;
        }
        println!("{line}\n  cpu:  {:?}\n  cuda: {:?}", a.text, b.text);
    }
    println!("{}", if all_same { "all continuations equal" } else { "some continuations part (see the gaps)" });
}
