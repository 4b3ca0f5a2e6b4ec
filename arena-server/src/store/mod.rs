//! PostgreSQL, the truth: the connection pool, the embedded migrations, and
//! every SQL statement of the arena, one file per aggregate. Functions take
//! a pool or a connection (the caller's transaction) and return named row
//! structs; errors are this room's own (`StoreError`, `LedgerError`,
//! `sqlx::Error`), which the HTTP room maps to responses.

pub mod adapters;
pub mod agents;
pub mod analytics;
pub mod exports;
pub mod formation;
pub mod leaderboard;
pub mod ledger;
pub mod matches;
pub mod outbox;
pub mod pairs;
pub mod settlement;
pub mod spaces;
pub mod training;
pub mod turns;
pub mod users;
pub mod votes;
pub mod workers;

use crate::domain::{DomainError, redacted};
use secrecy::{ExposeSecret, SecretString};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use std::str::FromStr;
use std::time::Duration;

/// The migrations in `migrations/`, compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Where PostgreSQL is and how the pool behaves (`[database]`).
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: SecretString,
    pub max_connections: u32,
    /// Apply pending migrations when `arena serve` starts.
    pub migrate_on_start: bool,
}

/// What a store function refuses, beyond the database's own errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The input breaks a rule; the field is named.
    #[error(transparent)]
    Invalid(#[from] DomainError),
    /// No such thing (or not one the caller may know of).
    #[error("{0} not found")]
    NotFound(String),
    /// It exists and belongs to someone else.
    #[error("{0}")]
    Forbidden(String),
    /// It conflicts with what exists; the field is named.
    #[error("{message}")]
    Conflict { field: String, message: String },
    /// Storing it would take the user past their storage quota.
    #[error("{0}")]
    OverQuota(String),
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// Anything else that went wrong: a bug or the machine, not the input.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl StoreError {
    pub fn invalid(field: &str, message: impl Into<String>) -> StoreError {
        StoreError::Invalid(DomainError::new(field, message))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("DATABASE_URL {url} is not a valid PostgreSQL URL: {source}")]
    BadUrl { url: String, source: sqlx::Error },
    #[error(
        "cannot connect to PostgreSQL at {url}: {source}\n  fix: start it with `scripts/up` (or `scripts/test`), or point DATABASE_URL at a running server"
    )]
    Unreachable { url: String, source: sqlx::Error },
    #[error("migrating the database at {url} failed: {source}")]
    Migrate { url: String, source: sqlx::migrate::MigrateError },
}

/// Connects a pool, failing within `timeout` when the server cannot be reached.
pub async fn connect(settings: &DatabaseSettings, timeout: Duration) -> Result<PgPool, DbError> {
    let url = redacted(settings.url.expose_secret());
    let options = PgConnectOptions::from_str(settings.url.expose_secret())
        .map_err(|source| DbError::BadUrl { url: url.clone(), source })?
        .log_statements(tracing::log::LevelFilter::Debug)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
    // One plain connection first: the pool retries refused connections until
    // its timeout, and its final error hides the cause.
    let probe = tokio::time::timeout(timeout, PgConnection::connect_with(&options))
        .await
        .map_err(|_| DbError::Unreachable { url: url.clone(), source: sqlx::Error::PoolTimedOut })?
        .map_err(|source| DbError::Unreachable { url: url.clone(), source })?;
    let _ = probe.close().await;
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(timeout)
        .connect_with(options)
        .await
        .map_err(|source| DbError::Unreachable { url, source })
}

/// Applies pending migrations; returns the versions and names it applied.
pub async fn migrate(pool: &PgPool, url: &str) -> Result<Vec<(i64, String)>, DbError> {
    let before = applied_versions(pool).await.unwrap_or_default();
    MIGRATOR.run(pool).await.map_err(|source| DbError::Migrate { url: url.to_owned(), source })?;
    Ok(MIGRATOR
        .iter()
        .filter(|m| !before.contains(&m.version))
        .map(|m| (m.version, m.description.to_string()))
        .collect())
}

/// Migrations embedded in this binary that the database has not applied.
pub async fn pending(pool: &PgPool) -> Result<Vec<(i64, String)>, sqlx::Error> {
    let applied = applied_versions(pool).await?;
    Ok(MIGRATOR
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .map(|m| (m.version, m.description.to_string()))
        .collect())
}

async fn applied_versions(pool: &PgPool) -> Result<Vec<i64>, sqlx::Error> {
    let exists: bool = sqlx::query_scalar("select to_regclass('_sqlx_migrations') is not null").fetch_one(pool).await?;
    if !exists {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("select version from _sqlx_migrations where success order by version").fetch_all(pool).await
}

/// `select 1`: whether the database answers.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("select 1").execute(pool).await.map(|_| ())
}

/// The server's version string.
pub async fn server_version(pool: &PgPool) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("show server_version").fetch_one(pool).await
}

/// Creates a database (the benchmarks' throwaway ones). `name` is ours,
/// never a user's: it is quoted, not bound.
pub async fn create_database(admin: &PgPool, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("create database \"{name}\"")).execute(admin).await.map(|_| ())
}

pub async fn drop_database(admin: &PgPool, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("drop database if exists \"{name}\" with (force)")).execute(admin).await.map(|_| ())
}

/// Bytes `user` stores: the adapters they uploaded and the TOML and files
/// of the Space versions they published.
pub async fn stored_bytes(conn: &mut sqlx::PgConnection, user: crate::domain::UserId) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "select coalesce((select sum(bytes) from adapters where uploaded_by = $1), 0)::bigint
              + coalesce((select sum(octet_length(source) + octet_length(files::text)) from space_versions
                          where created_by = $1), 0)::bigint",
    )
    .bind(user)
    .fetch_one(conn)
    .await
}

/// Refuses to store `adding` more bytes for `user` past `quota` (None: no
/// quota, as for operators at the command line). Takes a lock per user
/// for the caller's transaction, so two uploads at once cannot both pass.
pub async fn check_quota(
    conn: &mut sqlx::PgConnection,
    user: crate::domain::UserId,
    adding: i64,
    quota: Option<i64>,
) -> Result<(), StoreError> {
    let Some(quota) = quota else { return Ok(()) };
    sqlx::query("select pg_advisory_xact_lock(hashtextextended('quota:' || $1::text, 0))")
        .bind(user)
        .execute(&mut *conn)
        .await?;
    let used = stored_bytes(conn, user).await?;
    if used.saturating_add(adding) > quota {
        return Err(StoreError::OverQuota(format!(
            "storage quota exceeded: you store {used} bytes, this adds {adding}, the quota is {quota} bytes; \
             delete nothing here — ask an operator for more, or reuse what you stored"
        )));
    }
    Ok(())
}
