//! Composition: builds the application from settings — connects
//! PostgreSQL and Redis, migrates, verifies the model, binds the listener,
//! makes the one `Context`, and starts the background workers of the
//! process's roles. `main` (through `cli::serve`) only calls this.

pub mod config;
pub mod telemetry;

use crate::context::{Context, Metrics, StreamSlots};
use crate::domain::redacted;
use crate::http::health::{self, ModelState};
use crate::http::metrics;
use crate::queue::{Events, Redis, RedisError};
use crate::store::spaces::SpaceCache;
use crate::store::{self as db, DbError};
use crate::work::generate::{EngineGenerator, GenerateStage, Generator};
use crate::work::judge::JudgeStage;
use crate::work::runner::Work;
use crate::work::settle::SettleStage;
use crate::work::{gauges, matchmaker, policies, reconciler, runner, trainer};
use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use agent_runtime::model_file::{self, ModelFileError};
use config::Settings;
use secrecy::ExposeSecret;
use std::net::TcpListener;
use std::sync::Arc;
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

/// The parts one process runs. `arena serve` runs them all; `--role`
/// picks one, so several machines can share PostgreSQL and Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// The HTTP API, the matchmaker, settlement and the reconciler.
    pub web: bool,
    /// The generate stage on the model runtime.
    pub runtime: bool,
    /// The judge stage.
    pub judge: bool,
    /// Training jobs (DPO and the promotion gate).
    pub trainer: bool,
}

impl Roles {
    pub const ALL: Roles = Roles { web: true, runtime: true, judge: true, trainer: true };
    pub const NONE: Roles = Roles { web: false, runtime: false, judge: false, trainer: false };

    pub fn parse(name: &str) -> Option<Roles> {
        match name {
            "all" => Some(Roles::ALL),
            "web" => Some(Roles { web: true, ..Roles::NONE }),
            "runtime" => Some(Roles { runtime: true, ..Roles::NONE }),
            "judge" => Some(Roles { judge: true, ..Roles::NONE }),
            "trainer" => Some(Roles { trainer: true, ..Roles::NONE }),
            _ => None,
        }
    }
}

/// How the application starts.
#[derive(Clone)]
pub struct Options {
    /// Which background workers run. The HTTP API is served only with `web`;
    /// `/healthz` and `/metrics` always.
    pub roles: Roles,
    /// What answers for the agents. None: the real engine on the configured
    /// model. Tests and benchmarks that are not about the model pass the
    /// test double `work::test_double::StubGenerator` here.
    pub generator: Option<Arc<dyn Generator>>,
    /// Model threads for the runtime and the judge.
    pub threads: usize,
    /// Start the roles' background workers. Tests that drive the pipeline
    /// step by step turn this off and call `start_workers` themselves.
    pub workers: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            roles: Roles::ALL,
            generator: None,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            workers: true,
        }
    }
}

pub struct Application {
    port: u16,
    server: Server,
    /// What handlers and workers share.
    pub ctx: Context,
    /// Stops the background workers.
    pub stop: tokio::sync::watch::Sender<bool>,
    pub settings: Settings,
}

impl Application {
    /// Connects everything and binds the port (0 picks a free one), without
    /// serving yet.
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        Application::build_with(settings, Options::default()).await
    }

    pub async fn build_with(settings: Settings, options: Options) -> Result<Application, StartupError> {
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
            let url = redacted(settings.database.url.expose_secret());
            for (version, name) in db::migrate(&db, &url).await? {
                tracing::info!(version, name, "applied migration");
            }
        }

        let address = format!("{}:{}", settings.server.host, settings.server.port);
        let listener =
            TcpListener::bind(&address).map_err(|source| StartupError::Bind { address: address.clone(), source })?;
        let port = listener.local_addr().map_err(|source| StartupError::Bind { address, source })?.port();
        let metrics = Arc::new(Metrics::new().map_err(|e| StartupError::Internal(e.to_string()))?);
        let base_model = verified.sha256.clone();
        let model = web::Data::new(ModelState { verified });
        let model_path = settings.model.path.clone();
        let model_config = tokio::task::spawn_blocking(move || agent_runtime::gguf::Gguf::open(&model_path)?.config())
            .await
            .map_err(|e| StartupError::Internal(e.to_string()))?
            .map_err(|e| StartupError::Internal(format!("cannot read the model's configuration: {e}")))?;
        // A pool of its own for the pipeline: a bulkhead between the API
        // and the stages.
        let work_db = db::connect(&settings.database, CONNECT_TIMEOUT).await?;
        let ctx = Context {
            db: db.clone(),
            work_db,
            redis: redis.clone(),
            settings: settings.arena.clone(),
            data_dir: settings.data_dir.clone(),
            base_model,
            model_config: Arc::new(model_config),
            events: Events::new(),
            spaces: SpaceCache::new(),
            metrics,
            consumer: Context::new_consumer_name(),
            hashing: Context::hashing_permits(),
            streams: StreamSlots::new(8, 1024),
            flights: Default::default(),
            playground: Arc::new(crate::context::Playground::new(settings.model.path.clone(), options.threads)),
            studio_runs: Arc::default(),
        };
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(redis.clone().watchdog(Duration::from_secs(5), stop_rx.clone()));
        let roles = options.roles;
        if roles.web {
            ctx.events.relay(redis.clone());
            // Paid exports a stop interrupted are written again.
            tokio::spawn(crate::work::exports::resume(ctx.db.clone(), ctx.data_dir.clone()));
        }
        if options.workers {
            start_workers(&ctx, &settings, &options, stop_rx)?;
        }
        let ctx_data = web::Data::new(ctx.clone());
        let server = HttpServer::new(move || {
            // Every answer, API and pages alike: no inline script, nothing
            // from another origin, no framing, no sniffing.
            let headers = actix_web::middleware::DefaultHeaders::new()
                .add(("Content-Security-Policy", crate::http::pages::CSP))
                .add(("X-Content-Type-Options", "nosniff"))
                .add(("X-Frame-Options", "DENY"))
                .add(("Referrer-Policy", "same-origin"));
            let app = App::new()
                .wrap(headers)
                .wrap_fn(metrics::track)
                .wrap(TracingLogger::default())
                .app_data(ctx_data.clone())
                .app_data(model.clone())
                .route("/healthz", web::get().to(health::get))
                .route("/metrics", web::get().to(metrics::get));
            if roles.web { app.configure(crate::http::configure) } else { app }
        })
        .shutdown_timeout(settings.server.shutdown_timeout_s)
        .listen(listener)
        .map_err(|source| StartupError::Bind { address: format!("port {port}"), source })?
        .run();
        Ok(Application { port, server, ctx, stop, settings })
    }

    /// Stops the background workers (the HTTP server stops on its own signal).
    pub fn stop_workers(&self) {
        let _ = self.stop.send(true);
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGTERM or SIGINT, then lets in-flight requests finish.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Starts the background workers the roles ask for, on `ctx`'s pipeline
/// pool (its consumer name is theirs).
pub fn start_workers(
    ctx: &Context,
    settings: &Settings,
    options: &Options,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), StartupError> {
    let ctx = &ctx.for_work();
    let roles = options.roles;
    if roles.runtime {
        let generator: Arc<dyn Generator> = match &options.generator {
            Some(generator) => generator.clone(),
            None => {
                let runtime = agent_runtime::engine::Runtime::load(&settings.model.path, options.threads)
                    .map_err(|e| StartupError::Internal(format!("cannot load the model for the runtime role: {e}")))?;
                let engine = agent_runtime::engine::Engine::start(Arc::new(runtime), Default::default());
                Arc::new(EngineGenerator { engine })
            }
        };
        spawn_worker(ctx, Arc::new(GenerateStage { generator }), &stop);
    }
    if roles.judge {
        let worker = judge::worker::JudgeWorker::start(settings.model.path.clone(), options.threads, 256)
            .map_err(|e| StartupError::Internal(format!("cannot start the judge worker: {e}")))?;
        spawn_worker(ctx, Arc::new(JudgeStage::new(worker)), &stop);
    }
    if roles.trainer {
        // The model loads on the first job.
        spawn_worker(ctx, Arc::new(trainer::Trainer::new(settings.model.path.clone(), options.threads)), &stop);
    }
    if roles.web {
        spawn_worker(ctx, Arc::new(SettleStage), &stop);
        tokio::spawn(matchmaker::run(ctx.clone(), stop.clone()));
        let period = Duration::from_secs((settings.arena.reconcile_after_s / 2).clamp(1, 60));
        tokio::spawn(reconciler::run(ctx.clone(), period, stop.clone()));
        tokio::spawn(gauges::run(ctx.clone(), Duration::from_secs(5), stop.clone()));
        tokio::spawn(crate::work::exports::retention(
            ctx.db.clone(),
            ctx.data_dir.clone(),
            settings.arena.export_retention_days,
            Duration::from_secs(600),
            stop.clone(),
        ));
        let every = Duration::from_millis(settings.arena.matchmaker_interval_ms.clamp(50, 10_000) * 20);
        tokio::spawn(policies::run(ctx.clone(), every, stop.clone()));
        // Open workers: leases expire, escrow is released, held answers
        // are audited (the reference model loads on the first).
        tokio::spawn(crate::work::workers::run_upkeep(ctx.clone(), stop.clone()));
        tokio::spawn(crate::work::workers::run_auditor(ctx.clone(), stop.clone()));
        // Votes: the outlier test flags voters who favour one agent.
        tokio::spawn(crate::work::votes::run_integrity(ctx.clone(), stop.clone()));
    }
    Ok(())
}

fn spawn_worker(ctx: &Context, work: Arc<dyn Work>, stop: &tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(runner::run(ctx.clone(), work, stop.clone()));
}
