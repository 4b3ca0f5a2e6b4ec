//! The designers' studio: analytics equal direct SQL over known matches,
//! only a Space's designer (and admins) see them; the CLI's dry run of a
//! draft on the real model prints the summary and touches no database.

use crate::arena::{Arena, quick_space};

#[tokio::test]
async fn analytics_are_the_stored_matches_counted_and_only_the_designer_reads_them() {
    let arena = Arena::new().await;
    let (dana, players) = arena.league(2, 2, 4).await;
    arena.start(arena_server::app::Roles::ALL, None);
    arena.wait_settled(10, 60).await;
    arena.pause_all().await;
    arena.wait_settled(1, 30).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let (status, a) = dana.get("/spaces/quick/analytics").await;
    assert_eq!(status, 200, "{a}");
    let db = arena.db.clone();
    let one = |sql: &'static str| {
        let db = db.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&db).await.unwrap() }
    };
    assert_eq!(a["settled"].as_i64().unwrap(), one("select count(*) from matches where status = 'settled'").await);
    assert_eq!(a["pairs"].as_i64().unwrap(), one("select count(*) from pairs").await);
    assert_eq!(
        a["fees_in"].as_i64().unwrap(),
        one("select coalesce(sum(ma.entry_fee), 0)::bigint from match_agents ma join matches m on m.id = ma.match_id where m.status = 'settled'").await
    );
    assert_eq!(
        a["payouts_out"].as_i64().unwrap(),
        one("select coalesce(sum(payout), 0)::bigint from match_agents").await
    );
    let per_hour: i64 = a["per_hour"].as_array().unwrap().iter().map(|h| h[1].as_i64().unwrap()).sum();
    assert_eq!(per_hour, a["settled"].as_i64().unwrap(), "every match settled within the hour buckets");
    assert_eq!(a["agents_entered"], 4);
    // The quick Space's one verifier passes exactly where the stub answered right.
    let passed = one("select count(*) from verdicts v, jsonb_each(v.verdict->'verifiers') s, jsonb_array_elements(s.value) r where r->>'name' = 'correct' and (r->>'passed')::bool").await;
    let all = one("select count(*) from verdicts v, jsonb_each(v.verdict->'verifiers') s, jsonb_array_elements(s.value) r where r->>'name' = 'correct'").await;
    let rate = a["verifier_pass_rates"]["correct"].as_f64().unwrap();
    assert!((rate - passed as f64 / all as f64).abs() < 1e-9, "{rate} vs {passed}/{all}");
    assert!(a["stage_seconds"]["generate"].as_f64().is_some() && a["slowest_stage"].is_string(), "{a}");
    assert_eq!(
        a["house_cut"].as_i64().unwrap() + a["payouts_out"].as_i64().unwrap(),
        a["fees_in"].as_i64().unwrap() + a["sponsored"].as_i64().unwrap(),
        "money in equals money out"
    );

    let hourly = a["verifier_hourly"]["correct"].as_array().expect("an hourly series");
    assert!(!hourly.is_empty() && hourly.iter().all(|p| (0.0..=1.0).contains(&p[1].as_f64().unwrap())), "{a}");
    // The page draws them (the signed-in session of the API client is a page session too).
    let page = dana.client.get(format!("{}/studio/quick/analytics", arena.address)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.matches("<svg").count() >= 2, "charts: {html}");
    assert!(html.contains(&format!("id=\"a-settled\">{}<", a["settled"])), "the page's number is the API's");

    // Another designer finds nothing; a player may not ask.
    let rita = arena.user("rita", "designer").await;
    assert_eq!(rita.get("/spaces/quick/analytics").await.0, 404);
    assert_eq!(players[0].get("/spaces/quick/analytics").await.0, 403);
}

#[tokio::test]
async fn the_cli_dry_run_plays_a_draft_on_the_real_model_and_stores_nothing() {
    let env = crate::helpers::TestEnv::new().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("draft.toml");
    std::fs::write(&file, quick_space("draft", 2, 2)).unwrap();
    let model = crate::helpers::model_path();
    let out = crate::cli::arena(
        &env,
        &["space", "dry-run", file.to_str().unwrap(), "--matches", "2", "--threads", "2"],
        &[("ARENA_MODEL_PATH", model.display().to_string())],
    );
    assert!(out.status.success(), "{}", crate::cli::text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &report["summary"];
    assert_eq!(s["matches"], 2);
    assert_eq!(s["credits_moved"], 0);
    assert!(s["verifier_pass_rate"]["correct"].is_number(), "{s}");
    assert!(s["tokens_per_match"].as_f64().unwrap() > 0.0 && s["matches_per_hour"].as_f64().unwrap() > 0.0, "{s}");
    let matches = report["matches"].as_array().unwrap();
    assert_eq!(matches.len(), 2);
    for m in matches {
        assert_eq!(m["outputs"].as_object().unwrap().len(), 2, "{m}");
        assert!(m["verdict"]["ranks"].is_object(), "{m}");
    }
    // A game Space's dry run plays its games: the referee's outcome ranks
    // the seats, each seat's part is its output.
    let ttt = concat!(env!("CARGO_MANIFEST_DIR"), "/../spaces/tic-tac-toe.toml");
    let out = crate::cli::arena(
        &env,
        &["space", "dry-run", ttt, "--matches", "2", "--threads", "2"],
        &[("ARENA_MODEL_PATH", model.display().to_string())],
    );
    assert!(out.status.success(), "{}", crate::cli::text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &report["summary"];
    assert!(s["steps_per_game"].as_f64().is_some_and(|n| n >= 1.0), "{s}");
    assert!(s["illegal_move_rate"].as_f64().is_some_and(|r| (0.0..=1.0).contains(&r)), "{s}");
    for m in report["matches"].as_array().unwrap() {
        let game = &m["game"];
        assert!(game["steps"].as_u64().unwrap() >= 1 && !game["reason"].as_str().unwrap().is_empty(), "{m}");
        assert_eq!(m["verdict"]["ranks"].as_object().unwrap().len(), 2, "{m}");
        // The ranks are the referee's: the higher score ranks first.
        let (a, b) = (game["scores"]["0"].as_f64().unwrap(), game["scores"]["1"].as_f64().unwrap());
        let (ra, rb) = (m["verdict"]["ranks"]["0"].as_u64().unwrap(), m["verdict"]["ranks"]["1"].as_u64().unwrap());
        assert_eq!(a.partial_cmp(&b).map(|o| o.reverse()), ra.partial_cmp(&rb), "{m}");
        assert_eq!(m["verdict"]["pairs"].as_array().unwrap().len(), usize::from(a != b), "{m}");
        // Each output is that seat's answers, turn by turn.
        assert!(m["outputs"]["0"].as_str().is_some_and(|t| !t.is_empty()), "{m}");
    }

    // An invalid draft is refused with its errors, placed.
    std::fs::write(&file, quick_space("draft", 2, 2).replace("agents_per_match = 2", "agents_per_match = 99")).unwrap();
    let out = crate::cli::arena(&env, &["space", "dry-run", file.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    let text = crate::cli::text(&out);
    assert!(text.contains("draft.toml:3:") && text.contains("agents_per_match"), "{text}");
}

/// A new designer `name` signed in to the pages (redirects not followed),
/// with the CSRF token the studio's editor set.
async fn studio_client(arena: &Arena, name: &str) -> (reqwest::Client, String) {
    arena.user(name, "designer").await;
    let client =
        reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let signin = client
        .post(format!("{}/api/v1/sessions", arena.address))
        .json(&serde_json::json!({"username": name, "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(signin.status(), 200);
    let page = client.get(format!("{}/studio/new?example=explain", arena.address)).send().await.unwrap();
    let csrf = page.cookies().find(|c| c.name() == "arena_csrf").map(|c| c.value().to_owned()).expect("a CSRF cookie");
    assert_eq!(page.status(), 200);
    (client, csrf)
}

#[tokio::test]
async fn a_dry_run_of_an_ai_judged_draft_shows_the_judges_reading_on_the_real_model() {
    let arena = Arena::new().await;
    let (client, csrf) = studio_client(&arena, "dana").await;
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../spaces/explain.toml")).unwrap();
    let started = client
        .post(format!("{}/studio/dry-run", arena.address))
        .header("Origin", arena.address.clone())
        .form(&[("csrf", csrf.as_str()), ("source", &source), ("base", "example:explain"), ("sample_matches", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 303, "{}", started.text().await.unwrap());
    let watch = started.headers()["location"].to_str().unwrap().to_owned();
    // Meanwhile another designer's run is told to come back later, not
    // queued behind it (studio runs have slots of their own).
    let (rita, rita_csrf) = studio_client(&arena, "rita").await;
    let busy = rita
        .post(format!("{}/studio/dry-run", arena.address))
        .header("Origin", arena.address.clone())
        .form(&[
            ("csrf", rita_csrf.as_str()),
            ("source", &source),
            ("base", "example:explain"),
            ("sample_matches", "1"),
        ])
        .send()
        .await
        .unwrap();
    let (status, text) = (busy.status().as_u16(), busy.text().await.unwrap());
    assert!(status >= 400 && text.contains("busy") && text.contains("try again in about"), "{status}: {text}");
    let mut report = String::new();
    for _ in 0..240 {
        report = client.get(format!("{}{watch}", arena.address)).send().await.unwrap().text().await.unwrap();
        if report.contains("dr-credits") || report.contains("dr-problem") && !report.contains("hidden") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(report.contains("dr-credits"), "the report: {report}");
    assert!(report.contains("AI judge, seat 0 vs 1: P(0 better)"), "the judge's reading in both orders: {report}");
    // The example uses the combined judge: the trained judge's z is shown.
    assert!(report.contains("trained judge z"), "{report}");
}

/// A hostile referee script in a draft: the dry run ends with the script's
/// limit as its error, not with the process killed (nine thousand arrays
/// deep used to overflow a worker's stack and abort it; a map grown key by
/// key reached 1.1 GB).
#[tokio::test]
async fn a_dry_run_of_a_hostile_script_ends_with_the_scripts_error() {
    let env = crate::helpers::TestEnv::new().await;
    let model = crate::helpers::model_path();
    for (init, reason) in [
        ("let a = []; for i in 0..9000 { a = [a]; } a", "init"),
        ("let m = #{}; for i in 0..900 { m = #{ x: m }; } m", "nested deeper than 32"),
        ("grow(\"x\", 30)", "MiB of memory"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let script = format!(
            r#"fn grow(s, n) {{ while s.len() < 30000 {{ s += s; }} let m = #{{}}; for j in 0..900 {{ m[s + n + "-" + j] = j; }}
                if n > 0 {{ grow(s, n - 1) + m.len() }} else {{ m.len() }} }}
               fn init(seats, prompt) {{ {init} }} fn to_move(s) {{ 0 }} fn view(s, seat) {{ "" }}
               fn play(s, seat, a) {{ #{{ state: s, legal: true }} }}"#
        );
        std::fs::write(dir.path().join("hostile.rhai"), script).unwrap();
        let space = "name = \"hostile\"\nagents_per_match = 2\nmax_new_tokens = 8\n[prompts]\ninline = [\"Play.\"]\n\
                     [turns]\nmax_turns = 4\n[referee]\nkind = \"script\"\nscript = \"hostile.rhai\"\n\
                     max_operations = 2000000\nmax_ms = 1000\n[judge]\nmode = \"none\"\n";
        let file = dir.path().join("hostile.toml");
        std::fs::write(&file, space).unwrap();
        let out = crate::cli::arena(
            &env,
            &["space", "dry-run", file.to_str().unwrap(), "--matches", "1", "--threads", "2"],
            &[("ARENA_MODEL_PATH", model.display().to_string())],
        );
        let said = crate::cli::text(&out);
        assert!(out.status.code().is_some_and(|c| c != 0), "an error, not a signal: {:?} {said}", out.status);
        assert!(said.contains("hostile.rhai") && said.contains(reason), "{init}: {said}");
    }
}
