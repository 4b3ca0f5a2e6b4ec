//! `arena bench control-plane`: how many matches per second the platform
//! carries from formed to settled when the model is replaced by a stub
//! generator (named as such: this measures the control plane — matchmaker,
//! Redis Streams, PostgreSQL, judge verifiers, settlement — not the model),
//! with per-stage latency percentiles, next to pgbench's TPS on the same
//! PostgreSQL in the same run.

use crate::auth::{self, Caller, Via};
use crate::config::Settings;
use crate::domain::{Password, Role, Username};
use crate::pipeline::generate::StubGenerator;
use crate::routes::agents::{AgentSampling, insert_version};
use crate::space_store;
use crate::startup::{Application, Options, Roles};
use secrecy::{ExposeSecret, SecretString};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct BenchArgs {
    pub matches: i64,
    pub spaces: usize,
    pub agents_per_match: u32,
    pub players: usize,
    pub pgbench: bool,
    pub pgbench_seconds: u32,
    pub matchmaker_interval_ms: u64,
}

fn bench_space(name: &str, k: u32) -> String {
    format!(
        r#"name = "{name}"
description = "Control-plane benchmark Space (verifier-only judge)"
agents_per_match = {k}
max_new_tokens = 8
entry_fee = 10

[prompts]
inline = [
  {{ prompt = "What is 2 + 3?", reference = "5" }},
  {{ prompt = "What is 7 * 6?", reference = "42" }},
  {{ prompt = "What is 10 - 4?", reference = "6" }},
  {{ prompt = "What is 9 + 9?", reference = "18" }},
]

[payout]
shares = [0.6, 0.3, 0.1]
house_cut = 0.05

[matchmaking]
rating_window = 100000
max_concurrent_matches = 1000

[[verifiers]]
name = "correct"
kind = "answer"
mode = "numeric"
hard = true

[[verifiers]]
name = "short"
kind = "length"
unit = "words"
max = 30

[judge]
mode = "none"

[pairs]
min_margin = 0.1
"#
    )
}

fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let mut url = url::Url::parse(url)?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

pub async fn control_plane(settings: &Settings, args: BenchArgs) -> anyhow::Result<()> {
    let id = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let db_name = format!("arena_bench_{id}");
    let admin_url = with_database(settings.database.url.expose_secret(), "postgres")?;
    let admin = sqlx::PgPool::connect(&admin_url).await?;
    sqlx::query(&format!("create database \"{db_name}\"")).execute(&admin).await?;
    let result = run(settings, &args, &db_name, &id).await;
    sqlx::query(&format!("drop database if exists \"{db_name}\" with (force)")).execute(&admin).await?;
    let pg = if args.pgbench { Some(pgbench(settings, &admin, &id, args.pgbench_seconds).await) } else { None };
    let report = result?;
    println!("{report}");
    match pg {
        Some(Ok(tps)) => {
            println!("pgbench (TPC-B-like, 8 clients, 2 threads, same server):  {tps:.0} transactions/s");
            println!(
                "ratio: {:.2} matches settled per pgbench transaction",
                report
                    .lines()
                    .find_map(|l| l.strip_prefix("throughput: "))
                    .and_then(|l| l.split_whitespace().next())
                    .and_then(|n| n.parse::<f64>().ok())
                    .unwrap_or(0.0)
                    / tps
            );
        }
        Some(Err(err)) => println!("pgbench: not run ({err})"),
        None => {}
    }
    Ok(())
}

async fn run(settings: &Settings, args: &BenchArgs, db_name: &str, id: &str) -> anyhow::Result<String> {
    let mut settings = settings.clone();
    settings.database.url = SecretString::from(with_database(settings.database.url.expose_secret(), db_name)?);
    settings.database.max_connections = 16;
    settings.database.migrate_on_start = true;
    settings.redis.prefix = format!("bench:{id}:");
    settings.server.port = 0;
    settings.server.host = "127.0.0.1".into();
    settings.arena.starting_credits = 1_000_000_000;
    settings.arena.matchmaker_interval_ms = args.matchmaker_interval_ms;
    settings.arena.stage_batch = 64;
    settings.data_dir = std::env::temp_dir().join(format!("arena-bench-{id}"));
    let options = Options { roles: Roles::ALL, workers: false, generator: Some(Arc::new(StubGenerator)), threads: 1 };
    let app = Application::build_with(settings.clone(), options.clone()).await?;
    let db = app.db.clone();

    // Seed: a designer, the Spaces, players with one agent entered in each.
    let password = || Password::parse("benchmark-password").map_err(|e| anyhow::anyhow!("{e}"));
    let designer = auth::create_user(
        &db,
        &Username::parse("designer").map_err(|e| anyhow::anyhow!("{e}"))?,
        password()?,
        Role::Designer,
        1_000_000_000,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let caller =
        Caller { user_id: designer.id, username: designer.username.clone(), role: Role::Designer, via: Via::Session };
    let mut space_ids = Vec::new();
    for s in 0..args.spaces {
        let published = space_store::publish(
            &db,
            &caller,
            &bench_space(&format!("bench-{s}"), args.agents_per_match),
            &BTreeMap::new(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        space_ids.push(published.id);
    }
    let initial = crate::rating::initial();
    for p in 0..args.players {
        let user = auth::create_user(
            &db,
            &Username::parse(&format!("player{p}")).map_err(|e| anyhow::anyhow!("{e}"))?,
            password()?,
            Role::Player,
            1_000_000_000,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let agent = Uuid::new_v4();
        let mut tx = db.begin().await?;
        sqlx::query("insert into agents (id, owner_id, name, current_version) values ($1, $2, 'agent', 1)")
            .bind(agent)
            .bind(user.id)
            .execute(&mut *tx)
            .await?;
        insert_version(&mut tx, agent, 1, &app.state.base_model, "", &AgentSampling::default(), &None, None, None, "")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for space in &space_ids {
            sqlx::query("insert into entries (agent_id, space_id, owner_id, mu, sigma) values ($1, $2, $3, $4, $5)")
                .bind(agent)
                .bind(space)
                .bind(user.id)
                .bind(initial.rating)
                .bind(initial.uncertainty)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    }

    let started = Instant::now();
    crate::startup::start_workers(&app.pipeline, &settings, &options, app.stop.subscribe())?;
    let mut last_print = Instant::now();
    let settled = loop {
        let settled: i64 =
            sqlx::query_scalar("select count(*) from matches where status = 'settled'").fetch_one(&db).await?;
        if settled >= args.matches {
            break settled;
        }
        if last_print.elapsed() > Duration::from_secs(2) {
            eprintln!("  {settled} settled after {:.1} s", started.elapsed().as_secs_f64());
            last_print = Instant::now();
        }
        if started.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("only {settled} matches settled in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let elapsed = started.elapsed().as_secs_f64();
    sqlx::query("update spaces set active = false").execute(&db).await?;
    // Let the matches in flight finish, so the books can be checked.
    let drain = Instant::now();
    while drain.elapsed() < Duration::from_secs(60) {
        let open: i64 =
            sqlx::query_scalar("select count(*) from matches where status in ('formed', 'generated', 'judged')")
                .fetch_one(&db)
                .await?;
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop_workers();

    let stages: Vec<(String, f64, f64)> = sqlx::query_as(
        "select stage, percentile_cont(0.5) within group (order by ms), percentile_cont(0.99) within group (order by ms)
         from (select 'form → generated' as stage, extract(epoch from generated_at - created_at) * 1000 as ms from matches where status = 'settled'
               union all select 'generated → judged', extract(epoch from judged_at - generated_at) * 1000 from matches where status = 'settled'
               union all select 'judged → settled', extract(epoch from settled_at - judged_at) * 1000 from matches where status = 'settled'
               union all select 'formed → settled', extract(epoch from settled_at - created_at) * 1000 from matches where status = 'settled') x
         group by stage order by min(case stage when 'form → generated' then 1 when 'generated → judged' then 2
                                                when 'judged → settled' then 3 else 4 end)",
    )
    .fetch_all(&db)
    .await?;
    let ledger = crate::ledger::check(&db).await?;
    let mut chains = Vec::new();
    for s in 0..args.spaces {
        let report = crate::pipeline::settle::verify_log(&db, &format!("bench-{s}")).await?;
        chains.push(if report.broken.is_none() { format!("{} ok", report.checked) } else { "BROKEN".to_owned() });
    }
    let total_settled: i64 =
        sqlx::query_scalar("select count(*) from matches where status = 'settled'").fetch_one(&db).await?;
    let pairs: i64 = sqlx::query_scalar("select count(*) from pairs").fetch_one(&db).await?;
    db.close().await;
    let mut conn = app.redis.conn();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("bench:{id}:*")).query_async(&mut conn).await.unwrap_or_default();
    for key in keys {
        let _: Result<(), _> = redis::cmd("DEL").arg(key).query_async(&mut conn).await;
    }
    let _ = std::fs::remove_dir_all(&settings.data_dir);

    let mut out = String::new();
    out += "control plane, stub generator (StubGenerator: no model), verifier-only judge\n";
    out += &format!(
        "setup: {} Spaces × {} agents per match, {} players, stage batch {}, {} cores\n",
        args.spaces,
        args.agents_per_match,
        args.players,
        settings.arena.stage_batch,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    out += &format!(
        "throughput: {:.0} matches/s formed → settled ({settled} in {elapsed:.2} s)\n",
        settled as f64 / elapsed
    );
    out += &format!("{:<22} {:>10} {:>10}\n", "stage latency", "p50 ms", "p99 ms");
    for (stage, p50, p99) in stages {
        out += &format!("{stage:<22} {p50:>10.1} {p99:>10.1}\n");
    }
    out += &format!(
        "books: {total_settled} settled, {pairs} pairs, ledger {}, chains {}",
        if ledger.ok() { "ok" } else { "BROKEN" },
        chains.join(", ")
    );
    Ok(out)
}

async fn pgbench(settings: &Settings, admin: &sqlx::PgPool, id: &str, seconds: u32) -> anyhow::Result<f64> {
    let name = format!("arena_pgbench_{id}");
    sqlx::query(&format!("create database \"{name}\"")).execute(admin).await?;
    let url = with_database(settings.database.url.expose_secret(), &name)?;
    let result = async {
        let init = tokio::process::Command::new("pgbench").args(["-i", "-s", "10", "-q", &url]).output().await?;
        anyhow::ensure!(init.status.success(), "pgbench -i failed: {}", String::from_utf8_lossy(&init.stderr));
        let run = tokio::process::Command::new("pgbench")
            .args(["-c", "8", "-j", "2", "-T", &seconds.to_string(), "-n", &url])
            .output()
            .await?;
        let out = String::from_utf8_lossy(&run.stdout).into_owned();
        out.lines()
            .find_map(|l| {
                l.strip_prefix("tps = ").and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok())
            })
            .ok_or_else(|| anyhow::anyhow!("no tps in pgbench's output: {out}"))
    }
    .await;
    sqlx::query(&format!("drop database if exists \"{name}\" with (force)")).execute(admin).await?;
    result
}
