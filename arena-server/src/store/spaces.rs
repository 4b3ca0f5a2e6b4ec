//! Spaces in the database: publishing a Space (a new version on every
//! change), and loading a pinned version for the workers. A version keeps
//! its TOML and the files it names, so any machine can rebuild it.

use super::StoreError;
use crate::domain::space::Space;
use crate::domain::{MatchStatus, SpaceId, UserId};
use judge::files::{MAX_FILES, MAX_FILES_BYTES, MAX_SOURCE_BYTES, SpaceFiles, check_name};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Parsed Space versions the cache keeps; the least recently used goes.
pub const CACHE_VERSIONS: usize = 64;

/// Who publishes: a designer, or an admin (who may also publish over
/// another designer's Space and name a judge model file on the server).
#[derive(Debug, Clone, Copy)]
pub struct Publisher {
    pub user: UserId,
    pub admin: bool,
    /// The publisher's storage quota in bytes (None: none, for operators).
    pub quota_bytes: Option<i64>,
}

/// A Space as the API shows it.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct SpaceRow {
    pub id: SpaceId,
    pub slug: String,
    pub owner: String,
    pub active: bool,
    pub current_version: i32,
    pub description: String,
    pub agents_per_match: i32,
    pub entry_fee: i64,
    pub entries: i64,
    pub matches_settled: i64,
}

/// What publishing did.
#[derive(Debug, Serialize)]
pub struct Published {
    pub id: SpaceId,
    pub slug: String,
    pub version: i32,
    pub sha256: String,
    /// False when the content equals the current version (nothing changed).
    pub created: bool,
}

/// The content hash of a version: the TOML and every file, in name order.
pub fn content_sha256(source: &str, files: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    h.update(b"space.toml\0");
    h.update((source.len() as u64).to_le_bytes());
    h.update(source.as_bytes());
    for (name, text) in files {
        h.update(name.as_bytes());
        h.update(b"\0");
        h.update((text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    }
    hex::encode(h.finalize())
}

/// What a player agrees to by entering: everything in the Space file but
/// its prompts and description (the fee, payout, match size, matchmaking,
/// verifiers, judge, pairs, training).
pub fn terms(source: &str) -> Option<toml::Value> {
    let mut value: toml::Value = toml::from_str(source).ok()?;
    let table = value.as_table_mut()?;
    table.remove("prompts");
    table.remove("description");
    Some(value)
}

/// The hash of what a player agrees to: the [`terms`] of the Space file and
/// every file it carries (referee script, trained judge, schemas, prompt
/// file), in name order. A new version whose hash differs pauses the
/// entries until their players enter again.
pub fn terms_sha256(source: &str, files: &BTreeMap<String, String>) -> String {
    let terms = terms(source).map(|t| t.to_string()).unwrap_or_else(|| source.to_owned());
    content_sha256(&terms, files)
}

/// Parses a version from its TOML and files (no file is read from disk).
/// A relative `judge.model` resolves against the working directory.
fn parse(source: &str, files: &SpaceFiles) -> Result<Space, Vec<String>> {
    Space::parse(source, files, Path::new("."))
        .map_err(|errs| errs.iter().map(|e| e.render("space.toml", source)).collect())
}

/// Checks a Space's TOML and files: counts and sizes first, then the names,
/// then the parse. The parsed Space, or every error.
pub fn check(source: &str, files: &BTreeMap<String, String>) -> Result<Space, StoreError> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(StoreError::invalid("source", format!("the Space file exceeds {MAX_SOURCE_BYTES} bytes")));
    }
    if files.len() > MAX_FILES {
        return Err(StoreError::invalid("files", format!("at most {MAX_FILES} files")));
    }
    let bytes: usize = source.len() + files.values().map(String::len).sum::<usize>();
    if bytes > MAX_FILES_BYTES {
        return Err(StoreError::invalid("files", format!("the Space and its files exceed {MAX_FILES_BYTES} bytes")));
    }
    for name in files.keys() {
        check_name(name).map_err(|e| StoreError::invalid("files", e))?;
    }
    parse(source, files).map_err(|errs| StoreError::invalid("source", errs.join("\n")))
}

/// Publishes a Space: a new Space owned by the caller, or a new version of
/// the caller's Space of that name. Identical content makes no version.
pub async fn publish(
    pool: &PgPool,
    by: Publisher,
    source: &str,
    files: &BTreeMap<String, String>,
) -> Result<Published, StoreError> {
    // Parsing and expanding a Space is CPU work: off the async executor.
    let space = {
        let (source, files) = (source.to_owned(), files.clone());
        tokio::task::spawn_blocking(move || check(&source, &files))
            .await
            .map_err(|e| StoreError::Internal(e.into()))??
    };
    if space.judge.model.is_some() && !by.admin {
        return Err(StoreError::invalid(
            "source",
            "judge.model names a file on the server: only an admin may publish a Space that sets it",
        ));
    }
    let sha = content_sha256(source, files);
    let files_json = serde_json::to_value(files).map_err(|e| StoreError::Internal(e.into()))?;
    let mut tx = pool.begin().await?;
    let existing: Option<(SpaceId, UserId, i32)> =
        sqlx::query_as("select id, owner_id, current_version from spaces where slug = $1 for update")
            .bind(&space.name)
            .fetch_optional(&mut *tx)
            .await?;
    let published = match existing {
        None => {
            super::check_quota(&mut tx, by.user, version_bytes(source, &files_json), by.quota_bytes).await?;
            let id = SpaceId::new();
            sqlx::query("insert into spaces (id, slug, owner_id, current_version) values ($1, $2, $3, 1)")
                .bind(id)
                .bind(&space.name)
                .bind(by.user)
                .execute(&mut *tx)
                .await?;
            insert_space_version(&mut tx, id, 1, &space, &files_json, &sha, by.user).await?;
            Published { id, slug: space.name.clone(), version: 1, sha256: sha, created: true }
        }
        Some((id, owner, current)) => {
            if owner != by.user && !by.admin {
                return Err(StoreError::Forbidden(format!("the Space {:?} belongs to another designer", space.name)));
            }
            let current_sha: String =
                sqlx::query_scalar("select sha256 from space_versions where space_id = $1 and version = $2")
                    .bind(id)
                    .bind(current)
                    .fetch_one(&mut *tx)
                    .await?;
            if current_sha != sha {
                super::check_quota(&mut tx, by.user, version_bytes(source, &files_json), by.quota_bytes).await?;
            }
            if current_sha == sha {
                Published { id, slug: space.name.clone(), version: current, sha256: sha, created: false }
            } else {
                let version = current + 1;
                let (before, before_files): (String, serde_json::Value) =
                    sqlx::query_as("select source, files from space_versions where space_id = $1 and version = $2")
                        .bind(id)
                        .bind(current)
                        .fetch_one(&mut *tx)
                        .await?;
                let before_files: BTreeMap<String, String> = serde_json::from_value(before_files).unwrap_or_default();
                insert_space_version(&mut tx, id, version, &space, &files_json, &sha, by.user).await?;
                // New terms are not forced on entered players: their
                // entries wait until they enter again. A file the Space
                // carries is part of its terms, as its TOML is.
                let terms_changed = terms_sha256(&before, &before_files) != terms_sha256(source, files);
                sqlx::query(
                    "update spaces set current_version = $2,
                            terms_version = case when $3 then $2 else terms_version end where id = $1",
                )
                .bind(id)
                .bind(version)
                .bind(terms_changed)
                .execute(&mut *tx)
                .await?;
                Published { id, slug: space.name.clone(), version, sha256: sha, created: true }
            }
        }
    };
    tx.commit().await?;
    Ok(published)
}

/// What a version counts against its publisher's quota.
fn version_bytes(source: &str, files: &serde_json::Value) -> i64 {
    (source.len() + files.to_string().len()) as i64
}

async fn insert_space_version(
    tx: &mut sqlx::PgConnection,
    space_id: SpaceId,
    version: i32,
    space: &Space,
    files: &serde_json::Value,
    sha: &str,
    by: UserId,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into space_versions
           (space_id, version, source, files, sha256, created_by, description, agents_per_match, entry_fee,
            data_price, data_designer_share, data_players_share, votes_open, vote_criterion, designer_votes,
            human_price)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(space_id)
    .bind(version)
    .bind(&space.source)
    .bind(files)
    .bind(sha)
    .bind(by)
    .bind(&space.description)
    .bind(space.agents_per_match as i32)
    .bind(space.entry_fee)
    .bind(space.data.per_pair)
    .bind(space.data.designer_share)
    .bind(space.data.players_share)
    .bind(space.votes.open)
    .bind(space.votes.open.then_some(space.votes.criterion.as_str()))
    .bind(space.votes.designer_votes)
    .bind(space.votes.price_per_pair)
    .execute(tx)
    .await?;
    Ok(())
}

/// Parsed Space versions by (space, version), at most `CACHE_VERSIONS`
/// (the least recently used is dropped). Versions never change, so an
/// entry never goes stale.
#[derive(Clone, Default)]
pub struct SpaceCache {
    inner: Arc<Mutex<CacheState>>,
}

#[derive(Default)]
struct CacheState {
    clock: u64,
    entries: HashMap<(SpaceId, i32), (u64, Arc<Space>)>,
}

impl SpaceCache {
    pub fn new() -> SpaceCache {
        SpaceCache::default()
    }

    fn lookup(&self, key: (SpaceId, i32)) -> anyhow::Result<Option<Arc<Space>>> {
        let mut state = self.inner.lock().map_err(|_| anyhow::anyhow!("space cache poisoned"))?;
        state.clock += 1;
        let now = state.clock;
        Ok(state.entries.get_mut(&key).map(|(used, space)| {
            *used = now;
            space.clone()
        }))
    }

    fn keep(&self, key: (SpaceId, i32), space: Arc<Space>) -> anyhow::Result<()> {
        let mut state = self.inner.lock().map_err(|_| anyhow::anyhow!("space cache poisoned"))?;
        state.clock += 1;
        let now = state.clock;
        state.entries.insert(key, (now, space));
        while state.entries.len() > CACHE_VERSIONS {
            let oldest = state.entries.iter().min_by_key(|(_, (used, _))| *used).map(|(k, _)| *k);
            match oldest {
                Some(k) => state.entries.remove(&k),
                None => break,
            };
        }
        Ok(())
    }

    /// How many versions are held now.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|s| s.entries.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub async fn get(&self, pool: &PgPool, space_id: SpaceId, version: i32) -> anyhow::Result<Arc<Space>> {
        if let Some(space) = self.lookup((space_id, version))? {
            return Ok(space);
        }
        let (source, files): (String, serde_json::Value) =
            sqlx::query_as("select source, files from space_versions where space_id = $1 and version = $2")
                .bind(space_id)
                .bind(version)
                .fetch_one(pool)
                .await?;
        let files: SpaceFiles = serde_json::from_value(files)?;
        let space = tokio::task::spawn_blocking(move || parse(&source, &files))
            .await?
            .map_err(|errs| anyhow::anyhow!("stored Space version no longer parses: {}", errs.join("; ")))?;
        let space = Arc::new(space);
        self.keep((space_id, version), space.clone())?;
        Ok(space)
    }
}

/// Every Space, newest first.
pub async fn list(pool: &PgPool) -> Result<Vec<SpaceRow>, sqlx::Error> {
    sqlx::query_as(SPACE_ROW_SELECT).bind(None::<String>).bind(MatchStatus::Settled).fetch_all(pool).await
}

pub async fn by_slug(pool: &PgPool, slug: &str) -> Result<Option<SpaceRow>, sqlx::Error> {
    sqlx::query_as(SPACE_ROW_SELECT).bind(Some(slug)).bind(MatchStatus::Settled).fetch_optional(pool).await
}

const SPACE_ROW_SELECT: &str = "
    select s.id, s.slug, u.username as owner, s.active, s.current_version, v.description, v.agents_per_match,
           v.entry_fee,
           (select count(*) from entries e where e.space_id = s.id and e.active) as entries,
           (select count(*) from matches m where m.space_id = s.id and m.status = $2) as matches_settled
    from spaces s join users u on u.id = s.owner_id
    join space_versions v on v.space_id = s.id and v.version = s.current_version
    where $1::text is null or s.slug = $1
    order by s.created_at desc";

/// A Space's id and its designer.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct SpaceOwner {
    pub id: SpaceId,
    pub owner_id: UserId,
}

/// A Space's id and owner by slug.
pub async fn id_and_owner(pool: &PgPool, slug: &str) -> Result<Option<SpaceOwner>, sqlx::Error> {
    sqlx::query_as("select id, owner_id from spaces where slug = $1").bind(slug).fetch_optional(pool).await
}

/// A version's TOML.
pub async fn source(pool: &PgPool, space: SpaceId, version: i32) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("select source from space_versions where space_id = $1 and version = $2")
        .bind(space)
        .bind(version)
        .fetch_one(pool)
        .await
}

/// Pauses or resumes matchmaking in a Space (a resume clears the reason
/// the platform paused it for).
pub async fn set_active(pool: &PgPool, space: SpaceId, active: bool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update spaces set active = $2, paused_reason = case when $2 then null else paused_reason end where id = $1",
    )
    .bind(space)
    .bind(active)
    .execute(pool)
    .await?;
    Ok(())
}

/// Matches of one Space its referee may fail within
/// [`REFEREE_FAILURE_WINDOW_MIN`] minutes before the platform pauses the
/// Space: a designer's script that breaks its limits costs its players
/// nothing (each match is refunded) but costs the server script time, so
/// it stops until its designer fixes and resumes it.
pub const REFEREE_FAILURES_TO_PAUSE: i64 = 10;
pub const REFEREE_FAILURE_WINDOW_MIN: i32 = 10;

/// Pauses `space` when its referee has failed [`REFEREE_FAILURES_TO_PAUSE`]
/// matches lately; its slug when this call paused it.
pub async fn pause_if_referee_keeps_failing(pool: &PgPool, space: SpaceId) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "update spaces set active = false,
                paused_reason = format('its referee failed %s matches in %s minutes (the last: %s); fix it and resume',
                                       $2::bigint, $3::int,
                                       (select m.error from matches m where m.space_id = $1 and m.status = 'failed'
                                        order by m.created_at desc limit 1))
         where id = $1 and active
           and (select count(*) from matches m
                where m.space_id = $1 and m.status = 'failed' and m.error like 'the referee%'
                  and m.created_at > now() - make_interval(mins => $3)) >= $2
         returning slug",
    )
    .bind(space)
    .bind(REFEREE_FAILURES_TO_PAUSE)
    .bind(REFEREE_FAILURE_WINDOW_MIN)
    .fetch_optional(pool)
    .await
}

/// Pauses every Space (the benchmark's drain).
pub async fn pause_all(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("update spaces set active = false").execute(pool).await?;
    Ok(())
}

/// One line of a Space's version list.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct VersionLine {
    pub version: i32,
    pub sha256: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

pub async fn versions(pool: &PgPool, space: SpaceId) -> Result<Vec<VersionLine>, sqlx::Error> {
    sqlx::query_as("select version, sha256, created_at from space_versions where space_id = $1 order by version desc")
        .bind(space)
        .fetch_all(pool)
        .await
}

/// One version in full: its TOML and files.
#[derive(Debug, sqlx::FromRow)]
pub struct VersionFull {
    pub source: String,
    pub files: serde_json::Value,
    pub sha256: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

pub async fn version(pool: &PgPool, space: SpaceId, version: i32) -> Result<Option<VersionFull>, sqlx::Error> {
    sqlx::query_as("select source, files, sha256, created_at from space_versions where space_id = $1 and version = $2")
        .bind(space)
        .bind(version)
        .fetch_optional(pool)
        .await
}

/// An active Space as the matchmaker sees it.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct ActiveSpace {
    pub id: SpaceId,
    pub current_version: i32,
    pub owner_id: UserId,
}

pub async fn active(pool: &PgPool) -> Result<Vec<ActiveSpace>, sqlx::Error> {
    sqlx::query_as("select id, current_version, owner_id from spaces where active order by slug").fetch_all(pool).await
}

/// A Space's current version number.
pub async fn current_version(pool: &PgPool, space: SpaceId) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("select current_version from spaces where id = $1").bind(space).fetch_one(pool).await
}

/// Every Space's slug and the price per pair its current version sets.
/// Each Space's current version and what it charges per pair.
pub async fn data_terms(pool: &PgPool) -> Result<Vec<(crate::domain::SpaceId, String, i32, i64)>, sqlx::Error> {
    sqlx::query_as(
        "select s.id, s.slug, s.current_version, v.data_price from spaces s
         join space_versions v on v.space_id = s.id and v.version = s.current_version order by s.slug",
    )
    .fetch_all(pool)
    .await
}
