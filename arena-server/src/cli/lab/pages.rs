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
    // Votes as fast as the bench sends them, every battle a real one.
    settings.arena.vote_read_base_ms = 0;
    settings.arena.vote_read_ms_per_word = 0;
    settings.arena.vote_gold_pct = 0;
    settings.arena.vote_daily_cap = 1_000_000;
    settings.arena.vote_address_daily_cap = 1_000_000;
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
    // Votes: a vote through the API and how soon its pair is exportable
    // (the buyers' filter, as `/data/count` runs it), then synthetic votes
    // of 30 voters on every settled match of bench-0 for the audit.
    let votes_line = vote_latency(&client, &base, &db, args.requests.min(200)).await?;
    let synthetic = synthetic_votes(&db, 30).await?;
    let designer = reqwest::Client::builder().cookie_store(true).build()?;
    let login = designer
        .post(format!("{base}/api/v1/sessions"))
        .json(&serde_json::json!({"username": "designer", "password": "benchmark-password"}))
        .send()
        .await?;
    anyhow::ensure!(login.status().is_success(), "designer sign-in failed: {}", login.status());
    let pages = [
        ("/", "/".to_owned()),
        ("/spaces", "/spaces".to_owned()),
        ("/spaces/{slug}", "/spaces/bench-0".to_owned()),
        ("/matches/{id}", format!("/matches/{a_match}")),
        ("/agents/{id} (owner)", format!("/agents/{agent}")),
        ("/agents/new", "/agents/new".to_owned()),
        ("/me", "/me".to_owned()),
        ("/vote", "/vote".to_owned()),
        ("/studio/{slug}/audit", "/studio/bench-0/audit".to_owned()),
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
        let who = if path.starts_with("/studio") { &designer } else { &client };
        for _ in 0..args.requests {
            let t = Instant::now();
            let response = who.get(format!("{base}{path}")).send().await?;
            anyhow::ensure!(response.status().is_success(), "{path}: {}", response.status());
            bytes = response.bytes().await?.len();
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        out += &format!("{name:<24} {:>9.2} {:>9.2} {:>9.1}\n", at(0.5), at(0.99), bytes as f64 / 1024.0);
    }
    out += &votes_line;
    out += &format!(
        "synthetic votes: {synthetic} (30 voters on every settled match of bench-0) before /spaces/{{slug}} and the audit\n"
    );
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

/// Votes `n` battles through the API as the signed-in `client` and times,
/// for each, the vote's round trip and the time until its human pair is
/// selected by the buyers' filter (`label_source = human`).
async fn vote_latency(client: &reqwest::Client, base: &str, db: &sqlx::PgPool, n: usize) -> anyhow::Result<String> {
    use crate::domain::dataset::{LabelSource, PairFilter};
    let filter = PairFilter { label_source: Some(LabelSource::Human), ..PairFilter::default() };
    let (mut vote_ms, mut exportable_ms) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let battle = client.get(format!("{base}/api/v1/battles?space=bench-0")).send().await?;
        if battle.status().as_u16() == 204 {
            break;
        }
        let battle: serde_json::Value = battle.json().await?;
        let before = crate::store::pairs::count_filtered(db, &filter).await?;
        let t = Instant::now();
        let r = client
            .post(format!("{base}/api/v1/votes"))
            .json(&serde_json::json!({"ballot": battle["ballot"], "choice": "a"}))
            .send()
            .await?;
        anyhow::ensure!(r.status().as_u16() == 201, "vote: {}", r.status());
        vote_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let reveal: serde_json::Value = r.json().await?;
        anyhow::ensure!(reveal["counted"] == true, "the bench's vote did not count: {reveal}");
        loop {
            if crate::store::pairs::count_filtered(db, &filter).await? > before {
                break;
            }
            anyhow::ensure!(t.elapsed() < Duration::from_secs(10), "a counted vote's pair never showed");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        exportable_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    anyhow::ensure!(!vote_ms.is_empty(), "no battle to vote on");
    let q = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * p).round() as usize]
    };
    Ok(format!(
        "POST /api/v1/votes ({} votes)  p50 {:.2} ms  p99 {:.2} ms; vote sent → its human pair exportable p50 {:.2} ms  p99 {:.2} ms\n",
        vote_ms.len(),
        q(&mut vote_ms, 0.5),
        q(&mut vote_ms, 0.99),
        q(&mut exportable_ms, 0.5),
        q(&mut exportable_ms, 0.99)
    ))
}

/// `voters` synthetic voters' counted votes on every settled match of
/// bench-0 (slots 0 and 1; 70% for the answer the verifier preferred), the
/// audit share marked as the server marks it. Returns how many.
async fn synthetic_votes(db: &sqlx::PgPool, voters: usize) -> anyhow::Result<usize> {
    use crate::domain::votes::{AUDIT_SHARE_PCT, in_audit_share};
    use rand::{Rng, SeedableRng};
    let space: Uuid = sqlx::query_scalar("select id from spaces where slug = 'bench-0'").fetch_one(db).await?;
    let matches: Vec<(Uuid, serde_json::Value)> = sqlx::query_as(
        "select m.id, v.verdict from matches m join verdicts v on v.match_id = m.id
         where m.space_id = $1 and m.status = 'settled'",
    )
    .bind(space)
    .fetch_all(db)
    .await?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let (mut ids, mut voter_ids, mut match_ids, mut choices, mut shares) = (vec![], vec![], vec![], vec![], vec![]);
    for v in 0..voters {
        let voter: Uuid = sqlx::query_scalar(
            "insert into users (id, username, password_hash, role) values (gen_random_uuid(), $1, 'x', 'player')
             returning id",
        )
        .bind(format!("voter{v}"))
        .fetch_one(db)
        .await?;
        for (m, verdict) in &matches {
            let judge = crate::store::votes::judge_call(Some(verdict), 0, 1);
            let agree = rng.random::<f64>() < 0.7;
            let choice = match (judge, agree) {
                (crate::domain::votes::Call::First, true) | (crate::domain::votes::Call::Second, false) => "a",
                (crate::domain::votes::Call::Tie, _) => "tie",
                _ => "b",
            };
            ids.push(Uuid::new_v4());
            voter_ids.push(voter);
            match_ids.push(*m);
            choices.push(choice);
            shares.push(in_audit_share(*m, AUDIT_SHARE_PCT));
        }
    }
    sqlx::query(
        "insert into votes (id, voter_id, match_id, space_id, slot_a, slot_b, choice, issued_at, elapsed_ms, address,
                            audit_share)
         select i, v, m, $6, 0, 1, c, now(), 5000, 'bench', s
         from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::bool[]) as x(i, v, m, c, s)",
    )
    .bind(&ids)
    .bind(&voter_ids)
    .bind(&match_ids)
    .bind(&choices)
    .bind(&shares)
    .bind(space)
    .execute(db)
    .await?;
    // As a live database would have them: the planner's statistics.
    sqlx::query("analyze votes").execute(db).await?;
    Ok(ids.len())
}
