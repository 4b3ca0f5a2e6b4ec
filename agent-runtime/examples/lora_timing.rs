//! The LoRA kernels alone, on one thread: milliseconds per decode step of
//! 8 rows for the down-projections (`Adapter::down`) and the
//! up-projections (`Adapter::up`) over every layer and target, with
//! 8 distinct rank-16 adapters (one row each: their factors stream from
//! memory), one shared adapter (two tiles of 4 rows), and one adapter split
//! like the distinct case (8 one-row calls on factors hot in cache: the
//! arithmetic's floor for the distinct layout). With `flush`, 200 MB are
//! read between steps, as the base weights are in a real step.
//!
//!     cargo run --release --example lora_timing -p agent-runtime -- MODEL.gguf
#![allow(clippy::unwrap_used)] // a profiling tool: a bad argument may panic

use agent_runtime::lora::Adapter;
use agent_runtime::model::Target;
use agent_runtime::quant::QActs;
use std::time::Instant;

fn main() {
    let path = std::env::args().nth(1).unwrap();
    let rt = agent_runtime::Runtime::load(std::path::Path::new(&path), 1).unwrap();
    let c = rt.config().clone();
    let adapters: Vec<Adapter> = (0..8).map(|i| Adapter::random(&c, &Target::ALL, 16, 1000 + i, 0.02, 0.02)).collect();
    let evict: Vec<u8> = (0..200_000_000u32).map(|i| i as u8).collect();
    let mut sink = 0u64;
    let acts = |cols: usize| {
        let x: Vec<f32> = (0..8 * cols).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let mut q = QActs::default();
        q.quantize(&x, 8, cols);
        q
    };
    let (acts_hidden, acts_ffn) = (acts(c.hidden), acts(c.ffn));
    let width = Target::ALL.iter().map(|t| t.shape(&c).0).max().unwrap();
    let mut out = vec![0f32; 8 * width];
    let steps = 20;
    for mode in ["distinct", "shared", "split", "distinct", "shared", "split"] {
        let groups: Vec<(&Adapter, Vec<usize>)> = match mode {
            "distinct" => adapters.iter().enumerate().map(|(i, a)| (a, vec![i])).collect(),
            "split" => (0..8).map(|i| (&adapters[0], vec![i])).collect(),
            _ => vec![(&adapters[0], (0..4).collect()), (&adapters[0], (4..8).collect())],
        };
        for flush in [true, false] {
            let (mut down, mut up) = (0f64, 0f64);
            for _ in 0..steps {
                if flush {
                    sink += evict.iter().step_by(64).map(|&b| u64::from(b)).sum::<u64>();
                }
                for layer in 0..c.n_layers {
                    for target in Target::ALL {
                        let acts = if target == Target::Down { &acts_ffn } else { &acts_hidden };
                        for (a, rows) in &groups {
                            let mut t = vec![0f32; rows.len() * a.rank];
                            let start = Instant::now();
                            a.down(layer, target, acts, rows, &mut t);
                            let mid = Instant::now();
                            // SAFETY: `out` holds 8 rows of `width`
                            // columns, and nothing else writes it.
                            unsafe { a.up(layer, target, &t, rows, 0..a.out_dim(target), out.as_mut_ptr(), width, 0) };
                            down += (mid - start).as_secs_f64();
                            up += mid.elapsed().as_secs_f64();
                        }
                    }
                }
            }
            let ms = |s: f64| s * 1e3 / steps as f64;
            println!("{mode:8} flush={flush:5}: per step down {:.3} ms, up {:.3} ms", ms(down), ms(up));
        }
    }
    std::hint::black_box(sink);
}
