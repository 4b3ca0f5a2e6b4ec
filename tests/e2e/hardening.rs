//! Abuse a hostile user could try, each refused with a clear error that
//! changes nothing. Each test fails with its fix undone (each was watched
//! failing so).

use crate::arena::{Arena, quick_space, start_of_a_minute};
use serde_json::{Value, json};

/// A client whose connections come from `address` (any of 127.0.0.0/8).
fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).local_address(address.parse().ok()).build().unwrap()
}

async fn login(client: &reqwest::Client, arena: &Arena, username: &str, password: &str) -> u16 {
    let body = json!({"username": username, "password": password});
    client.post(arena.url("/sessions")).json(&body).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_stranger_cannot_lock_the_owner_out_of_sign_in() {
    let arena = Arena::new().await;
    start_of_a_minute().await;
    arena.user("ada", "player").await;
    let stranger = client_from("127.0.0.2");
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(login(&stranger, &arena, "ada", "a wrong guess!").await);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 2, "the stranger is limited: {statuses:?}");
    // The owner, from their own address, still signs in.
    assert_eq!(login(&client_from("127.0.0.1"), &arena, "ada", "correct horse battery").await, 200);
}

#[tokio::test]
async fn sign_in_refuses_an_impossible_username_before_counting_it() {
    let arena = Arena::new().await;
    let long = "a".repeat(200_000);
    assert_eq!(login(&arena.client(), &arena, &long, "whatever password").await, 401);
    assert_eq!(login(&arena.client(), &arena, "no spaces allowed", "whatever password").await, 401);
    let mut conn = arena.redis.conn();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}ratelimit:*", arena.env.prefix)).query_async(&mut conn).await.unwrap();
    assert!(keys.is_empty(), "no rate-limit key was made for a name that cannot exist: {:?}", keys.len());
}

#[tokio::test]
async fn designer_and_buyer_accounts_are_an_admins_grant() {
    let arena = Arena::new().await;
    let anon = arena.client();
    for role in ["designer", "buyer"] {
        let body = json!({"username": "mallory", "password": "long enough pw", "role": role});
        let r = anon.post(arena.url("/users")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 422);
        let err: Value = r.json().await.unwrap();
        assert_eq!(err["error"]["field"], "role", "{err}");
        assert!(err["error"]["message"].as_str().unwrap().contains("granted by an admin"), "{err}");
    }
    let users: i64 = sqlx::query_scalar("select count(*) from users").fetch_one(&arena.db).await.unwrap();
    assert_eq!(users, 0, "refused registrations created nobody");

    // A player cannot grant themself the role; an admin can.
    let mallory = arena.user("mallory", "player").await;
    let (status, _) = mallory.patch("/users/mallory", json!({"role": "designer"})).await;
    assert_eq!(status, 403);
    let (status, _) = mallory.post("/spaces", json!({"source": quick_space("mine", 2, 2)})).await;
    assert_eq!(status, 403, "a player publishes nothing");
    let admin = arena.user("root", "admin").await;
    let (status, body) = admin.patch("/users/mallory", json!({"role": "designer"})).await;
    assert_eq!((status, body["role"].as_str()), (200, Some("designer")), "{body}");
    let (status, body) = admin.patch("/users/mallory", json!({"role": "admin"})).await;
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("role")), "{body}");
    let (status, _) = admin.patch("/users/nobody", json!({"role": "buyer"})).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_space_cannot_read_the_servers_files() {
    let arena = Arena::new().await;
    let designer = arena.user("dana", "designer").await;
    let base = quick_space("sneaky", 2, 2);
    let inline = base.find("inline = [").unwrap();
    let end = base[inline..].find("]\n").unwrap() + inline + 2;
    for (file, needle) in [
        ("/etc/shadow", "must be a relative path"),
        ("/etc/hostname", "must be a relative path"),
        ("../../../../etc/passwd", "must be a relative path"),
        ("/dev/zero", "must be a relative path"),
        ("prompts/missing.jsonl", "is not among the Space's files"),
    ] {
        let source = format!("{}file = {file:?}\n{}", &base[..inline], &base[end..]);
        let (status, body) = designer.post("/spaces", json!({"source": source})).await;
        assert_eq!(status, 422, "{file}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{file}: {message}");
        // No oracle: the answer says nothing of what is on the disk.
        assert!(!message.contains("No such file") && !message.contains("root:"), "{file}: {message}");
    }
    let spaces: i64 = sqlx::query_scalar("select count(*) from spaces").fetch_one(&arena.db).await.unwrap();
    assert_eq!(spaces, 0);
}

#[tokio::test]
async fn a_template_bomb_is_refused_before_it_is_built() {
    let arena = Arena::new().await;
    let designer = arena.user("dana", "designer").await;
    let values: Vec<String> = (0..400).map(|i| format!("{i:0>200}")).collect();
    let values = serde_json::to_string(&values).unwrap();
    let base = quick_space("bomb", 2, 2);
    let inline = base.find("inline = [").unwrap();
    let end = base[inline..].find("]\n").unwrap() + inline + 2;
    let source = format!(
        "{}template = \"{{a}}{{b}}{{c}}\"\nvariables = {{ a = {values}, b = {values}, c = {values} }}\n{}",
        &base[..inline],
        &base[end..]
    );
    let (status, body) = designer.post("/spaces", json!({"source": source})).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("more than 100000 prompts"), "{body}");
}

#[tokio::test]
async fn a_cookie_write_from_another_site_is_refused() {
    let arena = Arena::new().await;
    let ada = arena.user("ada", "player").await;
    let agents =
        || async { sqlx::query_scalar::<_, i64>("select count(*) from agents").fetch_one(&arena.db).await.unwrap() };
    let body = json!({"name": "calc"});
    for (header, value) in [("origin", "http://evil.example"), ("sec-fetch-site", "cross-site")] {
        let r = ada.client.post(arena.url("/agents")).header(header, value).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 403, "{header}: {value}");
        let err: Value = r.json().await.unwrap();
        assert!(err["error"]["message"].as_str().unwrap().contains("session cookie"), "{err}");
    }
    assert_eq!(agents().await, 0, "refused writes made nothing");
    // The server's own pages may.
    let ours = arena.address.clone();
    let r = ada.client.post(arena.url("/agents")).header("origin", ours).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    // A Space is JSON; a form or text body that skips CORS's preflight is refused.
    let designer = arena.user("dana", "designer").await;
    let r = designer
        .client
        .post(arena.url("/spaces"))
        .header("content-type", "text/plain")
        .body(json!({"source": quick_space("quick", 2, 2)}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let spaces: i64 = sqlx::query_scalar("select count(*) from spaces").fetch_one(&arena.db).await.unwrap();
    assert_eq!(spaces, 0);
}

#[tokio::test]
async fn live_streams_are_bounded_per_address() {
    let arena = Arena::new().await;
    let open = |address: &'static str| {
        let url = arena.url("/events");
        async move { client_from(address).get(url).send().await.unwrap() }
    };
    let mut held = Vec::new();
    for _ in 0..8 {
        let r = open("127.0.0.3").await;
        assert_eq!(r.status(), 200);
        held.push(r);
    }
    let refused = open("127.0.0.3").await;
    assert_eq!(refused.status(), 429, "a ninth stream from one address");
    assert_eq!(open("127.0.0.4").await.status(), 200, "another address has its own allowance");
    // Closing a stream frees its slot.
    drop(held.pop());
    let freed = crate::helpers::eventually(20, || async { open("127.0.0.3").await.status() == 200 }).await;
    assert!(freed, "a closed stream's slot came back");
}

#[tokio::test]
async fn answers_do_not_confirm_what_exists() {
    let arena = Arena::new().await;
    let designer = arena.user("dana", "designer").await;
    arena.publish(&designer, &quick_space("quick", 2, 2), json!({})).await;
    let ada = arena.user("ada", "player").await;
    let agent = ada.agent("calc", "quick").await;
    let bob = arena.user("bob", "player").await;
    // Another player's agent answers as a missing one does.
    let (status, _) = bob.post(&format!("/agents/{agent}/versions"), json!({"note": "x"})).await;
    let (missing, _) = bob.post(&format!("/agents/{}/versions", uuid::Uuid::new_v4()), json!({"note": "x"})).await;
    assert_eq!((status, missing), (404, 404));
    let (status, _) = bob.get(&format!("/agents/{agent}/training")).await;
    assert_eq!(status, 404);
    // An adapter someone else uploaded answers as a new one does.
    let adapter = crate::arena::random_adapter();
    let (first, _) = ada.upload_adapter(adapter.path()).await;
    let (again, body) = bob.upload_adapter(adapter.path()).await;
    assert_eq!((first, again), (201, 201), "{body}");
    // /healthz names the model file, not where it lives.
    let (_, health) = arena.health().await;
    let detail = &health["checks"]["model"]["detail"];
    assert!(detail.get("path").is_none(), "{health}");
    assert_eq!(detail["file"], agent_runtime::model_file::DEFAULT_MODEL.file_name);
}

#[tokio::test]
async fn a_slow_but_alive_worker_is_not_dead_lettered() {
    use arena_server::app::Roles;
    use arena_server::queue::streams;
    let arena = Arena::new().await;
    arena.league(2, 1, 2).await;
    arena.start(Roles { web: true, judge: true, ..Roles::NONE }, None);
    // Five generators, each slower than the reclaim time: the message is
    // taken over and delivered again and again while one still works on it.
    for _ in 0..5 {
        let slow = std::sync::Arc::new(crate::arena::SlowGenerator(std::time::Duration::from_secs(3)));
        arena.start(Roles { runtime: true, ..Roles::NONE }, Some(slow));
    }
    let settled = crate::helpers::eventually(40, || async { arena.settled().await >= 1 }).await;
    arena.pause_all().await;
    let failed: i64 =
        sqlx::query_scalar("select count(*) from matches where status = 'failed'").fetch_one(&arena.db).await.unwrap();
    let mut conn = arena.redis.conn();
    let dead: i64 = redis::cmd("XLEN").arg(streams::dead_stream(&arena.redis)).query_async(&mut conn).await.unwrap();
    assert!(settled, "a match settled: {:?}", arena.status_counts().await);
    assert_eq!((failed, dead), (0, 0), "nothing was failed or dead-lettered for being slow");
    arena.ledger_ok().await;
}

#[tokio::test]
async fn a_prompt_the_context_cannot_hold_fails_its_match_at_once() {
    use arena_server::app::Roles;
    use arena_server::queue::streams;
    let arena = Arena::new().await;
    let designer = arena.user("dana", "designer").await;
    let base = quick_space("huge", 2, 1);
    let inline = base.find("inline = [").unwrap();
    let end = base[inline..].find("]\n").unwrap() + inline + 2;
    let long: String = (0..8000).map(|i| char::from_u32(0x1D400 + (i % 85) as u32).unwrap_or('x')).collect();
    let source = format!("{}inline = [{{ prompt = {long:?}, reference = \"5\" }}]\n{}", &base[..inline], &base[end..]);
    arena.publish(&designer, &source, json!({})).await;
    let mut players = Vec::new();
    for name in ["ada", "bob"] {
        let player = arena.user(name, "player").await;
        player.agent("agent", "huge").await;
        players.push(player);
    }
    let runtime = agent_runtime::engine::Runtime::load(&crate::helpers::model_path(), 2).unwrap();
    let engine = agent_runtime::engine::Engine::start(std::sync::Arc::new(runtime), Default::default());
    let generator = std::sync::Arc::new(arena_server::work::generate::EngineGenerator { engine });
    arena.start(Roles { web: true, judge: true, ..Roles::NONE }, None);
    arena.start(Roles { runtime: true, ..Roles::NONE }, Some(generator));
    let error = arena.first_failure(30).await;
    assert!(error.contains("the context holds"), "failed with its reason, not after retries: {error}");
    let mut conn = arena.redis.conn();
    let dead: i64 = redis::cmd("XLEN").arg(streams::dead_stream(&arena.redis)).query_async(&mut conn).await.unwrap();
    assert_eq!(dead, 0, "failed at once, not dead-lettered after retries");
    let refunds: i64 = sqlx::query_scalar("select count(*) from ledger_transactions where kind = 'refund'")
        .fetch_one(&arena.db)
        .await
        .unwrap();
    assert!(refunds >= 1, "the fees went back");
    drop(players);
    arena.ledger_ok().await;
}

#[tokio::test]
async fn a_cold_leaderboard_is_computed_once_for_many_callers() {
    let arena = Arena::new().await;
    let designer = arena.user("dana", "designer").await;
    arena.publish(&designer, &quick_space("quick", 2, 2), json!({})).await;
    let url = arena.url("/spaces/quick/leaderboard");
    let calls = (0..16).map(|_| {
        let url = url.clone();
        async move { reqwest::get(url).await.unwrap().status().as_u16() }
    });
    let statuses = futures_util::future::join_all(calls).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let metrics = arena.get("/metrics").await.text().await.unwrap();
    let fits = metrics.lines().find(|l| l.starts_with("arena_leaderboard_fits_total ")).unwrap_or_default().to_owned();
    assert_eq!(fits, "arena_leaderboard_fits_total 1", "one fit for sixteen callers");
}

#[tokio::test]
async fn more_tokens_are_not_more_writes() {
    let env = crate::helpers::TestEnv::new().await;
    let mut settings = crate::arena::quick_settings(&env);
    settings.arena.writes_per_minute = 4;
    let arena = Arena::with_settings(env, settings).await;
    start_of_a_minute().await;
    let ada = arena.user("ada", "player").await;
    let mut tokens = Vec::new();
    for i in 0..2 {
        let (status, body) = ada.post("/tokens", json!({"name": format!("t{i}"), "scopes": ["read", "play"]})).await;
        assert_eq!(status, 201, "{body}");
        tokens.push(body["token"].as_str().unwrap().to_owned());
    }
    // Two writes spent on the tokens; two more, from either token, and the third is refused.
    let mut statuses = Vec::new();
    for (i, token) in tokens.iter().cycle().take(4).enumerate() {
        let r = reqwest::Client::new()
            .post(arena.url("/agents"))
            .bearer_auth(token)
            .json(&json!({"name": format!("a{i}")}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [201, 201, 429, 429], "one budget per user across tokens");
}

#[tokio::test]
async fn new_terms_are_not_forced_on_entered_players() {
    use arena_server::app::Roles;
    let arena = Arena::new().await;
    let dana = arena.user("dana", "designer").await;
    let v1 = quick_space("quick", 2, 2);
    arena.publish(&dana, &v1, json!({})).await;
    let ada = arena.user("ada", "player").await;
    let bob = arena.user("bob", "player").await;
    let agents = [ada.agent("a", "quick").await, bob.agent("b", "quick").await];
    // The designer raises the fee and makes it winner-takes-all.
    let v2 = v1.replace("entry_fee = 10", "entry_fee = 100").replace("shares = [0.7, 0.3]", "shares = [1.0]");
    arena.publish(&dana, &v2, json!({})).await;
    arena.start(Roles::ALL, None);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let formed: i64 = sqlx::query_scalar("select count(*) from matches").fetch_one(&arena.db).await.unwrap();
    assert_eq!(formed, 0, "no match under terms the players did not accept");
    assert_eq!(ada.balance().await, arena.settings.arena.starting_credits);
    let (_, seen) = ada.get(&format!("/agents/{}", agents[0])).await;
    let paused = seen["entries"][0]["paused"].as_str().unwrap_or_default().to_owned();
    assert!(paused.contains("version 2"), "the player is told: {seen}");
    // Entering again accepts them; matches then play version 2.
    for (player, agent) in [(&ada, &agents[0]), (&bob, &agents[1])] {
        let (status, body) = player.post(&format!("/agents/{agent}/entries"), json!({"space": "quick"})).await;
        assert_eq!(status, 201, "{body}");
    }
    let played = crate::helpers::eventually(20, || async { arena.settled().await >= 1 }).await;
    assert!(played, "{:?}", arena.status_counts().await);
    // A new version that changes only the prompts' description keeps the entries playing.
    arena.publish(&dana, &v2.replace("Quick arithmetic for tests", "Quick sums"), json!({})).await;
    let on_v3 = crate::helpers::eventually(20, || async {
        sqlx::query_scalar::<_, i64>("select count(*) from matches where space_version = 3")
            .fetch_one(&arena.db)
            .await
            .unwrap()
            >= 1
    })
    .await;
    arena.pause_all().await;
    assert!(on_v3, "a description change does not pause anyone");
    let early: i64 =
        sqlx::query_scalar("select count(*) from matches where space_version < 2").fetch_one(&arena.db).await.unwrap();
    assert_eq!(early, 0);
    arena.ledger_ok().await;
}

/// A file the Space carries is part of its terms: a version that changes
/// only the referee script pauses the entries as a TOML change does, and
/// the studio's versions page flags it.
#[tokio::test]
async fn a_new_version_that_changes_only_a_file_pauses_the_entries() {
    use arena_server::app::Roles;
    let arena = Arena::new().await;
    let dana = arena.user("dana", "designer").await;
    let script = |points: &str| {
        format!(
            r#"fn init(seats, prompt) {{ #{{ turn: 0 }} }}
fn to_move(state) {{ state.turn % 2 }}
fn view(state, seat) {{ `Turn ${{state.turn}}` }}
fn play(state, seat, answer) {{
    state.turn += 1;
    if state.turn >= 2 {{ return #{{ state: state, legal: true, note: "", scores: [{points}, 0.0], reason: "done" }}; }}
    #{{ state: state, legal: true, note: "" }}
}}"#
        )
    };
    let source = "name = \"scripted\"\nagents_per_match = 2\nmax_new_tokens = 8\nentry_fee = 10\n\
                  [prompts]\ninline = [\"Play.\"]\n[payout]\nshares = [1.0]\n[matchmaking]\nrating_window = 10000\n\
                  [turns]\nmax_turns = 4\n[referee]\nkind = \"script\"\nscript = \"r.rhai\"\n[judge]\nmode = \"none\"\n";
    arena.publish(&dana, source, json!({"r.rhai": script("1.0")})).await;
    let ada = arena.user("ada", "player").await;
    let bob = arena.user("bob", "player").await;
    let agent = ada.agent("a", "scripted").await;
    bob.agent("b", "scripted").await;
    // Version 2: the same TOML, another script (seat 0 now wins less).
    arena.publish(&dana, source, json!({"r.rhai": script("0.5")})).await;
    arena.start(
        Roles::ALL,
        Some(std::sync::Arc::new(arena_server::work::test_double::GameStub { illegal_first: false })),
    );
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let formed: i64 = sqlx::query_scalar("select count(*) from matches").fetch_one(&arena.db).await.unwrap();
    assert_eq!(formed, 0, "no match under a rule file the players did not accept");
    let (_, seen) = ada.get(&format!("/agents/{agent}")).await;
    assert!(seen["entries"][0]["paused"].as_str().unwrap_or_default().contains("version 2"), "{seen}");
    // The studio says what changed.
    let page = dana.client.get(format!("{}/studio/scripted/versions", arena.address)).send().await.unwrap();
    let page = page.text().await.unwrap();
    assert!(page.contains("file r.rhai changed"), "{page}");
    arena.pause_all().await;
}

/// A private game leaks nothing through the turns API or the match page to
/// those who may not read outputs: no answers, views, notes or boards.
#[tokio::test]
async fn a_private_game_shows_no_moves_to_strangers() {
    use arena_server::app::Roles;
    let arena = Arena::new().await;
    let dana = arena.user("dana", "designer").await;
    let source = "name = \"secret-ttt\"\nagents_per_match = 2\nmax_new_tokens = 24\nentry_fee = 10\n\
                  [prompts]\ninline = [\"Play.\"]\n[payout]\nshares = [1.0]\n[matchmaking]\nrating_window = 10000\n\
                  [turns]\n[referee]\nkind = \"tic-tac-toe\"\n[judge]\nmode = \"none\"\n\
                  [pairs]\nvisibility = \"private\"\n";
    arena.publish(&dana, source, json!({})).await;
    let ada = arena.user("ada", "player").await;
    let bob = arena.user("bob", "player").await;
    ada.agent("a", "secret-ttt").await;
    bob.agent("b", "secret-ttt").await;
    arena.start(
        Roles::ALL,
        Some(std::sync::Arc::new(arena_server::work::test_double::GameStub { illegal_first: false })),
    );
    arena.wait_settled(1, 60).await;
    arena.pause_all().await;
    let id: uuid::Uuid = sqlx::query_scalar("select id from matches where status = 'settled' limit 1")
        .fetch_one(&arena.db)
        .await
        .unwrap();
    let (status, turns) = ada.get(&format!("/matches/{id}/turns?views=true")).await;
    assert_eq!(status, 200);
    let moves = turns["turns"].as_array().unwrap();
    assert!(moves.iter().any(|t| t["text"].is_string() && t["board_after"].is_string()), "the player sees: {turns}");
    let stranger = arena.user("eve", "player").await;
    for (who, user) in [("stranger", &stranger), ("anonymous", &arena.user_anonymous())] {
        let (status, turns) = user.get(&format!("/matches/{id}/turns?views=true")).await;
        assert_eq!(status, 200, "{who}");
        for t in turns["turns"].as_array().unwrap() {
            assert!(t["text"].is_null() && t["view"].is_null() && t["note"].is_null(), "{who}: {t}");
            assert!(t["board_after"].is_null(), "{who}: {t}");
        }
        assert!(turns["outcome"]["reason"].is_null(), "{who}: {turns}");
    }
    let page = arena.get(&format!("/matches/{id}")).await.text().await.unwrap();
    assert!(!page.contains("cell x") && !page.contains("cell o"), "no board marks: {page}");
    assert!(!page.contains("move: "), "no answers");
}

#[tokio::test]
async fn a_private_spaces_outputs_are_read_only_by_those_it_names() {
    // (Its pairs are not streamed free either.)
    use arena_server::app::Roles;
    let arena = Arena::new().await;
    let dana = arena.user("dana", "designer").await;
    let source = quick_space("secret", 2, 2)
        .replace("license = \"CC-BY-4.0\"", "license = \"proprietary\"\nvisibility = \"private\"");
    arena.publish(&dana, &source, json!({})).await;
    let ada = arena.user("ada", "player").await;
    let bob = arena.user("bob", "player").await;
    ada.agent("a", "secret").await;
    bob.agent("b", "secret").await;
    let eve = arena.user("eve", "player").await;
    let bea = arena.user("bea", "buyer").await;
    arena.start(Roles::ALL, None);
    arena.wait_settled(1, 30).await;
    arena.pause_all().await;
    let id: uuid::Uuid = sqlx::query_scalar("select id from matches where status = 'settled' limit 1")
        .fetch_one(&arena.db)
        .await
        .unwrap();
    let path = format!("/matches/{id}");
    let anonymous = arena.user_anonymous();
    for (who, user, readable) in [
        ("anonymous", &anonymous, false),
        ("stranger", &eve, false),
        ("player", &ada, true),
        ("designer", &dana, true),
        // A buyer reads what they bought, not every private match.
        ("buyer", &bea, false),
    ] {
        let (status, body) = user.get(&path).await;
        assert_eq!(status, 200, "{who}: {body}");
        assert_eq!(body["outputs_hidden"], !readable, "{who}: {body}");
        let outputs = body["seats"].as_array().unwrap().iter().filter(|s| s["output"].is_string()).count();
        assert_eq!(outputs > 0, readable, "{who}: {body}");
        assert_eq!(body["verdict"].is_object(), readable, "{who}: {body}");
        // Ranks and payouts stay public.
        assert!(body["seats"][0]["rank"].is_i64(), "{who}: {body}");
    }
    // A public Space (the default) shows everything to everyone.
    let (_, shown) = arena.user_anonymous().get("/spaces/secret").await;
    assert!(shown.to_string().contains("private"), "the Space says who reads its data: {shown}");
    let (status, body) = dana.post("/spaces", json!({"source": source.replace("\"private\"", "\"friends\"")})).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("pairs.visibility"), "{body}");
}

/// The page and the API's view of match `id` as `user` sees it: the HTML
/// of `/matches/{id}` and the JSON of `/api/v1/matches/{id}`.
async fn match_as(arena: &Arena, user: &crate::arena::User, id: uuid::Uuid) -> (String, Value) {
    let html = user.client.get(format!("{}/matches/{id}", arena.address)).send().await.unwrap().text().await.unwrap();
    let (status, body) = user.get(&format!("/matches/{id}")).await;
    assert_eq!(status, 200, "{body}");
    (html, body)
}

/// The sample cards of a `/data` page.
fn samples(html: &str) -> Vec<String> {
    let from = html.find("<h3>Sample</h3>").expect("the sample section");
    html[from..]
        .split("<article class=\"card\">")
        .skip(1)
        .map(|c| c.split("</article>").next().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_space_that_sells_its_pairs_shows_its_outputs_only_to_its_players_designer_and_buyers() {
    use arena_server::app::Roles;
    let arena = Arena::new().await;
    let dana = arena.user("dana", "designer").await;
    let source = format!("{}\n[data]\nprice_per_pair = 5\n", quick_space("priced", 2, 2));
    arena.publish(&dana, &source, json!({})).await;
    let ada = arena.user("ada", "player").await;
    let bob = arena.user("bob", "player").await;
    ada.agent("a", "priced").await;
    bob.agent("b", "priced").await;
    let eve = arena.user("eve", "player").await;
    let bea = arena.user("bea", "buyer").await;
    arena.start(Roles::ALL, None);
    let made = crate::helpers::eventually(60, || async {
        sqlx::query_scalar::<_, i64>("select count(*) from pairs").fetch_one(&arena.db).await.unwrap() >= 6
    })
    .await;
    assert!(made, "{:?}", arena.status_counts().await);
    arena.pause_all().await;
    arena.wait_settled(1, 30).await;
    let id: uuid::Uuid = sqlx::query_scalar("select match_id from pairs order by created_at limit 1")
        .fetch_one(&arena.db)
        .await
        .unwrap();
    // The losing answer of every match (the stub's odd seat).
    let answer = "I am not sure, maybe 7 or 12.";
    let anonymous = arena.user_anonymous();
    for (who, user, readable) in [
        ("anonymous", &anonymous, false),
        ("another player", &eve, false),
        ("a buyer who bought nothing", &bea, false),
        ("a player of the match", &ada, true),
        ("the designer", &dana, true),
    ] {
        let (html, body) = match_as(&arena, user, id).await;
        assert_eq!(body["outputs_hidden"], !readable, "{who}: {body}");
        assert_eq!(body.to_string().contains(answer), readable, "{who}: {body}");
        assert_eq!(body["verdict"].is_object(), readable, "{who}: {body}");
        assert_eq!(html.contains(answer), readable, "{who}'s page");
        assert!(body["seats"][0]["rank"].is_i64(), "ranks stay public: {who}: {body}");
    }
    // Nor streamed free.
    assert_eq!(bea.get("/data/pairs?spaces=priced").await.0, 402);
    assert_eq!(bea.get("/spaces/priced/pairs").await.0, 402);

    // The /data samples of a Space that sells: the same few, whatever the
    // filter (a filter cannot walk the dataset ten pairs at a time).
    let page = |q: &'static str| {
        let client = bea.client.clone();
        let url = format!("{}/data{q}", arena.address);
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let shown = samples(&page("?spaces=priced").await);
    assert!(!shown.is_empty() && shown.len() <= 3, "{shown:?}");
    for q in ["?spaces=priced&min_chars=20", "?spaces=priced&dedupe=on", "", "?spaces=priced&min_margin=0.5"] {
        assert_eq!(samples(&page(q).await), shown, "{q}");
    }

    // Bought, the match is the buyer's to read.
    let pairs: i64 = sqlx::query_scalar("select count(*) from pairs").fetch_one(&arena.db).await.unwrap();
    let (status, export) = bea
        .post(
            "/data/exports",
            json!({"idempotency_key": "all", "filter": {"spaces": ["priced"]}, "limit": pairs,
                   "accept_licenses": ["CC-BY-4.0"], "max_price": 5 * pairs}),
        )
        .await;
    assert_eq!(status, 201, "{export}");
    let (html, body) = match_as(&arena, &bea, id).await;
    assert_eq!(body["outputs_hidden"], false, "{body}");
    assert!(html.contains(answer));
    // Another buyer still reads nothing.
    let carl = arena.user("carl", "buyer").await;
    assert_eq!(match_as(&arena, &carl, id).await.1["outputs_hidden"], true);
}

#[tokio::test]
async fn storage_is_bounded_per_user_and_an_adapter_is_stored_once() {
    let env = crate::helpers::TestEnv::new().await;
    let mut settings = crate::arena::quick_settings(&env);
    settings.arena.storage_quota_bytes = 2_000_000;
    let arena = Arena::with_settings(env, settings).await;
    let ada = arena.user("ada", "player").await;
    let dir = crate::arena::random_adapter();
    let (status, first) = ada.upload_adapter(dir.path()).await;
    assert_eq!(status, 201, "{first}");
    // The same settings written with other whitespace and key order are the same adapter.
    let config_path = dir.path().join("adapter_config.json");
    let config: serde_json::Map<String, Value> = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    let reversed: serde_json::Map<String, Value> = config.into_iter().rev().collect();
    std::fs::write(&config_path, serde_json::to_string_pretty(&Value::Object(reversed)).unwrap() + "\n\n").unwrap();
    let (status, second) = ada.upload_adapter(dir.path()).await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(first["sha256"], second["sha256"]);
    let stored: i64 = sqlx::query_scalar("select count(*) from adapters").fetch_one(&arena.db).await.unwrap();
    assert_eq!(stored, 1, "one copy of the weights");
    // Uploads past the quota are refused, naming it; nothing is stored.
    let mut refused = None;
    for _ in 0..40 {
        let (status, body) = ada.upload_random_adapter_status().await;
        if status != 201 {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("the quota stops uploads");
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("over_quota")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("quota is 2000000 bytes"), "{body}");
    let used: i64 = sqlx::query_scalar("select sum(bytes)::bigint from adapters").fetch_one(&arena.db).await.unwrap();
    assert!(used <= 2_000_000, "{used}");
    // The same quota covers Space versions.
    let admin = arena.user("root", "admin").await;
    admin.patch("/users/ada", json!({"role": "designer"})).await;
    let big: Vec<String> =
        (0..150).map(|i| json!({"prompt": format!("{i} {}", "x".repeat(7000))}).to_string()).collect();
    let base = quick_space("roomy", 2, 2);
    let inline = base.find("inline = [").unwrap();
    let end = base[inline..].find("]\n").unwrap() + inline + 2;
    let source = format!("{}file = \"prompts.jsonl\"\n{}", &base[..inline], &base[end..]);
    let files = json!({"prompts.jsonl": big.join("\n")});
    let (status, body) = ada.post("/spaces", json!({"source": source, "files": files})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("over_quota")), "{body}");
    let spaces: i64 = sqlx::query_scalar("select count(*) from spaces").fetch_one(&arena.db).await.unwrap();
    assert_eq!(spaces, 0);
}

#[tokio::test]
async fn api_tokens_expire() {
    let arena = Arena::new().await;
    let ada = arena.user("ada", "player").await;
    let (status, body) =
        ada.post("/tokens", json!({"name": "forever", "scopes": ["read"], "expires_in_days": 10000})).await;
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("expires_in_days")), "{body}");
    let (status, body) = ada.post("/tokens", json!({"name": "short", "scopes": ["read"], "expires_in_days": 1})).await;
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    let expires: chrono::DateTime<chrono::Utc> = body["expires_at"].as_str().unwrap().parse().unwrap();
    assert!((expires - chrono::Utc::now()).num_hours() >= 23, "{body}");
    let me = || reqwest::Client::new().get(arena.url("/me")).bearer_auth(&token).send();
    assert_eq!(me().await.unwrap().status(), 200);
    // A day later (moved by hand) it no longer works.
    sqlx::query("update api_tokens set expires_at = now() - interval '1 second'").execute(&arena.db).await.unwrap();
    assert_eq!(me().await.unwrap().status(), 401);
    let (_, list) = ada.get("/tokens").await;
    assert!(list[0]["expires_at"].is_string(), "{list}");
}

/// Sign-ins from `client` claiming to forward for `forwarded`, until one is
/// refused: the statuses.
async fn logins_forwarded(client: &reqwest::Client, arena: &Arena, forwarded: &str, n: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for i in 0..n {
        // A new name each time: the per-address limit, not the per-name one.
        let body = json!({"username": format!("nobody{i}"), "password": "a wrong guess!"});
        let r = client.post(arena.url("/sessions")).header("x-forwarded-for", forwarded).json(&body).send().await;
        statuses.push(r.unwrap().status().as_u16());
    }
    statuses
}

#[tokio::test]
async fn behind_a_trusted_proxy_per_address_limits_count_clients_not_the_proxy() {
    use arena_server::http::auth::LOGINS_PER_ADDRESS_PER_MINUTE as LIMIT;
    let limit = LIMIT as usize;
    let env = crate::helpers::TestEnv::new().await;
    let mut settings = crate::arena::quick_settings(&env);
    settings.arena.trusted_proxies =
        arena_server::domain::settings::Network::parse_list("127.0.0.3, 127.0.0.4").unwrap();
    let arena = Arena::with_settings(env, settings).await;
    start_of_a_minute().await;
    let proxy = client_from("127.0.0.3");
    // One client through the proxy spends its own allowance…
    let first = logins_forwarded(&proxy, &arena, "198.51.100.7", limit + 1).await;
    assert_eq!(first.iter().filter(|s| **s == 429).count(), 1, "{first:?}");
    // …and another, through the same proxy, still signs in.
    assert_eq!(logins_forwarded(&proxy, &arena, "198.51.100.8", 1).await, vec![401]);
    // A client's own forged hop before the proxy's does not make it new:
    // the rightmost address that is not a trusted proxy is the client.
    let chained = logins_forwarded(&proxy, &arena, "203.0.113.9, 198.51.100.7, 127.0.0.4", 1).await;
    assert_eq!(chained, vec![429], "the same client behind two proxies");
    // A connection that is not a trusted proxy cannot choose its address.
    let direct = client_from("127.0.0.5");
    let forged = logins_forwarded(&direct, &arena, "198.51.100.99", limit + 1).await;
    assert_eq!(forged.iter().filter(|s| **s == 429).count(), 1, "{forged:?}");
    assert_eq!(logins_forwarded(&direct, &arena, "198.51.100.100", 1).await, vec![429], "its header was ignored");
}

#[tokio::test]
async fn the_session_cookie_is_secure_as_configured() {
    use arena_server::domain::settings::SecureCookies;
    for (setting, via_proxy, secure) in [
        (SecureCookies::Auto, false, false),
        (SecureCookies::Auto, true, true),
        (SecureCookies::Always, false, true),
        (SecureCookies::Never, true, false),
    ] {
        let env = crate::helpers::TestEnv::new().await;
        let mut settings = crate::arena::quick_settings(&env);
        settings.arena.trusted_proxies = arena_server::domain::settings::Network::parse_list("127.0.0.6").unwrap();
        settings.arena.secure_cookies = setting;
        let arena = Arena::with_settings(env, settings).await;
        arena.user("ada", "player").await;
        let client = client_from(if via_proxy { "127.0.0.6" } else { "127.0.0.7" });
        let body = json!({"username": "ada", "password": "correct horse battery"});
        // A client that is not a proxy says https too: it does not count.
        let r = client.post(arena.url("/sessions")).header("x-forwarded-proto", "https").json(&body).send().await;
        let r = r.unwrap();
        assert_eq!(r.status(), 200);
        let cookie = r.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
        assert_eq!(cookie.contains("Secure"), secure, "{setting:?} via proxy {via_proxy}: {cookie}");
    }
}
