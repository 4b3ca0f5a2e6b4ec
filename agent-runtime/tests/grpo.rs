//! GRPO on the real model file: rollouts from the engine with the policy as
//! an in-memory adapter, log-probabilities that agree between sampler and
//! trainer at the sampling temperature, bit-identical reruns for a seed,
//! and a manifest that replays from its recorded rollouts (or names what
//! changed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use agent_runtime::Runtime;
use agent_runtime::engine::{Engine, EngineConfig};
use agent_runtime::train::grpo::{GrpoPrompt, GrpoSettings, GrpoStepMetrics, Reward};
use agent_runtime::train::manifest::{self, GrpoFiles};
use agent_runtime::train::{Objective, TrainConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn model_path() -> PathBuf {
    std::env::var_os("ARENA_MODEL_PATH").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../.arena/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    })
}

fn prompts() -> Vec<GrpoPrompt> {
    [(3, 4), (12, 9), (25, 17), (7, 8)]
        .iter()
        .enumerate()
        .map(|(index, &(a, b))| GrpoPrompt {
            index,
            system: None,
            prompt: format!("What is {a} + {b}? Answer with the number."),
            reference: Some((a + b).to_string()),
            tier: u32::from(a > 9),
        })
        .collect()
}

/// 1 for the right number, plus a little for being short: rewards that
/// differ within a group.
fn reward(p: &GrpoPrompt, texts: &[String]) -> Result<Vec<Reward>, String> {
    Ok(texts
        .iter()
        .map(|t| {
            let right = t.contains(p.reference.as_deref().unwrap());
            Reward { value: f64::from(u8::from(right)) + 0.2 / (1.0 + t.len() as f64 / 10.0), passed: right }
        })
        .collect())
}

#[test]
fn grpo_samples_on_the_engine_trains_deterministically_and_replays() {
    let rt = Arc::new(Runtime::load(&model_path(), 2).unwrap());
    let engine = Engine::start(rt.clone(), EngineConfig { max_batch: 16, queue_capacity: 256 });
    let cfg = TrainConfig {
        objective: Objective::Grpo,
        rank: 4,
        alpha: 8.0,
        target_modules: ["q_proj", "v_proj"].map(String::from).to_vec(),
        learning_rate: 1e-3,
        threads: 2,
        seed: 3,
        ..TrainConfig::default()
    };
    let grpo = GrpoSettings {
        group: 4,
        prompts_per_step: 2,
        steps: 2,
        iterations: 2,
        beta: 0.04,
        temperature: 0.7,
        max_new_tokens: 12,
        ..GrpoSettings::default()
    };
    let prompts = prompts();
    let dir = tempfile::tempdir().unwrap();
    let run = |out: &Path| {
        let mut metrics: Vec<GrpoStepMetrics> = Vec::new();
        let files = GrpoFiles { model: &model_path(), parent: None, out, prompt_source: "test", curriculum: None };
        let m = manifest::grpo_to_dir(&rt, &engine, &files, &prompts, &cfg, &grpo, &mut reward, &mut |s| {
            metrics.push(s.clone())
        })
        .unwrap();
        (m, metrics)
    };
    let (a, metrics) = run(&dir.path().join("a"));
    let (b, _) = run(&dir.path().join("b"));
    assert_eq!(a.result.adapter_sha256, b.result.adapter_sha256, "the same seed gives the same adapter");
    assert_eq!(a.objective, Objective::Grpo);
    assert_eq!(metrics.len(), 2);
    for m in &metrics {
        assert_eq!(m.groups, 2);
        assert!(m.reward_mean.is_finite() && m.loss.is_finite() && m.entropy > 0.0, "{m:?}");
        // The engine's log-probabilities (quantized kernels, f16 factors,
        // at temperature 0.7) and the trainer's f32 forward agree.
        if m.groups_skipped < m.groups {
            assert!(m.sampler_mismatch < 0.05, "sampler and trainer disagree: {}", m.sampler_mismatch);
        }
    }
    // The curriculum opened the easy tier first: step 1 drew from tier 0 only.
    let rollouts = std::fs::read_to_string(dir.path().join("a").join(manifest::ROLLOUTS_FILE)).unwrap();
    let first: serde_json::Value = serde_json::from_str(rollouts.lines().next().unwrap()).unwrap();
    assert!(first["groups"].as_array().unwrap().iter().all(|g| g["tier"] == 0), "{first}");
    assert_eq!(first["groups"][0]["samples"].as_array().unwrap().len(), 4);

    // The manifest replays from the recorded rollouts.
    let manifest_path = dir.path().join("a").join(manifest::MANIFEST_FILE);
    let verified = manifest::verify(&rt, &manifest_path, None, None, &mut |_| {}).unwrap();
    assert_eq!(verified.adapter_sha256, a.result.adapter_sha256);
    // A changed reward is named.
    let path = dir.path().join("a").join(manifest::ROLLOUTS_FILE);
    std::fs::write(&path, rollouts.replacen("\"reward\":", "\"reward\":7.0,\"x\":", 1)).unwrap();
    let err = manifest::verify(&rt, &manifest_path, None, None, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("rollouts.jsonl has sha256"), "{err}");
}

#[test]
fn bad_grpo_settings_are_named() {
    for (settings, needle) in [
        (GrpoSettings { group: 1, ..GrpoSettings::default() }, "group"),
        (GrpoSettings { epsilon: 0.0, ..GrpoSettings::default() }, "epsilon"),
        (GrpoSettings { beta: -1.0, ..GrpoSettings::default() }, "beta"),
        (GrpoSettings { iterations: 0, ..GrpoSettings::default() }, "iterations"),
        (GrpoSettings { temperature: 0.0, ..GrpoSettings::default() }, "temperature"),
        (GrpoSettings { epsilon_high: Some(0.1), ..GrpoSettings::default() }, "epsilon_high"),
    ] {
        let err = settings.validate().unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
    }
    assert!(GrpoSettings::default().validate().is_ok());
}
