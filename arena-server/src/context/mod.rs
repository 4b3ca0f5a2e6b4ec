//! The one context every handler and worker shares: the PostgreSQL pool,
//! Redis, the platform's settings, the live-event fan-out, the Space cache
//! and the metrics registry. Cheap to clone (everything inside is shared).

mod metrics;

pub use metrics::Metrics;

use crate::domain::settings::ArenaSettings;
use crate::queue::{Events, Redis};
use crate::store::spaces::SpaceCache;
use sqlx::PgPool;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Clone)]
pub struct Context {
    pub db: PgPool,
    pub redis: Redis,
    pub settings: ArenaSettings,
    /// Where Spaces' files, adapters and training runs are unpacked.
    pub data_dir: PathBuf,
    /// sha256 of the configured base model: new agent versions name it.
    pub base_model: String,
    /// The base model's shapes, read from the GGUF header: adapters are
    /// checked against them.
    pub model_config: Arc<agent_runtime::gguf::ModelConfig>,
    pub events: Events,
    /// Parsed Space versions, shared by handlers and workers.
    pub spaces: SpaceCache,
    pub metrics: Arc<Metrics>,
    /// This process's consumer name on the work queues: unique, so a
    /// restarted worker never mistakes another's pending messages for its own.
    pub consumer: String,
}

impl Context {
    /// A consumer name no other process has: host, process id, random.
    pub fn new_consumer_name() -> String {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "arena".to_owned());
        format!("{host}-{}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8])
    }
}
