//! Redis: one multiplexed, self-reconnecting connection and the key prefix
//! every key and stream name carries.

use crate::domain::redacted;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

/// How long `ping` waits for PONG.
pub const PING_DEADLINE: Duration = Duration::from_millis(1500);

/// Where Redis is (`[redis]`).
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: SecretString,
    /// Prefix of every key and stream name Arena uses, so several instances
    /// (or parallel tests) can share one Redis.
    pub prefix: String,
}

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
///
/// redis-rs's `ConnectionManager` reconnects when a command sees the
/// connection drop, but not when commands only time out: a connection left
/// half-open by a network cut stays "up" and never answers. `ping` (the
/// health check, and the watchdog `Application` runs) replaces the shared
/// connection when a PING gets no answer, so the app recovers either way.
#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    conn: std::sync::Arc<std::sync::RwLock<ConnectionManager>>,
    config: ConnectionManagerConfig,
    timeout: Duration,
    prefix: String,
}

impl Redis {
    pub async fn connect(settings: &RedisSettings, timeout: Duration) -> Result<Redis, RedisError> {
        let url = redacted(settings.url.expose_secret());
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
        let conn = tokio::time::timeout(timeout, ConnectionManager::new_with_config(client.clone(), config.clone()))
            .await
            .map_err(|_| unreachable(timed_out()))?
            .map_err(unreachable)?;
        Ok(Redis {
            client,
            conn: std::sync::Arc::new(std::sync::RwLock::new(conn)),
            config,
            timeout,
            prefix: settings.prefix.clone(),
        })
    }

    /// Replaces the shared connection with a fresh one, if one can be made
    /// now; commands already running keep the old one. Runs on a task of its
    /// own, so a caller's deadline cannot cut it short.
    async fn renew(&self) {
        let this = self.clone();
        let _ = tokio::spawn(async move { this.renew_now().await }).await;
    }

    async fn renew_now(&self) {
        let fresh = tokio::time::timeout(
            self.timeout,
            ConnectionManager::new_with_config(self.client.clone(), self.config.clone()),
        )
        .await;
        if let Ok(Ok(fresh)) = fresh
            && let Ok(mut conn) = self.conn.write()
        {
            *conn = fresh;
            tracing::info!("Redis: replaced the shared connection");
        }
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
        match self.conn.read() {
            Ok(conn) => conn.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// PING on the shared connection, answered within 1.5 s; a connection
    /// that gives no answer (or fails) is replaced for the next caller.
    pub async fn ping(&self) -> Result<(), redis::RedisError> {
        let mut conn = self.conn();
        let answer = tokio::time::timeout(PING_DEADLINE, redis::cmd("PING").query_async::<String>(&mut conn)).await;
        match answer {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => {
                if err.is_io_error() || err.is_timeout() || err.is_connection_dropped() {
                    self.renew().await;
                }
                Err(err)
            }
            Err(_) => {
                self.renew().await;
                Err(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer to PING within {} ms", PING_DEADLINE.as_millis()),
                )))
            }
        }
    }

    /// Pings every `period` until `stop` fires, so a dead shared connection
    /// is replaced even when nobody asks for /healthz.
    pub async fn watchdog(self, period: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = stop.changed() => break,
            }
            if let Err(err) = self.ping().await {
                tracing::warn!(error = %err, "Redis: the shared connection does not answer");
            }
        }
    }

    /// The server's version, from `INFO server`.
    pub async fn server_version(&self) -> Result<String, redis::RedisError> {
        let mut conn = self.conn();
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut conn).await?;
        Ok(info.lines().find_map(|line| line.strip_prefix("redis_version:")).unwrap_or("unknown").trim().to_owned())
    }
}
