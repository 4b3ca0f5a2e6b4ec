//! The arena against real PostgreSQL and Redis: a harness that runs the
//! application (API always; pipeline workers when a test starts them) and
//! speaks its JSON API as different users.

use crate::helpers::TestEnv;
use arena_server::app::config::Settings;
use arena_server::app::{Application, Options, Roles};
use arena_server::context::Context;
use arena_server::work::generate::Generator;
use arena_server::work::test_double::StubGenerator;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The one harness: a fresh database and Redis prefix (`TestEnv`), the
/// real application on a free port, and clients that speak its API.
pub struct Arena {
    pub address: String,
    pub env: TestEnv,
    pub db: sqlx::PgPool,
    /// The application's context (its pool, Redis, settings, consumer name).
    pub ctx: Context,
    pub settings: Settings,
    pub redis: arena_server::queue::Redis,
    stop: tokio::sync::watch::Sender<bool>,
}

/// Settings with quick timings: matches form every 50 ms, a stuck message
/// is reclaimed after 400 ms, a stalled match re-enqueued after 1 s.
pub fn quick_settings(env: &TestEnv) -> Settings {
    let mut settings = env.settings();
    settings.arena.matchmaker_interval_ms = 50;
    settings.arena.reclaim_idle_ms = 400;
    settings.arena.reconcile_after_s = 1;
    settings.arena.max_deliveries = 3;
    settings.data_dir = std::env::temp_dir().join(format!("arena-test-{}", env.db_name));
    settings.database.max_connections = 8;
    settings
}

impl Arena {
    /// The API only; no pipeline workers until `start` is called.
    pub async fn new() -> Arena {
        let env = TestEnv::new().await;
        let settings = quick_settings(&env);
        Arena::with_settings(env, settings).await
    }

    /// The API with `settings`; no pipeline workers until `start` is called.
    pub async fn with_settings(env: TestEnv, settings: Settings) -> Arena {
        let options = Options { roles: Roles::ALL, workers: false, threads: 2, generator: None };
        Arena::build(env, settings, options).await
    }

    /// The whole application as `arena serve` runs it: every role and its
    /// workers, on the real engine.
    pub async fn serving(env: TestEnv, settings: Settings) -> Arena {
        Arena::build(env, settings, Options::default()).await
    }

    /// The real application with the default settings of `env`, serving.
    pub async fn serving_defaults() -> Arena {
        let env = TestEnv::new().await;
        let settings = env.settings();
        Arena::serving(env, settings).await
    }

    async fn build(env: TestEnv, settings: Settings, options: Options) -> Arena {
        crate::helpers::test_log();
        let app =
            Application::build_with(settings.clone(), options).await.unwrap_or_else(|e| panic!("app failed: {e}"));
        let address = format!("http://127.0.0.1:{}", app.port());
        let ctx = app.ctx.clone();
        let (db, redis) = (ctx.db.clone(), ctx.redis.clone());
        let (stop, _) = tokio::sync::watch::channel(false);
        tokio::spawn(app.run_until_stopped());
        Arena { address, env, db, ctx, settings, redis, stop }
    }

    /// Starts workers for `roles` with `generator` (the stub unless given),
    /// as a fresh process would: a new consumer name.
    pub fn start(&self, roles: Roles, generator: Option<Arc<dyn Generator>>) {
        let generator = generator.or_else(|| Some(Arc::new(StubGenerator) as Arc<dyn Generator>));
        let options = Options { roles, workers: true, threads: 2, generator };
        let mut ctx = self.ctx.clone();
        ctx.consumer = format!("test-{}", uuid::Uuid::new_v4().simple());
        arena_server::app::start_workers(&ctx, &self.settings, &options, self.stop.subscribe()).unwrap();
    }

    /// Stops every worker started so far (a "kill").
    pub fn stop_workers(&mut self) {
        let _ = self.stop.send(true);
        self.stop = tokio::sync::watch::channel(false).0;
    }

    /// A GET outside the API (`/healthz`, `/metrics`, pages).
    pub async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::get(format!("{}{path}", self.address)).await.unwrap()
    }

    /// `/healthz`: its status and body.
    pub async fn health(&self) -> (u16, Value) {
        let response = self.get("/healthz").await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder().cookie_store(true).build().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.address)
    }

    /// Registers `username` with `role` and returns a signed-in client.
    pub async fn user(&self, username: &str, role: &str) -> User {
        let client = self.client();
        let password = "correct horse battery";
        let r = client
            .post(self.url("/users"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "register {username}: {}", r.text().await.unwrap());
        // Designers and buyers are an admin's grant.
        if role != "player" {
            let role = arena_server::domain::user::Role::parse(role).unwrap();
            arena_server::store::users::set_role(&self.db, username, role).await.unwrap().unwrap();
        }
        let r = client
            .post(self.url("/sessions"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        User { client, base: self.url(""), id, name: username.to_owned() }
    }

    /// A caller without credentials.
    pub fn user_anonymous(&self) -> User {
        User { client: self.client(), base: self.url(""), id: String::new(), name: "anonymous".into() }
    }

    /// Publishes a Space's TOML (with files) as `designer`.
    pub async fn publish(&self, designer: &User, source: &str, files: Value) -> Value {
        let (status, body) = designer.post("/spaces", json!({"source": source, "files": files})).await;
        assert!(status == 201 || status == 200, "publish: {status} {body}");
        body
    }

    pub async fn status_counts(&self) -> Vec<(String, i64)> {
        sqlx::query_as("select status, count(*) from matches group by status order by status")
            .fetch_all(&self.db)
            .await
            .unwrap()
    }

    pub async fn settled(&self) -> i64 {
        sqlx::query_scalar("select count(*) from matches where status = 'settled'").fetch_one(&self.db).await.unwrap()
    }

    /// Waits until `n` matches are settled and none is in flight.
    pub async fn wait_settled(&self, n: i64, seconds: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
        loop {
            let open: i64 =
                sqlx::query_scalar("select count(*) from matches where status in ('formed','generated','judged')")
                    .fetch_one(&self.db)
                    .await
                    .unwrap();
            if self.settled().await >= n && open == 0 {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("waited {seconds}s for {n} settled matches; have {:?}", self.status_counts().await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn ledger_ok(&self) {
        let report = arena_server::store::ledger::check(&self.db).await.unwrap();
        assert!(report.ok(), "{}", report.render());
    }

    /// Waits up to `seconds` for a failed match, pauses every Space and
    /// returns that match's error (panicking when none failed).
    pub async fn first_failure(&self, seconds: u64) -> String {
        let failed = crate::helpers::eventually(seconds, || async {
            sqlx::query_scalar::<_, i64>("select count(*) from matches where status = 'failed'")
                .fetch_one(&self.db)
                .await
                .unwrap()
                >= 1
        })
        .await;
        self.pause_all().await;
        assert!(failed, "no match failed: {:?}", self.status_counts().await);
        sqlx::query_scalar("select error from matches where status = 'failed' limit 1")
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    /// Pauses every Space and waits out any matchmaking round in progress,
    /// so no new match forms after this returns.
    pub async fn pause_all(&self) {
        sqlx::query("update spaces set active = false").execute(&self.db).await.unwrap();
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar("select id from spaces").fetch_all(&self.db).await.unwrap();
        for id in ids {
            let mut tx = self.db.begin().await.unwrap();
            sqlx::query("select pg_advisory_xact_lock(hashtextextended($1::text, 7))")
                .bind(id)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        let _ = std::fs::remove_dir_all(&self.settings.data_dir);
    }
}

pub struct User {
    pub client: reqwest::Client,
    base: String,
    pub id: String,
    pub name: String,
}

async fn answer(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

impl User {
    pub async fn get(&self, path: &str) -> (u16, Value) {
        answer(self.client.get(format!("{}{path}", self.base)).send().await.unwrap()).await
    }
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        answer(self.client.post(format!("{}{path}", self.base)).json(&body).send().await.unwrap()).await
    }
    /// Uploads a small random PEFT adapter (rank 4 on q_proj); the upload's
    /// answer, with its `sha256`.
    pub async fn upload_random_adapter(&self) -> Value {
        let dir = random_adapter();
        let (status, body) = self.upload_adapter(dir.path()).await;
        assert!((200..300).contains(&status), "upload: {status} {body}");
        body
    }
    /// Uploads a fresh random adapter (a new seed each call); the status and answer.
    pub async fn upload_random_adapter_status(&self) -> (u16, Value) {
        static SEED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1000);
        let seed = SEED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let model = agent_runtime::gguf::Gguf::open(&crate::helpers::model_path()).unwrap().config().unwrap();
        let dir = tempfile::tempdir().unwrap();
        agent_runtime::lora::Adapter::random(&model, &[agent_runtime::model::Target::Q], 4, seed, 0.01, 0.01)
            .save(dir.path(), None)
            .unwrap();
        self.upload_adapter(dir.path()).await
    }
    /// Uploads the PEFT adapter in `dir`; the status and answer.
    pub async fn upload_adapter(&self, dir: &std::path::Path) -> (u16, Value) {
        let file = |name: &str| reqwest::multipart::Part::bytes(std::fs::read(dir.join(name)).unwrap());
        let form = reqwest::multipart::Form::new()
            .part("config", file("adapter_config.json"))
            .part("weights", file("adapter_model.safetensors"));
        answer(self.client.post(format!("{}/adapters", self.base)).multipart(form).send().await.unwrap()).await
    }
    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        answer(self.client.put(format!("{}{path}", self.base)).json(&body).send().await.unwrap()).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        answer(self.client.patch(format!("{}{path}", self.base)).json(&body).send().await.unwrap()).await
    }
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        answer(self.client.delete(format!("{}{path}", self.base)).send().await.unwrap()).await
    }
    pub async fn balance(&self) -> i64 {
        self.get("/me").await.1["balance"].as_i64().unwrap()
    }
    /// Creates an agent and enters it in `space`; returns its id.
    pub async fn agent(&self, name: &str, space: &str) -> String {
        let (status, body) = self
            .post(
                "/agents",
                json!({"name": name, "system_prompt": format!("You are {name}."), "sampling": {"seed": 3}}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        let (status, body) = self.post(&format!("/agents/{id}/entries"), json!({"space": space})).await;
        assert_eq!(status, 201, "{body}");
        id
    }
}

/// A small random PEFT adapter (rank 4 on q_proj) in a folder of its own.
pub fn random_adapter() -> tempfile::TempDir {
    let model = agent_runtime::gguf::Gguf::open(&crate::helpers::model_path()).unwrap().config().unwrap();
    let dir = tempfile::tempdir().unwrap();
    agent_runtime::lora::Adapter::random(&model, &[agent_runtime::model::Target::Q], 4, 3, 0.01, 0.01)
        .save(dir.path(), None)
        .unwrap();
    dir
}

/// A verifier-only Space (no model needed to judge): `k` agents, the
/// arithmetic answer checked against the reference.
pub fn quick_space(name: &str, k: u32, concurrent: u32) -> String {
    format!(
        r#"name = "{name}"
description = "Quick arithmetic for tests"
agents_per_match = {k}
max_new_tokens = 8
entry_fee = 10

[prompts]
inline = [
  {{ prompt = "What is 2 + 3?", reference = "5" }},
  {{ prompt = "What is 7 * 6?", reference = "42" }},
  {{ prompt = "What is 10 - 4?", reference = "6" }},
]

[payout]
shares = [0.7, 0.3]
house_cut = 0.1

[matchmaking]
rating_window = 10000
max_concurrent_matches = {concurrent}

[[verifiers]]
name = "correct"
kind = "answer"
mode = "numeric"
hard = true

[judge]
mode = "none"

[pairs]
min_margin = 0.1
license = "CC-BY-4.0"
"#
    )
}

use arena_server::work::generate::{GenJob, GenOutput};
use futures_util::future::BoxFuture;

/// Test double: a generator that never answers, like a worker process that
/// died mid-stage (its messages stay pending, unacknowledged).
pub struct HangingGenerator;

impl Generator for HangingGenerator {
    fn generate(&self, _jobs: Vec<GenJob>) -> BoxFuture<'static, Vec<anyhow::Result<GenOutput>>> {
        Box::pin(std::future::pending())
    }
}

/// Test double: a generator that always fails (a poison match).
pub struct FailingGenerator;

impl Generator for FailingGenerator {
    fn generate(&self, jobs: Vec<GenJob>) -> BoxFuture<'static, Vec<anyhow::Result<GenOutput>>> {
        let n = jobs.len();
        Box::pin(async move { (0..n).map(|_| Err(anyhow::anyhow!("injected failure"))).collect() })
    }
}

/// Test double: the stub generator, slowed down so matches stay in flight.
pub struct SlowGenerator(pub Duration);

impl Generator for SlowGenerator {
    fn generate(&self, jobs: Vec<GenJob>) -> BoxFuture<'static, Vec<anyhow::Result<GenOutput>>> {
        let delay = self.0;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            StubGenerator.generate(jobs).await
        })
    }
}

impl Arena {
    /// A designer with a quick Space and `players` players with one agent each.
    pub async fn league(&self, k: u32, concurrent: u32, players: usize) -> (User, Vec<User>) {
        let designer = self.user("dana", "designer").await;
        self.publish(&designer, &quick_space("quick", k, concurrent), json!({})).await;
        let mut users = Vec::new();
        for i in 0..players {
            let user = self.user(&format!("player{i}"), "player").await;
            user.agent(&format!("agent{i}"), "quick").await;
            users.push(user);
        }
        (designer, users)
    }

    /// Rows that must not change when work is redone.
    pub async fn fingerprint(&self) -> String {
        let q = "select (select count(*) from outputs) || '/' || (select count(*) from verdicts) || '/' ||
                        (select count(*) from pairs) || '/' || (select count(*) from ledger_entries) || '/' ||
                        coalesce((select string_agg(chain_seq::text || chain_head, ',') from spaces), '') || '/' ||
                        coalesce((select sum(mu)::text from entries), '') || '/' ||
                        (select count(*) from matches where status = 'settled')";
        sqlx::query_scalar::<_, String>(q).fetch_one(&self.db).await.unwrap()
    }

    /// Every match settled exactly once: one payout transaction each, one
    /// output per seat, one verdict.
    pub async fn settled_exactly_once(&self) {
        let bad: Vec<(uuid::Uuid, i64, i64, i64)> = sqlx::query_as(
            "select m.id,
                    (select count(*) from ledger_transactions t where t.match_id = m.id and t.kind = 'payout'),
                    (select count(*) from outputs o where o.match_id = m.id) - (select count(*) from match_agents a where a.match_id = m.id),
                    (select count(*) from verdicts v where v.match_id = m.id)
             from matches m where m.status = 'settled'",
        )
        .fetch_all(&self.db)
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, payouts, missing, verdicts)| *payouts != 1 || *missing != 0 || *verdicts != 1)
        .collect();
        assert!(bad.is_empty(), "matches not settled exactly once: {bad:?}");
    }

    /// Deletes every Redis key of this app (its streams, groups, sessions…).
    pub async fn flush_redis(&self) {
        let mut conn = self.redis.conn();
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{}*", self.env.prefix)).query_async(&mut conn).await.unwrap();
        for key in keys {
            let _: () = redis::cmd("DEL").arg(key).query_async(&mut conn).await.unwrap();
        }
    }
}

/// Rate limits count per clock minute: a test that counts to a limit starts
/// early in a minute, so the window cannot roll over under it.
pub async fn start_of_a_minute() {
    let second = chrono::Utc::now().timestamp() % 60;
    if second > 40 {
        tokio::time::sleep(Duration::from_secs((61 - second) as u64)).await;
    }
}
