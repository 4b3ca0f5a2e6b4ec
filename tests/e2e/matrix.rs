//! The authorization matrix, walked from the route table itself: every
//! route of `http::API`, called by every kind of caller — anonymous, a
//! player, a designer, a buyer, an admin, and the owner of the resource the
//! path names — with what each may and may not get. A route added to the
//! table is walked too; one whose path parameter or owner this test does
//! not know fails it until it is taught.

use crate::arena::{Arena, User, quick_space};
use arena_server::http::{API, Access};
use serde_json::{Value, json};

/// Who owns what a route's path names.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Owner {
    /// Nobody in particular (a public or a self-service route).
    Nobody,
    /// The agent, token or training job in the path: the player `ada`.
    Player,
    /// The Space in the path, for a write: the designer `dana`.
    Designer,
    /// Admins only.
    Admin,
    /// The data export in the path: the buyer `nell`, and nobody else.
    Buyer,
    /// The open worker or lease in the path, or a blob a worker may fetch:
    /// the player `ada`'s worker.
    Worker,
}

fn owner_of(method: &str, path: &str) -> Owner {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match (method, first) {
        (_, "agents") if path.contains("{id}") => Owner::Player,
        (_, "tokens") if path.contains("{id}") => Owner::Player,
        (_, "training-jobs") => Owner::Player,
        (_, "data") if path.contains("{id}") => Owner::Buyer,
        ("patch", "spaces") => Owner::Designer,
        ("get", "spaces") if path.ends_with("/analytics") || path.ends_with("/audit") => Owner::Designer,
        (_, "votes") if path.ends_with("/integrity") => Owner::Admin,
        (_, "users") if path.contains("{username}") => Owner::Admin,
        (_, "workers") if path.contains("{id}") => Owner::Worker,
        (_, "leases" | "blobs") => Owner::Worker,
        (
            _,
            "users" | "sessions" | "me" | "tokens" | "spaces" | "adapters" | "agents" | "matches" | "events" | "data"
            | "workers" | "audit-secrets" | "battles" | "votes" | "reports",
        ) => Owner::Nobody,
        _ => panic!("the matrix does not know who owns {method} {path}: teach owner_of"),
    }
}

struct Fixture {
    agent: String,
    token: String,
    job: String,
    export: String,
    worker: String,
    lease: String,
    model_sha: String,
}

fn fill(path: &str, f: &Fixture) -> String {
    let mut out = String::new();
    for segment in path.split('/').skip(1) {
        out.push('/');
        let value = match segment {
            "{id}" if path.starts_with("/agents") => f.agent.clone(),
            "{id}" if path.starts_with("/tokens") => f.token.clone(),
            "{id}" if path.starts_with("/training-jobs") => f.job.clone(),
            "{id}" if path.starts_with("/data/exports") => f.export.clone(),
            "{id}" if path.starts_with("/workers") => f.worker.clone(),
            "{id}" if path.starts_with("/leases") => f.lease.clone(),
            "{sha256}" => f.model_sha.clone(),
            "{name}" => "README.md".to_owned(),
            "{id}" if path.starts_with("/matches") => uuid::Uuid::new_v4().to_string(),
            "{slug}" | "{space}" => "quick".to_owned(),
            "{version}" => "1".to_owned(),
            "{username}" => "ada".to_owned(),
            s if s.starts_with('{') => panic!("the matrix has no sample for {s} in {path}: teach fill"),
            s => s.to_owned(),
        };
        out.push_str(&value);
    }
    out
}

/// The body a call sends: for a route on someone's resource, the route's
/// own example when it is JSON (so the request gets past input checks to
/// the owner check); otherwise `{}`, which creates nothing.
fn body_for(route: &arena_server::http::ApiRoute, owner: Owner) -> Value {
    let example = route.body.map(|b| b.replace("arithmetic", "quick"));
    match (owner, example.and_then(|b| serde_json::from_str::<Value>(&b).ok())) {
        (Owner::Nobody, _) | (_, None) => json!({}),
        (_, Some(body)) => body,
    }
}

async fn call(arena: &Arena, user: &User, method: &str, path: &str, body: Value) -> u16 {
    if path.starts_with("/events") {
        // A live stream never ends: its status is the answer.
        return user.client.get(arena.url(path)).send().await.unwrap().status().as_u16();
    }
    match method {
        "get" => user.get(path).await.0,
        "post" => user.post(path, body).await.0,
        "put" => user.put(path, body).await.0,
        "patch" => user.patch(path, body).await.0,
        "delete" => user.delete(path).await.0,
        other => panic!("method {other}"),
    }
}

/// The rows a refused call must not change.
async fn snapshot(db: &sqlx::PgPool) -> String {
    let q = "select (select count(*) from users) || '/' || (select string_agg(role, ',' order by id) from users)
             || '/' || (select count(*) from agents) || '/' || (select count(*) from agent_versions)
             || '/' || (select string_agg(current_version::text, ',' order by id) from agents)
             || '/' || (select count(*) from entries where active) || '/' || (select count(*) from space_versions)
             || '/' || (select string_agg(active::text, ',' order by id) from spaces)
             || '/' || (select count(*) from api_tokens where revoked_at is null)
             || '/' || (select count(*) from training_policies) || '/' || (select count(*) from training_jobs)
             || '/' || (select count(*) from adapters) || '/' || (select count(*) from ledger_entries)
             || '/' || (select count(*) from data_exports)
             || '/' || (select count(*) from workers) || '/' || (select count(*) from worker_leases)
             || '/' || (select coalesce(string_agg(status, ',' order by id), '') from data_exports)";
    sqlx::query_scalar::<_, String>(q).fetch_one(db).await.unwrap()
}

#[tokio::test]
async fn every_route_refuses_every_caller_it_should() {
    let arena = Arena::new().await;
    let dana = arena.user("dana", "designer").await;
    arena.publish(&dana, &quick_space("quick", 2, 2), json!({})).await;
    let ada = arena.user("ada", "player").await;
    let agent = ada.agent("calc", "quick").await;
    let (_, token) = ada.post("/tokens", json!({"name": "t", "scopes": ["read"]})).await;
    let token = token["id"].as_str().unwrap().to_owned();
    let job = uuid::Uuid::new_v4();
    sqlx::query(
        "insert into training_jobs (id, agent_id, owner_id, space_id, space_version, parent_version, trigger,
                                    settings, pair_ids, status)
         select $1, a.id, a.owner_id, s.id, 1, 1, 'manual', '{}', '{}', 'failed'
         from agents a, spaces s where a.id = $2 and s.slug = 'quick'",
    )
    .bind(job)
    .bind(uuid::Uuid::parse_str(&agent).unwrap())
    .execute(&arena.db)
    .await
    .unwrap();
    // A finished export of the buyer nell's, with its card on disk.
    let nell = arena.user("nell", "buyer").await;
    let export = uuid::Uuid::new_v4();
    sqlx::query(
        "insert into data_exports (id, buyer_id, idempotency_key, filter, format, shape, gzip, scrub_pii, licenses,
                                   pairs, price, status, files)
         values ($1, $2, 'k', '{}', 'jsonl', 'standard', false, false, '{}', 0, 0, 'done',
                 '[{\"name\": \"README.md\", \"rows\": 0, \"bytes\": 5, \"sha256\": \"\"}]')",
    )
    .bind(export)
    .bind(uuid::Uuid::parse_str(&nell.id).unwrap())
    .execute(&arena.db)
    .await
    .unwrap();
    let dir = arena_server::work::exports::export_dir(&arena.settings.data_dir, export);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("README.md"), "card\n").unwrap();
    // An open worker of ada's, with an open lease.
    let model_sha: String =
        sqlx::query_scalar("select base_model from agent_versions limit 1").fetch_one(&arena.db).await.unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
    let (status, registered) = ada
        .post(
            "/workers",
            json!({"name": "box", "public_key": hex::encode(key.verifying_key().to_bytes()),
                   "model_sha256": model_sha, "runtime_version": "0.1.0", "recipe": "test", "device": "cpu",
                   "max_batch": 8, "stake": 500}),
        )
        .await;
    assert_eq!(status, 201, "{registered}");
    let worker = registered["worker"]["id"].as_str().unwrap().to_owned();
    let lease = uuid::Uuid::new_v4();
    sqlx::query("insert into worker_leases (id, worker_id, deadline) values ($1, $2, now() + interval '1 hour')")
        .bind(lease)
        .bind(uuid::Uuid::parse_str(&worker).unwrap())
        .execute(&arena.db)
        .await
        .unwrap();
    let fixture = Fixture {
        agent,
        token,
        job: job.to_string(),
        export: export.to_string(),
        worker,
        lease: lease.to_string(),
        model_sha,
    };

    let anonymous = arena.user_anonymous();
    let player = arena.user("bob", "player").await;
    let designer = arena.user("rita", "designer").await;
    let buyer = arena.user("bea", "buyer").await;
    let admin = arena.user("root", "admin").await;
    let role_scopes = |name: &str| -> &'static [&'static str] {
        match name {
            "bob" => &["read", "play", "work", "vote"],
            "rita" => &["read", "play", "design", "work", "vote"],
            "bea" => &["read", "export", "work", "vote"],
            _ => &["read", "play", "design", "export", "admin", "work", "vote"],
        }
    };

    // Strangers first: whatever they are refused changes nothing.
    let before = snapshot(&arena.db).await;
    let mut problems = Vec::new();
    for route in API {
        let path = fill(route.path, &fixture);
        let owner = owner_of(route.method, route.path);
        // Signing out would end the callers' own sessions.
        if route.path == "/sessions" && route.method == "delete" {
            continue;
        }
        let status = call(&arena, &anonymous, route.method, &path, body_for(route, owner)).await;
        let expect_anon = match route.access {
            Access::Public => status != 401 && status != 403,
            Access::Scope(_) => status == 401,
        };
        if !expect_anon || status >= 500 {
            problems.push(format!("anonymous {} {path} → {status}", route.method));
        }
        for stranger in [&player, &designer, &buyer] {
            let status = call(&arena, stranger, route.method, &path, body_for(route, owner)).await;
            let ok = match route.access {
                Access::Public => status != 401 && status != 403 && status < 500,
                Access::Scope(scope) if !role_scopes(&stranger.name).contains(&scope.as_str()) => status == 403,
                Access::Scope(_) => match owner {
                    Owner::Player | Owner::Designer | Owner::Admin | Owner::Buyer | Owner::Worker => {
                        [403, 404].contains(&status)
                    }
                    Owner::Nobody => status != 401 && status != 403 && status < 500,
                },
            };
            if !ok {
                problems.push(format!(
                    "{} {} {path} → {status} ({:?}, owner {owner:?})",
                    stranger.name, route.method, route.access
                ));
            }
        }
    }
    // Publishing and registering as strangers may add rows of their own;
    // the matrix sends `{}`, which publishes and registers nothing.
    assert_eq!(before, snapshot(&arena.db).await, "refused calls changed nothing");
    assert!(problems.is_empty(), "the matrix found:\n{}", problems.join("\n"));

    // The owner, and an admin, get through the door (the empty body may
    // still be refused as input: 422, never 401/403/404).
    for route in API {
        let path = fill(route.path, &fixture);
        let owner = owner_of(route.method, route.path);
        let callers: Vec<&User> = match owner {
            // A token is its user's alone, admins included.
            Owner::Player if route.path.starts_with("/tokens") => vec![&ada],
            Owner::Player => vec![&ada, &admin],
            Owner::Designer => vec![&dana, &admin],
            Owner::Admin => vec![&admin],
            // An export is its buyer's alone, admins included.
            Owner::Buyer => vec![&nell],
            // A worker's lease and downloads are its owner's alone.
            Owner::Worker => vec![&ada],
            Owner::Nobody => continue,
        };
        for caller in callers {
            let status = call(&arena, caller, route.method, &path, body_for(route, owner)).await;
            if [401, 403, 404].contains(&status) || status >= 500 {
                problems.push(format!("{} {} {path} → {status}", caller.name, route.method));
            }
        }
    }
    assert!(problems.is_empty(), "owners refused:\n{}", problems.join("\n"));
    arena.ledger_ok().await;
}

/// A browser-like client for the pages: its own cookies, no redirects
/// followed, and the CSRF token its first page set.
struct PageClient {
    client: reqwest::Client,
    base: String,
    csrf: String,
}

impl PageClient {
    async fn new(arena: &Arena, sign_in: Option<(&str, &str)>) -> PageClient {
        let client =
            reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let base = arena.address.clone();
        let r = client.get(format!("{base}/signin")).send().await.unwrap();
        let csrf = r
            .cookies()
            .find(|c| c.name() == "arena_csrf")
            .map(|c| c.value().to_owned())
            .expect("the first page sets the CSRF cookie");
        let page = PageClient { client, base, csrf };
        if let Some((username, password)) = sign_in {
            let status = page.post("/signin", &[("username", username), ("password", password)], true).await;
            assert_eq!(status, 303, "sign-in through the form");
        }
        page
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = self.client.get(format!("{}{path}", self.base)).send().await.unwrap();
        let status = r.status().as_u16();
        let location = r.headers().get("location").and_then(|l| l.to_str().ok()).unwrap_or_default().to_owned();
        (status, location)
    }

    async fn post(&self, path: &str, fields: &[(&str, &str)], with_token: bool) -> u16 {
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        if with_token {
            form.push(("csrf", &self.csrf));
        }
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("Origin", self.base.clone())
            .form(&form)
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    }
}

#[tokio::test]
async fn every_page_refuses_every_caller_it_should() {
    use arena_server::http::pages::{PAGES, PageAccess};
    let arena = Arena::new().await;
    let dana = arena.user("dana", "designer").await;
    arena.publish(&dana, &quick_space("quick", 2, 2), json!({})).await;
    let ada = arena.user("ada", "player").await;
    let agent = ada.agent("calc", "quick").await;
    let (_, token) = ada.post("/tokens", json!({"name": "t", "scopes": ["read"]})).await;
    let token = token["id"].as_str().unwrap().to_owned();
    arena.user("bob", "player").await;
    let fill = |path: &str| {
        path.replace("{slug}", "quick")
            .replace("/agents/{id}", &format!("/agents/{agent}"))
            .replace("/matches/{id}", &format!("/matches/{}", uuid::Uuid::new_v4()))
            .replace("/tokens/{id}", &format!("/tokens/{token}"))
            .replace("/data/exports/{id}", &format!("/data/exports/{}", uuid::Uuid::new_v4()))
            .replace("/studio/dry-runs/{id}", &format!("/studio/dry-runs/{}", uuid::Uuid::new_v4()))
            .replace("{name}", "README.md")
    };
    let fields = |path: &str| -> Vec<(&'static str, String)> {
        match path {
            "/signup" => vec![("username", "newcomer".into()), ("password", "a long passphrase".into())],
            "/signin" => vec![("username", "ada".into()), ("password", "correct horse battery".into())],
            "/spaces/{slug}/enter" => vec![("agent", agent.clone())],
            "/agents/{id}/rollback" => vec![("version", "1".into())],
            "/agents/{id}/leave" | "/agents/{id}/train" => vec![("space", "quick".into())],
            "/agents/{id}/policy" => vec![("space", "quick".into()), ("mode", "manual".into())],
            "/me/tokens" => vec![("name", "made".into()), ("scope_read", "on".into())],
            _ => Vec::new(),
        }
    };
    let anonymous = PageClient::new(&arena, None).await;
    let stranger = PageClient::new(&arena, Some(("bob", "correct horse battery"))).await;
    let owner = PageClient::new(&arena, Some(("ada", "correct horse battery"))).await;
    let before = snapshot(&arena.db).await;
    let mut problems = Vec::new();
    for page in PAGES {
        let path = fill(page.path);
        let form: Vec<(&str, String)> = fields(page.path);
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if page.method == "get" {
            let (status, location) = anonymous.get(&path).await;
            let ok = match page.access {
                PageAccess::Public => status == 200 || status == 404,
                PageAccess::SignedIn => status == 303 && location.starts_with("/signin"),
            };
            if !ok {
                problems.push(format!("anonymous GET {path} → {status} {location}"));
            }
            continue;
        }
        // Without the form's token nobody gets through, the owner included
        // (a visitor to a signed-in page is sent to sign in first; the
        // builder's multipart form refuses a body that is not one).
        for (who, client) in [("anonymous", &anonymous), ("stranger", &stranger), ("owner", &owner)] {
            let status = client.post(&path, &form, false).await;
            let expected: &[u16] = match (who, page.access, page.path) {
                ("anonymous", PageAccess::SignedIn, _) => &[303],
                (
                    _,
                    _,
                    "/agents/new"
                    | "/agents/{id}/version"
                    | "/studio/{slug}/files"
                    | "/studio/red-team"
                    | "/studio/new/files",
                ) => &[403, 415],
                _ => &[403],
            };
            if !expected.contains(&status) {
                problems.push(format!("{who} POST {path} without a token → {status}"));
            }
        }
        // With a token: anonymous is sent to sign in, a stranger finds nothing of another's.
        if page.access == PageAccess::SignedIn {
            let status = anonymous.post(&path, &form, true).await;
            if status != 303 {
                problems.push(format!("anonymous POST {path} → {status}"));
            }
            let on_another = page.path.contains("{id}");
            if on_another {
                let status = stranger.post(&path, &form, true).await;
                // A multipart form refuses this urlencoded body before it looks further.
                let expected: &[u16] = if page.path.ends_with("/version") { &[404, 415] } else { &[404] };
                if !expected.contains(&status) {
                    problems.push(format!("stranger POST {path} → {status}"));
                }
            }
        }
    }
    assert_eq!(before, snapshot(&arena.db).await, "refused posts changed nothing");
    assert!(problems.is_empty(), "the page matrix found:\n{}", problems.join("\n"));
    // The owner gets through every door (input may still be refused: never 401/403/404/5xx).
    for page in PAGES.iter().filter(|p| p.method == "post" && p.access == PageAccess::SignedIn) {
        if page.path == "/agents/new" || page.path == "/agents/{id}/version" {
            continue; // multipart: the browser tests post it
        }
        if page.path == "/data/exports" || page.path.starts_with("/studio") {
            continue; // buyers' and designers' (the owner here is a player): the browser tests post these
        }
        let path = fill(page.path);
        let form: Vec<(&str, String)> = fields(page.path);
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let status = owner.post(&path, &form, true).await;
        if [401, 403, 404].contains(&status) || status >= 500 {
            problems.push(format!("owner POST {path} → {status}"));
        }
    }
    assert!(problems.is_empty(), "owners refused:\n{}", problems.join("\n"));
}
