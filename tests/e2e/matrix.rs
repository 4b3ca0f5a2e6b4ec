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
}

fn owner_of(method: &str, path: &str) -> Owner {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match (method, first) {
        (_, "agents") if path.contains("{id}") => Owner::Player,
        (_, "tokens") if path.contains("{id}") => Owner::Player,
        (_, "training-jobs") => Owner::Player,
        ("patch", "spaces") => Owner::Designer,
        (_, "users") if path.contains("{username}") => Owner::Admin,
        (_, "users" | "sessions" | "me" | "tokens" | "spaces" | "adapters" | "agents" | "matches" | "events") => {
            Owner::Nobody
        }
        _ => panic!("the matrix does not know who owns {method} {path}: teach owner_of"),
    }
}

struct Fixture {
    agent: String,
    token: String,
    job: String,
}

fn fill(path: &str, f: &Fixture) -> String {
    let mut out = String::new();
    for segment in path.split('/').skip(1) {
        out.push('/');
        let value = match segment {
            "{id}" if path.starts_with("/agents") => f.agent.clone(),
            "{id}" if path.starts_with("/tokens") => f.token.clone(),
            "{id}" if path.starts_with("/training-jobs") => f.job.clone(),
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
             || '/' || (select count(*) from adapters) || '/' || (select count(*) from ledger_entries)";
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
    let fixture = Fixture { agent, token, job: job.to_string() };

    let anonymous = arena.user_anonymous();
    let player = arena.user("bob", "player").await;
    let designer = arena.user("rita", "designer").await;
    let buyer = arena.user("bea", "buyer").await;
    let admin = arena.user("root", "admin").await;
    let role_scopes = |name: &str| -> &'static [&'static str] {
        match name {
            "bob" => &["read", "play"],
            "rita" => &["read", "play", "design"],
            "bea" => &["read", "export"],
            _ => &["read", "play", "design", "export", "admin"],
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
                Access::Scope(scope) if !role_scopes(&stranger.name).contains(&scope) => status == 403,
                Access::Scope(_) => match owner {
                    Owner::Player | Owner::Designer | Owner::Admin => [403, 404].contains(&status),
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
