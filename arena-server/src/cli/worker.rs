//! `arena worker`: an open runtime worker — a process on any machine that
//! registers with a server (an API token with the `work` scope, a stake,
//! an ed25519 key of its own), leases generation jobs over HTTP, runs them
//! on the runtime's engine and returns signed records. It holds no
//! database or Redis credential.
//!
//! `arena lab cheat-worker --kind K` is the same worker cheating in one
//! named way (the red team the audits are measured against); see
//! [`Cheat`].

use super::args::{CheatKind, CheatWorkerArgs, WorkerArgs};
use crate::app::config::Settings;
use crate::domain::worker::{Assignment, RolloutRecord};
use crate::work::workers::{Answered, LeaseOut, Signed};
use agent_runtime::engine::{Engine, EngineConfig, Request, Runtime};
use agent_runtime::{Completion, Finish, Prompt};
use anyhow::Context as _;
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Runs an honest worker until interrupted (or `--leases` leases).
pub async fn run(args: &WorkerArgs, settings: &Settings) -> anyhow::Result<bool> {
    Worker::start(args, settings, None).await?.work().await
}

/// Runs a worker that cheats in one way.
pub async fn cheat(args: &CheatWorkerArgs, settings: &Settings) -> anyhow::Result<bool> {
    Worker::start(&args.worker, settings, Some(args.kind)).await?.work().await
}

struct Worker {
    client: reqwest::Client,
    server: String,
    token: String,
    key: SigningKey,
    id: String,
    runtime: Arc<Runtime>,
    engine: Engine,
    cache: PathBuf,
    cheat: Option<CheatKind>,
    leases: Option<u64>,
    /// The replay cheat's stored answer.
    replayed: std::sync::Mutex<Option<Completion>>,
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut file, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// The worker's key: read from `path`, or made and written there (0600).
fn load_key(path: &Path) -> anyhow::Result<SigningKey> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let bytes = hex::decode(text.trim()).ok().and_then(|b| <[u8; 32]>::try_from(b).ok());
        let bytes = bytes.with_context(|| format!("{} does not hold a 32-byte hex key", path.display()))?;
        return Ok(SigningKey::from_bytes(&bytes));
    }
    let key = SigningKey::from_bytes(&rand::random());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write;
    options.open(path)?.write_all(hex::encode(key.to_bytes()).as_bytes())?;
    Ok(key)
}

impl Worker {
    async fn start(args: &WorkerArgs, settings: &Settings, cheat: Option<CheatKind>) -> anyhow::Result<Worker> {
        let model = args.model.clone().unwrap_or_else(|| settings.model.path.clone());
        // A substituted model declares the real one's sha256.
        let declared = args.declared_model.clone().unwrap_or_else(|| model.clone());
        let threads = args.threads.unwrap_or_else(agent_runtime::model::default_threads);
        let key_path = args.key.clone().unwrap_or_else(|| settings.data_dir.join("worker").join("worker.key"));
        let key = load_key(&key_path)?;
        let (runtime, model_sha256) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            Ok((Runtime::load(&model, threads)?, sha256_file(&declared)?))
        })
        .await??;
        let runtime = Arc::new(runtime);
        let engine = Engine::start(
            runtime.clone(),
            EngineConfig { max_batch: args.max_batch.max(1) as usize, queue_capacity: 256 },
        );
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
        let server = args.server.trim_end_matches('/').to_owned();
        let name = args
            .name
            .clone()
            .unwrap_or_else(|| format!("worker-{}", &hex::encode(key.verifying_key().to_bytes())[..8]));
        let body = serde_json::json!({
            "name": name,
            "public_key": hex::encode(key.verifying_key().to_bytes()),
            "model_sha256": model_sha256,
            "runtime_version": agent_runtime::VERSION,
            "recipe": agent_runtime::quant::kernels().recipe(),
            "device": "cpu",
            "max_batch": args.max_batch,
            "stake": args.stake,
        });
        let r = client
            .post(format!("{server}/api/v1/workers"))
            .bearer_auth(&args.token)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("cannot reach {server}"))?;
        let status = r.status();
        let answer: serde_json::Value = r.json().await.unwrap_or_default();
        anyhow::ensure!(status.is_success(), "registration refused ({status}): {}", answer["error"]["message"]);
        let id = answer["worker"]["id"].as_str().context("the server sent no worker id")?.to_owned();
        println!(
            "worker {id} ({name}) registered with {server}: recipe {}, {} tier, audit rate {}, jobs up to {} tokens",
            agent_runtime::quant::kernels().recipe(),
            answer["tier"].as_str().unwrap_or("?"),
            answer["audit_rate"],
            answer["max_job_tokens"]
        );
        if let Some(kind) = cheat {
            println!("cheating: {}", kind.describe());
        }
        let cache = key_path.parent().map_or_else(|| PathBuf::from("blobs"), |d| d.join("blobs"));
        Ok(Worker {
            client,
            server,
            token: args.token.clone(),
            key,
            id,
            runtime,
            engine,
            cache,
            cheat,
            leases: args.leases,
            replayed: std::sync::Mutex::new(None),
        })
    }

    async fn work(self) -> anyhow::Result<bool> {
        let me = Arc::new(self);
        let beat = {
            let me = me.clone();
            tokio::spawn(async move {
                loop {
                    let _ = me
                        .client
                        .post(format!("{}/api/v1/workers/{}/heartbeat", me.server, me.id))
                        .bearer_auth(&me.token)
                        .send()
                        .await;
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            })
        };
        let mut done = 0u64;
        let outcome = loop {
            if me.leases.is_some_and(|n| done >= n) {
                break Ok(true);
            }
            let lease = tokio::select! {
                lease = me.lease() => lease,
                _ = tokio::signal::ctrl_c() => break Ok(true),
            };
            match lease {
                Ok(Some(lease)) => {
                    done += 1;
                    match me.answer(lease).await {
                        Ok(line) => println!("{line}"),
                        Err(err) => eprintln!("answer failed: {err:#}"),
                    }
                }
                Ok(None) => {}
                Err(Stop(why)) => {
                    eprintln!("{why}");
                    break Ok(false);
                }
            }
        };
        beat.abort();
        outcome
    }

    /// One lease call: `None` when no work came (or a passing error).
    async fn lease(&self) -> Result<Option<LeaseOut>, Stop> {
        let r = self
            .client
            .post(format!("{}/api/v1/workers/{}/lease", self.server, self.id))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({ "wait_s": 20 }))
            .send()
            .await;
        let r = match r {
            Ok(r) => r,
            Err(err) => {
                eprintln!("lease call failed: {err}; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                return Ok(None);
            }
        };
        match r.status().as_u16() {
            200 => match r.json::<LeaseOut>().await {
                Ok(lease) => Ok(Some(lease)),
                Err(err) => Err(Stop(format!("the server's lease is unreadable: {err}"))),
            },
            204 => Ok(None),
            status @ (401 | 403 | 404 | 422) => {
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                Err(Stop(format!("the server refused to lease ({status}): {}", body["error"]["message"])))
            }
            status => {
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                eprintln!("lease call answered {status}: {}; retrying", body["error"]["message"]);
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(None)
            }
        }
    }

    /// The adapter `sha` as a PEFT folder in the cache, downloaded once and
    /// checked against its sha256.
    async fn adapter(&self, sha: &str) -> anyhow::Result<PathBuf> {
        let dir = self.cache.join(sha);
        if dir.join("adapter_model.safetensors").exists() {
            return Ok(dir);
        }
        let r = self
            .client
            .get(format!("{}/api/v1/blobs/{sha}", self.server))
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?;
        let config_len: usize = r
            .headers()
            .get("X-Arena-Config-Bytes")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .context("the blob has no X-Arena-Config-Bytes")?;
        let body = r.bytes().await?;
        anyhow::ensure!(hex::encode(Sha256::digest(&body)) == sha, "the adapter blob does not match its sha256");
        anyhow::ensure!(config_len <= body.len(), "the adapter blob is shorter than its config");
        let (weights, config) = body.split_at(body.len() - config_len);
        std::fs::create_dir_all(&self.cache)?;
        let tmp = tempfile::tempdir_in(&self.cache)?;
        std::fs::write(tmp.path().join("adapter_model.safetensors"), weights)?;
        std::fs::write(tmp.path().join("adapter_config.json"), config)?;
        let tmp = tmp.keep();
        if std::fs::rename(&tmp, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Ok(dir)
    }

    async fn answer(&self, lease: LeaseOut) -> anyhow::Result<String> {
        let started = std::time::Instant::now();
        let mut runs = Vec::with_capacity(lease.jobs.len());
        for job in &lease.jobs {
            let adapter = match &job.identity.adapter_sha256 {
                Some(sha) => Some(self.adapter(sha).await?),
                None => None,
            };
            runs.push(self.generate(job, adapter));
        }
        let completions = futures_util::future::try_join_all(runs).await?;
        let mut results = Vec::with_capacity(completions.len());
        for (job, c) in lease.jobs.iter().zip(completions) {
            let record = RolloutRecord {
                lease_id: lease.lease_id,
                job_id: job.job_id,
                match_id: job.match_id,
                slot: job.slot,
                attempt: job.attempt,
                identity: job.identity.clone(),
                tokens: c.tokens.clone(),
                logprobs: c.logprobs.clone().unwrap_or_default(),
                finish: c.finish,
                end_token: c.end_token,
                elapsed_ms: c.total.as_millis() as u64,
            };
            let signature = record.sign(&self.key);
            results.push(Signed { record, signature });
        }
        let tokens: usize = results.iter().map(|r| r.record.tokens.len()).sum();
        let r = self
            .client
            .post(format!("{}/api/v1/leases/{}/result", self.server, lease.lease_id))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({ "results": results }))
            .send()
            .await?;
        let status = r.status();
        if !status.is_success() {
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            anyhow::bail!("lease {}: the answer was refused ({status}): {}", lease.lease_id, body["error"]["message"]);
        }
        let a: Answered = r.json().await?;
        Ok(format!(
            "lease {}: {} jobs, {tokens} tokens in {:.1} s — accepted {}, auditing {}, rejected {}, void {}",
            lease.lease_id,
            lease.jobs.len(),
            started.elapsed().as_secs_f64(),
            a.accepted,
            a.auditing,
            a.rejected,
            a.void
        ))
    }

    /// Runs one job on the engine: as assigned, or as the cheat bends it.
    async fn generate(&self, job: &Assignment, adapter: Option<PathBuf>) -> anyhow::Result<Completion> {
        let params = job.identity.params.clone();
        let request = |adapter: Option<PathBuf>, params| Request {
            prompt: Prompt::Tokens(job.prompt_tokens.clone()),
            adapter,
            params,
            logprobs: true,
        };
        let run = |r: Request| async {
            let rx = self.engine.submit(r)?;
            Ok::<_, anyhow::Error>(rx.await??)
        };
        let Some(kind) = self.cheat else { return run(request(adapter, params)).await };
        let eot = self.runtime.end_of_turn()[0];
        let mut c = match kind {
            CheatKind::DropAdapter | CheatKind::PrefillAttack => run(request(None, params.clone())).await?,
            CheatKind::OtherAdapter => {
                let dir = self.cache.join("other-adapter");
                if !dir.join("adapter_model.safetensors").exists() {
                    agent_runtime::lora::Adapter::random(
                        self.runtime.config(),
                        &agent_runtime::model::Target::ALL,
                        8,
                        99,
                        0.05,
                        0.05,
                    )
                    .save(&dir, None)?;
                }
                run(request(Some(dir), params.clone())).await?
            }
            CheatKind::Temperature => {
                let t = if params.temperature == 0.0 { 0.8 } else { (params.temperature * 1.5).min(2.0) };
                run(request(
                    adapter.clone(),
                    agent_runtime::sampling::SamplingParams { temperature: t, ..params.clone() },
                ))
                .await?
            }
            CheatKind::Greedy => {
                run(request(
                    adapter.clone(),
                    agent_runtime::sampling::SamplingParams { temperature: 0.0, ..params.clone() },
                ))
                .await?
            }
            CheatKind::BestOfN => {
                let mut best: Option<Completion> = None;
                for k in 0..4u64 {
                    let p =
                        agent_runtime::sampling::SamplingParams { seed: params.seed.wrapping_add(k), ..params.clone() };
                    let c = run(request(adapter.clone(), p)).await?;
                    if best.as_ref().is_none_or(|b| c.tokens.len() > b.tokens.len()) {
                        best = Some(c);
                    }
                }
                best.context("no sample")?
            }
            CheatKind::Replay => {
                let stored = self.replayed.lock().map(|g| g.clone()).unwrap_or(None);
                match stored {
                    Some(old) => old,
                    None => {
                        let c = run(request(adapter.clone(), params.clone())).await?;
                        if let Ok(mut g) = self.replayed.lock() {
                            *g = Some(c.clone());
                        }
                        c
                    }
                }
            }
            CheatKind::EditTokens | CheatKind::Truncate | CheatKind::SubstituteModel => {
                run(request(adapter.clone(), params.clone())).await?
            }
        };
        match kind {
            CheatKind::PrefillAttack => {
                // Log-probs as if the adapter had generated the tokens.
                let mut scored = c.tokens.clone();
                scored.extend(c.end_token);
                let (rt, prompt) = (self.runtime.clone(), job.prompt_tokens.clone());
                let lp = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<f32>> {
                    let adapter = match &adapter {
                        Some(dir) => Some(rt.adapter(dir)?),
                        None => None,
                    };
                    Ok(rt.completion_logprobs(&prompt, &scored, adapter.as_deref())?)
                })
                .await??;
                c.logprobs = Some(lp);
            }
            CheatKind::EditTokens if !c.tokens.is_empty() => {
                let i = c.tokens.len() / 2;
                let mut t = (c.tokens[i] + 1) % self.runtime.config().vocab as u32;
                while self.runtime.end_of_turn().contains(&t) {
                    t = (t + 1) % self.runtime.config().vocab as u32;
                }
                c.tokens[i] = t;
            }
            CheatKind::Truncate if c.tokens.len() >= 2 => {
                let keep = c.tokens.len() / 2;
                c.tokens.truncate(keep);
                let mut lp = c.logprobs.take().unwrap_or_default();
                lp.truncate(keep);
                lp.push(-0.01);
                c.logprobs = Some(lp);
                c.finish = Finish::EndOfTurn;
                c.end_token = Some(eot);
            }
            _ => {}
        }
        Ok(c)
    }
}

/// Why the worker stops.
struct Stop(String);

impl CheatKind {
    /// What the cheat does, in a line.
    pub fn describe(self) -> &'static str {
        match self {
            CheatKind::SubstituteModel => {
                "runs the --model file while declaring --declared-model's sha256 (another quantization, another model)"
            }
            CheatKind::DropAdapter => "generates without the agent's adapter",
            CheatKind::OtherAdapter => "generates with an adapter of its own instead of the agent's",
            CheatKind::PrefillAttack => {
                "generates without the adapter, then reports the log-probs the adapter gives those tokens"
            }
            CheatKind::EditTokens => "changes one token in the middle of each honest answer",
            CheatKind::Truncate => "cuts each honest answer in half and calls it finished",
            CheatKind::Replay => "answers every job after the first with its first answer",
            CheatKind::Temperature => "samples at 1.5× the assigned temperature",
            CheatKind::Greedy => "decodes greedily instead of sampling",
            CheatKind::BestOfN => "samples four times with other seeds and returns the longest answer",
        }
    }
}
