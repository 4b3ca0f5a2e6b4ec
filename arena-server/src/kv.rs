//! Redis: one multiplexed, self-reconnecting connection and the key prefix
//! every key and stream name carries.

use crate::config::{RedisSettings, redact_url};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("REDIS_URL {url} is not a valid Redis URL: {source}")]
    BadUrl { url: String, source: redis::RedisError },
    #[error(
        "cannot connect to Redis at {url}: {source}\n  fix: start it with `scripts/up` (or `scripts/test`), or point REDIS_URL at a running server"
    )]
    Unreachable { url: String, source: redis::RedisError },
}

/// A cloneable handle: the connection is shared, commands are pipelined.
#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
}

impl Redis {
    pub async fn connect(settings: &RedisSettings, timeout: Duration) -> Result<Redis, RedisError> {
        let url = redact_url(&settings.url);
        let client = redis::Client::open(settings.url.expose_secret())
            .map_err(|source| RedisError::BadUrl { url: url.clone(), source })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout)
            .set_number_of_retries(2);
        // One plain attempt first: the manager retries with back-off, which
        // turns "connection refused" into minutes of waiting.
        let unreachable = |source| RedisError::Unreachable { url: url.clone(), source };
        let timed_out = || redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"));
        tokio::time::timeout(timeout, client.get_multiplexed_async_connection())
            .await
            .map_err(|_| unreachable(timed_out()))?
            .map_err(unreachable)?;
        let conn = tokio::time::timeout(timeout, ConnectionManager::new_with_config(client.clone(), config))
            .await
            .map_err(|_| unreachable(timed_out()))?
            .map_err(unreachable)?;
        Ok(Redis { client, conn, prefix: settings.prefix.clone() })
    }

    /// The full name of one of Arena's keys.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// A dedicated connection for subscriptions (a subscribed connection
    /// cannot run other commands).
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, redis::RedisError> {
        self.client.get_async_pubsub().await
    }

    /// A connection of its own, for blocking commands (XREADGROUP BLOCK):
    /// Redis serves one connection's commands in order, so a blocking read
    /// on the shared connection would hold up every other caller.
    pub async fn dedicated(&self) -> Result<ConnectionManager, redis::RedisError> {
        let config =
            ConnectionManagerConfig::new().set_connection_timeout(Duration::from_secs(5)).set_number_of_retries(2);
        ConnectionManager::new_with_config(self.client.clone(), config).await
    }

    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    pub async fn ping(&self) -> Result<(), redis::RedisError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    /// The server's version, from `INFO server`.
    pub async fn server_version(&self) -> Result<String, redis::RedisError> {
        let mut conn = self.conn.clone();
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut conn).await?;
        Ok(info.lines().find_map(|line| line.strip_prefix("redis_version:")).unwrap_or("unknown").trim().to_owned())
    }
}
