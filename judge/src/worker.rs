//! The judge as a service: a thread that owns the judge models and ranks
//! matches from a bounded queue, answering each on its own channel. The
//! arena wires it to its Redis stream; the queue's bound is its
//! back-pressure (a full queue is an immediate error, never a hang).

use crate::signals::RecentAnswers;
use crate::{Embedder, Judge, JudgeConfig, JudgeError, JudgeMode, JudgeModel, MatchInput, Verdict};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

struct Job {
    config: Arc<JudgeConfig>,
    input: MatchInput,
    reply: tokio::sync::oneshot::Sender<Result<Verdict, JudgeError>>,
}

/// Why a match was not accepted: the same refusal as the runtime's engine
/// gives (a full queue, or a stopped worker).
pub use agent_runtime::SubmitError;

/// A handle to the judge thread; cheap to clone.
#[derive(Clone)]
pub struct JudgeWorker {
    tx: SyncSender<Job>,
    capacity: usize,
}

impl JudgeWorker {
    /// Starts the worker. `default_model` serves Spaces that name no judge
    /// model; models are loaded on first use and kept.
    pub fn start(default_model: PathBuf, threads: usize, queue_capacity: usize) -> std::io::Result<JudgeWorker> {
        let capacity = queue_capacity.max(1);
        let (tx, rx) = sync_channel::<Job>(capacity);
        std::thread::Builder::new().name("judge".to_owned()).spawn(move || {
            let mut models: HashMap<PathBuf, Arc<JudgeModel>> = HashMap::new();
            let mut embedder: Option<Arc<Embedder>> = None;
            // Each Space version's recent answers (the combined judge's
            // `emb_constant` signal), keyed by its shared config.
            let mut recent: HashMap<usize, (std::sync::Weak<JudgeConfig>, Arc<RecentAnswers>)> = HashMap::new();
            let embedder_dir = crate::embed::default_dir(&default_model);
            for job in rx {
                let result = (|| {
                    let model = if job.config.needs_model() {
                        let path = job.config.model.clone().unwrap_or_else(|| default_model.clone());
                        let model = match models.get(&path) {
                            Some(m) => m.clone(),
                            None => {
                                let m = Arc::new(JudgeModel::load(&path, threads)?);
                                models.insert(path, m.clone());
                                m
                            }
                        };
                        Some(model)
                    } else {
                        None
                    };
                    let mut judge = Judge::new(job.config.clone(), model)?;
                    if job.config.mode == JudgeMode::Combined {
                        if job.config.trained.as_ref().is_some_and(|t| t.judge.uses_embeddings()) && embedder.is_none()
                        {
                            embedder = Some(Arc::new(Embedder::load(&embedder_dir)?));
                        }
                        judge = judge.with_embedder(embedder.clone());
                        recent.retain(|_, (config, _)| config.strong_count() > 0);
                        let key = Arc::as_ptr(&job.config) as usize;
                        let entry = recent
                            .entry(key)
                            .or_insert_with(|| (Arc::downgrade(&job.config), Arc::new(RecentAnswers::default())));
                        judge.recent = entry.1.clone();
                    }
                    judge.judge(&job.input)
                })();
                let _ = job.reply.send(result);
            }
        })?;
        Ok(JudgeWorker { tx, capacity })
    }

    /// Queues one match; the verdict arrives on the returned channel.
    pub fn submit(
        &self,
        config: Arc<JudgeConfig>,
        input: MatchInput,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<Verdict, JudgeError>>, SubmitError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        match self.tx.try_send(Job { config, input, reply }) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(SubmitError::OverCapacity { queued: self.capacity }),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Stopped),
        }
    }
}
