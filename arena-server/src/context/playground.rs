//! The model work people start from pages, apart from the pipeline's: the
//! agent builder's playground and the studio's dry runs and red teams.
//! Each has an engine of its own (the runtime's, loaded on first use: a
//! server whose users never use them pays nothing), with a small batch and
//! a bounded queue, so that neither crowds out the other or the matches;
//! the studio's runs share one judge model per process. Handlers only
//! submit a request and read the answer; the engine threads own the models.

use agent_runtime::engine::{Engine, EngineConfig, Runtime};
use std::path::PathBuf;
use std::sync::Arc;

pub struct Playground {
    model_path: PathBuf,
    threads: usize,
    engine: tokio::sync::OnceCell<Result<Engine, String>>,
    studio_engine: tokio::sync::OnceCell<Result<Engine, String>>,
    judge_model: tokio::sync::OnceCell<Result<Arc<judge::JudgeModel>, String>>,
    reference: tokio::sync::OnceCell<Result<Arc<Runtime>, String>>,
}

impl Playground {
    pub fn new(model_path: PathBuf, threads: usize) -> Playground {
        Playground {
            model_path,
            threads: threads.max(1),
            engine: tokio::sync::OnceCell::new(),
            studio_engine: tokio::sync::OnceCell::new(),
            judge_model: tokio::sync::OnceCell::new(),
            reference: tokio::sync::OnceCell::new(),
        }
    }

    /// The model file the playground runs.
    pub fn model_path(&self) -> &std::path::Path {
        &self.model_path
    }

    async fn load(&self, config: EngineConfig) -> Result<Engine, String> {
        let (path, threads) = (self.model_path.clone(), self.threads);
        tokio::task::spawn_blocking(move || Runtime::load(&path, threads))
            .await
            .map_err(|e| e.to_string())?
            .map(|rt| Engine::start(Arc::new(rt), config))
            .map_err(|e| format!("the model did not load: {e}"))
    }

    /// The playground's engine, loading the model the first time.
    pub async fn engine(&self) -> Result<Engine, String> {
        self.engine.get_or_init(|| self.load(EngineConfig { max_batch: 2, queue_capacity: 4 })).await.clone()
    }

    /// The studio's dry runs' engine (not the playground's: a dry run's
    /// matches must not fill the playground's queue).
    pub async fn studio_engine(&self) -> Result<Engine, String> {
        self.studio_engine.get_or_init(|| self.load(EngineConfig { max_batch: 4, queue_capacity: 16 })).await.clone()
    }

    /// The reference runtime open workers are held to: it renders their
    /// prompts to token ids, decodes their answers and replays audits (on
    /// blocking threads; it has no engine of its own).
    pub async fn reference(&self) -> Result<Arc<Runtime>, String> {
        self.reference
            .get_or_init(|| async {
                let (path, threads) = (self.model_path.clone(), self.threads);
                tokio::task::spawn_blocking(move || Runtime::load(&path, threads))
                    .await
                    .map_err(|e| e.to_string())?
                    .map(Arc::new)
                    .map_err(|e| format!("the model did not load: {e}"))
            })
            .await
            .clone()
    }

    /// The judge model the studio's runs share (loaded once per process).
    pub async fn judge_model(&self) -> Result<Arc<judge::JudgeModel>, String> {
        self.judge_model
            .get_or_init(|| async {
                let path = self.model_path.clone();
                tokio::task::spawn_blocking(move || judge::JudgeModel::load(&path, 1))
                    .await
                    .map_err(|e| e.to_string())?
                    .map(Arc::new)
                    .map_err(|e| format!("the judge model did not load: {e}"))
            })
            .await
            .clone()
    }
}
