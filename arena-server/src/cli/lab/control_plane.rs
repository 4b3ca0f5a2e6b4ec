//! `arena bench control-plane`: how many matches per second the platform
//! carries from formed to settled when the model is replaced by a stub
//! generator (named as such: this measures the control plane — matchmaker,
//! Redis Streams, PostgreSQL, judge verifiers, settlement — not the model),
//! with per-stage latency percentiles, next to pgbench's TPS on the same
//! PostgreSQL in the same run.

use super::scratch_db::{ScratchDb, with_database};
use crate::app::config::Settings;
use crate::app::{Application, Options, Roles};
use crate::cli::args::ControlPlaneArgs;
use crate::domain::agent::AgentSampling;
use crate::domain::user::{Password, Role, Username};
use crate::domain::{AgentId, MatchStatus, rating};
use crate::store::agents::{self, NewAgentVersion};
use crate::store::spaces::{self as space_store, Publisher};
use crate::store::{ledger, matches, settlement, users};
use crate::work::test_double::StubGenerator;
use secrecy::ExposeSecret;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The benchmark Space as a multi-turn game: the same prompts, verifiers
/// and pot, played as a `turns`-turn debate (every answer a legal turn; the
/// verifiers rank each seat's part at the end).
pub fn bench_game_space(name: &str, k: u32, turns: u32) -> String {
    format!(
        "{}\n[turns]\nmax_turns = {turns}\nview = \"transcript\"\n\n[referee]\nkind = \"debate\"\n",
        bench_space(name, k)
    )
}

pub fn bench_space(name: &str, k: u32) -> String {
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

[votes]
criterion = "Which answer is right?"
"#
    )
}

pub async fn run(args: &ControlPlaneArgs, settings: &Settings) -> anyhow::Result<()> {
    let db = ScratchDb::create(settings, "bench").await?;
    let result = measure(settings, args, &db, None).await;
    let game = if args.game_turns > 0 {
        let game_db = db.sibling("game").await?;
        let r = measure(settings, args, &game_db, Some(args.game_turns)).await;
        game_db.drop().await?;
        Some(r)
    } else {
        None
    };
    let pg = if args.pgbench { Some(pgbench(settings, db.admin(), &db.id, args.pgbench_seconds).await) } else { None };
    db.drop().await?;
    let report = result?;
    let game = game.transpose()?;
    println!("{report}");
    if let Some(game) = &game {
        println!("\n{game}");
        let rate = |r: &str| {
            r.lines()
                .find_map(|l| l.strip_prefix("throughput: "))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|n| n.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        println!(
            "single-turn {:.0} matches/s, {}-turn game {:.0} matches/s ({:.0} turns/s) in the same run",
            rate(&report),
            args.game_turns,
            rate(game),
            rate(game) * f64::from(args.game_turns)
        );
    }
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

async fn measure(
    settings: &Settings,
    args: &ControlPlaneArgs,
    db: &ScratchDb,
    game_turns: Option<u32>,
) -> anyhow::Result<String> {
    let id = db.id.as_str();
    let mut settings = db.settings(settings)?;
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
    let db = app.ctx.db.clone();

    seed(&db, &app.ctx.base_model, args.spaces, args.agents_per_match, args.players, game_turns).await?;

    let started = Instant::now();
    crate::app::start_workers(&app.ctx, &settings, &options, app.stop.subscribe())?;
    let mut last_print = Instant::now();
    let settled = loop {
        let settled = matches::count(&db, Some(MatchStatus::Settled)).await?;
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
    space_store::pause_all(&db).await?;
    // Let the matches in flight finish, so the books can be checked.
    let drain = Instant::now();
    while drain.elapsed() < Duration::from_secs(60) {
        let open: i64 = matches::open_counts(&db).await?.iter().map(|c| c.count).sum();
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop_workers();

    let stages = matches::stage_latencies(&db).await?;
    let ledger = ledger::check(&db).await?;
    let mut chains = Vec::new();
    for s in 0..args.spaces {
        let report = settlement::verify_log(&db, &format!("bench-{s}")).await?;
        chains.push(if report.broken.is_none() { format!("{} ok", report.checked) } else { "BROKEN".to_owned() });
    }
    let total_settled = matches::count(&db, Some(MatchStatus::Settled)).await?;
    let pairs = crate::store::pairs::count(&db).await?;
    db.close().await;
    let mut conn = app.ctx.redis.conn();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("bench:{id}:*")).query_async(&mut conn).await.unwrap_or_default();
    for key in keys {
        let _: Result<(), _> = redis::cmd("DEL").arg(key).query_async(&mut conn).await;
    }
    let _ = std::fs::remove_dir_all(&settings.data_dir);

    let mut out = String::new();
    out += &match game_turns {
        None => "control plane, stub generator (StubGenerator: no model), verifier-only judge\n".to_owned(),
        Some(t) => format!(
            "control plane, a {t}-turn game (one generate step per turn), stub generator (StubGenerator: no model), verifier-only judge\n"
        ),
    };
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
    for s in stages {
        out += &format!("{:<22} {:>10.1} {:>10.1}\n", s.stage, s.p50_ms, s.p99_ms);
    }
    out += &format!(
        "books: {total_settled} settled, {pairs} pairs, ledger {}, chains {}",
        if ledger.ok() { "ok" } else { "BROKEN" },
        chains.join(", ")
    );
    Ok(out)
}

/// Seeds a benchmark database: a designer, `spaces` Spaces of `k` agents per
/// match, and `players` players with one agent entered in every Space.
pub async fn seed(
    db: &sqlx::PgPool,
    base_model: &str,
    spaces: usize,
    k: u32,
    players: usize,
    game_turns: Option<u32>,
) -> anyhow::Result<()> {
    // Seed: a designer, the Spaces, players with one agent entered in each.
    let password = || Password::parse("benchmark-password").map_err(|e| anyhow::anyhow!("{e}"));
    let designer =
        users::create_user(db, &Username::parse("designer")?, password()?, Role::Designer, 1_000_000_000).await?;
    let by = Publisher { user: designer.id, admin: false, quota_bytes: None };
    let mut space_ids = Vec::new();
    for s in 0..spaces {
        let source = match game_turns {
            None => bench_space(&format!("bench-{s}"), k),
            Some(t) => bench_game_space(&format!("bench-{s}"), k, t),
        };
        let published = space_store::publish(db, by, &source, &BTreeMap::new()).await?;
        space_ids.push(published.id);
    }
    let initial = rating::initial();
    for p in 0..players {
        let username = Username::parse(&format!("player{p}"))?;
        let user = users::create_user(db, &username, password()?, Role::Player, 1_000_000_000).await?;
        let agent = AgentId::new();
        let mut tx = db.begin().await?;
        agents::insert_agent(&mut tx, agent, user.id, "agent").await?;
        NewAgentVersion {
            agent,
            version: 1,
            base_model,
            system_prompt: "",
            sampling: &AgentSampling::default(),
            adapter_sha256: None,
            parent: None,
            training_job: None,
            note: "",
        }
        .insert(&mut tx)
        .await?;
        for space in &space_ids {
            agents::enter(&mut tx, agent, *space, user.id, initial.rating, initial.uncertainty).await?;
        }
        tx.commit().await?;
    }

    Ok(())
}

async fn pgbench(settings: &Settings, admin: &sqlx::PgPool, id: &str, seconds: u32) -> anyhow::Result<f64> {
    let name = format!("arena_pgbench_{id}");
    crate::store::create_database(admin, &name).await?;
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
    crate::store::drop_database(admin, &name).await?;
    result
}
