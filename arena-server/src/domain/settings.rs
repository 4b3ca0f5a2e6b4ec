//! The platform's rules and the pipeline's timings, as configured
//! (`[arena]` in `arena.toml`; see `app::config`).

/// The platform's rules and the pipeline's timings (`[arena]` in the file).
#[derive(Debug, Clone)]
pub struct ArenaSettings {
    /// Credits a new user receives from the mint.
    pub starting_credits: i64,
    /// How long a login session lives without a new login.
    pub session_ttl_s: u64,
    /// Writes (POST/PUT/PATCH/DELETE) one user or token may make per minute.
    pub writes_per_minute: u32,
    /// How often the matchmaker looks for new matches.
    pub matchmaker_interval_ms: u64,
    /// A stage message whose work failed this many times goes to the
    /// dead-letter stream (deliveries to a slow worker do not count).
    pub max_deliveries: u32,
    /// A message pending this long with a consumer is reclaimed by another.
    pub reclaim_idle_ms: u64,
    /// A match whose status has not moved for this long is re-enqueued.
    pub reconcile_after_s: u64,
    /// Matches one stage worker takes from its stream at once.
    pub stage_batch: usize,
    /// Bytes one user may store: the adapters they uploaded and the files of
    /// the Space versions they published, together.
    pub storage_quota_bytes: i64,
    /// Credits a training job costs per million tokens of its budget (the
    /// most tokens it may train on; see `JobSettings::token_budget`).
    pub training_credits_per_mtoken: i64,
}

impl Default for ArenaSettings {
    fn default() -> ArenaSettings {
        ArenaSettings {
            starting_credits: 1_000,
            session_ttl_s: 7 * 24 * 3600,
            writes_per_minute: 120,
            matchmaker_interval_ms: 500,
            max_deliveries: 5,
            reclaim_idle_ms: 60_000,
            reconcile_after_s: 120,
            stage_batch: 32,
            storage_quota_bytes: 1 << 30,
            training_credits_per_mtoken: 100,
        }
    }
}
