//! Aggregate tok/s of 8 sequences decoding together, with 8 distinct
//! rank-16 adapters, one shared adapter and none, for profiling the batched
//! path (`perf record` around it) without the whole `arena model bench`:
//!
//!     cargo run --release --example batch_timing -p agent-runtime -- MODEL.gguf [STEPS] [REPS] [MODES]
//!
//! MODES is a comma list of `distinct`, `shared`, `none` (8 sequences)
//! and `one` (one sequence, no adapter); default the first three.
#![allow(clippy::unwrap_used)] // a profiling tool: a bad argument may panic

use agent_runtime::bench::{batched_decode, inputs};
use agent_runtime::lora::Adapter;
use agent_runtime::model::Target;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap();
    let steps: usize = args.next().map(|a| a.parse().unwrap()).unwrap_or(64);
    let reps: usize = args.next().map(|a| a.parse().unwrap()).unwrap_or(3);
    let modes = args.next().unwrap_or_else(|| "distinct,shared,none".to_owned());
    let threads = std::env::var("ARENA_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(2);
    let rt = agent_runtime::Runtime::load(std::path::Path::new(&path), threads).unwrap();
    let prompts = inputs(&rt).unwrap().decode_prompts;
    let c = rt.config();
    let adapters: Vec<Adapter> = (0..8).map(|i| Adapter::random(c, &Target::ALL, 16, 1000 + i, 0.02, 0.02)).collect();
    // Modes interleaved, so drift in the machine's speed hits all alike.
    let modes: Vec<&str> = modes.split(',').collect();
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for rep in 0..reps {
        // Each repetition starts one mode further on (see the bench).
        for k in 0..modes.len() {
            let m = (rep + k) % modes.len();
            let (mode, runs) = (modes[m], &mut runs[m]);
            let chosen: Vec<Option<&Adapter>> = match mode {
                "distinct" => adapters.iter().map(Some).collect(),
                "shared" => vec![Some(&adapters[0]); 8],
                "none" => vec![None; 8],
                "one" => vec![None],
                other => panic!("unknown mode {other}"),
            };
            let n = chosen.len();
            runs.push(n as f64 * steps as f64 / batched_decode(&rt, &prompts[..n], &chosen, steps).unwrap());
        }
    }
    // Each repetition's ratio to the first mode: neighbours in time, so
    // the machine's drift mostly cancels.
    for (mode, other) in modes.iter().zip(&runs).skip(1) {
        let mut ratios: Vec<f64> = runs[0].iter().zip(other).map(|(a, b)| a / b).collect();
        ratios.sort_by(f64::total_cmp);
        println!("{} / {mode}: median ratio {:.3}", modes[0], ratios[ratios.len() / 2]);
    }
    for (mode, mut runs) in modes.iter().zip(runs) {
        runs.sort_by(f64::total_cmp);
        let all: Vec<String> = runs.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "{mode:9} tok/s best {:.1} median {:.1}  [{}]",
            runs[runs.len() - 1],
            runs[runs.len() / 2],
            all.join(" ")
        );
    }
}
