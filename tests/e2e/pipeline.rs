//! The match pipeline on real PostgreSQL and Redis: formed → generated →
//! judged → settled, and its failure modes (a killed worker, duplicate
//! deliveries, a flushed Redis, a poison match).

use crate::arena::{Arena, FailingGenerator, HangingGenerator, SlowGenerator, quick_space};
use arena_server::app::Roles;
use arena_server::domain::{Stage, Topic};
use arena_server::queue::streams;
use futures_util::StreamExt;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn matches_go_from_formed_to_settled() {
    let arena = Arena::new().await;
    let (_designer, players) = arena.league(2, 2, 4).await;
    // One owner with two agents: they must never meet.
    players[0].agent("twin", "quick").await;
    let buyer = arena.user("bea", "buyer").await;
    let issued_before = arena_server::store::ledger::check(&arena.db).await.unwrap().issued;

    let mut events = arena.client().get(arena.url("/events?space=quick")).send().await.unwrap().bytes_stream();
    arena.start(Roles::ALL, None);
    let first_event =
        tokio::time::timeout(Duration::from_secs(20), events.next()).await.expect("an SSE event").unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first_event).contains("\"space\":\"quick\""), "{first_event:?}");

    arena.wait_settled(10, 60).await;
    arena.pause_all().await;
    arena.wait_settled(10, 30).await;
    arena.settled_exactly_once().await;
    arena.ledger_ok().await;

    let same_owner: i64 = sqlx::query_scalar(
        "select count(*) from (select match_id from match_agents group by match_id
                               having count(distinct owner_id) < count(*)) x",
    )
    .fetch_one(&arena.db)
    .await
    .unwrap();
    assert_eq!(same_owner, 0, "two agents of one owner met");

    // Payouts: each pot paid out entirely, by rank; the winner took more.
    let pots: Vec<(i64, i64, i64)> = sqlx::query_as(
        "select m.pot, sum(ma.payout)::bigint, max(ma.payout) - min(ma.payout)
         from matches m join match_agents ma on ma.match_id = m.id where m.status = 'settled' group by m.id, m.pot",
    )
    .fetch_all(&arena.db)
    .await
    .unwrap();
    for (pot, paid, spread) in &pots {
        assert_eq!(*pot, 20);
        assert!(*paid <= *pot && *paid >= pot - pot / 10 - 1, "pot {pot}, paid {paid}");
        assert!(*spread > 0, "the stub's right answer (even slot) beats its wrong one");
    }
    let report = arena_server::store::ledger::check(&arena.db).await.unwrap();
    assert_eq!(report.issued, issued_before, "settlement moves credits, never creates them");
    assert!(report.house > 0 && report.in_pots == 0, "{}", report.render());

    // Ratings moved; pairs were made; the match page has it all.
    let (winners, losers): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where mu_after > mu_before), count(*) filter (where mu_after < mu_before)
         from match_agents where rank is not null",
    )
    .fetch_one(&arena.db)
    .await
    .unwrap();
    assert!(winners > 0 && losers > 0);
    let match_id: uuid::Uuid = sqlx::query_scalar("select id from matches where status = 'settled' limit 1")
        .fetch_one(&arena.db)
        .await
        .unwrap();
    let (status, page) = players[1].get(&format!("/matches/{match_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(page["status"], "settled");
    assert_eq!(page["seats"].as_array().unwrap().len(), 2);
    assert!(page["seats"][0]["output"].is_string() && page["seats"][0]["rank"].is_number());
    assert!(page["verdict"]["ranking"].is_array());

    let (status, board) = players[1].get("/spaces/quick/leaderboard").await;
    assert_eq!(status, 200);
    let rows = board["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    assert!(board["battles"].as_u64().unwrap() >= 10);
    let played = rows.iter().find(|r| r["matches"].as_i64().unwrap() > 0).unwrap();
    assert!(played["bt_low"].as_f64().unwrap() <= played["bt"].as_f64().unwrap());
    assert!(played["bt"].as_f64().unwrap() <= played["bt_high"].as_f64().unwrap());

    // Buyers export the pairs in TRL's format.
    let export = buyer.client.get(arena.url("/spaces/quick/pairs")).send().await.unwrap();
    assert_eq!(export.status(), 200);
    let text = export.text().await.unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().expect("at least one pair")).unwrap();
    assert!(first["prompt"].is_string() && first["chosen"].as_str().unwrap().contains("The answer is"));
    assert_eq!(first["license"], "CC-BY-4.0");
    assert_eq!(players[1].get("/spaces/quick/pairs").await.0, 403, "players do not export");

    // What an operator watches.
    let metrics = arena.client().get(format!("{}/metrics", arena.address)).send().await.unwrap().text().await.unwrap();
    for series in [
        "arena_stage_matches_total{stage=\"settle\"}",
        "arena_open_matches{status=\"formed\"}",
        "arena_stream_pending{stage=\"judge\"}",
    ] {
        assert!(metrics.contains(series), "{series} missing from /metrics");
    }
}

#[tokio::test]
async fn the_hash_chain_verifies_and_names_the_first_tampered_match() {
    let arena = Arena::new().await;
    arena.league(2, 2, 4).await;
    arena.start(Roles::ALL, None);
    arena.wait_settled(6, 60).await;
    arena.pause_all().await;
    arena.wait_settled(6, 30).await;

    let out = crate::cli::arena(&arena.env, &["verify-log", "quick"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", crate::cli::text(&out));
    assert!(crate::cli::text(&out).contains("chain intact"));
    let out = crate::cli::arena(&arena.env, &["ledger", "check"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", crate::cli::text(&out));
    assert!(crate::cli::text(&out).contains("ledger ok"));

    // Rewrite one agent's answer in the third settled match.
    let victim: uuid::Uuid =
        sqlx::query_scalar("select id from matches where seq = 3").fetch_one(&arena.db).await.unwrap();
    sqlx::query("update outputs set text = 'forged' where match_id = $1 and slot = 0")
        .bind(victim)
        .execute(&arena.db)
        .await
        .unwrap();
    let out = crate::cli::arena(&arena.env, &["verify-log", "quick"], &[]);
    let text = crate::cli::text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("record 3") && text.contains(&victim.to_string()), "{text}");

    // A tampered balance fails the ledger check, naming the account.
    sqlx::query("update accounts set balance = balance + 5 where kind = 'house'").execute(&arena.db).await.unwrap();
    let out = crate::cli::arena(&arena.env, &["ledger", "check"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(crate::cli::text(&out).contains("MISMATCH"), "{}", crate::cli::text(&out));
}

#[tokio::test]
async fn a_worker_killed_mid_stage_is_finished_exactly_once_by_another() {
    let mut arena = Arena::new().await;
    arena.league(2, 2, 4).await;
    // The web role forms matches; a runtime worker takes them and hangs.
    arena.start(Roles { web: true, ..Roles::NONE }, None);
    arena.start(Roles { runtime: true, ..Roles::NONE }, Some(Arc::new(HangingGenerator)));
    tokio::time::sleep(Duration::from_millis(800)).await;
    arena.pause_all().await;
    let formed = arena.status_counts().await;
    assert!(formed.iter().any(|(s, n)| s == "formed" && *n == 2), "{formed:?}");
    // Kill it, then start healthy workers (a new process, a new consumer).
    arena.stop_workers();
    arena.start(Roles::ALL, None);
    arena.wait_settled(2, 30).await;
    arena.settled_exactly_once().await;
    arena.ledger_ok().await;
}

#[tokio::test]
async fn every_message_delivered_twice_changes_nothing() {
    let arena = Arena::new().await;
    arena.league(2, 2, 4).await;
    arena.start(Roles::ALL, None);
    arena.wait_settled(4, 60).await;
    arena.pause_all().await;
    arena.wait_settled(4, 30).await;
    let before = arena.fingerprint().await;
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar("select id from matches").fetch_all(&arena.db).await.unwrap();
    let mut conn = arena.redis.conn();
    for stage in Stage::ALL {
        for id in &ids {
            for _ in 0..2 {
                let _: String = redis::cmd("XADD")
                    .arg(streams::stream_key(&arena.redis, Topic::Stage(stage)))
                    .arg("*")
                    .arg("match")
                    .arg(id.to_string())
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
        }
    }
    // Wait for every group to have read and acknowledged everything.
    let drained = crate::helpers::eventually(20, || {
        let redis = arena.redis.clone();
        async move {
            let mut conn = redis.conn();
            let mut all = true;
            for stage in Stage::ALL {
                let groups: Vec<redis::Value> = redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg(streams::stream_key(&redis, Topic::Stage(stage)))
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let text = format!("{groups:?}").to_lowercase();
                all &= text.contains("\"pending\"'), int(0)") && text.contains("\"lag\"'), int(0)");
            }
            all
        }
    })
    .await;
    assert!(drained, "the streams were not drained");
    assert_eq!(before, arena.fingerprint().await);
    arena.ledger_ok().await;
}

#[tokio::test]
async fn a_flushed_redis_loses_no_match() {
    let arena = Arena::new().await;
    arena.league(2, 2, 4).await;
    arena.start(Roles::ALL, Some(Arc::new(SlowGenerator(Duration::from_millis(300)))));
    // Matches in flight, then Redis loses everything.
    assert!(crate::helpers::eventually(20, || async { arena.settled().await >= 2 }).await);
    arena.flush_redis().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    arena.flush_redis().await;
    let open_at_flush: i64 = sqlx::query_scalar("select count(*) from matches where status <> 'settled'")
        .fetch_one(&arena.db)
        .await
        .unwrap();
    arena.pause_all().await;
    let total: i64 = sqlx::query_scalar("select count(*) from matches").fetch_one(&arena.db).await.unwrap();
    arena.wait_settled(total, 60).await;
    arena.settled_exactly_once().await;
    arena.ledger_ok().await;
    eprintln!("{open_at_flush} matches were in flight at the flush; all {total} settled");
}

#[tokio::test]
async fn a_poison_match_is_dead_lettered_and_refunded() {
    let arena = Arena::new().await;
    let (_, players) = arena.league(2, 1, 2).await;
    let before: Vec<i64> = futures_util::future::join_all(players.iter().map(|p| p.balance())).await;
    arena.start(Roles { web: true, judge: true, ..Roles::NONE }, None);
    arena.start(Roles { runtime: true, ..Roles::NONE }, Some(Arc::new(FailingGenerator)));
    let failed = crate::helpers::eventually(30, || async {
        sqlx::query_scalar::<_, i64>("select count(*) from matches where status = 'failed'")
            .fetch_one(&arena.db)
            .await
            .unwrap()
            >= 1
    })
    .await;
    assert!(failed, "{:?}", arena.status_counts().await);
    arena.pause_all().await;
    let (error,): (String,) =
        sqlx::query_as("select error from matches where status = 'failed' limit 1").fetch_one(&arena.db).await.unwrap();
    assert!(error.contains("generate stage") && error.contains("delivered"), "{error}");
    let mut conn = arena.redis.conn();
    let dead: i64 = redis::cmd("XLEN").arg(streams::dead_stream(&arena.redis)).query_async(&mut conn).await.unwrap();
    assert!(dead >= 1);
    // Wait for the in-flight ones to fail too, then every fee is back.
    let all_failed = crate::helpers::eventually(20, || async {
        sqlx::query_scalar::<_, i64>("select count(*) from matches where status <> 'failed'")
            .fetch_one(&arena.db)
            .await
            .unwrap()
            == 0
    })
    .await;
    assert!(all_failed, "{:?}", arena.status_counts().await);
    let after: Vec<i64> = futures_util::future::join_all(players.iter().map(|p| p.balance())).await;
    assert_eq!(before, after, "fees refunded");
    arena.ledger_ok().await;
}

#[tokio::test]
async fn a_match_on_the_real_model() {
    let arena = Arena::new().await;
    let designer = arena.user("dana", "designer").await;
    arena.publish(&designer, &quick_space("quick", 2, 1), json!({})).await;
    let a = arena.user("ada", "player").await;
    let b = arena.user("bob", "player").await;
    // One agent runs with an uploaded adapter: the runtime loads it per sequence.
    let uploaded = a.upload_random_adapter().await;
    let (status, agent) = a
        .post(
            "/agents",
            json!({"name": "careful", "adapter_sha256": uploaded["sha256"], "sampling": {"temperature": 0}}),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    let id = agent["id"].as_str().unwrap();
    assert_eq!(a.post(&format!("/agents/{id}/entries"), json!({"space": "quick"})).await.0, 201);
    b.agent("terse", "quick").await;
    arena.start(Roles::ALL, None);
    arena.wait_settled(1, 300).await;
    arena.pause_all().await;
    arena.wait_settled(1, 300).await;
    let outputs: Vec<(String, i32)> =
        sqlx::query_as("select text, tokens from outputs").fetch_all(&arena.db).await.unwrap();
    assert!(outputs.len() >= 2);
    assert!(outputs.iter().all(|(text, tokens)| !text.is_empty() && *tokens > 0 && *tokens <= 8), "{outputs:?}");
    arena.settled_exactly_once().await;
    arena.ledger_ok().await;
}

/// The demo's open-ended Space end to end on the real model: two agents'
/// generated explanations, the combined judge in the judge worker (it loads
/// the embedding model itself), and settled preference pairs that name the
/// trained judge that decided them.
#[tokio::test]
async fn the_open_ended_example_space_yields_pairs_on_the_real_model() {
    let arena = Arena::new().await;
    let designer = arena.user("dana", "designer").await;
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../spaces/explain.toml"))
        .unwrap()
        .replace("max_new_tokens = 96", "max_new_tokens = 40");
    arena.publish(&designer, &source, json!({})).await;
    // A careful agent, and one whose sampling is so hot that it writes word
    // salad (a misconfigured agent the judge must rank below).
    let players = [("ada", json!({"temperature": 0})), ("bob", json!({"temperature": 4.0, "top_p": 1.0, "seed": 5}))];
    for (name, sampling) in players {
        let user = arena.user(name, "player").await;
        let system = "You explain science to children simply and correctly, in one or two sentences.";
        let (status, agent) =
            user.post("/agents", json!({"name": name, "system_prompt": system, "sampling": sampling})).await;
        assert_eq!(status, 201, "{agent}");
        let id = agent["id"].as_str().unwrap();
        assert_eq!(user.post(&format!("/agents/{id}/entries"), json!({"space": "explain"})).await.0, 201);
    }
    // The agents' answers come from the real model too.
    let runtime = agent_runtime::engine::Runtime::load(&crate::helpers::model_path(), 2).unwrap();
    let engine = agent_runtime::engine::Engine::start(Arc::new(runtime), Default::default());
    let generator = Arc::new(arena_server::work::generate::EngineGenerator { engine });
    arena.start(Roles::ALL, Some(generator));
    arena.wait_settled(4, 600).await;
    arena.pause_all().await;
    let (pairs, named): (i64, i64) = sqlx::query_as(
        "select count(*), count(*) filter (where detail->>'judge_trained_sha256' ~ '^[0-9a-f]{64}$') from pairs",
    )
    .fetch_one(&arena.db)
    .await
    .unwrap();
    let verdicts: Vec<serde_json::Value> =
        sqlx::query_scalar("select verdict from verdicts").fetch_all(&arena.db).await.unwrap();
    let outputs: Vec<String> = sqlx::query_scalar("select text from outputs").fetch_all(&arena.db).await.unwrap();
    assert!(pairs > 0, "the combined judge decided no match: {outputs:?} {verdicts:?}");
    assert_eq!(named, pairs, "every pair names the trained judge");
    assert!(verdicts.iter().all(|v| v["judge"]["mode"] == "combined" && v["judge"]["signals"].is_object()));
    arena.settled_exactly_once().await;
    arena.ledger_ok().await;
}
