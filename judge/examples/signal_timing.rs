//! Times each part of the combined judge's reading of one two-candidate
//! match on the real model files (a profiling aid; the benchmark is
//! `arena judge calibrate --answers`).
//!
//!     cargo run --release -p judge --example signal_timing

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::Instant;

fn main() {
    let model_path = std::path::PathBuf::from(std::env::var("ARENA_MODEL_PATH").unwrap());
    let model = judge::JudgeModel::load(&model_path, 2).unwrap();
    let emb = judge::Embedder::load(&judge::embed::default_dir(&model_path)).unwrap();
    let q = "Explain to a curious twelve-year-old, in at most three sentences: Why is the sky blue?";
    let a = "Sunlight is made of many colours. Air molecules scatter blue light much more than red light, so blue light reaches our eyes from every direction of the sky.";
    let b = "The sky is blue because it reflects the colour of the ocean, which is blue because of the fish that live there and the way the water moves.";
    let long: Vec<u32> = model.tokens(&format!("{a} {b} {a} {b} {a} {b} {a} {b} {a} {b}"))[..256].to_vec();
    for _ in 0..3 {
        let t = Instant::now();
        model.runtime.next_token_logits(std::slice::from_ref(&long)).unwrap();
        let last = t.elapsed().as_secs_f64();
        let t = Instant::now();
        model.runtime.score_batch(&[(long[..1].to_vec(), long[1..].to_vec())]).unwrap();
        let all = t.elapsed().as_secs_f64();
        let t = Instant::now();
        model.runtime.score_batch(&[(long[..255].to_vec(), long[255..].to_vec())]).unwrap();
        let none = t.elapsed().as_secs_f64();
        println!("256 tokens: last-only {last:.3} s, all scored {all:.3} s, 1 scored {none:.3} s");
    }
    for _ in 0..3 {
        let t = Instant::now();
        let input = judge::signals::SignalInput { question: q, reference: None, answers: &[a, b] };
        judge::signals::compute(&model, None, None, &input).unwrap();
        let lik = t.elapsed().as_secs_f64();
        let t = Instant::now();
        emb.embed(&[q, a, b]).unwrap();
        let e = t.elapsed().as_secs_f64();
        let t = Instant::now();
        model.pairwise(q, "The better answer is correct.", &[(a, b), (b, a)], "abcd1234", true).unwrap();
        let p = t.elapsed().as_secs_f64();
        let head = model.chat_head(q).unwrap();
        let tok = model.tokens(a);
        let t = Instant::now();
        model.runtime.score_batch(&[(head.clone(), tok.clone())]).unwrap();
        let one = t.elapsed().as_secs_f64();
        println!(
            "likelihood {lik:.3} s, embeddings {e:.3} s, pairwise {p:.3} s; one item ({} + {} tokens) {one:.3} s",
            head.len(),
            tok.len()
        );
    }
}
