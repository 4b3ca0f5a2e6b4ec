//! The trainer on the real model file: its forward against the runtime's,
//! learning on a fixed batch and on a synthetic preference, bit-identical
//! reruns, and manifests that replay (or name what changed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use agent_runtime::Runtime;
use agent_runtime::chat::Message;
use agent_runtime::train::manifest::{self, RunFiles};
use agent_runtime::train::pairs::PreferencePair;
use agent_runtime::train::{Base, Example, Run, Seq, Storage, TrainConfig, prepare, sequence_logprobs};
use std::path::{Path, PathBuf};

fn model_path() -> PathBuf {
    std::env::var_os("ARENA_MODEL_PATH").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../.arena/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    })
}

fn runtime() -> Runtime {
    Runtime::load(&model_path(), 2).unwrap()
}

fn pair(prompt: &str, chosen: &str, rejected: &str, line: usize) -> PreferencePair {
    PreferencePair {
        prompt: prompt.to_owned(),
        chosen: chosen.to_owned(),
        rejected: rejected.to_owned(),
        system: None,
        id: Some(format!("p{line}")),
        line,
    }
}

/// Short arithmetic questions where the chosen answer is the right number
/// and the rejected one a wrong number.
fn arithmetic(range: std::ops::Range<usize>) -> Vec<PreferencePair> {
    range
        .map(|i| {
            let (a, b) = (3 + i * 7 % 23, 2 + i * 5 % 17);
            pair(
                &format!("What is {a} + {b}? Answer with the number only."),
                &format!("{}", a + b),
                &format!("{}", a + b + 3 + i % 4),
                i + 1,
            )
        })
        .collect()
}

fn small_config() -> TrainConfig {
    TrainConfig {
        rank: 8,
        alpha: 16.0,
        target_modules: ["q_proj", "v_proj", "o_proj", "down_proj"].map(String::from).to_vec(),
        learning_rate: 2e-3,
        batch_size: 2,
        max_length: 96,
        max_prompt_length: 64,
        threads: 2,
        ..TrainConfig::default()
    }
}

#[test]
fn the_trainers_forward_agrees_with_the_runtimes() {
    let rt = runtime();
    let base = Base::new(&rt.model, Storage::Dense, 2);
    let prompt = rt
        .prompt_tokens(&agent_runtime::Prompt::Chat(vec![Message::user("Name three colours of the rainbow.")]))
        .unwrap();
    let answer = rt.tokenizer.encode("Red, orange and yellow are three of them.", false, false).unwrap();
    let ours = rt.completion_logprobs(&prompt, &answer, None).unwrap();
    let mut tokens = prompt.clone();
    tokens.extend(&answer);
    let trainer = sequence_logprobs(&base, None, &[Seq { tokens, scored_from: prompt.len() }])[0];
    let runtime_sum: f64 = ours.iter().map(|&v| f64::from(v)).sum();
    // The runtime quantizes activations to 8 bits; the trainer runs f32
    // over the same dequantized weights.
    let diff = (trainer - runtime_sum).abs();
    eprintln!("log-likelihood: trainer {trainer:.3}, runtime {runtime_sum:.3} over {} tokens", answer.len());
    assert!(diff < 0.1 * runtime_sum.abs() + 1.0, "trainer {trainer} vs runtime {runtime_sum}");
}

/// The runtime's LoRA path (f16 factors, blocked for its kernels) applies
/// an adapter as the trainer's f32 forward does — and the adapter moves the
/// answer's likelihood by far more than the two forwards differ.
#[test]
fn the_unmerged_adapter_equals_merged_weights() {
    use agent_runtime::lora::Adapter;
    use agent_runtime::model::Target;
    let rt = runtime();
    let adapter = Adapter::random(rt.config(), &Target::ALL, 16, 12, 0.1, 0.1);
    // The reference: every weight dequantized to f32 and W + (alpha/r)·B·A
    // added in f32, run with no LoRA at all.
    let mut merged = Base::new(&rt.model, Storage::Dense, 2);
    merged.merge(&adapter).unwrap();
    let plain = Base::new(&rt.model, Storage::Dense, 2);
    let prompt = rt
        .prompt_tokens(&agent_runtime::Prompt::Chat(vec![Message::user("Describe a lighthouse in one sentence.")]))
        .unwrap();
    let answer = rt.tokenizer.encode("A tall white tower whose light guides ships at night.", false, false).unwrap();
    // Per answer token, as log-probabilities.
    let reference = |base: &Base<'_>| -> Vec<f64> {
        let seqs: Vec<Seq> = (0..answer.len())
            .map(|k| {
                let mut tokens = prompt.clone();
                tokens.extend(&answer[..=k]);
                Seq { scored_from: tokens.len() - 1, tokens }
            })
            .collect();
        sequence_logprobs(base, None, &seqs)
    };
    let want = reference(&merged);
    let without = reference(&plain);
    let got: Vec<f64> =
        rt.completion_logprobs(&prompt, &answer, Some(&adapter)).unwrap().iter().map(|&v| f64::from(v)).collect();
    let base_only: Vec<f64> =
        rt.completion_logprobs(&prompt, &answer, None).unwrap().iter().map(|&v| f64::from(v)).collect();
    let largest = |a: &[f64], b: &[f64]| a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    let moved = largest(&want, &without);
    let diff = largest(&got, &want);
    let base_diff = largest(&base_only, &without);
    eprintln!(
        "per-token log-prob, largest difference: unmerged runtime vs merged f32 {diff:.4} \
         (the base alone: {base_diff:.4}); the adapter moves a token by up to {moved:.3}"
    );
    assert!(moved > 1.0, "the adapter should move the answer's tokens: {moved}");
    assert!(diff < 0.05 * moved, "unmerged {got:?} vs merged {want:?}");
}

#[test]
fn the_runtime_applies_an_adapter_as_the_trainer_does() {
    use agent_runtime::lora::Adapter;
    use agent_runtime::model::Target;
    let rt = runtime();
    let adapter = Adapter::random(rt.config(), &Target::ALL, 8, 11, 0.1, 0.1);
    let lora = agent_runtime::train::from_adapter(&adapter, rt.config()).unwrap();
    let base = Base::new(&rt.model, Storage::Dense, 2);
    let prompt = rt
        .prompt_tokens(&agent_runtime::Prompt::Chat(vec![Message::user("Name three colours of the rainbow.")]))
        .unwrap();
    let answer = rt.tokenizer.encode("Red, orange and yellow are three of them.", false, false).unwrap();
    let sum = |v: Vec<f32>| v.iter().map(|&x| f64::from(x)).sum::<f64>();
    let without = sum(rt.completion_logprobs(&prompt, &answer, None).unwrap());
    let with = sum(rt.completion_logprobs(&prompt, &answer, Some(&adapter)).unwrap());
    let mut tokens = prompt.clone();
    tokens.extend(&answer);
    let trainer = sequence_logprobs(&base, Some(&lora), &[Seq { tokens, scored_from: prompt.len() }])[0];
    eprintln!("log-likelihood: runtime {without:.3} without the adapter, {with:.3} with it; trainer {trainer:.3}");
    let shift = (with - without).abs();
    let diff = (with - trainer).abs();
    assert!(shift > 2.0, "the adapter should move the answer's likelihood: {without} → {with}");
    assert!(diff < 0.1 * shift, "runtime {with} vs trainer {trainer} (the adapter moved it by {shift})");
}

#[test]
fn quantized_storage_gives_the_same_numbers_as_dense() {
    let rt = runtime();
    let seqs = [Seq {
        tokens: rt.tokenizer.encode("The quick brown fox jumps over the lazy dog.", false, false).unwrap(),
        scored_from: 3,
    }];
    let dense = sequence_logprobs(&Base::new(&rt.model, Storage::Dense, 2), None, &seqs);
    let quant = Base::new(&rt.model, Storage::Quantized, 2);
    assert!(quant.weight_bytes() < Base::new(&rt.model, Storage::Dense, 2).weight_bytes() / 2);
    assert_eq!(dense, sequence_logprobs(&quant, None, &seqs));
}

#[test]
fn dpo_loss_falls_on_a_fixed_batch_and_the_same_seed_gives_the_same_adapter() {
    let rt = runtime();
    let cfg = TrainConfig { steps: Some(8), schedule: agent_runtime::train::Schedule::Constant, ..small_config() };
    let examples: Vec<Example> = arithmetic(0..2).iter().map(|p| prepare(&rt, p, &cfg).unwrap()).collect();
    let base = Base::new(&rt.model, cfg.storage, cfg.threads);
    let run = Run { base: &base, cfg: &cfg, examples: &examples, parent: None };
    let first = run.train(&mut |_| {}).unwrap();
    let losses: Vec<f64> = first.metrics.iter().map(|m| m.loss).collect();
    eprintln!("losses {losses:?}");
    assert!((losses[0] - std::f64::consts::LN_2).abs() < 1e-6, "the first step starts at the reference");
    assert!(losses[7] < 0.5 * losses[0], "loss did not fall: {losses:?}");
    assert!(first.metrics[7].reward_accuracy == 1.0 && first.metrics[7].reward_margin > 0.0);

    let again = run.train(&mut |_| {}).unwrap();
    assert_eq!(first.lora, again.lora, "same seed, same inputs: the same factors, bit for bit");
    let other = Run { cfg: &TrainConfig { seed: 1, ..cfg.clone() }, ..run }.train(&mut |_| {}).unwrap();
    assert_ne!(first.lora, other.lora, "another seed starts from another A");
}

#[test]
fn reward_accuracy_rises_on_held_out_pairs_of_a_synthetic_preference() {
    // The preference: answers that end with the word "please" beat the
    // same answers without it. Trained on some prompts, measured on others.
    let rt = runtime();
    let topics = [
        "the sea",
        "a forest",
        "the moon",
        "a city",
        "winter",
        "a river",
        "the desert",
        "a garden",
        "mountains",
        "the wind",
        "rain",
        "a library",
    ];
    let pairs: Vec<PreferencePair> = topics
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let plain = format!("Here is a short line about {t}.");
            pair(&format!("Write one line about {t}."), &format!("{plain} Thank you, please."), &plain, i + 1)
        })
        .collect();
    let cfg = TrainConfig { steps: Some(12), beta: 0.5, learning_rate: 1e-3, ..small_config() };
    let examples: Vec<Example> = pairs.iter().map(|p| prepare(&rt, p, &cfg).unwrap()).collect();
    let (train, held_out) = examples.split_at(8);
    let base = Base::new(&rt.model, cfg.storage, cfg.threads);
    let trained = Run { base: &base, cfg: &cfg, examples: train, parent: None }.train(&mut |_| {}).unwrap();
    let accuracy = |lora: Option<&agent_runtime::train::LoraWeights>| {
        let mut right = 0;
        for e in held_out {
            let seqs = [
                Seq { tokens: [e.prompt.clone(), e.chosen.clone()].concat(), scored_from: e.prompt.len() },
                Seq { tokens: [e.prompt.clone(), e.rejected.clone()].concat(), scored_from: e.prompt.len() },
            ];
            let now = sequence_logprobs(&base, lora, &seqs);
            let reference = sequence_logprobs(&base, None, &seqs);
            if (now[0] - reference[0]) > (now[1] - reference[1]) {
                right += 1;
            }
        }
        right as f64 / held_out.len() as f64
    };
    let before = accuracy(None);
    let after = accuracy(Some(&trained.lora));
    eprintln!("held-out reward accuracy {before} → {after}");
    assert_eq!(before, 0.0, "at the reference every reward is zero");
    assert!(after >= 0.75, "held-out reward accuracy after training: {after}");
}

#[test]
fn a_manifest_replays_and_a_changed_pair_fails_verification() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let pairs_path = dir.path().join("pairs.jsonl");
    let lines: Vec<String> = arithmetic(0..3)
        .iter()
        .map(|p| {
            serde_json::json!({"id": p.id, "prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}).to_string()
        })
        .collect();
    std::fs::write(&pairs_path, lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("out");
    let cfg = TrainConfig { steps: Some(2), ..small_config() };
    let files = RunFiles { model: &model_path(), pairs: &pairs_path, parent: None, out: &out };
    let m = manifest::train_to_dir(&rt, &files, &cfg, &mut |_| {}).unwrap();
    assert_eq!(m.pairs.count, 3);
    assert_eq!(m.result.steps, 2);
    let manifest_path = out.join(manifest::MANIFEST_FILE);
    let adapter = rt.adapter(&out).unwrap();
    assert_eq!(adapter.sha256, m.result.adapter_sha256, "the runtime loads the result under the recorded identity");

    let verified = manifest::verify(&rt, &manifest_path, None, None, &mut |_| {}).unwrap();
    assert_eq!(verified.adapter_sha256, m.result.adapter_sha256);

    // Continue training from the result: the parent is recorded.
    let child_out = dir.path().join("child");
    let child = manifest::train_to_dir(
        &rt,
        &RunFiles { model: &model_path(), pairs: &pairs_path, parent: Some(&out), out: &child_out },
        &cfg,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(child.parent_adapter.as_ref().unwrap().sha256, m.result.adapter_sha256);
    assert!((child.result.final_loss).is_finite());

    // One pair's answer changed: refused, naming the pair.
    let mut changed = lines.clone();
    changed[1] = changed[1].replace(&format!("\"chosen\":\"{}\"", arithmetic(1..2)[0].chosen), "\"chosen\":\"99\"");
    assert_ne!(changed, lines);
    std::fs::write(&pairs_path, changed.join("\n") + "\n").unwrap();
    let err = manifest::verify(&rt, &manifest_path, None, None, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("pair 2 (line 2, id p2) differs"), "{err}");

    // A result that is not the recorded one is refused too.
    std::fs::write(&pairs_path, lines.join("\n") + "\n").unwrap();
    let mut tampered = m.clone();
    tampered.result.adapter_sha256 = "0".repeat(64);
    std::fs::write(&manifest_path, serde_json::to_vec(&tampered).unwrap()).unwrap();
    let err = manifest::verify(&rt, &manifest_path, None, None, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("the manifest records 0000"), "{err}");
}

#[test]
fn bad_settings_are_named() {
    let rt = runtime();
    let bad = |cfg: TrainConfig| {
        prepare(&rt, &arithmetic(0..1)[0], &cfg).and_then(|_| cfg.validate()).unwrap_err().to_string()
    };
    assert!(
        bad(TrainConfig { target_modules: vec!["qproj".into()], ..small_config() })
            .contains("unknown target module `qproj`")
    );
    assert!(
        bad(TrainConfig { max_prompt_length: 200, max_length: 100, ..small_config() }).contains("max_prompt_length")
    );
    assert!(bad(TrainConfig { beta: -1.0, ..small_config() }).contains("beta"));
    let empty = pair("p", " ", "x", 4);
    let err = prepare(&rt, &empty, &small_config()).unwrap_err().to_string();
    assert_eq!(err, "pair 4: `chosen` is empty");
}

#[test]
fn the_rpo_term_pulls_the_chosen_answers_likelihood_up_more_than_plain_dpo() {
    let rt = runtime();
    let cfg = TrainConfig { steps: Some(6), schedule: agent_runtime::train::Schedule::Constant, ..small_config() };
    let examples: Vec<Example> = arithmetic(0..2).iter().map(|p| prepare(&rt, p, &cfg).unwrap()).collect();
    let base = Base::new(&rt.model, cfg.storage, cfg.threads);
    let plain = Run { base: &base, cfg: &cfg, examples: &examples, parent: None }.train(&mut |_| {}).unwrap();
    let rpo_cfg = TrainConfig { rpo_alpha: 1.0, ..cfg.clone() };
    let rpo = Run { base: &base, cfg: &rpo_cfg, examples: &examples, parent: None }.train(&mut |_| {}).unwrap();
    let nll = |t: &agent_runtime::train::Trained| t.metrics.iter().map(|m| m.chosen_nll).collect::<Vec<_>>();
    eprintln!("chosen NLL: plain {:?}, rpo {:?}", nll(&plain), nll(&rpo));
    // Step 1 is the same model either way; the reported loss carries the term.
    assert_eq!(plain.metrics[0].chosen_nll, rpo.metrics[0].chosen_nll);
    let expected = plain.metrics[0].loss + plain.metrics[0].chosen_nll;
    assert!((rpo.metrics[0].loss - expected).abs() < 1e-9, "{} vs {expected}", rpo.metrics[0].loss);
    assert!(rpo.metrics[5].chosen_nll < plain.metrics[5].chosen_nll, "the NLL term did not help the chosen answers");
    assert!(TrainConfig { rpo_alpha: -1.0, ..cfg }.validate().unwrap_err().to_string().contains("rpo_alpha"));
}
