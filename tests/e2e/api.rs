//! The JSON API: accounts, sessions, tokens, Spaces, agents, authorization
//! and bad input.

use crate::arena::{Arena, quick_space};
use serde_json::json;

#[tokio::test]
async fn register_login_and_logout() {
    let arena = Arena::new().await;
    let ada = arena.user("ada", "player").await;
    let (status, me) = ada.get("/me").await;
    assert_eq!(status, 200);
    assert_eq!(me["username"], "ada");
    assert_eq!(me["balance"], arena.settings.arena.starting_credits);

    // Taken (case-insensitively), malformed, and an admin by self-service.
    let anon = arena.client();
    for (body, code, field) in [
        (json!({"username": "ADA", "password": "long enough pw"}), 409, "username"),
        (json!({"username": "a", "password": "long enough pw"}), 422, "username"),
        (json!({"username": "bob", "password": "short"}), 422, "password"),
        (json!({"username": "bob", "password": "long enough pw", "role": "admin"}), 422, "role"),
        (json!({"username": "bob", "password": "long enough pw", "role": "wizard"}), 422, "role"),
    ] {
        let r = anon.post(arena.url("/users")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), code, "{body}");
        let err: serde_json::Value = r.json().await.unwrap();
        assert_eq!(err["error"]["field"], field, "{err}");
    }
    let r = anon
        .post(arena.url("/users"))
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"]["code"], "invalid_input");
    let users: i64 = sqlx::query_scalar("select count(*) from users").fetch_one(&arena.db).await.unwrap();
    assert_eq!(users, 1, "refused registrations created nobody");

    // Wrong password and unknown user answer alike.
    for (u, p) in [("ada", "wrong password!"), ("nobody", "wrong password!")] {
        let r = anon.post(arena.url("/sessions")).json(&json!({"username": u, "password": p})).send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"]["code"], "bad_credentials");
    }

    // A second login is a new session; logging out ends only that one.
    let second = arena.client();
    let r = second
        .post(arena.url("/sessions"))
        .json(&json!({"username": "ada", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(second.delete(arena.url("/sessions")).send().await.unwrap().status(), 204);
    assert_eq!(second.get(arena.url("/me")).send().await.unwrap().status(), 401);
    assert_eq!(ada.get("/me").await.0, 200);
    assert_eq!(anon.get(arena.url("/me")).send().await.unwrap().status(), 401);
    arena.ledger_ok().await;
}

#[tokio::test]
async fn api_tokens_are_scoped_shown_once_and_revocable() {
    let arena = Arena::new().await;
    let ada = arena.user("ada", "player").await;
    let (status, token) = ada.post("/tokens", json!({"name": "ci", "scopes": ["read"]})).await;
    assert_eq!(status, 201, "{token}");
    let secret = token["token"].as_str().unwrap().to_owned();
    let id = token["id"].as_str().unwrap().to_owned();
    let stored: String = sqlx::query_scalar("select secret_hash from api_tokens").fetch_one(&arena.db).await.unwrap();
    assert!(!stored.contains(&secret[6..]), "only a hash is stored");
    let (_, list) = ada.get("/tokens").await;
    assert!(!list.to_string().contains(&secret), "listing never shows the secret");

    let bare = reqwest::Client::new();
    let me = bare.get(arena.url("/me")).bearer_auth(&secret).send().await.unwrap();
    assert_eq!(me.status(), 200);
    // Read-only token cannot write.
    let r = bare.post(arena.url("/agents")).bearer_auth(&secret).json(&json!({"name": "x"})).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"]["code"], "forbidden");
    // Scopes beyond the role, and tokens made with tokens, are refused.
    let (status, body) = ada.post("/tokens", json!({"name": "x", "scopes": ["export"]})).await;
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("scopes")));
    let r = bare
        .post(arena.url("/tokens"))
        .bearer_auth(&secret)
        .json(&json!({"name": "y", "scopes": ["read"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A forged token is just unauthenticated.
    let forged = format!("arena_{}", "0".repeat(64));
    assert_eq!(bare.get(arena.url("/me")).bearer_auth(forged).send().await.unwrap().status(), 401);

    assert_eq!(ada.delete(&format!("/tokens/{id}")).await.0, 204);
    assert_eq!(bare.get(arena.url("/me")).bearer_auth(&secret).send().await.unwrap().status(), 401);
    arena.ledger_ok().await;
}

#[tokio::test]
async fn spaces_are_versioned_and_bad_ones_change_nothing() {
    let arena = Arena::new().await;
    let designer = arena.user("dana", "designer").await;
    let source = quick_space("quick", 2, 2);
    let first = arena.publish(&designer, &source, json!({})).await;
    assert_eq!((first["version"].as_i64(), first["created"].as_bool()), (Some(1), Some(true)));
    let same = arena.publish(&designer, &source, json!({})).await;
    assert_eq!((same["version"].as_i64(), same["created"].as_bool()), (Some(1), Some(false)));
    let edited = arena.publish(&designer, &source.replace("entry_fee = 10", "entry_fee = 20"), json!({})).await;
    assert_eq!(edited["version"], 2);
    let (_, versions) = designer.get("/spaces/quick/versions").await;
    assert_eq!(versions.as_array().unwrap().len(), 2);
    let (_, v1) = designer.get("/spaces/quick/versions/1").await;
    assert!(v1["source"].as_str().unwrap().contains("entry_fee = 10"));

    // A prompt file travels with the Space.
    let with_file = source.replace("[prompts]\ninline = [", "[prompts]\nfile = \"p/prompts.jsonl\"\n_unused = [");
    let with_file = with_file.split("_unused").next().unwrap().to_owned() + &source[source.find("[payout]").unwrap()..];
    let with_file = with_file.replace("name = \"quick\"", "name = \"filed\"");
    let published = arena
        .publish(&designer, &with_file, json!({"p/prompts.jsonl": "{\"prompt\": \"1+1?\", \"reference\": \"2\"}\n"}))
        .await;
    assert_eq!(published["version"], 1);

    let before: i64 = sqlx::query_scalar("select count(*) from space_versions").fetch_one(&arena.db).await.unwrap();
    let (status, err) =
        designer.post("/spaces", json!({"source": source.replace("hard = true", "hard = \"yes\"")})).await;
    assert_eq!(status, 422);
    assert!(err["error"]["message"].as_str().unwrap().contains("space.toml:"), "{err}");
    let (status, err) =
        designer.post("/spaces", json!({"source": with_file, "files": {"../../etc/passwd": "x"}})).await;
    assert_eq!((status, err["error"]["field"].as_str()), (422, Some("files")));
    let (status, _) = designer.post("/spaces", json!({"source": with_file.replace("filed", "filed-two")})).await;
    assert_eq!(status, 422, "a missing prompt file is refused");
    let (status, err) = designer
        .post("/spaces", json!({"source": source.replace("[judge]\nmode = \"none\"", "[judge]\nmode = \"pairwise\"\nmodel = \"/etc/shadow\"")}))
        .await;
    assert_eq!(status, 422, "{err}");
    // Only designers publish, and only their own Spaces.
    let player = arena.user("pete", "player").await;
    assert_eq!(player.post("/spaces", json!({"source": source})).await.0, 403);
    let rival = arena.user("rita", "designer").await;
    assert_eq!(rival.post("/spaces", json!({"source": source.replace("fee = 10", "fee = 11")})).await.0, 403);
    assert_eq!(rival.patch("/spaces/quick", json!({"active": false})).await.0, 403);
    let after: i64 = sqlx::query_scalar("select count(*) from space_versions").fetch_one(&arena.db).await.unwrap();
    assert_eq!(before, after);

    let (status, paused) = designer.patch("/spaces/quick", json!({"active": false})).await;
    assert_eq!((status, paused["active"].as_bool()), (200, Some(false)));
    arena.ledger_ok().await;
}

#[tokio::test]
async fn agents_have_immutable_versions_and_private_settings() {
    let arena = Arena::new().await;
    let designer = arena.user("dana", "designer").await;
    arena.publish(&designer, &quick_space("quick", 2, 2), json!({})).await;
    let ada = arena.user("ada", "player").await;
    let id = ada.agent("calc", "quick").await;
    let (status, v2) =
        ada.post(&format!("/agents/{id}/versions"), json!({"system_prompt": "Be exact.", "note": "sharper"})).await;
    assert_eq!(status, 201, "{v2}");
    assert_eq!(v2["current_version"], 2);
    assert_eq!(v2["versions"][0]["parent_version"], 1);
    assert_eq!(v2["versions"][1]["system_prompt"], "You are calc.", "version 1 is unchanged");
    let (status, back) = ada.post(&format!("/agents/{id}/rollback"), json!({"version": 1})).await;
    assert_eq!((status, back["current_version"].as_i64()), (200, Some(1)));

    // Bad settings are refused with the field named.
    for (body, field) in [
        (json!({"name": "", "sampling": {}}), "name"),
        (json!({"name": "x", "sampling": {"temperature": -1}}), "sampling"),
        (json!({"name": "x", "sampling": {"top_p": 0}}), "sampling"),
        (json!({"name": "x", "sampling": {"bogus": 1}}), "body"),
        (json!({"name": "x", "adapter_sha256": "ab"}), "adapter_sha256"),
        (json!({"name": "x", "system_prompt": "\u{1b}[2J"}), "system_prompt"),
        (json!({"name": "x", "base_model": "llama-70b"}), "base_model"),
    ] {
        let (status, err) = ada.post("/agents", body.clone()).await;
        assert_eq!((status, err["error"]["field"].as_str()), (422, Some(field)), "{body} → {err}");
    }
    assert_eq!(ada.post(&format!("/agents/{id}/entries"), json!({"space": "nope"})).await.0, 422);
    let (status, _) = ada.post("/agents", json!({"name": "CALC"})).await;
    assert_eq!(status, 409, "names are unique per owner, without case");

    // Others see the agent's name and ratings, never its versions.
    let bob = arena.user("bob", "player").await;
    let (status, seen) = bob.get(&format!("/agents/{id}")).await;
    assert_eq!(status, 200);
    assert!(seen.get("versions").is_none(), "{seen}");
    assert_eq!(seen["entries"][0]["space"], "quick");
    let anon = arena.client();
    let seen: serde_json::Value =
        anon.get(arena.url(&format!("/agents/{id}"))).send().await.unwrap().json().await.unwrap();
    assert!(seen.get("versions").is_none());
    arena.ledger_ok().await;
}

/// Every write on a resource owned by one user, tried by every other kind
/// of caller: refused, and nothing changes.
#[tokio::test]
async fn authorization_matrix_refuses_every_cross_owner_write() {
    let arena = Arena::new().await;
    let owner_designer = arena.user("dana", "designer").await;
    arena.publish(&owner_designer, &quick_space("quick", 2, 2), json!({})).await;
    let owner = arena.user("ada", "player").await;
    let agent = owner.agent("calc", "quick").await;
    let (_, token) = owner.post("/tokens", json!({"name": "t", "scopes": ["read", "play"]})).await;
    let token_id = token["id"].as_str().unwrap().to_owned();

    let other_player = arena.user("bob", "player").await;
    let other_designer = arena.user("rita", "designer").await;
    let buyer = arena.user("bea", "buyer").await;
    let anon = arena.user_anonymous();

    let snapshot = |db: sqlx::PgPool| async move {
        let q = "select (select count(*) from agent_versions) || '/' || (select string_agg(current_version::text, ',' order by id) from agents)
                 || '/' || (select count(*) from entries where active) || '/' || (select count(*) from space_versions)
                 || '/' || (select count(*) from api_tokens where revoked_at is null)
                 || '/' || (select string_agg(active::text, ',' order by id) from spaces)
                 || '/' || (select count(*) from training_policies) || '/' || (select count(*) from training_jobs)";
        sqlx::query_scalar::<_, String>(q).fetch_one(&db).await.unwrap()
    };
    let before = snapshot(arena.db.clone()).await;
    let writes: Vec<(&str, String, serde_json::Value)> = vec![
        ("POST", format!("/agents/{agent}/versions"), json!({"system_prompt": "pwned"})),
        ("POST", format!("/agents/{agent}/rollback"), json!({"version": 1})),
        ("POST", format!("/agents/{agent}/entries"), json!({"space": "quick"})),
        ("DELETE", format!("/agents/{agent}/entries/quick"), json!(null)),
        ("DELETE", format!("/tokens/{token_id}"), json!(null)),
        ("PATCH", "/spaces/quick".to_owned(), json!({"active": false})),
        ("POST", "/spaces".to_owned(), json!({"source": quick_space("quick", 3, 2)})),
        ("PUT", format!("/agents/{agent}/training/quick"), json!({"mode": "every", "every_pairs": 1})),
        ("POST", format!("/agents/{agent}/training-jobs"), json!({"space": "quick"})),
    ];
    for caller in [&other_player, &other_designer, &buyer, &anon] {
        for (method, path, body) in &writes {
            let (status, answer) = match *method {
                "POST" => caller.post(path, body.clone()).await,
                "PATCH" => caller.patch(path, body.clone()).await,
                "PUT" => caller.put(path, body.clone()).await,
                _ => caller.delete(path).await,
            };
            assert!([401, 403, 404].contains(&status), "{} {method} {path} → {status} {answer}", caller.name);
        }
        // Private reads.
        let (_, seen) = caller.get(&format!("/agents/{agent}")).await;
        assert!(seen.get("versions").is_none(), "{} read private versions", caller.name);
        let (status, _) = caller.get(&format!("/agents/{agent}/training")).await;
        assert!([401, 403, 404].contains(&status), "{} read the agent's training: {status}", caller.name);
        let (status, _) = caller.get("/spaces/quick/pairs").await;
        if caller.name != "bea" {
            assert!([401, 403].contains(&status), "{} exported pairs: {status}", caller.name);
        }
    }
    assert_eq!(before, snapshot(arena.db.clone()).await, "refused writes changed nothing");
    // The owner can do each of them.
    assert_eq!(owner.post(&format!("/agents/{agent}/versions"), json!({"note": "mine"})).await.0, 201);
    arena.ledger_ok().await;
}

#[tokio::test]
async fn writes_are_rate_limited_per_caller() {
    let env = crate::helpers::TestEnv::new().await;
    let mut settings = crate::arena::quick_settings(&env);
    settings.arena.writes_per_minute = 3;
    let arena = Arena::with_settings(env, settings).await;
    crate::arena::start_of_a_minute().await;
    let ada = arena.user("ada", "player").await;
    let mut codes = Vec::new();
    for i in 0..5 {
        codes.push(ada.post("/agents", json!({"name": format!("a{i}")})).await);
    }
    // Registration is a write too, but happens before the session exists.
    let statuses: Vec<u16> = codes.iter().map(|(s, _)| *s).collect();
    assert_eq!(&statuses[..3], &[201, 201, 201], "{codes:?}");
    assert!(statuses[3..].iter().all(|&s| s == 429));
    assert_eq!(codes[3].1["error"]["code"], "rate_limited");
    let agents: i64 = sqlx::query_scalar("select count(*) from agents").fetch_one(&arena.db).await.unwrap();
    assert_eq!(agents, 3);
    // Someone else is not limited by ada's writes.
    let bob = arena.user("bob", "player").await;
    assert_eq!(bob.post("/agents", json!({"name": "b"})).await.0, 201);
    arena.ledger_ok().await;
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let arena = Arena::new().await;
    let anon = arena.client();
    let doc: serde_json::Value = anon.get(arena.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for route in arena_server::http::API {
        let path = format!("/api/v1{}", route.path);
        assert!(doc["paths"][&path][route.method].is_object(), "{} {path} missing", route.method);
    }
    // Every documented route is mounted: none answers the catch-all 404.
    for route in arena_server::http::API {
        let path = route
            .path
            .replace("{id}", &uuid::Uuid::nil().to_string())
            .replace("{slug}", "x")
            .replace("{space}", "x")
            .replace("{version}", "1");
        let url = arena.url(&path);
        let r = match route.method {
            "get" if route.path == "/events" => continue,
            "get" => anon.get(url),
            "post" => anon.post(url).json(&json!({})),
            "patch" => anon.patch(url).json(&json!({})),
            "put" => anon.put(url).json(&json!({})),
            _ => anon.delete(url),
        }
        .send()
        .await
        .unwrap();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        assert_ne!(body["error"]["message"], "API route not found", "{} {path} is not mounted", route.method);
    }
    let page = anon.get(format!("{}/api/docs", arena.address)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("openapi.json") && !html.contains("http://") && !html.contains("https://"), "no CDN");
    arena.ledger_ok().await;
}

#[tokio::test]
async fn adapters_are_validated_before_they_are_stored() {
    use agent_runtime::lora::Adapter;
    use agent_runtime::model::Target;
    let arena = Arena::new().await;
    let ada = arena.user("ada", "player").await;
    let model = agent_runtime::gguf::Gguf::open(&crate::helpers::model_path()).unwrap().config().unwrap();
    let dir = tempfile::tempdir().unwrap();
    Adapter::random(&model, &[Target::Q, Target::V], 4, 7, 0.01, 0.01).save(dir.path(), None).unwrap();
    let config = std::fs::read(dir.path().join("adapter_config.json")).unwrap();
    let weights = std::fs::read(dir.path().join("adapter_model.safetensors")).unwrap();
    let upload = |config: Vec<u8>, weights: Vec<u8>| {
        let form = reqwest::multipart::Form::new()
            .part("config", reqwest::multipart::Part::bytes(config).file_name("adapter_config.json"))
            .part("weights", reqwest::multipart::Part::bytes(weights).file_name("adapter_model.safetensors"));
        ada.client.post(arena.url("/adapters")).multipart(form).send()
    };
    let r = upload(config.clone(), weights.clone()).await.unwrap();
    assert_eq!(r.status(), 201);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["rank"], 4);
    let sha = body["sha256"].as_str().unwrap().to_owned();
    // The same adapter again answers as a new one does (201: no existence
    // oracle, issue 17) and makes no new row (checked below).
    assert_eq!(
        upload(config.clone(), weights.clone()).await.unwrap().status(),
        201,
        "the same adapter again is no new row"
    );

    // Hostile uploads: each refused with the reason, nothing stored.
    let truncated = weights[..weights.len() / 2].to_vec();
    let huge_rank = String::from_utf8(config.clone())
        .unwrap()
        .replace("\"r\": 4", "\"r\": 10000")
        .replace("\"r\":4", "\"r\":10000");
    let mut nan = weights.clone();
    let n = nan.len();
    nan[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    for (what, c, w) in [
        ("truncated", config.clone(), truncated),
        ("rank", huge_rank.into_bytes(), weights.clone()),
        ("nan", config.clone(), nan),
    ] {
        let r = upload(c, w).await.unwrap();
        assert_eq!(r.status(), 422, "{what}");
        let err: serde_json::Value = r.json().await.unwrap();
        assert!(err["error"]["message"].as_str().unwrap().starts_with("adapter refused:"), "{what}: {err}");
    }
    let form = reqwest::multipart::Form::new().part("config", reqwest::multipart::Part::bytes(config.clone()));
    let r = ada.client.post(arena.url("/adapters")).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 422, "a missing field");
    let stored: i64 = sqlx::query_scalar("select count(*) from adapters").fetch_one(&arena.db).await.unwrap();
    assert_eq!(stored, 1);

    // An agent version can name it; the pipeline unpacks it for the runtime.
    let (status, agent) = ada.post("/agents", json!({"name": "tuned", "adapter_sha256": sha})).await;
    assert_eq!(status, 201, "{agent}");
    let dir = arena_server::store::adapters::materialize(&arena.db, &arena.settings.data_dir, &sha).await.unwrap();
    assert_eq!(std::fs::read(dir.join("adapter_model.safetensors")).unwrap(), weights);
    arena.ledger_ok().await;
}

#[tokio::test]
async fn a_space_with_a_megabyte_prompt_file_publishes() {
    let arena = Arena::new().await;
    let designer = arena.user("dana", "designer").await;
    let source = quick_space("big", 2, 2);
    let inline_start = source.find("[prompts]").unwrap();
    let inline_end = source.find("[payout]").unwrap();
    let source = format!("{}[prompts]\nfile = \"prompts.jsonl\"\n\n{}", &source[..inline_start], &source[inline_end..]);
    let prompts: String = (0..20_000)
        .map(|i| {
            format!("{{\"prompt\": \"What is {i} + {i}? Answer with the number.\", \"reference\": \"{}\"}}\n", 2 * i)
        })
        .collect();
    assert!(prompts.len() > 1_000_000);
    let (status, body) = designer.post("/spaces", json!({"source": source, "files": {"prompts.jsonl": prompts}})).await;
    assert_eq!(status, 201, "{body}");
    let (status, err) = designer.post("/spaces", json!({"source": 7})).await;
    assert_eq!((status, err["error"]["field"].as_str()), (422, Some("body")));
    arena.ledger_ok().await;
}

#[tokio::test]
async fn password_guessing_and_mass_registration_are_limited() {
    let arena = Arena::new().await;
    crate::arena::start_of_a_minute().await;
    arena.user("ada", "player").await; // one login used
    let anon = arena.client();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let r = anon
            .post(arena.url("/sessions"))
            .json(&json!({"username": "ADA", "password": "guess guess guess"}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert!(statuses[..9].iter().all(|&s| s == 401), "{statuses:?}");
    assert_eq!(statuses[9], 429, "the 11th attempt on one username in a minute is refused: {statuses:?}");
    // Even the right password waits out the minute.
    let r = anon
        .post(arena.url("/sessions"))
        .json(&json!({"username": "ada", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));

    let mut created = 1;
    for i in 0..25 {
        let r = anon
            .post(arena.url("/users"))
            .json(&json!({"username": format!("farm{i}"), "password": "correct horse battery"}))
            .send()
            .await
            .unwrap();
        if r.status() == 201 {
            created += 1;
        } else {
            assert_eq!(r.status(), 429);
        }
    }
    assert_eq!(created, arena_server::http::auth::REGISTRATIONS_PER_MINUTE, "registrations per address per minute");
    let users: i64 = sqlx::query_scalar("select count(*) from users").fetch_one(&arena.db).await.unwrap();
    assert_eq!(users, created as i64);
    arena.ledger_ok().await;
}
