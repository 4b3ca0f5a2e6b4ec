//! `arena bench pages`: how long each page takes to render and send, p50
//! and p99 over sequential requests, on a throwaway database holding Spaces,
//! players and settled matches made by the pipeline (on the stub
//! generator, a test double: no model). One signed-in player asks, as a
//! browser would; the server runs in this process.

use super::control_plane::seed;
use super::scratch_db::ScratchDb;
use crate::app::config::Settings;
use crate::app::{Application, Options, Roles};
use crate::cli::args::PagesBenchArgs;
use crate::domain::MatchStatus;
use crate::store::matches;
use crate::work::test_double::StubGenerator;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

pub async fn run(args: &PagesBenchArgs, settings: &Settings) -> anyhow::Result<()> {
    anyhow::ensure!((1..=100_000).contains(&args.matches), "--matches is 1..=100000");
    anyhow::ensure!((1..=10_000).contains(&args.requests), "--requests is 1..=10000");
    let db = ScratchDb::create(settings, "pages").await?;
    let result = measure(settings, args, &db).await;
    db.drop().await?;
    println!("{}", result?);
    Ok(())
}

async fn measure(settings: &Settings, args: &PagesBenchArgs, db: &ScratchDb) -> anyhow::Result<String> {
    let id = db.id.as_str();
    let mut settings = db.settings(settings)?;
    settings.database.migrate_on_start = true;
    settings.redis.prefix = format!("pages:{id}:");
    settings.server.port = 0;
    settings.server.host = "127.0.0.1".into();
    settings.arena.matchmaker_interval_ms = 20;
    settings.arena.stage_batch = 64;
    settings.arena.writes_per_minute = 100_000;
    settings.data_dir = std::env::temp_dir().join(format!("arena-pages-{id}"));
    let options = Options { roles: Roles::ALL, workers: false, generator: Some(Arc::new(StubGenerator)), threads: 1 };
    let app = Application::build_with(settings.clone(), options.clone()).await?;
    let (db, ctx, port) = (app.ctx.db.clone(), app.ctx.clone(), app.port());
    seed(&db, &app.ctx.base_model, 3, 4, 12, None).await?;
    crate::app::start_workers(&ctx, &settings, &options, app.stop.subscribe())?;
    let stop = app.stop.clone();
    tokio::spawn(app.run_until_stopped());
    let started = Instant::now();
    while matches::count(&db, Some(MatchStatus::Settled)).await? < args.matches {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "matches did not settle in 10 minutes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    crate::store::spaces::pause_all(&db).await?;
    let _ = stop.send(true);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().cookie_store(true).build()?;
    let login = client
        .post(format!("{base}/api/v1/sessions"))
        .json(&serde_json::json!({"username": "player0", "password": "benchmark-password"}))
        .send()
        .await?;
    anyhow::ensure!(login.status().is_success(), "sign-in failed: {}", login.status());
    let agent: Uuid =
        sqlx::query_scalar("select a.id from agents a join users u on u.id = a.owner_id where u.username = 'player0'")
            .fetch_one(&db)
            .await?;
    let a_match: Uuid =
        sqlx::query_scalar("select id from matches where status = 'settled' order by created_at desc limit 1")
            .fetch_one(&db)
            .await?;
    let pages = [
        ("/", "/".to_owned()),
        ("/spaces", "/spaces".to_owned()),
        ("/spaces/{slug}", "/spaces/bench-0".to_owned()),
        ("/matches/{id}", format!("/matches/{a_match}")),
        ("/agents/{id} (owner)", format!("/agents/{agent}")),
        ("/agents/new", "/agents/new".to_owned()),
        ("/me", "/me".to_owned()),
    ];
    let settled = matches::count(&db, Some(MatchStatus::Settled)).await?;
    let mut out = format!(
        "page render + send, {} sequential requests each, signed in, {settled} settled matches in 3 Spaces of 4 agents per match, 12 players\n",
        args.requests
    );
    out += &format!("{:<24} {:>9} {:>9} {:>9}\n", "page", "p50 ms", "p99 ms", "KiB");
    for (name, path) in pages {
        let mut ms = Vec::with_capacity(args.requests);
        let mut bytes = 0;
        for _ in 0..args.requests {
            let t = Instant::now();
            let response = client.get(format!("{base}{path}")).send().await?;
            anyhow::ensure!(response.status().is_success(), "{path}: {}", response.status());
            bytes = response.bytes().await?.len();
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        out += &format!("{name:<24} {:>9.2} {:>9.2} {:>9.1}\n", at(0.5), at(0.99), bytes as f64 / 1024.0);
    }
    db.close().await;
    let mut redis = ctx.redis.conn();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("pages:{id}:*")).query_async(&mut redis).await.unwrap_or_default();
    for key in keys {
        let _: Result<(), _> = redis::cmd("DEL").arg(key).query_async(&mut redis).await;
    }
    let _ = std::fs::remove_dir_all(&settings.data_dir);
    Ok(out.trim_end().to_owned())
}
