//! The agent builder's playground: the runtime's own engine, loaded on the
//! first request (a server whose players never use it pays nothing), with
//! a small batch and queue so that it cannot crowd out matches. Handlers
//! only submit a request and read the streamed text; the engine thread
//! owns the model.

use agent_runtime::engine::{Engine, EngineConfig, Runtime};
use std::path::PathBuf;
use std::sync::Arc;

pub struct Playground {
    model_path: PathBuf,
    threads: usize,
    engine: tokio::sync::OnceCell<Result<Engine, String>>,
}

impl Playground {
    pub fn new(model_path: PathBuf, threads: usize) -> Playground {
        Playground { model_path, threads: threads.max(1), engine: tokio::sync::OnceCell::new() }
    }

    /// The model file the playground runs.
    pub fn model_path(&self) -> &std::path::Path {
        &self.model_path
    }

    /// The engine, loading the model the first time.
    pub async fn engine(&self) -> Result<Engine, String> {
        self.engine
            .get_or_init(|| async {
                let (path, threads) = (self.model_path.clone(), self.threads);
                tokio::task::spawn_blocking(move || Runtime::load(&path, threads))
                    .await
                    .map_err(|e| e.to_string())?
                    .map(|rt| Engine::start(Arc::new(rt), EngineConfig { max_batch: 2, queue_capacity: 4 }))
                    .map_err(|e| format!("the playground's model did not load: {e}"))
            })
            .await
            .clone()
    }
}
