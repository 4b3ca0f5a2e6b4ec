//! Open runtime workers end to end: the real `arena worker` and
//! `arena lab cheat-worker` processes against the real server (web and
//! judge roles, no built-in runtime), the real model on both sides.

use crate::arena::{Arena, User, quick_settings, quick_space};
use crate::helpers::{TestEnv, eventually};
use arena_server::app::Roles;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ARENA: &str = env!("CARGO_BIN_EXE_arena");

/// A league whose agents allow open workers (one with an adapter), on a
/// server with no runtime of its own: only workers generate.
pub async fn open_league(escrow_s: u64) -> (Arena, Vec<User>) {
    open_league_with(escrow_s, 30).await
}

pub async fn open_league_with(escrow_s: u64, lease_s: u64) -> (Arena, Vec<User>) {
    let env = TestEnv::new().await;
    let mut settings = quick_settings(&env);
    // A credit per token, so the small test answers earn something.
    settings.arena.worker_pay_per_ktoken = 1000;
    settings.arena.worker_escrow_s = escrow_s;
    // A killed worker's lease lapses soon, so its matches come back.
    settings.arena.worker_lease_s = lease_s;
    let arena = Arena::with_settings(env, settings).await;
    let dana = arena.user("dana", "designer").await;
    arena.publish(&dana, &quick_space("quick", 2, 2), json!({})).await;
    let ada = arena.user("ada", "player").await;
    let bob = arena.user("bob", "player").await;
    let uploaded = ada.upload_random_adapter().await;
    let (status, agent) = ada
        .post(
            "/agents",
            json!({"name": "tuned", "adapter_sha256": uploaded["sha256"], "sampling": {"temperature": 0.7, "seed": 5}}),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    let tuned = agent["id"].as_str().unwrap().to_owned();
    assert_eq!(ada.post(&format!("/agents/{tuned}/entries"), json!({"space": "quick"})).await.0, 201);
    let plain = bob.agent("plain", "quick").await;
    for (user, id) in [(&ada, &tuned), (&bob, &plain)] {
        let (status, body) = user.patch(&format!("/agents/{id}"), json!({"open_workers": true})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["open_workers"], true);
    }
    arena.start(Roles { web: true, judge: true, ..Roles::NONE }, None);
    (arena, vec![ada, bob])
}

/// A user with a `work` token.
pub async fn worker_owner(arena: &Arena, name: &str) -> (User, String) {
    let user = arena.user(name, "player").await;
    let (status, token) = user.post("/tokens", json!({"name": "worker", "scopes": ["work", "read"]})).await;
    assert_eq!(status, 201, "{token}");
    (user, token["token"].as_str().unwrap().to_owned())
}

/// Starts `arena worker` (or `arena lab cheat-worker --kind K`) as a process.
pub fn spawn_worker(arena: &Arena, token: &str, dir: &std::path::Path, cheat: Option<&str>) -> Child {
    spawn_worker_with(arena, token, dir, cheat, &[])
}

pub fn spawn_worker_with(
    arena: &Arena,
    token: &str,
    dir: &std::path::Path,
    cheat: Option<&str>,
    env: &[(&str, &str)],
) -> Child {
    let mut cmd = Command::new(ARENA);
    match cheat {
        Some(kind) => cmd.args(["lab", "cheat-worker", "--kind", kind]),
        None => cmd.arg("worker"),
    };
    let key = dir.join("worker.key");
    cmd.args(["--server", &arena.address, "--threads", "1", "--max-batch", "4", "--stake", "500"])
        .arg("--key")
        .arg(&key)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ARENA_WORKER_TOKEN", token)
        .env("ARENA_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in arena.env.vars() {
        cmd.env(k, v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

pub fn output_of(mut child: Child) -> String {
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

async fn scalar(arena: &Arena, sql: &str, user: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql).bind(uuid::Uuid::parse_str(user).unwrap()).fetch_one(&arena.db).await.unwrap()
}

#[tokio::test]
async fn an_open_worker_generates_matches_that_settle_and_is_paid_through_escrow() {
    let (arena, _) = open_league(3).await;
    let (wendy, token) = worker_owner(&arena, "wendy").await;
    let before = wendy.balance().await;
    let dir = tempfile::tempdir().unwrap();
    let worker = spawn_worker(&arena, &token, dir.path(), None);
    arena.wait_settled(4, 240).await;
    arena.pause_all().await;
    // Stopped (a kill): an open lease of its expires unpaid.
    let log = output_of(worker);

    // Every output came from the worker, through an accepted, signed job;
    // its first matches (its probation) were all audited and passed.
    let from_worker: i64 = sqlx::query_scalar(
        "select count(*) from outputs o join worker_jobs j on j.id = o.worker_job_id
         where j.state = 'accepted' and j.record_sha256 is not null",
    )
    .fetch_one(&arena.db)
    .await
    .unwrap();
    let outputs: i64 = sqlx::query_scalar("select count(*) from outputs").fetch_one(&arena.db).await.unwrap();
    assert_eq!(from_worker, outputs, "every output has its worker's record\n{log}");
    let (status, list) = wendy.get("/workers").await;
    assert_eq!(status, 200);
    let w = &list["workers"][0];
    let passed = w["audits_passed"].as_i64().unwrap();
    assert!(passed >= 4, "probation audits every match: {w}\n{log}");
    assert_eq!(w["audits_failed"], 0, "{w}");
    if passed < i64::from(arena_server::domain::worker::PROBATION) {
        assert_eq!(w["audit_rate"], 1.0, "still in probation: {w}");
    }
    assert!(w["tokens_done"].as_i64().unwrap() > 0);
    // Paid a credit per token into escrow, released after its window.
    let released = eventually(30, || async {
        let (_, list) = wendy.get("/workers").await;
        list["workers"][0]["escrow"] == 0 && list["workers"][0]["earned"].as_i64().unwrap() > 0
    })
    .await;
    let (_, list) = wendy.get("/workers").await;
    assert!(released, "escrow released: {}", list["workers"][0]);
    let earned = list["workers"][0]["earned"].as_i64().unwrap();
    assert_eq!(earned, list["workers"][0]["tokens_done"].as_i64().unwrap(), "a credit per token");
    let (_, statement) = wendy.get("/me/ledger?limit=500").await;
    let kinds: Vec<&str> =
        statement["entries"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"worker_stake") && kinds.contains(&"worker_release"), "{kinds:?}");
    assert_eq!(wendy.balance().await, before - 500 + earned, "the stake is locked, the released pay is hers");
    // A match page names the worker that generated each answer.
    let m: uuid::Uuid = sqlx::query_scalar("select id from matches where status = 'settled' limit 1")
        .fetch_one(&arena.db)
        .await
        .unwrap();
    let page = arena.get(&format!("/matches/{m}")).await.text().await.unwrap();
    assert!(page.contains("Generated by open worker worker-"), "the match page names the worker");
    // The workers' record hashes are in the Space's chain: changing one
    // breaks it.
    let out = crate::cli::arena(&arena.env, &["verify-log", "quick"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", crate::cli::text(&out));
    sqlx::query("update worker_jobs set record_sha256 = repeat('0', 64) where id = (select worker_job_id from outputs o join matches m on m.id = o.match_id where m.seq = 1 limit 1)")
        .execute(&arena.db)
        .await
        .unwrap();
    let out = crate::cli::arena(&arena.env, &["verify-log", "quick"], &[]);
    assert_eq!(out.status.code(), Some(1), "a changed record hash breaks the chain: {}", crate::cli::text(&out));
    // Leaving returns the stake after the escrow window.
    let id = list["workers"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(wendy.delete(&format!("/workers/{id}")).await.0, 200);
    assert!(
        eventually(30, || async { wendy.balance().await == before + earned }).await,
        "the stake comes back: {} vs {}",
        wendy.balance().await,
        before + earned
    );
    arena.settled_exactly_once().await;
    arena.ledger_ok().await;
}

#[tokio::test]
async fn cheating_workers_are_caught_slashed_banned_and_their_matches_generated_honestly() {
    let (arena, _) = open_league(3600).await;
    let kinds = ["edit-tokens", "truncate", "drop-adapter", "temperature", "greedy", "prefill-attack"];
    let mut cheats = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let (user, token) = worker_owner(&arena, &format!("cheat{i}")).await;
        let dir = tempfile::tempdir().unwrap();
        let child = spawn_worker(&arena, &token, dir.path(), Some(kind));
        cheats.push((kind, user, child, dir));
    }
    // Every cheat is caught on its first audited lease (probation audits
    // all) and stops when refused as banned.
    let mut logs = Vec::new();
    for (kind, user, mut child, _dir) in cheats {
        let deadline = std::time::Instant::now() + Duration::from_secs(240);
        let code = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code();
            }
            assert!(std::time::Instant::now() < deadline, "the {kind} cheat was not stopped");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let log = output_of(child);
        assert_eq!(code, Some(1), "the {kind} cheat stops refused: {log}");
        assert!(log.contains("banned"), "{kind}: {log}");
        let (_, list) = user.get("/workers").await;
        let w = &list["workers"][0];
        let failed = w["audits_failed"].as_i64().unwrap();
        assert!(failed >= 1 && w["audits_passed"] == 0, "{kind}: {w}");
        // Each failed audit (a lease may hold two matches) slashes half the
        // registered stake, down to nothing.
        let slashed = (250 * failed).min(500);
        assert_eq!(w["slashed"], slashed, "{kind}: {w}");
        assert_eq!(w["staked"], 500 - slashed, "{kind}: {w}");
        let stored = scalar(
            &arena,
            "select count(*) from outputs o join worker_jobs j on j.id = o.worker_job_id
             join workers w on w.id = j.worker_id where w.owner_id = $1",
            &user.id,
        )
        .await;
        assert_eq!(stored, 0, "{kind}: nothing a cheat sent became an output");
        // The slash is in its owner's statement, on the worker's stake.
        let (_, statement) = user.get("/me/ledger?limit=100").await;
        let slashes: i64 = statement["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "worker_slash" && e["account"] == "stake")
            .map(|e| -e["amount"].as_i64().unwrap())
            .sum();
        assert_eq!(slashes, slashed, "{kind}: {statement}");
        let findings: Vec<serde_json::Value> = sqlx::query_scalar(
            "select j.audit from worker_jobs j join workers w on w.id = j.worker_id
             where w.owner_id = $1 and j.state = 'rejected'",
        )
        .bind(uuid::Uuid::parse_str(&user.id).unwrap())
        .fetch_all(&arena.db)
        .await
        .unwrap();
        assert!(!findings.is_empty(), "{kind}");
        logs.push(format!("{kind}: {}", findings[0]));
    }
    eprintln!("{}", logs.join("\n"));
    // The rejected matches were released: an honest worker generates them,
    // each settles once.
    let rejected: Vec<uuid::Uuid> =
        sqlx::query_scalar("select distinct match_id from worker_jobs where state = 'rejected'")
            .fetch_all(&arena.db)
            .await
            .unwrap();
    assert!(!rejected.is_empty());
    let (_, token) = worker_owner(&arena, "wendy").await;
    let dir = tempfile::tempdir().unwrap();
    let honest = spawn_worker(&arena, &token, dir.path(), None);
    let all_settled = eventually(240, || async {
        let open: i64 = sqlx::query_scalar("select count(*) from matches where id = any($1) and status <> 'settled'")
            .bind(&rejected)
            .fetch_one(&arena.db)
            .await
            .unwrap();
        open == 0
    })
    .await;
    arena.pause_all().await;
    let log = output_of(honest);
    assert!(all_settled, "the cheats' matches settle through the honest worker:\n{log}");
    arena.settled_exactly_once().await;
    arena.ledger_ok().await;
}

/// A worker registered and driven through the API by the test itself.
async fn api_worker(arena: &Arena, user: &User, seed: u8) -> (String, ed25519_dalek::SigningKey) {
    let model_sha: String =
        sqlx::query_scalar("select base_model from agent_versions limit 1").fetch_one(&arena.db).await.unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let (status, body) = user
        .post(
            "/workers",
            json!({"name": format!("api-{seed}"), "public_key": hex::encode(key.verifying_key().to_bytes()),
                   "model_sha256": model_sha, "runtime_version": agent_runtime::VERSION,
                   "recipe": agent_runtime::quant::kernels().recipe(), "device": "cpu", "max_batch": 4, "stake": 500}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    (body["worker"]["id"].as_str().unwrap().to_owned(), key)
}

#[tokio::test]
async fn workers_that_vanish_or_never_answer_lose_their_matches_which_settle_once() {
    let (arena, players) = open_league_with(3600, 4).await;
    // A player is never given a match with an agent of her own (both
    // agents of every match here are hers or bob's).
    let (ada_worker, _) = api_worker(&arena, &players[0], 11).await;
    let formed = eventually(30, || async {
        sqlx::query_scalar::<_, i64>("select count(*) from matches where status = 'formed'")
            .fetch_one(&arena.db)
            .await
            .unwrap()
            > 0
    })
    .await;
    assert!(formed);
    let (status, _) = players[0].post(&format!("/workers/{ada_worker}/lease"), json!({"wait_s": 1})).await;
    assert_eq!(status, 204, "ada's own agents' matches are not hers to generate");

    // A worker that leases and never answers; its answer after the
    // deadline is refused and changes nothing.
    let (silent_owner, _) = worker_owner(&arena, "sil").await;
    let (silent, key) = api_worker(&arena, &silent_owner, 12).await;
    let (status, lease) = silent_owner.post(&format!("/workers/{silent}/lease"), json!({"wait_s": 5})).await;
    assert_eq!(status, 200, "{lease}");
    let lease: arena_server::work::workers::LeaseOut = serde_json::from_value(lease).unwrap();
    let mut held: Vec<uuid::Uuid> = lease.jobs.iter().map(|j| j.match_id.0).collect();
    held.sort();
    held.dedup();
    // A killed worker: it leases, then dies (SIGKILL) before answering.
    let (victim_owner, victim_token) = worker_owner(&arena, "vic").await;
    let dir = tempfile::tempdir().unwrap();
    let mut victim = spawn_worker(&arena, &victim_token, dir.path(), None);
    let _ = &victim_owner;
    let leased = eventually(60, || async {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from worker_leases l join workers w on w.id = l.worker_id
             join users u on u.id = w.owner_id where u.username = 'vic'",
        )
        .fetch_one(&arena.db)
        .await
        .unwrap()
            > 0
    })
    .await;
    assert!(leased);
    victim.kill().unwrap();
    let _ = victim.wait();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let records: Vec<serde_json::Value> = lease
        .jobs
        .iter()
        .map(|j| {
            let record = arena_server::domain::worker::RolloutRecord {
                lease_id: lease.lease_id,
                job_id: j.job_id,
                match_id: j.match_id,
                slot: j.slot,
                attempt: j.attempt,
                identity: j.identity.clone(),
                tokens: vec![],
                logprobs: vec![],
                finish: agent_runtime::Finish::Length,
                end_token: None,
                elapsed_ms: 1,
            };
            let signature = record.sign(&key);
            json!({"record": record, "signature": signature})
        })
        .collect();
    let (status, body) =
        silent_owner.post(&format!("/leases/{}/result", lease.lease_id), json!({"results": records})).await;
    assert_eq!(status, 409, "a late answer is refused: {body}");

    // An honest worker takes what the others dropped.
    let (_, token) = worker_owner(&arena, "wendy").await;
    let dir = tempfile::tempdir().unwrap();
    let honest = spawn_worker(&arena, &token, dir.path(), None);
    let settled = eventually(180, || async {
        sqlx::query_scalar::<_, i64>("select count(*) from matches where id = any($1) and status = 'settled'")
            .bind(&held)
            .fetch_one(&arena.db)
            .await
            .unwrap()
            == held.len() as i64
    })
    .await;
    arena.pause_all().await;
    let log = output_of(honest);
    type State = (uuid::Uuid, String, Option<chrono::DateTime<chrono::Utc>>, Option<String>);
    let states: Vec<State> = sqlx::query_as(
        "select m.id, m.status, m.claimed_until,
                (select string_agg(j.state || '@' || j.lease_id, ',') from worker_jobs j where j.match_id = m.id)
         from matches m where m.id = any($1)",
    )
    .bind(&held)
    .fetch_all(&arena.db)
    .await
    .unwrap();
    assert!(settled, "the silent worker's matches settle through another: {states:?}\n{log}");
    let dropped: Vec<String> = sqlx::query_scalar(
        "select distinct j.state from worker_jobs j join workers w on w.id = j.worker_id
         join users u on u.id = w.owner_id where u.username in ('sil', 'vic')",
    )
    .fetch_all(&arena.db)
    .await
    .unwrap();
    assert_eq!(dropped, vec!["expired".to_owned()], "the vanished workers' jobs expired, nothing else");
    let from_vanished: i64 = sqlx::query_scalar(
        "select count(*) from outputs o join worker_jobs j on j.id = o.worker_job_id
         join workers w on w.id = j.worker_id join users u on u.id = w.owner_id where u.username in ('sil', 'vic')",
    )
    .fetch_one(&arena.db)
    .await
    .unwrap();
    assert_eq!(from_vanished, 0);
    arena.settled_exactly_once().await;
    arena.ledger_ok().await;
}

/// A worker on another kernel path (the scalar one, forced) is held to
/// the tolerant tier: audited, passed or at worst soft-failed, never slashed.
#[tokio::test]
async fn an_honest_worker_on_another_kernel_path_is_audited_tolerantly_and_never_slashed() {
    if agent_runtime::quant::kernels() == agent_runtime::quant::Kernels::Scalar {
        eprintln!("the server itself runs the scalar kernels here: no other path to hold tolerantly");
        return;
    }
    let (arena, _) = open_league(3600).await;
    let (wendy, token) = worker_owner(&arena, "wendy").await;
    let dir = tempfile::tempdir().unwrap();
    let worker = spawn_worker_with(&arena, &token, dir.path(), None, &[("ARENA_KERNELS", "scalar")]);
    arena.wait_settled(3, 240).await;
    arena.pause_all().await;
    let log = output_of(worker);
    let (_, list) = wendy.get("/workers").await;
    let w = &list["workers"][0];
    assert_eq!(w["recipe"], agent_runtime::quant::Kernels::Scalar.recipe(), "{w}");
    assert!(w["audits_passed"].as_i64().unwrap() >= 3, "{w}\n{log}");
    assert_eq!(w["slashed"], 0, "{w}");
    let tiers: Vec<String> = sqlx::query_scalar(
        "select distinct s->'tier'->>'tier' from worker_jobs j, jsonb_array_elements(j.audit->'seats') s
         where j.audited",
    )
    .fetch_all(&arena.db)
    .await
    .unwrap();
    assert_eq!(tiers, vec!["tolerant".to_owned()], "a scalar worker on an AVX2 server is held to the tolerant tier");
    arena.settled_exactly_once().await;
    arena.ledger_ok().await;
}
