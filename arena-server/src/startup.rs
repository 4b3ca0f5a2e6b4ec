//! Builds the application from settings: connects PostgreSQL and Redis,
//! migrates, verifies the model, binds the listener. `main` only calls this.

use crate::config::{Settings, redact_url};
use crate::db::{self, DbError};
use crate::health::{self, ModelState};
use crate::kv::{Redis, RedisError};
use crate::metrics::{self, Metrics};
use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use agent_runtime::model_file::{self, ModelFileError};
use sqlx::PgPool;
use std::net::TcpListener;
use std::time::Duration;
use tracing_actix_web::TracingLogger;

/// How long start-up waits for PostgreSQL and Redis before giving up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error(transparent)]
    Model(#[from] ModelFileError),
    #[error(
        "cannot listen on {address}: {source}\n  fix: set ARENA_PORT (or server.port in arena.toml) to a free port"
    )]
    Bind { address: String, source: std::io::Error },
    #[error("internal error while starting: {0}")]
    Internal(String),
}

pub struct Application {
    port: u16,
    server: Server,
    pub db: PgPool,
    pub redis: Redis,
}

impl Application {
    /// Connects everything and binds the port (0 picks a free one), without
    /// serving yet.
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        let db = db::connect(&settings.database, CONNECT_TIMEOUT).await?;
        let redis = Redis::connect(&settings.redis, CONNECT_TIMEOUT).await?;
        let model_settings = settings.model.clone();
        let verified =
            tokio::task::spawn_blocking(move || model_file::verify(&model_settings.path, model_settings.expected()))
                .await
                .map_err(|e| StartupError::Internal(e.to_string()))??;
        tracing::info!(path = %verified.path.display(), sha256 = %verified.sha256, "model verified");
        // Migrate only once every dependency checked out: a start that fails
        // changes nothing.
        if settings.database.migrate_on_start {
            let url = redact_url(&settings.database.url);
            for (version, name) in db::migrate(&db, &url).await? {
                tracing::info!(version, name, "applied migration");
            }
        }

        let address = format!("{}:{}", settings.server.host, settings.server.port);
        let listener =
            TcpListener::bind(&address).map_err(|source| StartupError::Bind { address: address.clone(), source })?;
        let port = listener.local_addr().map_err(|source| StartupError::Bind { address, source })?.port();
        let metrics = web::Data::new(Metrics::new().map_err(|e| StartupError::Internal(e.to_string()))?);
        let model = web::Data::new(ModelState { verified });
        let db_data = web::Data::new(db.clone());
        let redis_data = web::Data::new(redis.clone());
        let server = HttpServer::new(move || {
            App::new()
                .wrap_fn(metrics::track)
                .wrap(TracingLogger::default())
                .app_data(db_data.clone())
                .app_data(redis_data.clone())
                .app_data(model.clone())
                .app_data(metrics.clone())
                .route("/healthz", web::get().to(health::get))
                .route("/metrics", web::get().to(metrics::get))
        })
        .shutdown_timeout(settings.server.shutdown_timeout_s)
        .listen(listener)
        .map_err(|source| StartupError::Bind { address: format!("port {port}"), source })?
        .run();
        Ok(Application { port, server, db, redis })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGTERM or SIGINT, then lets in-flight requests finish.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
