//! The runtime against references made once on the same model file by
//! `tests/reference/make_reference.py`: llama.cpp's token ids, and the
//! logits of a float64 forward over the file's dequantized weights.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use agent_runtime::Runtime;
use agent_runtime::model::{Logits, SeqStep};
use agent_runtime::sampling::argmax;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
struct Reference {
    model_sha256: String,
    tokenizer: Vec<TokenCase>,
    teacher_forced: TeacherForced,
    greedy: Vec<Greedy>,
}

#[derive(Deserialize)]
struct TokenCase {
    text: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct TeacherForced {
    ids: Vec<u32>,
    positions: Vec<Position>,
}

#[derive(Deserialize)]
struct Position {
    /// The reference's 20 largest logits, `[token, logit]`, best first.
    top: Vec<(u32, f64)>,
    /// The gap between its two largest logits.
    gap: f64,
}

#[derive(Deserialize)]
struct Greedy {
    prompt_ids: Vec<u32>,
    continuation: Vec<u32>,
    gaps: Vec<f64>,
}

fn model_path() -> PathBuf {
    std::env::var_os("ARENA_MODEL_PATH").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../.arena/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    })
}

fn load() -> (Runtime, Reference) {
    let data = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/smollm2_reference.json")).unwrap();
    let reference: Reference = serde_json::from_slice(&data).unwrap();
    assert_eq!(
        reference.model_sha256,
        agent_runtime::model_file::DEFAULT_MODEL.sha256,
        "reference made on another file"
    );
    (Runtime::load(&model_path(), 2).unwrap(), reference)
}

#[test]
fn token_ids_equal_llama_cpp() {
    let (rt, reference) = load();
    let mut failures = Vec::new();
    for case in &reference.tokenizer {
        let ours = rt.tokenizer.encode(&case.text, false, true).unwrap();
        if ours != case.ids {
            failures.push(format!("{:?}\n  ours:      {ours:?}\n  llama.cpp: {:?}", case.text, case.ids));
        }
        // Decoding gives the text back (special tokens included).
        assert_eq!(rt.tokenizer.decode(&case.ids, false).unwrap(), case.text);
    }
    assert!(
        failures.is_empty(),
        "{} of {} strings differ:\n{}",
        failures.len(),
        reference.tokenizer.len(),
        failures.join("\n")
    );
}

#[test]
fn teacher_forced_logits_agree_with_the_fp64_forward() {
    let (rt, reference) = load();
    let tf = &reference.teacher_forced;
    let mut cache = rt.model.new_cache();
    let logits = rt
        .model
        .forward(&mut [SeqStep { tokens: &tf.ids, cache: &mut cache, adapter: None, logits: Logits::All }])
        .unwrap()
        .remove(0);
    let vocab = rt.config().vocab;
    let (mut max_diff, mut decided, mut disagree) = (0f64, 0, Vec::new());
    for (i, pos) in tf.positions.iter().enumerate() {
        let row = &logits[i * vocab..(i + 1) * vocab];
        for &(token, value) in &pos.top {
            max_diff = max_diff.max((f64::from(row[token as usize]) - value).abs());
        }
        if pos.gap > 1.0 {
            decided += 1;
            if argmax(row) != pos.top[0].0 {
                disagree.push(i);
            }
        }
    }
    eprintln!(
        "{} positions; largest difference over the reference's top-20 logits: {max_diff:.4}; top-1 checked at {decided} positions with gap > 1.0",
        tf.positions.len()
    );
    assert!(disagree.is_empty(), "top-1 differs at positions {disagree:?}");
    assert!(max_diff < 1.0, "largest logit difference {max_diff} is too large for weight-only quantization error");
}

#[test]
fn greedy_continuations_agree_until_the_reference_is_unsure() {
    let (rt, reference) = load();
    for (g, case) in reference.greedy.iter().enumerate() {
        let mut cache = rt.model.new_cache();
        let mut feed = case.prompt_ids.clone();
        let mut ours = Vec::new();
        for _ in 0..case.continuation.len() {
            let logits = rt
                .model
                .forward(&mut [SeqStep { tokens: &feed, cache: &mut cache, adapter: None, logits: Logits::Last }])
                .unwrap();
            let next = argmax(&logits[0]);
            ours.push(next);
            feed = vec![next];
        }
        // The rule: agree until the reference's top-two gap drops
        // below 1.0. Our logits sit within 0.01 of the reference (see the
        // teacher-forced test), so we also hold ourselves to agreeing until
        // the gap drops below 0.1 — ten times that error.
        let until = |limit: f64| case.gaps.iter().position(|&gap| gap < limit).unwrap_or(case.gaps.len());
        let (sure, close) = (until(1.0), until(0.1));
        let same = ours.iter().zip(&case.continuation).take_while(|(a, b)| a == b).count();
        eprintln!(
            "prompt {g}: {same} of {} greedy tokens equal the reference's; gap >= 1.0 for {sure}, >= 0.1 for {close}",
            case.gaps.len()
        );
        assert!(same >= close.max(sure), "prompt {g}: ours {ours:?}, reference {:?}", case.continuation);
    }
}

#[derive(Deserialize)]
struct TinyModels {
    models: Vec<TinyModel>,
}

#[derive(Deserialize)]
struct TinyModel {
    file: String,
    sha256: String,
    ids: Vec<u32>,
    /// llama.cpp's token ids for a few strings.
    tokenizer: Vec<TokenCase>,
    /// The float64 forward's logits at every position.
    logits: Vec<Vec<f64>>,
    llama_cpp_max_diff: f64,
}

/// Two other llama-family layouts than the default model's, as tiny random
/// GGUF files made by `tests/reference/make_tiny_models.py` (which checked
/// that llama.cpp reads them as its float64 forward does): Llama with
/// grouped-query attention, an untied Q8_0 output, Q4_0 weights and Llama
/// 3's rope base; Qwen2 with q/k/v biases, NeoX rope, tied embeddings and
/// Q4_1 weights; Llama with a SentencePiece vocabulary (TinyLlama's kind)
/// and Q8_0 weights. Token ids equal llama.cpp's; the prompt path (all ids at
/// once) and the decode path (the last ten one at a time) both agree with
/// the reference.
#[test]
fn tiny_models_of_other_layouts_agree_with_the_fp64_forward() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let reference: TinyModels =
        serde_json::from_slice(&std::fs::read(dir.join("tiny_models_reference.json")).unwrap()).unwrap();
    assert_eq!(reference.models.len(), 3);
    for m in &reference.models {
        let path = dir.join(&m.file);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)), m.sha256, "{} changed", m.file);
        let rt = Runtime::load(&path, 2).unwrap();
        for case in &m.tokenizer {
            assert_eq!(rt.tokenizer.encode(&case.text, false, true).unwrap(), case.ids, "{}: {:?}", m.file, case.text);
        }
        let vocab = rt.config().vocab;
        assert_eq!(vocab, m.logits[0].len());
        let n = m.ids.len();
        // All at once, then the first n - 10 as a prompt and the rest one by one.
        let mut cache = rt.model.new_cache();
        let all = rt
            .model
            .forward(&mut [SeqStep { tokens: &m.ids, cache: &mut cache, adapter: None, logits: Logits::All }])
            .unwrap()
            .remove(0);
        let mut stepped = Vec::new();
        let mut cache = rt.model.new_cache();
        let split = n - 10;
        stepped.extend(
            rt.model
                .forward(&mut [SeqStep {
                    tokens: &m.ids[..split],
                    cache: &mut cache,
                    adapter: None,
                    logits: Logits::All,
                }])
                .unwrap()
                .remove(0),
        );
        for id in &m.ids[split..] {
            let step = [*id];
            let mut batch = [SeqStep { tokens: &step, cache: &mut cache, adapter: None, logits: Logits::Last }];
            stepped.extend(rt.model.forward(&mut batch).unwrap().remove(0));
        }
        let scale = m.logits.iter().flatten().fold(0f64, |a, v| a.max(v.abs()));
        // The candle forward (the CUDA backend's), on candle's CPU device:
        // the prompt, then the last ten one at a time, logits after each.
        let candle = agent_runtime::candle_backend::CandleModel::load(
            &mut agent_runtime::gguf::Gguf::open(&path).unwrap(),
            candle_core::Device::Cpu,
        )
        .unwrap();
        let mut seq = candle.new_seq(None).unwrap();
        let mut candle_diff = 0f64;
        let mut check = |logits: Vec<f32>, i: usize| {
            for (a, b) in logits.iter().zip(&m.logits[i]) {
                candle_diff = candle_diff.max((f64::from(*a) - b).abs());
            }
        };
        check(candle.forward(&mut seq, &m.ids[..split]).unwrap(), split - 1);
        for i in split..n {
            check(candle.forward(&mut seq, &m.ids[i..i + 1]).unwrap(), i);
        }
        eprintln!("{} (candle forward): largest logit difference {candle_diff:.4}", m.file);
        assert!(candle_diff < 0.001 * scale, "{}: the candle forward differs by {candle_diff}", m.file);
        for (path_name, ours) in [("prompt", &all), ("decode", &stepped)] {
            let (mut max_diff, mut disagree) = (0f64, Vec::new());
            for (i, row_ref) in m.logits.iter().enumerate() {
                let row = &ours[i * vocab..(i + 1) * vocab];
                for (a, b) in row.iter().zip(row_ref) {
                    max_diff = max_diff.max((f64::from(*a) - b).abs());
                }
                let mut sorted = row_ref.clone();
                sorted.sort_by(f64::total_cmp);
                let best = row_ref.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
                if sorted[vocab - 1] - sorted[vocab - 2] > 0.01 * scale && argmax(row) as usize != best {
                    disagree.push(i);
                }
            }
            eprintln!(
                "{} ({path_name}): largest logit difference {max_diff:.4} of max |logit| {scale:.2} (llama.cpp: {:.4})",
                m.file, m.llama_cpp_max_diff
            );
            assert!(disagree.is_empty(), "{} ({path_name}): top-1 differs at {disagree:?}", m.file);
            assert!(max_diff < 0.01 * scale, "{} ({path_name}): logits differ by {max_diff}", m.file);
        }
    }
}
