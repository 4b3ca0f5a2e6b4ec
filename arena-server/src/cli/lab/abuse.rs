//! `arena bench abuse`: the platform under a hostile flood, next to the same
//! platform without it, in one run. Matches run throughout on the stub
//! generator (`StubGenerator`, a test double: no model) so the control plane
//! is what is measured. The flood, from many loopback addresses
//! (127.0.0.0/8 only) and bounded in time and count: sign-in attempts with
//! distinct usernames, public GETs of leaderboards, match lists and matches,
//! and SSE connections held open. Printed for both phases: `/healthz`
//! latency (p50, p99), matches settled, failed and refunded, the process's
//! peak RSS (the flood's own client is in the same process, so this is an
//! upper bound for the server) and Redis's memory. During the flood a
//! hostile designer's game Space also runs (unless `--no-hostile-space`):
//! its referee script grows memory past the script budget and nests its
//! state deep, so each of its matches fails and is refunded.

use super::common::{percentile, rss_mib};
use super::control_plane::seed;
use super::scratch_db::ScratchDb;
use crate::app::config::Settings;
use crate::app::{Application, Options, Roles};
use crate::cli::args::AbuseArgs;
use crate::domain::MatchStatus;
use crate::store::{ledger, matches};
use crate::work::test_double::StubGenerator;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The hostile designer's referee: every other `play` grows ~30 MB of map
/// keys at each level of a recursion (memory no size limit sees), the
/// others return a state nested 900 maps deep.
const HOSTILE_SCRIPT: &str = r#"
fn grow(s, n) {
    while s.len() < 30000 { s += s; }
    let m = #{};
    for j in 0..900 { m[s + n + "-" + j] = j; }
    if n > 0 { grow(s, n - 1) + m.len() } else { m.len() }
}
fn init(seats, prompt) { #{ turn: 0 } }
fn to_move(state) { state.turn % 2 }
fn view(state, seat) { `Turn ${state.turn}: say anything.` }
fn play(state, seat, answer) {
    state.turn += 1;
    if answer.len() % 2 == 0 { let n = grow("x", 30); }
    let m = #{};
    for i in 0..900 { m = #{ x: m }; }
    state.deep = m;
    #{ state: state, legal: true, note: "" }
}
"#;

const HOSTILE_SPACE: &str = r#"name = "hostile"
agents_per_match = 2
max_new_tokens = 8
entry_fee = 1
[prompts]
inline = ["Play."]
[payout]
shares = [1.0]
[matchmaking]
rating_window = 100000
max_concurrent_matches = 4
[turns]
max_turns = 6
[referee]
kind = "script"
script = "hostile.rhai"
max_operations = 2000000
max_ms = 1000
[judge]
mode = "none"
"#;

/// Publishes the hostile Space and enters the first four seeded agents.
async fn hostile_space(db: &sqlx::PgPool) -> anyhow::Result<()> {
    let designer: crate::domain::UserId =
        sqlx::query_scalar("select id from users where username = 'designer'").fetch_one(db).await?;
    let by = crate::store::spaces::Publisher { user: designer, admin: false, quota_bytes: None };
    let files: std::collections::BTreeMap<String, String> =
        [("hostile.rhai".to_owned(), HOSTILE_SCRIPT.to_owned())].into();
    let published = crate::store::spaces::publish(db, by, HOSTILE_SPACE, &files).await?;
    let seated: Vec<(crate::domain::AgentId, crate::domain::UserId)> =
        sqlx::query_as("select id, owner_id from agents order by created_at limit 4").fetch_all(db).await?;
    let initial = crate::domain::rating::initial();
    let mut tx = db.begin().await?;
    for (agent, owner) in seated {
        crate::store::agents::enter(&mut tx, agent, published.id, owner, initial.rating, initial.uncertainty).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// What one phase measured.
#[derive(Debug, Default)]
struct Phase {
    healthz_ms: Vec<f64>,
    healthz_failed: usize,
    settled: i64,
    failed: i64,
    refunds: i64,
    peak_rss_mib: f64,
    redis_peak_mib: f64,
    sent: u64,
    by_status: std::collections::BTreeMap<u16, u64>,
    streams_open: u64,
}

async fn redis_mib(conn: &mut redis::aio::ConnectionManager) -> f64 {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await.unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .map_or(0.0, |b| b / (1024.0 * 1024.0))
}

/// A client whose connections come from 127.0.0.`n` (loopback only).
fn client_from(n: u8) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n.max(2))))
        .timeout(Duration::from_secs(10))
        .build()?)
}

async fn counts(db: &sqlx::PgPool) -> anyhow::Result<(i64, i64, i64)> {
    let settled = matches::count(db, Some(MatchStatus::Settled)).await?;
    let failed = matches::count(db, Some(MatchStatus::Failed)).await?;
    let refunds: i64 =
        sqlx::query_scalar("select count(*) from ledger_transactions where kind = 'refund'").fetch_one(db).await?;
    Ok((settled, failed, refunds))
}

pub async fn run(args: &AbuseArgs, settings: &Settings) -> anyhow::Result<()> {
    anyhow::ensure!((1..=600).contains(&args.seconds), "--seconds is 1..=600");
    anyhow::ensure!((1..=256).contains(&args.clients), "--clients is 1..=256");
    anyhow::ensure!(args.streams <= 4096, "--streams is at most 4096");
    let db = ScratchDb::create(settings, "abuse").await?;
    let result = measure(settings, args, &db).await;
    db.drop().await?;
    println!("{}", result?);
    Ok(())
}

async fn measure(settings: &Settings, args: &AbuseArgs, db: &ScratchDb) -> anyhow::Result<String> {
    let id = db.id.as_str();
    let mut settings = db.settings(settings)?;
    settings.database.migrate_on_start = true;
    settings.redis.prefix = format!("abuse:{id}:");
    settings.server.port = 0;
    settings.server.host = "127.0.0.1".into();
    settings.arena.matchmaker_interval_ms = 100;
    settings.data_dir = std::env::temp_dir().join(format!("arena-abuse-{id}"));
    let options = Options { roles: Roles::ALL, workers: false, generator: Some(Arc::new(StubGenerator)), threads: 1 };
    let app = Application::build_with(settings.clone(), options.clone()).await?;
    let (db, ctx, port) = (app.ctx.db.clone(), app.ctx.clone(), app.port());
    seed(&db, &app.ctx.base_model, 2, 4, 16, None).await?;
    crate::app::start_workers(&ctx, &settings, &options, app.stop.subscribe())?;
    let stop = app.stop.clone();
    tokio::spawn(app.run_until_stopped());
    let base = format!("http://127.0.0.1:{port}");
    let mut redis = ctx.redis.conn();

    // Let the pipeline warm up, then the quiet phase, then the flood.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let quiet = phase(&base, &db, &mut redis, args, false).await?;
    if args.hostile_space {
        hostile_space(&db).await?;
    }
    let flood = phase(&base, &db, &mut redis, args, true).await?;
    let hostile_failed: i64 = sqlx::query_scalar(
        "select count(*) from matches m join spaces s on s.id = m.space_id
         where s.slug = 'hostile' and m.status = 'failed'",
    )
    .fetch_one(&db)
    .await?;

    crate::store::spaces::pause_all(&db).await?;
    let drain = Instant::now();
    while drain.elapsed() < Duration::from_secs(30) {
        let open: i64 = matches::open_counts(&db).await?.iter().map(|c| c.count).sum();
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(true);
    let books = ledger::check(&db).await?;
    db.close().await;
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("abuse:{id}:*")).query_async(&mut redis).await.unwrap_or_default();
    for key in keys {
        let _: Result<(), _> = redis::cmd("DEL").arg(key).query_async(&mut redis).await;
    }
    let _ = std::fs::remove_dir_all(&settings.data_dir);

    let row = |name: &str, a: String, b: String| format!("{name:<34} {a:>14} {b:>14}\n");
    let ms = |p: &Phase, q: f64| format!("{:.1}", percentile(&p.healthz_ms, q));
    let mut out = String::new();
    out += &format!(
        "hostile load, {} s per phase, stub generator (StubGenerator: no model), loopback only, {} cores\n",
        args.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    out += &row("", "quiet".into(), "flood".into());
    out += &row("/healthz p50 ms", ms(&quiet, 0.5), ms(&flood, 0.5));
    out += &row("/healthz p99 ms", ms(&quiet, 0.99), ms(&flood, 0.99));
    out += &row("/healthz failed", quiet.healthz_failed.to_string(), flood.healthz_failed.to_string());
    out += &row("matches settled", quiet.settled.to_string(), flood.settled.to_string());
    out += &row("matches failed", quiet.failed.to_string(), flood.failed.to_string());
    out += &row("refunds", quiet.refunds.to_string(), flood.refunds.to_string());
    out += &row(
        "peak RSS MiB (server + flood client)",
        format!("{:.0}", quiet.peak_rss_mib),
        format!("{:.0}", flood.peak_rss_mib),
    );
    out += &row(
        "Redis used memory MiB (peak)",
        format!("{:.1}", quiet.redis_peak_mib),
        format!("{:.1}", flood.redis_peak_mib),
    );
    out += &row("flood requests sent", "0".into(), flood.sent.to_string());
    if args.hostile_space {
        out += &row("hostile Space's matches failed", "0".into(), hostile_failed.to_string());
    }
    out += &row("SSE streams held at once", "0".into(), flood.streams_open.to_string());
    let statuses: Vec<String> = flood.by_status.iter().map(|(s, n)| format!("{s}: {n}")).collect();
    out += &format!(
        "flood answers by status: {}\n",
        if statuses.is_empty() { "none".into() } else { statuses.join(", ") }
    );
    out += &format!("books after both phases: ledger {}", if books.ok() { "ok" } else { "BROKEN" });
    Ok(out)
}

async fn phase(
    base: &str,
    db: &sqlx::PgPool,
    redis: &mut redis::aio::ConnectionManager,
    args: &AbuseArgs,
    flood: bool,
) -> anyhow::Result<Phase> {
    let (settled0, failed0, refunds0) = counts(db).await?;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let sent = Arc::new(AtomicU64::new(0));
    let open_streams = Arc::new(AtomicU64::new(0));
    let statuses = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<u16, u64>::new()));
    let mut tasks = tokio::task::JoinSet::new();
    if flood {
        let match_ids: Vec<Uuid> =
            sqlx::query_scalar("select id from matches order by created_at desc limit 50").fetch_all(db).await?;
        let match_ids = Arc::new(match_ids);
        for c in 0..args.clients {
            // Sign-in with a new username each time, from 127.0.0.(2..=201).
            let client = client_from(2 + (c % 200) as u8)?;
            let (url, counter, seen, max) = (base.to_owned(), sent.clone(), statuses.clone(), args.max_requests);
            tasks.spawn(async move {
                let (base, sent, statuses) = (url, counter, seen);
                let mut i = 0u64;
                while Instant::now() < deadline && sent.fetch_add(1, Ordering::Relaxed) < max {
                    i += 1;
                    let body = serde_json::json!({"username": format!("flood{c}x{i}"), "password": "not the password"});
                    let status = client.post(format!("{base}/api/v1/sessions")).json(&body).send().await;
                    let code = status.map_or(0, |r| r.status().as_u16());
                    *statuses.lock().unwrap_or_else(|e| e.into_inner()).entry(code).or_default() += 1;
                }
            });
            // Public GETs: leaderboards, match lists, single matches.
            let client = client_from(2 + ((c + 100) % 200) as u8)?;
            let (url, counter, seen, ids, max) =
                (base.to_owned(), sent.clone(), statuses.clone(), match_ids.clone(), args.max_requests);
            tasks.spawn(async move {
                let (base, sent, statuses) = (url, counter, seen);
                let mut i = 0usize;
                while Instant::now() < deadline && sent.fetch_add(1, Ordering::Relaxed) < max {
                    i += 1;
                    let path = match i % 3 {
                        0 => format!("/api/v1/spaces/bench-{}/leaderboard", i % 2),
                        1 => "/api/v1/matches?limit=100".to_owned(),
                        _ => match ids.get(i % ids.len().max(1)) {
                            Some(id) => format!("/api/v1/matches/{id}"),
                            None => "/api/v1/spaces".to_owned(),
                        },
                    };
                    let code = client.get(format!("{base}{path}")).send().await.map_or(0, |r| r.status().as_u16());
                    *statuses.lock().unwrap_or_else(|e| e.into_inner()).entry(code).or_default() += 1;
                }
            });
        }
        // SSE connections held until the phase ends, from many addresses.
        for s in 0..args.streams {
            let client = client_from(2 + (s % 250) as u8)?;
            let (url, counter, seen, open) = (base.to_owned(), sent.clone(), statuses.clone(), open_streams.clone());
            tasks.spawn(async move {
                let (base, sent, statuses) = (url, counter, seen);
                sent.fetch_add(1, Ordering::Relaxed);
                let response = reqwest::Client::builder()
                    .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (s % 250) as u8)))
                    .build()
                    .unwrap_or(client)
                    .get(format!("{base}/api/v1/events"))
                    .send()
                    .await;
                let code = response.as_ref().map_or(0, |r| r.status().as_u16());
                *statuses.lock().unwrap_or_else(|e| e.into_inner()).entry(code).or_default() += 1;
                if let Ok(response) = response
                    && response.status().is_success()
                {
                    open.fetch_add(1, Ordering::Relaxed);
                    // Held open without reading, as a hostile client would:
                    // the server's writes meet a full socket buffer.
                    tokio::time::sleep(deadline.saturating_duration_since(Instant::now())).await;
                    drop(response);
                }
            });
        }
    }
    // The probe: /healthz every 50 ms, from its own address; samples of
    // memory on the way.
    let probe = client_from(250)?;
    let mut result = Phase::default();
    let mut max_open = 0;
    while Instant::now() < deadline {
        let started = Instant::now();
        match probe.get(format!("{base}/healthz")).send().await {
            Ok(r) if r.status().is_success() => result.healthz_ms.push(started.elapsed().as_secs_f64() * 1000.0),
            _ => result.healthz_failed += 1,
        }
        result.peak_rss_mib = result.peak_rss_mib.max(rss_mib());
        result.redis_peak_mib = result.redis_peak_mib.max(redis_mib(redis).await);
        max_open = max_open.max(open_streams.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    result.healthz_ms.sort_by(f64::total_cmp);
    let (settled1, failed1, refunds1) = counts(db).await?;
    result.settled = settled1 - settled0;
    result.failed = failed1 - failed0;
    result.refunds = refunds1 - refunds0;
    result.sent = sent.load(Ordering::Relaxed).min(args.max_requests + args.streams as u64);
    result.by_status = std::mem::take(&mut *statuses.lock().unwrap_or_else(|e| e.into_inner()));
    result.streams_open = max_open;
    Ok(result)
}
