//! A training run from files to files, and its manifest: what went in (the
//! base model's and parent adapter's sha256, every pair's id and sha256,
//! every setting and the seed, the code version) and what came out (the
//! adapter's sha256). [`verify`] replays a manifest and checks the result.

use super::{Example, Run, StepMetrics, TrainConfig, TrainError, Trained};
use crate::engine::Runtime;
use crate::lora::{Adapter, Limits};
use crate::train::pairs::{PairsLimits, PreferencePair};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Bumped whenever the trainer's arithmetic changes, so a manifest names
/// the code that can replay it.
pub const TRAINER_REVISION: u32 = 1;

pub const MANIFEST_FILE: &str = "manifest.json";
pub const METRICS_FILE: &str = "metrics.jsonl";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileRef {
    pub path: PathBuf,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PairRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub line: usize,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PairsRef {
    pub path: PathBuf,
    pub count: usize,
    pub items: Vec<PairRef>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    /// The adapter's identity as the runtime computes it (weights file and
    /// config together).
    pub adapter_sha256: String,
    /// sha256 of `adapter_model.safetensors` alone.
    pub weights_sha256: String,
    pub steps: usize,
    pub final_loss: f64,
    pub final_reward_accuracy: f64,
    pub trainable_parameters: usize,
    pub reference_seconds: f64,
    pub train_seconds: f64,
    pub pair_tokens: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub code_version: String,
    pub base_model: FileRef,
    pub parent_adapter: Option<FileRef>,
    pub pairs: PairsRef,
    pub config: TrainConfig,
    pub result: Outcome,
}

pub fn code_version() -> String {
    format!("agent-runtime {} trainer-revision {TRAINER_REVISION}", env!("CARGO_PKG_VERSION"))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io { path: path.to_owned(), source }
}

fn file_sha256(path: &Path) -> Result<String, TrainError> {
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    crate::model_file::sha256_reader(std::io::BufReader::new(file)).map_err(io_err(path))
}

/// Where a run reads from and writes to.
pub struct RunFiles<'a> {
    pub model: &'a Path,
    pub pairs: &'a Path,
    pub parent: Option<&'a Path>,
    pub out: &'a Path,
}

/// The inputs, checked and prepared.
struct Inputs {
    model_sha256: String,
    parent: Option<(Adapter, String)>,
    pairs: Vec<PreferencePair>,
    examples: Vec<Example>,
}

fn inputs(runtime: &Runtime, files: &RunFiles<'_>, cfg: &TrainConfig) -> Result<Inputs, TrainError> {
    cfg.validate()?;
    let model_sha256 = file_sha256(files.model)?;
    let parent = match files.parent {
        Some(dir) => {
            let adapter = Adapter::load(dir, runtime.config(), &Limits::default())?;
            let sha = adapter.sha256.clone();
            Some((adapter, sha))
        }
        None => None,
    };
    let pairs = crate::train::pairs::load(files.pairs, &PairsLimits::default())?;
    let examples = pairs.iter().map(|p| super::prepare(runtime, p, cfg)).collect::<Result<Vec<_>, _>>()?;
    Ok(Inputs { model_sha256, parent, pairs, examples })
}

fn train_inputs(
    runtime: &Runtime,
    inputs: &Inputs,
    cfg: &TrainConfig,
    progress: &mut (dyn FnMut(&StepMetrics) + Send),
) -> Result<Trained, TrainError> {
    pool(cfg.threads)?.install(|| {
        let base = super::Base::new(&runtime.model, cfg.storage, cfg.threads);
        let parent = match &inputs.parent {
            Some((adapter, _)) => Some(super::from_adapter(adapter, runtime.config())?),
            None => None,
        };
        Run { base: &base, cfg, examples: &inputs.examples, parent: parent.as_ref() }.train(progress)
    })
}

/// Trains on `files.pairs` and writes the adapter (PEFT layout), the
/// per-step metrics and the manifest into `files.out`.
pub fn train_to_dir(
    runtime: &Runtime,
    files: &RunFiles<'_>,
    cfg: &TrainConfig,
    progress: &mut (dyn FnMut(&StepMetrics) + Send),
) -> Result<Manifest, TrainError> {
    let inputs = inputs(runtime, files, cfg)?;
    let trained = train_inputs(runtime, &inputs, cfg, progress)?;
    let out = files.out;
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let saved = save(runtime, &trained, out)?;
    let metrics_path = out.join(METRICS_FILE);
    let mut metrics = std::fs::File::create(&metrics_path).map_err(io_err(&metrics_path))?;
    for m in &trained.metrics {
        let line = serde_json::to_string(m).map_err(|e| TrainError::Config(e.to_string()))?;
        writeln!(metrics, "{line}").map_err(io_err(&metrics_path))?;
    }
    let last = trained.metrics.last();
    let manifest = Manifest {
        format: 1,
        code_version: code_version(),
        base_model: FileRef { path: files.model.to_owned(), sha256: inputs.model_sha256.clone() },
        parent_adapter: files
            .parent
            .zip(inputs.parent.as_ref())
            .map(|(path, (_, sha))| FileRef { path: path.to_owned(), sha256: sha.clone() }),
        pairs: PairsRef {
            path: files.pairs.to_owned(),
            count: inputs.pairs.len(),
            items: inputs
                .pairs
                .iter()
                .map(|p| PairRef { id: p.id.clone(), line: p.line, sha256: p.sha256() })
                .collect(),
        },
        config: cfg.clone(),
        result: Outcome {
            adapter_sha256: saved.sha256.clone(),
            weights_sha256: file_sha256(&out.join(crate::lora::WEIGHTS_FILE))?,
            steps: trained.metrics.len(),
            final_loss: last.map_or(f64::NAN, |m| m.loss),
            final_reward_accuracy: last.map_or(f64::NAN, |m| m.reward_accuracy),
            trainable_parameters: trained.lora.parameters(),
            reference_seconds: trained.reference_seconds,
            train_seconds: trained.train_seconds,
            pair_tokens: trained.pair_tokens,
        },
    };
    let manifest_path = out.join(MANIFEST_FILE);
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| TrainError::Config(e.to_string()))?;
    std::fs::write(&manifest_path, json).map_err(io_err(&manifest_path))?;
    Ok(manifest)
}

/// Writes the trained adapter into `dir` and reads it back through the
/// validator: the identity the runtime will see.
fn save(runtime: &Runtime, trained: &Trained, dir: &Path) -> Result<Adapter, TrainError> {
    save_lora(runtime, &trained.lora, dir)
}

fn save_lora(runtime: &Runtime, lora: &super::LoraWeights, dir: &Path) -> Result<Adapter, TrainError> {
    super::to_adapter(lora, &runtime.model.config).save(dir, runtime.config().name.as_deref())?;
    Ok(Adapter::load(dir, runtime.config(), &Limits::default())?)
}

fn pool(threads: usize) -> Result<rayon::ThreadPool, TrainError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("arena-train-{i}"))
        .build()
        .map_err(|e| TrainError::Config(format!("thread pool: {e}")))
}

pub const ROLLOUTS_FILE: &str = "rollouts.jsonl";

/// A training prompt as a GRPO manifest names it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PromptRef {
    pub index: usize,
    pub tier: u32,
    /// sha256 of the prompt's JSON (system, prompt, reference).
    pub sha256: String,
}

/// What a GRPO run produced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GrpoOutcome {
    pub adapter_sha256: String,
    pub weights_sha256: String,
    pub steps: usize,
    pub trainable_parameters: usize,
    pub first_reward_mean: f64,
    pub last_reward_mean: f64,
    /// Share of groups skipped (all rewards equal) over the run.
    pub skipped_share: f64,
    pub sample_seconds: f64,
    pub reward_seconds: f64,
    pub train_seconds: f64,
    /// The curriculum at the end: the highest open tier and every
    /// prompt's sampling weight.
    pub open_tier: u32,
    pub final_weights: Vec<f64>,
    /// The curriculum's whole state at the end (a next run may continue
    /// from it: `GrpoFiles::curriculum`).
    pub curriculum: super::grpo::Curriculum,
}

/// A GRPO run's record: the prompts, the seeds and rewards (every rollout,
/// in `rollouts.jsonl`, hashed here), the settings and the result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GrpoManifest {
    pub format: u32,
    pub objective: super::Objective,
    pub code_version: String,
    pub base_model: FileRef,
    pub parent_adapter: Option<FileRef>,
    /// Where the prompts came from (a Space file), and each prompt.
    pub prompt_source: String,
    pub prompts: Vec<PromptRef>,
    pub rollouts: FileRef,
    pub config: TrainConfig,
    pub grpo: super::grpo::GrpoSettings,
    pub result: GrpoOutcome,
}

/// Where a GRPO run reads from and writes to.
pub struct GrpoFiles<'a> {
    pub model: &'a Path,
    pub parent: Option<&'a Path>,
    pub out: &'a Path,
    /// A label for the prompts' origin (the Space file's path).
    pub prompt_source: &'a str,
    /// A previous run's curriculum to continue from (the same prompts).
    pub curriculum: Option<super::grpo::Curriculum>,
}

fn prompt_sha256(p: &super::grpo::GrpoPrompt) -> String {
    use sha2::Digest;
    let json = serde_json::json!({"system": p.system, "prompt": p.prompt, "reference": p.reference});
    hex::encode(sha2::Sha256::digest(json.to_string().as_bytes()))
}

/// Trains by GRPO on `prompts`, sampling on `engine` (which must run on
/// `runtime`), rewarded by `reward`; writes the adapter, `metrics.jsonl`,
/// `rollouts.jsonl` (every prompt, seed, completion and reward) and the
/// manifest into `files.out`.
#[allow(clippy::too_many_arguments)]
pub fn grpo_to_dir(
    runtime: &Runtime,
    engine: &crate::engine::Engine,
    files: &GrpoFiles<'_>,
    prompts: &[super::grpo::GrpoPrompt],
    cfg: &TrainConfig,
    grpo: &super::grpo::GrpoSettings,
    reward: &mut super::grpo::RewardFn<'_>,
    progress: &mut (dyn FnMut(&super::grpo::GrpoStepMetrics) + Send),
) -> Result<GrpoManifest, TrainError> {
    use super::grpo::{EngineRollouts, GrpoRun};
    cfg.validate()?;
    grpo.validate()?;
    let model_sha256 = file_sha256(files.model)?;
    let parent = match files.parent {
        Some(dir) => Some(Adapter::load(dir, runtime.config(), &Limits::default())?),
        None => None,
    };
    let out = files.out;
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let rollouts_path = out.join(ROLLOUTS_FILE);
    let metrics_path = out.join(METRICS_FILE);
    let mut rollouts_file =
        std::io::BufWriter::new(std::fs::File::create(&rollouts_path).map_err(io_err(&rollouts_path))?);
    let mut metrics_file = std::fs::File::create(&metrics_path).map_err(io_err(&metrics_path))?;
    let mut write_error: Option<TrainError> = None;
    let (trained, curriculum) = pool(cfg.threads)?.install(|| -> Result<_, TrainError> {
        let base = super::Base::new(&runtime.model, cfg.storage, cfg.threads);
        let parent_lora = match &parent {
            Some(adapter) => Some(super::from_adapter(adapter, runtime.config())?),
            None => None,
        };
        // The reward borrows for the source's life only.
        let mut source =
            EngineRollouts::new(runtime, engine, prompts, grpo, cfg.seed, reward, files.curriculum.clone())?;
        let run = GrpoRun { base: &base, cfg, grpo, parent: parent_lora.as_ref() };
        let trained = run.train(&mut source, &mut |m, r| {
            let lines = serde_json::to_string(r).and_then(|r| Ok((r, serde_json::to_string(m)?)));
            let result = lines.map_err(|e| TrainError::Config(e.to_string())).and_then(|(r, m)| {
                writeln!(rollouts_file, "{r}").map_err(io_err(&rollouts_path))?;
                writeln!(metrics_file, "{m}").map_err(io_err(&metrics_path))
            });
            if let Err(e) = result {
                write_error.get_or_insert(e);
            }
            progress(m);
        })?;
        Ok((trained, source.curriculum.clone()))
    })?;
    if let Some(e) = write_error {
        return Err(e);
    }
    rollouts_file.flush().map_err(io_err(&rollouts_path))?;
    drop(rollouts_file);
    let saved = save_lora(runtime, &trained.lora, out)?;
    let m = &trained.metrics;
    let groups: usize = m.iter().map(|s| s.groups).sum();
    let manifest = GrpoManifest {
        format: 1,
        objective: super::Objective::Grpo,
        code_version: code_version(),
        base_model: FileRef { path: files.model.to_owned(), sha256: model_sha256 },
        parent_adapter: files
            .parent
            .zip(parent.as_ref())
            .map(|(path, a)| FileRef { path: path.to_owned(), sha256: a.sha256.clone() }),
        prompt_source: files.prompt_source.to_owned(),
        prompts: prompts.iter().map(|p| PromptRef { index: p.index, tier: p.tier, sha256: prompt_sha256(p) }).collect(),
        rollouts: FileRef { path: rollouts_path.clone(), sha256: file_sha256(&rollouts_path)? },
        config: TrainConfig { objective: super::Objective::Grpo, ..cfg.clone() },
        grpo: grpo.clone(),
        result: GrpoOutcome {
            adapter_sha256: saved.sha256.clone(),
            weights_sha256: file_sha256(&out.join(crate::lora::WEIGHTS_FILE))?,
            steps: m.len(),
            trainable_parameters: trained.lora.parameters(),
            first_reward_mean: m.first().map_or(f64::NAN, |s| s.reward_mean),
            last_reward_mean: m.last().map_or(f64::NAN, |s| s.reward_mean),
            skipped_share: m.iter().map(|s| s.groups_skipped).sum::<usize>() as f64 / groups.max(1) as f64,
            sample_seconds: m.iter().map(|s| s.sample_seconds).sum(),
            reward_seconds: m.iter().map(|s| s.reward_seconds).sum(),
            train_seconds: m.iter().map(|s| s.train_seconds).sum(),
            open_tier: curriculum.open_tier.min(prompts.iter().map(|p| p.tier).max().unwrap_or(0)),
            final_weights: (0..prompts.len()).map(|i| curriculum.weight(i)).collect(),
            curriculum,
        },
    };
    let manifest_path = out.join(MANIFEST_FILE);
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| TrainError::Config(e.to_string()))?;
    std::fs::write(&manifest_path, json).map_err(io_err(&manifest_path))?;
    Ok(manifest)
}

/// Replays a GRPO manifest from its recorded rollouts (neither the sampler
/// nor the judge runs again) and checks the adapter.
fn verify_grpo(
    runtime: &Runtime,
    manifest_path: &Path,
    bytes: &[u8],
    model: Option<&Path>,
) -> Result<Verified, TrainError> {
    let fail = |message: String| TrainError::Manifest { path: manifest_path.to_owned(), message };
    let m: GrpoManifest =
        serde_json::from_slice(bytes).map_err(|e| fail(format!("not a GRPO training manifest: {e}")))?;
    if m.format != 1 || m.code_version != code_version() {
        return Err(fail(format!(
            "format {} recorded by `{}`; this is format 1 of `{}`",
            m.format,
            m.code_version,
            code_version()
        )));
    }
    let model_path = model.unwrap_or(&m.base_model.path);
    let sha = file_sha256(model_path)?;
    if sha != m.base_model.sha256 {
        return Err(fail(format!(
            "base model {} has sha256 {sha}, the manifest records {}",
            model_path.display(),
            m.base_model.sha256
        )));
    }
    let parent = match &m.parent_adapter {
        Some(p) => {
            let adapter = Adapter::load(&p.path, runtime.config(), &Limits::default())?;
            if adapter.sha256 != p.sha256 {
                return Err(fail(format!(
                    "parent adapter {} has sha256 {}, the manifest records {}",
                    p.path.display(),
                    adapter.sha256,
                    p.sha256
                )));
            }
            Some(adapter)
        }
        None => None,
    };
    // The rollouts beside the manifest (or at the recorded path).
    let dir = manifest_path.parent().unwrap_or(Path::new("."));
    let path = if dir.join(ROLLOUTS_FILE).exists() { dir.join(ROLLOUTS_FILE) } else { m.rollouts.path.clone() };
    let sha = file_sha256(&path)?;
    if sha != m.rollouts.sha256 {
        return Err(fail(format!("{} has sha256 {sha}, the manifest records {}", path.display(), m.rollouts.sha256)));
    }
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let steps = text
        .lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str::<super::grpo::StepRollouts>(line)
                .map_err(|e| fail(format!("{} line {}: {e}", path.display(), i + 1)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if steps.len() != m.grpo.steps {
        return Err(fail(format!("{} holds {} steps, the run made {}", path.display(), steps.len(), m.grpo.steps)));
    }
    let started = std::time::Instant::now();
    let trained = pool(m.config.threads)?.install(|| -> Result<_, TrainError> {
        let base = super::Base::new(&runtime.model, m.config.storage, m.config.threads);
        let parent_lora = match &parent {
            Some(adapter) => Some(super::from_adapter(adapter, runtime.config())?),
            None => None,
        };
        let run = super::grpo::GrpoRun { base: &base, cfg: &m.config, grpo: &m.grpo, parent: parent_lora.as_ref() };
        run.train(&mut super::grpo::Recorded { steps: steps.into_iter() }, &mut |_, _| {})
    })?;
    let replay = tempfile::tempdir().map_err(io_err(&std::env::temp_dir()))?;
    let replayed = save_lora(runtime, &trained.lora, replay.path())?;
    if replayed.sha256 != m.result.adapter_sha256 {
        return Err(fail(format!(
            "the replay gave adapter sha256 {}, the manifest records {} (different machine or thread count?)",
            replayed.sha256, m.result.adapter_sha256
        )));
    }
    Ok(Verified {
        adapter_sha256: replayed.sha256,
        steps: trained.metrics.len(),
        train_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Reads a manifest file.
pub fn read(path: &Path) -> Result<Manifest, TrainError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| TrainError::Manifest { path: path.to_owned(), message: format!("not a training manifest: {e}") })
}

/// What [`verify`] found.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub adapter_sha256: String,
    pub steps: usize,
    pub train_seconds: f64,
}

/// Replays the run `manifest_path` records and checks that every input
/// still has its recorded hash and that the replay gives the recorded
/// adapter. `model` and `pairs` override the recorded paths (the files must
/// still match the recorded hashes). The first difference is the error.
pub fn verify(
    runtime: &Runtime,
    manifest_path: &Path,
    model: Option<&Path>,
    pairs: Option<&Path>,
    progress: &mut (dyn FnMut(&StepMetrics) + Send),
) -> Result<Verified, TrainError> {
    let bytes = std::fs::read(manifest_path).map_err(io_err(manifest_path))?;
    let objective = serde_json::from_slice::<serde_json::Value>(&bytes).ok().map(|v| v["objective"].clone());
    if objective.as_ref().and_then(serde_json::Value::as_str) == Some("grpo") {
        return verify_grpo(runtime, manifest_path, &bytes, model);
    }
    let m = read(manifest_path)?;
    let fail = |message: String| TrainError::Manifest { path: manifest_path.to_owned(), message };
    if m.format != 1 {
        return Err(fail(format!("format {} is not one this version reads (1)", m.format)));
    }
    if m.code_version != code_version() {
        return Err(fail(format!(
            "recorded by `{}`; this is `{}`, whose arithmetic may differ",
            m.code_version,
            code_version()
        )));
    }
    let files = RunFiles {
        model: model.unwrap_or(&m.base_model.path),
        pairs: pairs.unwrap_or(&m.pairs.path),
        parent: m.parent_adapter.as_ref().map(|p| p.path.as_path()),
        out: manifest_path.parent().unwrap_or(Path::new(".")),
    };
    let inputs = inputs(runtime, &files, &m.config)?;
    if inputs.model_sha256 != m.base_model.sha256 {
        return Err(fail(format!(
            "base model {} has sha256 {}, the manifest records {}",
            files.model.display(),
            inputs.model_sha256,
            m.base_model.sha256
        )));
    }
    if let (Some(recorded), Some((_, sha))) = (&m.parent_adapter, &inputs.parent)
        && &recorded.sha256 != sha
    {
        return Err(fail(format!(
            "parent adapter {} has sha256 {sha}, the manifest records {}",
            recorded.path.display(),
            recorded.sha256
        )));
    }
    if inputs.pairs.len() != m.pairs.count || m.pairs.items.len() != m.pairs.count {
        return Err(fail(format!(
            "{} holds {} pairs, the manifest records {}",
            files.pairs.display(),
            inputs.pairs.len(),
            m.pairs.count
        )));
    }
    for (i, (pair, rec)) in inputs.pairs.iter().zip(&m.pairs.items).enumerate() {
        if pair.sha256() != rec.sha256 || pair.id != rec.id {
            return Err(fail(format!(
                "pair {} (line {}{}) differs from the one the manifest records",
                i + 1,
                pair.line,
                pair.id.as_ref().map(|id| format!(", id {id}")).unwrap_or_default()
            )));
        }
    }
    // The adapter next to the manifest, when present, must be the result.
    let beside = files.out.join(crate::lora::WEIGHTS_FILE);
    if beside.exists() {
        let adapter = Adapter::load(files.out, runtime.config(), &Limits::default())?;
        if adapter.sha256 != m.result.adapter_sha256 {
            return Err(fail(format!(
                "the adapter in {} has sha256 {}, the manifest records {}",
                files.out.display(),
                adapter.sha256,
                m.result.adapter_sha256
            )));
        }
    }
    let trained = train_inputs(runtime, &inputs, &m.config, progress)?;
    let replay = tempfile::tempdir().map_err(io_err(&std::env::temp_dir()))?;
    let replayed = save(runtime, &trained, replay.path())?;
    if replayed.sha256 != m.result.adapter_sha256 {
        return Err(fail(format!(
            "the replay gave adapter sha256 {}, the manifest records {} (different machine or thread count?)",
            replayed.sha256, m.result.adapter_sha256
        )));
    }
    Ok(Verified { adapter_sha256: replayed.sha256, steps: trained.metrics.len(), train_seconds: trained.train_seconds })
}
