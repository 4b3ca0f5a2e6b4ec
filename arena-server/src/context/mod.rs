//! The one context every handler and worker shares: the PostgreSQL pool,
//! Redis, the platform's settings, the live-event fan-out, the Space cache
//! and the metrics registry. Cheap to clone (everything inside is shared).

mod metrics;
mod playground;
pub mod studio_runs;

pub use metrics::Metrics;
pub use playground::Playground;
pub use studio_runs::StudioRuns;

use crate::domain::settings::ArenaSettings;
use crate::queue::{Events, Redis};
use crate::store::spaces::SpaceCache;
use sqlx::PgPool;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Clone)]
pub struct Context {
    /// The pool this context's users take connections from: the API's for
    /// handlers, the pipeline's for workers (see `for_work`), so a flood of
    /// requests cannot starve the stages of connections, nor the stages the API.
    pub db: PgPool,
    /// The pipeline's pool.
    pub work_db: PgPool,
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
    /// Password hashes computed at once (each costs ~19 MiB and tens of
    /// milliseconds of a core): sign-in and registration wait for a permit.
    pub hashing: Arc<tokio::sync::Semaphore>,
    /// Open live-event streams, per client address and in all.
    pub streams: Arc<StreamSlots>,
    /// One computation at a time per key (the leaderboard's fit).
    pub flights: Arc<Flights>,
    /// The agent builder's playground (its model loads on first use).
    pub playground: Arc<Playground>,
    /// The studio's dry runs and red teams, running and recently finished.
    pub studio_runs: Arc<StudioRuns>,
}

/// Single flight: callers of one key wait for the first one's work instead
/// of repeating it (they then find its result in the cache).
#[derive(Default)]
pub struct Flights {
    locks: std::sync::Mutex<std::collections::HashMap<String, std::sync::Weak<tokio::sync::Mutex<()>>>>,
}

impl Flights {
    /// Holds `key` until the guard drops.
    pub async fn hold(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = match self.locks.lock() {
                Ok(locks) => locks,
                Err(poisoned) => poisoned.into_inner(),
            };
            locks.retain(|_, weak| weak.strong_count() > 0);
            match locks.get(key).and_then(std::sync::Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(key.to_owned(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }
}

/// Bounds on open Server-Sent Events streams: an open stream holds a slot
/// until it ends.
pub struct StreamSlots {
    per_address: usize,
    total: usize,
    open: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

/// One open stream's slot; dropping it frees the slot.
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    address: String,
}

impl StreamSlots {
    pub fn new(per_address: usize, total: usize) -> Arc<StreamSlots> {
        Arc::new(StreamSlots { per_address, total, open: Default::default() })
    }

    /// A slot for a stream from `address`, or why not.
    pub fn take(self: &Arc<StreamSlots>, address: &str) -> Result<StreamSlot, String> {
        let mut open = self.open.lock().map_err(|_| "stream slots poisoned".to_owned())?;
        let total: usize = open.values().sum();
        if total >= self.total {
            return Err(format!("{total} live streams are open on this server, its limit; retry later"));
        }
        let mine = open.entry(address.to_owned()).or_default();
        if *mine >= self.per_address {
            return Err(format!("at most {} live streams per client address; close one first", self.per_address));
        }
        *mine += 1;
        Ok(StreamSlot { slots: self.clone(), address: address.to_owned() })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.slots.open.lock()
            && let Some(n) = open.get_mut(&self.address)
        {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.address);
            }
        }
    }
}

impl Context {
    /// This context for the background workers: their own pool.
    pub fn for_work(&self) -> Context {
        Context { db: self.work_db.clone(), ..self.clone() }
    }

    /// Permits for password hashing: two per core.
    pub fn hashing_permits() -> Arc<tokio::sync::Semaphore> {
        // Half the cores at most: a flood of sign-ins (each one argon2
        // hash, real user or not) must leave CPU for everything else
        // (measured with `arena bench abuse`: at 2 × cores /healthz timed out).
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Arc::new(tokio::sync::Semaphore::new((cores / 2).max(1)))
    }

    /// A consumer name no other process has: host, process id, random.
    pub fn new_consumer_name() -> String {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "arena".to_owned());
        format!("{host}-{}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8])
    }
}
