//! Best-of-N time of one forward pass per prompt length, for profiling
//! (`perf record` around it):
//!
//!     cargo run --example forward_timing -p agent-runtime -- MODEL.gguf 1,8,64,256 10
//!
//! With `ARENA_ADAPTER=r` set, every pass applies a random rank-`r`
//! adapter on all linear layers.
#![allow(clippy::unwrap_used)] // a profiling tool: a bad argument may panic

use agent_runtime::model::{Logits, SeqStep};
use std::time::Instant;
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let t = Instant::now();
    let threads = std::env::var("ARENA_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(2);
    let rt = agent_runtime::Runtime::load(std::path::Path::new(&path), threads).unwrap();
    eprintln!("load {:?}", t.elapsed());
    let ids = rt.tokenizer.encode(agent_runtime::bench::TEXT, false, false).unwrap();
    let adapter = std::env::var("ARENA_ADAPTER").ok().map(|r| {
        let targets = agent_runtime::model::Target::ALL;
        agent_runtime::lora::Adapter::random(rt.config(), &targets, r.parse().unwrap(), 7, 0.02, 0.02)
    });
    let ns: Vec<usize> = std::env::args()
        .nth(2)
        .map(|a| a.split(",").map(|x| x.parse().unwrap()).collect())
        .unwrap_or(vec![1, 8, 31, 32, 64, 128, 256]);
    let reps: usize = std::env::args().nth(3).map(|a| a.parse().unwrap()).unwrap_or(2);
    for n in ns {
        let mut best = f64::MAX;
        for _ in 0..reps {
            let mut cache = rt.model.new_cache();
            let t = Instant::now();
            rt.model
                .forward(&mut [SeqStep {
                    tokens: &ids[..n],
                    cache: &mut cache,
                    adapter: adapter.as_ref(),
                    logits: Logits::Last,
                }])
                .unwrap();
            best = best.min(t.elapsed().as_secs_f64());
        }
        eprintln!("n={n:4} best {:8.2} ms  {:7.1} tok/s", best * 1e3, n as f64 / best);
    }
}
