//! The test environment under the harness (`arena::Arena`): a fresh,
//! migrated database and a Redis key prefix per test, and a TCP proxy that
//! can cut a dependency off to see how the app behaves when it goes down.
//! With `TEST_LOG` set, the server's logs print with each test's output.

use arena_server::app::config::Settings;
use secrecy::SecretString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

pub fn env_or_panic(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the suite with `scripts/test`, which starts PostgreSQL and Redis and sets it")
    })
}

pub fn model_path() -> PathBuf {
    std::env::var_os("ARENA_MODEL_PATH").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../.arena/models")
            .join(agent_runtime::model_file::DEFAULT_MODEL.file_name)
    })
}

/// A database of its own (dropped at the end) and a Redis prefix of its own.
pub struct TestEnv {
    admin_url: String,
    pub db_name: String,
    pub db_url: String,
    pub redis_url: String,
    pub prefix: String,
}

impl TestEnv {
    pub async fn new() -> TestEnv {
        let admin_url = env_or_panic("DATABASE_URL");
        let redis_url = env_or_panic("REDIS_URL");
        let id = uuid::Uuid::new_v4().simple().to_string();
        let db_name = format!("arena_test_{id}");
        let mut admin = url::Url::parse(&admin_url).unwrap();
        admin.set_path("/postgres");
        let pool = sqlx::PgPool::connect(admin.as_str()).await.expect("connect to PostgreSQL as admin");
        sqlx::query(&format!("create database \"{db_name}\"")).execute(&pool).await.unwrap();
        pool.close().await;
        let mut db_url = url::Url::parse(&admin_url).unwrap();
        db_url.set_path(&format!("/{db_name}"));
        TestEnv {
            admin_url: admin.to_string(),
            db_name,
            db_url: db_url.to_string(),
            redis_url,
            prefix: format!("test:{id}:"),
        }
    }

    /// Settings for an app on a free port using this environment.
    pub fn settings(&self) -> Settings {
        let mut settings = Settings::load_from(Some(Path::new("/dev/null")), &|_| None).unwrap();
        settings.server.port = 0;
        settings.server.shutdown_timeout_s = 1;
        settings.database.url = SecretString::from(self.db_url.clone());
        settings.database.max_connections = 4;
        settings.redis.url = SecretString::from(self.redis_url.clone());
        settings.redis.prefix = self.prefix.clone();
        settings.model.path = model_path();
        settings
    }

    /// The environment variables that point the `arena` binary here.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", self.db_url.clone()),
            ("REDIS_URL", self.redis_url.clone()),
            ("ARENA_REDIS_PREFIX", self.prefix.clone()),
            ("ARENA_MODEL_PATH", model_path().display().to_string()),
            ("ARENA_CONFIG", "/dev/null".to_owned()),
        ]
    }

    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.db_url).await.unwrap()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Synchronous on purpose: Drop cannot await, and psql is at hand
        // wherever the suite runs. A database left behind by a crash is
        // dropped by the next `scripts/test`.
        let _ = std::process::Command::new("psql")
            .arg(&self.admin_url)
            .args(["-qc", &format!("drop database if exists \"{}\" with (force)", self.db_name)])
            .output();
    }
}

/// A TCP proxy in front of a real server, which a test can cut (every open
/// connection dropped, new ones refused) and restore.
pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    cut: Arc<Notify>,
}

impl Proxy {
    pub async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(Notify::new());
        let (up2, cut2) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let cut = cut2.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.notified() => {}
                    }
                });
            }
        });
        Proxy { port, up, cut }
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            self.cut.notify_waiters();
        }
    }
}

/// host:port of a URL.
pub fn host_port(url: &str) -> String {
    let url = url::Url::parse(url).unwrap();
    format!("{}:{}", url.host_str().unwrap(), url.port_or_known_default().unwrap())
}

/// The URL with its host and port replaced by the proxy's.
pub fn via_proxy(url: &str, proxy: &Proxy) -> String {
    let mut url = url::Url::parse(url).unwrap();
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(proxy.port)).unwrap();
    url.to_string()
}

/// Polls `check` until it holds or `seconds` pass.
pub async fn eventually<F, Fut>(seconds: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

/// With `TEST_LOG` set (`TEST_LOG=1` for `info`, or any filter such as
/// `TEST_LOG=arena_server=debug`), the application's logs go to the test's
/// own output, which the runner shows when the test fails. Installed once
/// per test process.
pub fn test_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let filter = if filter.is_empty() || filter == "1" { "info".to_owned() } else { filter };
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}
