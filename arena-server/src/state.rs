//! What every handler and worker shares: the pools, the platform's rules and
//! the live-event fan-out.

use crate::config::ArenaSettings;
use crate::events::Events;
use crate::kv::Redis;
use sqlx::PgPool;
use std::path::PathBuf;

#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub redis: Redis,
    pub settings: ArenaSettings,
    /// sha256 of the configured base model: new agent versions name it.
    pub base_model: String,
    /// Where Spaces' files and adapters are unpacked for the workers.
    pub data_dir: PathBuf,
    pub events: Events,
    /// The base model's shapes, read from the GGUF header: adapters are
    /// checked against them.
    pub model_config: Option<std::sync::Arc<agent_runtime::gguf::ModelConfig>>,
}
