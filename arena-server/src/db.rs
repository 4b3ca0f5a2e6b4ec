//! PostgreSQL: the connection pool and the embedded migrations.

use crate::config::{DatabaseSettings, redact_url};
use secrecy::ExposeSecret;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use std::str::FromStr;
use std::time::Duration;

/// The migrations in `migrations/`, compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

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
    let url = redact_url(&settings.url);
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
