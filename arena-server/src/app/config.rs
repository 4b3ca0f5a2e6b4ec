//! Settings: defaults, then an optional `arena.toml`, then `DATABASE_URL` /
//! `REDIS_URL`, then `ARENA_*` variables, then command-line flags — each
//! later source overriding the earlier. Passed around explicitly; there is no
//! global settings object.

pub use crate::domain::settings::ArenaSettings;
use crate::domain::settings::{Network, SecureCookies};
pub use crate::queue::RedisSettings;
pub use crate::store::DatabaseSettings;
use agent_runtime::model_file::{DEFAULT_MODEL, Expected, known_by_file_name};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Everything the `arena` binary can be configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub model: ModelSettings,
    /// Where Arena keeps its files (models, adapters, exports).
    pub data_dir: PathBuf,
    pub log: LogSettings,
    pub arena: ArenaSettings,
    /// The config file that was read, if any.
    pub source_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub host: String,
    /// 0 picks a free port (tests).
    pub port: u16,
    /// Seconds in-flight requests get to finish after SIGTERM.
    pub shutdown_timeout_s: u64,
}

#[derive(Debug, Clone)]
pub struct ModelSettings {
    pub path: PathBuf,
    /// Expected sha256; known for the default model, else none.
    pub sha256: Option<String>,
}

impl ModelSettings {
    /// What the file is held to: the configured sha256, and the size too
    /// when that sha256 is a model we know.
    pub fn expected(&self) -> Option<Expected<'_>> {
        let sha256 = self.sha256.as_deref()?;
        let size = known_by_file_name(&self.path).filter(|k| k.sha256 == sha256).map(|k| k.size);
        Some(Expected { sha256, size })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    /// A `tracing` filter such as `info,sqlx=warn`.
    pub filter: String,
    pub format: LogFormat,
}

/// A configuration problem, with the place it comes from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("environment variable {name}={value:?}: {message}")]
    BadEnv { name: String, value: String, message: String },
}

/// The file's shape: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    #[serde(default)]
    server: FileServer,
    #[serde(default)]
    database: FileDatabase,
    #[serde(default)]
    redis: FileRedis,
    #[serde(default)]
    model: FileModel,
    #[serde(default)]
    log: FileLog,
    #[serde(default)]
    arena: FileArena,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileArena {
    starting_credits: Option<i64>,
    session_ttl_s: Option<u64>,
    writes_per_minute: Option<u32>,
    matchmaker_interval_ms: Option<u64>,
    max_deliveries: Option<u32>,
    reclaim_idle_ms: Option<u64>,
    reconcile_after_s: Option<u64>,
    stage_batch: Option<usize>,
    storage_quota_bytes: Option<i64>,
    training_credits_per_mtoken: Option<i64>,
    /// Addresses or networks, e.g. ["10.0.0.0/8"].
    trusted_proxies: Option<Vec<String>>,
    /// "auto", "always" or "never".
    secure_cookies: Option<String>,
    export_retention_days: Option<u32>,
    training_time_limit_s: Option<u64>,
    worker_pay_per_ktoken: Option<i64>,
    worker_min_stake: Option<i64>,
    worker_slash_pct: Option<i64>,
    worker_audit_floor_pct: Option<u32>,
    worker_escrow_s: Option<u64>,
    worker_lease_s: Option<u64>,
    worker_ban_s: Option<u64>,
    worker_full_audit_pot: Option<i64>,
    vote_read_base_ms: Option<u64>,
    vote_read_ms_per_word: Option<u64>,
    vote_daily_cap: Option<i64>,
    vote_address_daily_cap: Option<i64>,
    vote_gold_pct: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServer {
    host: Option<String>,
    port: Option<u16>,
    shutdown_timeout_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDatabase {
    url: Option<String>,
    max_connections: Option<u32>,
    migrate_on_start: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRedis {
    url: Option<String>,
    prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileModel {
    path: Option<PathBuf>,
    sha256: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLog {
    filter: Option<String>,
    format: Option<LogFormat>,
}

/// Every `ARENA_*` variable the code reads (the server's, the CLI's and
/// the model runtime's), and what each sets. A test compares this table
/// with the source of all three crates.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("ARENA_CONFIG", "path of the config file (default: ./arena.toml if it exists)"),
    ("ARENA_DATA_DIR", "data_dir"),
    ("ARENA_HOST", "server.host"),
    ("ARENA_PORT", "server.port"),
    ("ARENA_SHUTDOWN_TIMEOUT_S", "server.shutdown_timeout_s"),
    ("ARENA_DATABASE_URL", "database.url (overrides DATABASE_URL)"),
    ("ARENA_DATABASE_MAX_CONNECTIONS", "database.max_connections"),
    ("ARENA_MIGRATE_ON_START", "database.migrate_on_start"),
    ("ARENA_REDIS_URL", "redis.url (overrides REDIS_URL)"),
    ("ARENA_REDIS_PREFIX", "redis.prefix"),
    ("ARENA_MODEL_PATH", "model.path"),
    ("ARENA_MODEL_SHA256", "model.sha256 (\"none\" skips the check)"),
    ("ARENA_LOG", "log.filter"),
    ("ARENA_LOG_FORMAT", "log.format (text or json)"),
    ("ARENA_STARTING_CREDITS", "arena.starting_credits"),
    ("ARENA_WRITES_PER_MINUTE", "arena.writes_per_minute"),
    ("ARENA_TRUSTED_PROXIES", "arena.trusted_proxies (comma-separated addresses or networks)"),
    ("ARENA_SECURE_COOKIES", "arena.secure_cookies (auto, always or never)"),
    ("ARENA_EXPORT_RETENTION_DAYS", "arena.export_retention_days (an export's files are deleted after)"),
    ("ARENA_WORKER_ESCROW_S", "arena.worker_escrow_s (seconds an open worker's pay stays in escrow)"),
    ("ARENA_WORKER_TOKEN", "the API token (scope work) `arena worker` and `arena lab cheat-worker` use"),
    ("ARENA_THREADS", "threads of the model's kernels (default: all cores; --threads overrides)"),
    ("ARENA_KERNELS", "the model's kernel path: auto (the best the CPU has), scalar, avx2 or avx512"),
    ("ARENA_PREFIX_CACHE_MB", "the runtime's prefix cache budget in MiB (default 256; 0 turns it off)"),
    ("ARENA_NEW_PASSWORD", "the password `arena user create` sets (else read from stdin)"),
    ("ARENA_FUZZ_SECONDS", "the fuzz tests' time per target (default: 300 inputs each)"),
    ("ARENA_FUZZ_SEED", "the fuzz tests' seed"),
    ("ARENA_DEMO_PASSWORD", "the demo users' password `arena seed` sets (else a random one, printed once)"),
    ("ARENA_TRL_PYTHON", "the Python with torch and trl that `arena train bench` runs (default: python3)"),
];

pub const DEFAULT_DATABASE_URL: &str = "postgres://arena@127.0.0.1:55432/arena";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:56379";

impl Settings {
    /// Loads settings from the process environment and the config file it
    /// names (or `./arena.toml`).
    pub fn load(config_file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_from(config_file, &|name| std::env::var(name).ok())
    }

    /// Loads settings with `env` standing for the process environment.
    pub fn load_from(
        config_file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let (file, source_file) = match config_file
            .map(Path::to_owned)
            .or_else(|| env("ARENA_CONFIG").map(PathBuf::from))
        {
            Some(path) => (read_file(&path)?, Some(path)),
            None => {
                let default = PathBuf::from("arena.toml");
                if default.exists() { (read_file(&default)?, Some(default)) } else { (FileSettings::default(), None) }
            }
        };

        let data_dir = env_path(env, "ARENA_DATA_DIR").or(file.data_dir).unwrap_or_else(|| PathBuf::from(".arena"));
        let model_path = env_path(env, "ARENA_MODEL_PATH")
            .or(file.model.path)
            .unwrap_or_else(|| data_dir.join("models").join(DEFAULT_MODEL.file_name));
        let model_sha = match env("ARENA_MODEL_SHA256").or(file.model.sha256) {
            Some(sha) if sha == "none" => None,
            Some(sha) => Some(parse_sha256(&sha)?),
            None => known_by_file_name(&model_path).map(|known| known.sha256.to_owned()),
        };

        let database_url = env("ARENA_DATABASE_URL")
            .or_else(|| env("DATABASE_URL"))
            .or(file.database.url)
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        let redis_url = env("ARENA_REDIS_URL")
            .or_else(|| env("REDIS_URL"))
            .or(file.redis.url)
            .unwrap_or_else(|| DEFAULT_REDIS_URL.to_owned());

        Ok(Settings {
            server: ServerSettings {
                host: env("ARENA_HOST").or(file.server.host).unwrap_or_else(|| "127.0.0.1".to_owned()),
                port: env_parse(env, "ARENA_PORT")?.or(file.server.port).unwrap_or(8080),
                shutdown_timeout_s: env_parse(env, "ARENA_SHUTDOWN_TIMEOUT_S")?
                    .or(file.server.shutdown_timeout_s)
                    .unwrap_or(30),
            },
            database: DatabaseSettings {
                url: SecretString::from(database_url),
                max_connections: env_parse(env, "ARENA_DATABASE_MAX_CONNECTIONS")?
                    .or(file.database.max_connections)
                    .unwrap_or(10),
                migrate_on_start: env_parse(env, "ARENA_MIGRATE_ON_START")?
                    .or(file.database.migrate_on_start)
                    .unwrap_or(true),
            },
            redis: RedisSettings {
                url: SecretString::from(redis_url),
                prefix: env("ARENA_REDIS_PREFIX").or(file.redis.prefix).unwrap_or_else(|| "arena:".to_owned()),
            },
            model: ModelSettings { path: model_path, sha256: model_sha },
            data_dir,
            log: LogSettings {
                filter: env("ARENA_LOG").or(file.log.filter).unwrap_or_else(|| "info,sqlx=warn".to_owned()),
                format: match env("ARENA_LOG_FORMAT") {
                    Some(v) => parse_log_format(&v)?,
                    None => file.log.format.unwrap_or(LogFormat::Text),
                },
            },
            arena: {
                let d = ArenaSettings::default();
                let a = file.arena;
                ArenaSettings {
                    starting_credits: env_parse(env, "ARENA_STARTING_CREDITS")?
                        .or(a.starting_credits)
                        .unwrap_or(d.starting_credits),
                    session_ttl_s: a.session_ttl_s.unwrap_or(d.session_ttl_s),
                    writes_per_minute: env_parse(env, "ARENA_WRITES_PER_MINUTE")?
                        .or(a.writes_per_minute)
                        .unwrap_or(d.writes_per_minute),
                    matchmaker_interval_ms: a.matchmaker_interval_ms.unwrap_or(d.matchmaker_interval_ms),
                    max_deliveries: a.max_deliveries.unwrap_or(d.max_deliveries).max(1),
                    reclaim_idle_ms: a.reclaim_idle_ms.unwrap_or(d.reclaim_idle_ms),
                    reconcile_after_s: a.reconcile_after_s.unwrap_or(d.reconcile_after_s),
                    stage_batch: a.stage_batch.unwrap_or(d.stage_batch).clamp(1, 1000),
                    storage_quota_bytes: a.storage_quota_bytes.unwrap_or(d.storage_quota_bytes).max(0),
                    training_credits_per_mtoken: a
                        .training_credits_per_mtoken
                        .unwrap_or(d.training_credits_per_mtoken)
                        .max(0),
                    trusted_proxies: match env("ARENA_TRUSTED_PROXIES") {
                        Some(value) => Network::parse_list(&value).map_err(|message| ConfigError::BadEnv {
                            name: "ARENA_TRUSTED_PROXIES".to_owned(),
                            value,
                            message,
                        })?,
                        None => a
                            .trusted_proxies
                            .unwrap_or_default()
                            .iter()
                            .map(|n| Network::parse(n))
                            .collect::<Result<_, _>>()
                            .map_err(|message| ConfigError::Invalid {
                                path: source_file.clone().unwrap_or_default(),
                                message: format!("arena.trusted_proxies: {message}"),
                            })?,
                    },
                    training_time_limit_s: a.training_time_limit_s.unwrap_or(d.training_time_limit_s).max(1),
                    worker_pay_per_ktoken: a.worker_pay_per_ktoken.unwrap_or(d.worker_pay_per_ktoken).max(0),
                    worker_min_stake: a.worker_min_stake.unwrap_or(d.worker_min_stake).max(1),
                    worker_slash_pct: a.worker_slash_pct.unwrap_or(d.worker_slash_pct).clamp(1, 100),
                    worker_audit_floor_pct: a.worker_audit_floor_pct.unwrap_or(d.worker_audit_floor_pct).clamp(1, 100),
                    worker_escrow_s: env_parse(env, "ARENA_WORKER_ESCROW_S")?
                        .or(a.worker_escrow_s)
                        .unwrap_or(d.worker_escrow_s),
                    worker_lease_s: a.worker_lease_s.unwrap_or(d.worker_lease_s).clamp(5, 3600),
                    worker_ban_s: a.worker_ban_s.unwrap_or(d.worker_ban_s),
                    worker_full_audit_pot: a.worker_full_audit_pot.unwrap_or(d.worker_full_audit_pot).max(0),
                    vote_read_base_ms: a.vote_read_base_ms.unwrap_or(d.vote_read_base_ms).min(60_000),
                    vote_read_ms_per_word: a.vote_read_ms_per_word.unwrap_or(d.vote_read_ms_per_word).min(1_000),
                    vote_daily_cap: a.vote_daily_cap.unwrap_or(d.vote_daily_cap).max(0),
                    vote_address_daily_cap: a.vote_address_daily_cap.unwrap_or(d.vote_address_daily_cap).max(0),
                    vote_gold_pct: a.vote_gold_pct.unwrap_or(d.vote_gold_pct).min(50),
                    export_retention_days: env_parse(env, "ARENA_EXPORT_RETENTION_DAYS")?
                        .or(a.export_retention_days)
                        .unwrap_or(d.export_retention_days),
                    secure_cookies: match env("ARENA_SECURE_COOKIES") {
                        Some(value) => SecureCookies::parse(&value).map_err(|message| ConfigError::BadEnv {
                            name: "ARENA_SECURE_COOKIES".to_owned(),
                            value,
                            message,
                        })?,
                        None => match a.secure_cookies {
                            Some(v) => SecureCookies::parse(&v).map_err(|message| ConfigError::Invalid {
                                path: source_file.clone().unwrap_or_default(),
                                message: format!("arena.secure_cookies: {message}"),
                            })?,
                            None => d.secure_cookies,
                        },
                    },
                }
            },
            source_file,
        })
    }
}

fn read_file(path: &Path) -> Result<FileSettings, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable { path: path.to_owned(), source })?;
    toml::from_str(&text)
        .map_err(|err| ConfigError::Invalid { path: path.to_owned(), message: describe_toml_error(&text, &err) })
}

/// `line L, column C: message`, from a toml error's byte span.
fn describe_toml_error(text: &str, err: &toml::de::Error) -> String {
    match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {}", err.message())
        }
        None => err.message().to_owned(),
    }
}

fn env_path(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<PathBuf> {
    env(name).filter(|v| !v.is_empty()).map(PathBuf::from)
}

fn env_parse<T: std::str::FromStr>(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Result<Option<T>, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match env(name) {
        None => Ok(None),
        Some(value) => value.trim().parse().map(Some).map_err(|e: T::Err| ConfigError::BadEnv {
            name: name.to_owned(),
            value,
            message: e.to_string(),
        }),
    }
}

fn parse_log_format(value: &str) -> Result<LogFormat, ConfigError> {
    match value {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(ConfigError::BadEnv {
            name: "ARENA_LOG_FORMAT".to_owned(),
            value: value.to_owned(),
            message: "expected `text` or `json`".to_owned(),
        }),
    }
}

fn parse_sha256(value: &str) -> Result<String, ConfigError> {
    let lower = value.trim().to_ascii_lowercase();
    if lower.len() == 64 && lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(lower)
    } else {
        Err(ConfigError::BadEnv {
            name: "model.sha256".to_owned(),
            value: value.to_owned(),
            message: "expected 64 hex digits".to_owned(),
        })
    }
}

/// A secret URL with its password replaced by `***`, fit for logs and
/// messages.
pub fn redact_url(secret: &SecretString) -> String {
    crate::domain::redacted(secret.expose_secret())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| map.get(name).cloned()
    }

    fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("arena.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    /// Every `"ARENA_…"` string literal in the `src/` of the workspace's
    /// crates, without the `ARENA_` prefix check's false friends.
    fn variables_in_source() -> std::collections::BTreeSet<String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut found = std::collections::BTreeSet::new();
        let mut stack: Vec<PathBuf> =
            ["arena-server/src", "agent-runtime/src", "judge/src"].iter().map(|d| root.join(d)).collect();
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let mut text = std::fs::read_to_string(&path).unwrap();
                    if path.ends_with("app/config.rs") {
                        // The table itself and these tests do not count as reading.
                        let start = text.find("pub const ENV_VARS").unwrap();
                        let end = start + text[start..].find("\n];").unwrap();
                        let tests = text.find("#[cfg(test)]").unwrap();
                        text = format!("{}{}", &text[..start], &text[end..tests]);
                    }
                    let mut rest = text.as_str();
                    while let Some(at) = rest.find("\"ARENA_") {
                        let name: String = rest[at + 1..]
                            .chars()
                            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                            .collect();
                        if rest[at + 1 + name.len()..].starts_with('"') {
                            found.insert(name.clone());
                        }
                        rest = &rest[at + 1 + name.len()..];
                    }
                }
            }
        }
        found
    }

    #[test]
    fn the_env_table_lists_every_variable_the_code_reads() {
        let table: std::collections::BTreeSet<String> = ENV_VARS.iter().map(|(n, _)| (*n).to_owned()).collect();
        let source = variables_in_source();
        let missing: Vec<&String> = source.difference(&table).collect();
        let stale: Vec<&String> = table.difference(&source).collect();
        assert!(missing.is_empty(), "read in the source but not in ENV_VARS (`arena config`): {missing:?}");
        assert!(stale.is_empty(), "in ENV_VARS but read nowhere: {stale:?}");
    }

    #[test]
    fn the_readmes_arena_toml_states_the_defaults() {
        let readme = include_str!("../../../README.md");
        let start = readme.find("# arena.toml — every key is optional").expect("the README's arena.toml");
        let end = start + readme[start..].find("```").expect("its end");
        let (_dir, path) = write_config(&readme[start..end]);
        let documented = Settings::load_from(Some(&path), &env_of(&[])).expect("the README's example loads");
        // Every key of `[arena]` is in the block, each at its default.
        assert_eq!(documented.arena, ArenaSettings::default());
        // Sign-up credits may be zero (invitations only).
        let zero = Settings::load_from(Some(&path), &env_of(&[("ARENA_STARTING_CREDITS", "0")])).expect("loads");
        assert_eq!(zero.arena.starting_credits, 0);
        let bad = Settings::load_from(Some(&path), &env_of(&[("ARENA_TRUSTED_PROXIES", "lb.example")]));
        assert!(bad.expect_err("not an address").to_string().contains("ARENA_TRUSTED_PROXIES"));
    }

    #[test]
    fn defaults_apply_without_file_or_env() {
        let s = Settings::load_from(Some(Path::new("/dev/null")), &env_of(&[])).unwrap();
        assert_eq!(s.server.port, 8080);
        assert_eq!(s.database.url.expose_secret(), DEFAULT_DATABASE_URL);
        assert_eq!(s.redis.prefix, "arena:");
        assert_eq!(s.model.path, PathBuf::from(".arena/models").join(DEFAULT_MODEL.file_name));
        assert_eq!(s.model.sha256.as_deref(), Some(DEFAULT_MODEL.sha256));
    }

    #[test]
    fn precedence_is_file_then_standard_urls_then_arena_vars() {
        let (_dir, path) = write_config(
            "[server]\nport = 9000\nhost = \"0.0.0.0\"\n[database]\nurl = \"postgres://file/db\"\n[redis]\nurl = \"redis://file\"\nprefix = \"file:\"\n",
        );
        // File alone beats defaults.
        let s = Settings::load_from(Some(&path), &env_of(&[])).unwrap();
        assert_eq!((s.server.port, s.server.host.as_str()), (9000, "0.0.0.0"));
        assert_eq!(s.database.url.expose_secret(), "postgres://file/db");

        // DATABASE_URL / REDIS_URL beat the file.
        let s = Settings::load_from(
            Some(&path),
            &env_of(&[("DATABASE_URL", "postgres://std/db"), ("REDIS_URL", "redis://std")]),
        )
        .unwrap();
        assert_eq!(s.database.url.expose_secret(), "postgres://std/db");
        assert_eq!(s.redis.url.expose_secret(), "redis://std");

        // ARENA_* beat both.
        let s = Settings::load_from(
            Some(&path),
            &env_of(&[
                ("DATABASE_URL", "postgres://std/db"),
                ("ARENA_DATABASE_URL", "postgres://arena/db"),
                ("ARENA_PORT", "9100"),
                ("ARENA_REDIS_PREFIX", "env:"),
            ]),
        )
        .unwrap();
        assert_eq!(s.database.url.expose_secret(), "postgres://arena/db");
        assert_eq!(s.server.port, 9100);
        assert_eq!(s.server.host, "0.0.0.0", "keys the environment does not set keep the file's value");
        assert_eq!(s.redis.prefix, "env:");
    }

    #[test]
    fn arena_config_names_the_file() {
        let (_dir, path) = write_config("[server]\nport = 9300\n");
        let s = Settings::load_from(None, &env_of(&[("ARENA_CONFIG", path.to_str().unwrap())])).unwrap();
        assert_eq!(s.server.port, 9300);
        assert_eq!(s.source_file.as_deref(), Some(path.as_path()));
    }

    #[test]
    fn model_path_follows_data_dir_unless_set() {
        let s =
            Settings::load_from(Some(Path::new("/dev/null")), &env_of(&[("ARENA_DATA_DIR", "/srv/arena")])).unwrap();
        assert_eq!(s.model.path, Path::new("/srv/arena/models").join(DEFAULT_MODEL.file_name));
        let s = Settings::load_from(Some(Path::new("/dev/null")), &env_of(&[("ARENA_MODEL_PATH", "/m/other.gguf")]))
            .unwrap();
        assert_eq!(s.model.path, Path::new("/m/other.gguf"));
        assert_eq!(s.model.sha256, None, "an unknown file has no expected checksum");
    }

    #[test]
    fn unknown_key_is_refused_with_line_and_column() {
        let (_dir, path) = write_config("[server]\nport = 9000\nprot = 1\n");
        let err = Settings::load_from(Some(&path), &env_of(&[])).unwrap_err().to_string();
        assert!(err.contains("line 3, column 1"), "{err}");
        assert!(err.contains("prot"), "{err}");
    }

    #[test]
    fn wrong_type_is_refused_with_line_and_column() {
        let (_dir, path) = write_config("[server]\nport = \"eighty\"\n");
        let err = Settings::load_from(Some(&path), &env_of(&[])).unwrap_err().to_string();
        assert!(err.contains("line 2, column 8"), "{err}");
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let err = Settings::load_from(Some(Path::new("/dev/null")), &env_of(&[("ARENA_PORT", "http")]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("environment variable ARENA_PORT=\"http\""), "{err}");
    }

    #[test]
    fn missing_named_file_is_an_error() {
        let err = Settings::load_from(Some(Path::new("/nonexistent/arena.toml")), &env_of(&[])).unwrap_err();
        assert!(matches!(err, ConfigError::Unreadable { .. }));
    }

    #[test]
    fn secrets_do_not_show_in_debug_or_redacted_urls() {
        let s = Settings::load_from(
            Some(Path::new("/dev/null")),
            &env_of(&[("DATABASE_URL", "postgres://arena:hunter2@db/arena"), ("REDIS_URL", "redis://:s3cret@r:6379")]),
        )
        .unwrap();
        let debug = format!("{s:?}");
        assert!(!debug.contains("hunter2") && !debug.contains("s3cret"), "{debug}");
        assert_eq!(redact_url(&s.database.url), "postgres://arena:***@db/arena");
        assert!(!redact_url(&s.redis.url).contains("s3cret"));
    }
}
