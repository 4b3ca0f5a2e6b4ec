//! HTTP: the JSON API under `/api/v1` and its OpenAPI document, the web
//! pages (`pages`, their own table `pages::PAGES`), auth extractors and
//! rate limits, `ApiError`, `/healthz` and `/metrics`. `API` is the one list of routes: `configure`
//! mounts it and `openapi` describes it, so the document cannot drift from
//! what is served. Handlers call the store and the work rooms; they add no
//! rules of their own.

pub mod auth;
pub mod error;
pub mod handlers;
pub mod health;
pub mod leaderboard;
pub mod metrics;
pub mod pages;

use actix_web::{HttpResponse, Route, web};
use handlers::{adapters, agents, data, matches, spaces, training, users, votes, workers};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    /// Signed in (session cookie or token) with this scope.
    Scope(crate::domain::user::Scope),
}

pub struct ApiRoute {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub access: Access,
    /// The JSON body's fields, for the document.
    pub body: Option<&'static str>,
    route: fn() -> Route,
}

use crate::domain::user::Scope::{Admin, Design, Export, Play, Read, Vote, Work};
use Access::{Public, Scope};

macro_rules! route {
    ($method:ident, $path:literal, $handler:path, $access:expr, $summary:literal, $body:expr) => {
        ApiRoute {
            method: stringify!($method),
            path: $path,
            summary: $summary,
            access: $access,
            body: $body,
            route: || web::$method().to($handler),
        }
    };
}

pub const API: &[ApiRoute] = &[
    route!(
        post,
        "/users",
        users::register,
        Public,
        "Register as a player; starting credits are granted (designer and buyer roles are an admin's grant)",
        Some(r#"{"username": "ada", "password": "at least 10 chars"}"#)
    ),
    route!(
        patch,
        "/users/{username}",
        users::set_role,
        Scope(Admin),
        "Grant a user the player, designer or buyer role (admins only)",
        Some(r#"{"role": "designer"}"#)
    ),
    route!(
        post,
        "/sessions",
        users::login,
        Public,
        "Sign in; sets the session cookie (a new session id each time)",
        Some(r#"{"username": "ada", "password": "…"}"#)
    ),
    route!(delete, "/sessions", users::logout, Public, "Sign out", None),
    route!(get, "/me", users::me, Scope(Read), "The caller, their role and balance", None),
    route!(
        get,
        "/me/ledger",
        users::statement,
        Scope(Read),
        "The caller's ledger entries, newest first (?limit, ?before)",
        None
    ),
    route!(
        post,
        "/tokens",
        users::create_token,
        Scope(Read),
        "Create an API token (from a session); the secret is shown once; it expires after expires_in_days (1..=365, default 90)",
        Some(r#"{"name": "ci", "scopes": ["read", "play"], "expires_in_days": 30}"#)
    ),
    route!(get, "/tokens", users::list_tokens, Scope(Read), "The caller's tokens, without secrets", None),
    route!(delete, "/tokens/{id}", users::revoke_token, Scope(Read), "Revoke a token", None),
    route!(get, "/spaces", spaces::list, Public, "Every Space", None),
    route!(
        post,
        "/spaces",
        spaces::publish,
        Scope(Design),
        "Publish a Space, or a new version of one's own",
        Some(r#"{"source": "name = \"…\" …", "files": {"prompts/x.jsonl": "…"}}"#)
    ),
    route!(get, "/spaces/{slug}", spaces::get, Public, "One Space with its current TOML", None),
    route!(
        patch,
        "/spaces/{slug}",
        spaces::patch,
        Scope(Design),
        "Pause or resume a Space",
        Some(r#"{"active": false}"#)
    ),
    route!(get, "/spaces/{slug}/versions", spaces::versions, Public, "A Space's versions", None),
    route!(get, "/spaces/{slug}/versions/{version}", spaces::version, Public, "One version's TOML and files", None),
    route!(
        get,
        "/spaces/{slug}/leaderboard",
        spaces::leaderboard,
        Public,
        "Online ratings and a Bradley–Terry fit with bootstrap 95% intervals",
        None
    ),
    route!(
        get,
        "/spaces/{slug}/pairs",
        spaces::pairs,
        Scope(Export),
        "Preference pairs as JSON Lines in TRL's format (?after, ?limit, ?min_margin)",
        None
    ),
    route!(
        post,
        "/adapters",
        adapters::upload,
        Scope(Play),
        "Upload a PEFT adapter (multipart fields `config` and `weights`); validated against the base model",
        None
    ),
    route!(get, "/agents", agents::mine, Scope(Read), "The caller's agents with their versions", None),
    route!(
        post,
        "/agents",
        agents::create,
        Scope(Play),
        "Create an agent (version 1)",
        Some(
            r#"{"name": "calc", "system_prompt": "…", "sampling": {"temperature": 0.7, "top_p": 0.95, "seed": 1}, "adapter_sha256": null, "base_model": null}"#
        )
    ),
    route!(get, "/agents/{id}", agents::get, Public, "An agent; versions only for its owner", None),
    route!(
        patch,
        "/agents/{id}",
        agents::patch,
        Scope(Play),
        "Whether the agent's versions may run on open workers (which then see its system prompt and adapter)",
        Some(r#"{"open_workers": true}"#)
    ),
    route!(
        post,
        "/agents/{id}/versions",
        agents::new_version,
        Scope(Play),
        "A new version from the current one",
        Some(r#"{"system_prompt": "…", "sampling": {…}, "adapter_sha256": "…", "note": "…"}"#)
    ),
    route!(
        post,
        "/agents/{id}/rollback",
        agents::rollback,
        Scope(Play),
        "Make an earlier version current",
        Some(r#"{"version": 1}"#)
    ),
    route!(
        post,
        "/agents/{id}/entries",
        agents::enter,
        Scope(Play),
        "Enter a Space",
        Some(r#"{"space": "arithmetic"}"#)
    ),
    route!(delete, "/agents/{id}/entries/{space}", agents::withdraw, Scope(Play), "Withdraw from a Space", None),
    route!(
        get,
        "/agents/{id}/training",
        training::overview,
        Scope(Read),
        "The agent's training policies and jobs (owner only)",
        None
    ),
    route!(
        put,
        "/agents/{id}/training/{space}",
        training::set_policy,
        Scope(Play),
        "Set the agent's training policy in a Space: by hand, or a job every N new pairs it took part in",
        Some(r#"{"mode": "every", "every_pairs": 64, "settings": {"learning_rate": 0.0001, "epochs": 2}}"#)
    ),
    route!(
        post,
        "/agents/{id}/training-jobs",
        training::start,
        Scope(Play),
        "Train the agent now on its pairs in a Space (priced by its token budget; refunded if it fails); the new version is promoted only if it beats its parent",
        Some(r#"{"space": "arithmetic", "settings": {"steps": 20}}"#)
    ),
    route!(
        get,
        "/training-jobs/{id}",
        training::get,
        Scope(Read),
        "A training job: status, progress, per-step metrics, the gate's games and decision, the manifest",
        None
    ),
    route!(
        get,
        "/spaces/{slug}/analytics",
        spaces::analytics,
        Scope(Design),
        "A Space's live numbers for its designer: matches per hour, entries, pair yield, judge decisiveness and ties, verifier pass rates, rating spread, money in and out, mean seconds per stage",
        None
    ),
    route!(
        get,
        "/data/count",
        data::count,
        Scope(Export),
        "How many preference pairs a filter selects and what an export of them costs (?spaces, space_version, from, to, min_margin, agreed_only, min_rating, max_rating, min_chars, max_chars, languages, dedupe, chosen_passed, rejected_passed, kind)",
        None
    ),
    route!(
        get,
        "/data/pairs",
        data::pairs,
        Scope(Export),
        "The free Spaces' pairs a filter selects as JSON Lines: TRL standard or conversational (?format), provenance, optional PII scrub (?scrub_pii), streamed (?limit ≤ 1,000,000); a Space that sells its pairs answers 402",
        None
    ),
    route!(
        get,
        "/data/card",
        data::card,
        Scope(Export),
        "The dataset card (README.md in Hugging Face's format: licence, size, configs, how the data was made, filters, hash-chain heads) for a filter",
        None
    ),
    route!(
        post,
        "/data/exports",
        data::create,
        Scope(Export),
        "Buy and export the pairs a filter selects: paid once per idempotency key, written as a job (JSON Lines, gzip optional, or Parquet, with a dataset card); 201 new, 200 the key's earlier export",
        Some(
            r#"{"idempotency_key": "2026-12-02-a", "filter": {"spaces": ["arithmetic"], "agreed_only": true, "dedupe": true}, "format": "jsonl|parquet", "shape": "standard|conversational", "gzip": false, "scrub_pii": true, "max_price": 500, "accept_licenses": ["CC-BY-4.0"]}"#
        )
    ),
    route!(get, "/data/exports", data::list, Scope(Export), "The caller's exports, newest first", None),
    route!(
        get,
        "/data/exports/{id}",
        data::get,
        Scope(Export),
        "One of the caller's exports: status, progress (rows written), files with bytes and sha256, price, licences",
        None
    ),
    route!(
        post,
        "/data/exports/{id}/retry",
        data::retry,
        Scope(Export),
        "Run a failed export again (its pairs are fixed; nothing is paid again)",
        None
    ),
    route!(
        get,
        "/data/exports/{id}/files/{name}",
        data::file,
        Scope(Export),
        "Download a finished export's file (pairs.jsonl, pairs.jsonl.gz, pairs.parquet or README.md), the buyer's own only",
        None
    ),
    route!(get, "/matches", matches::list, Public, "Matches, newest first (?space, ?status, ?limit)", None),
    route!(get, "/matches/{id}", matches::get, Public, "One match: seats, outputs, verdict, payouts", None),
    route!(
        get,
        "/matches/{id}/turns",
        matches::turns,
        Public,
        "A multi-turn match's turns: each answer with the referee's reading, the board after each step, the outcome (?from=STEP, limit=1..200 steps, views=true)",
        None
    ),
    route!(get, "/events", matches::events, Public, "Server-Sent Events of match progress (?space, ?match)", None),
    route!(
        post,
        "/workers",
        workers::register,
        Scope(Work),
        "Register an open runtime worker and lock its stake (ed25519 public key, model sha256, recipe, device, max batch)",
        Some(
            r#"{"name": "box-1", "public_key": "…64 hex…", "model_sha256": "…", "runtime_version": "0.1.0", "recipe": "q4q8-i16act-avx2-v2", "device": "cpu", "max_batch": 8, "stake": 500}"#
        )
    ),
    route!(
        get,
        "/workers",
        workers::list,
        Scope(Read),
        "The caller's workers (an admin's: all) with status, jobs, audits, reputation, stake, escrow and earnings",
        None
    ),
    route!(post, "/workers/{id}/heartbeat", workers::heartbeat, Scope(Work), "A worker says it is alive", None),
    route!(
        post,
        "/workers/{id}/lease",
        workers::lease,
        Scope(Work),
        "Long-poll for generation jobs: 200 with a lease (jobs, deadline), 204 when none came",
        Some(r#"{"wait_s": 0, "max_jobs": 8}"#)
    ),
    route!(
        post,
        "/leases/{id}/result",
        workers::result,
        Scope(Work),
        "A lease's signed rollout records, every job at once",
        Some(r#"{"results": [{"record": {…}, "signature": "…128 hex…"}]}"#)
    ),
    route!(
        get,
        "/blobs/{sha256}",
        workers::blob,
        Scope(Work),
        "The base model, or an adapter a lease of the caller's worker needs, by sha256",
        None
    ),
    route!(
        get,
        "/audit-secrets",
        workers::audit_secrets,
        Public,
        "Each day's commitment to the secret that picks audited matches; the secret once the day is over",
        None
    ),
    route!(
        delete,
        "/workers/{id}",
        workers::leave,
        Scope(Work),
        "Leave: no new leases; the stake comes back after the escrow window",
        None
    ),
    route!(
        get,
        "/battles",
        votes::battle,
        Scope(Vote),
        "A battle to vote on: a signed single-use ballot, the prompt and two nameless answers (?space=SLUG); 204 when none is left",
        None
    ),
    route!(
        post,
        "/votes",
        votes::vote,
        Scope(Vote),
        "Vote on a ballot (a, b, tie, bad or skip): 201 with the reveal — the agents, the judge's call, the crowd, whether the vote counts and why not",
        Some(r#"{"ballot": "…", "choice": "a"}"#)
    ),
    route!(
        post,
        "/reports",
        votes::report,
        Scope(Vote),
        "Report the answers of a battle you voted on (abuse or personal_data)",
        Some(r#"{"vote": "…uuid…", "reason": "abuse"}"#)
    ),
    route!(
        get,
        "/spaces/{slug}/audit",
        votes::audit,
        Scope(Design),
        "The Space's judge against people on the audit share: agreement with intervals, κ, confusion, per-agent gaps, disagreements (its designer and admins)",
        None
    ),
    route!(
        get,
        "/votes/integrity",
        votes::integrity,
        Scope(Admin),
        "Votes excluded by reason and day, flagged and unreliable voters, gold accuracy, reports (admins)",
        None
    ),
];

/// Mounts the API (under `/api/v1`) and its documents.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let mut scope = web::scope("/api/v1")
        .app_data(error::json_config())
        .app_data(error::query_config())
        .app_data(error::path_config())
        .app_data(adapters::form_config())
        .route("/openapi.json", web::get().to(openapi_json));
    for r in API {
        let route = match r.access {
            Public => (r.route)(),
            // The caller and the scope are checked before the handler's
            // other extractors run: a stranger's bad body is a 401/403,
            // not a 422 about the body.
            Scope(name) => {
                (r.route)().wrap(actix_web::middleware::from_fn(move |req, next| auth::require_scope(name, req, next)))
            }
        };
        scope = scope.route(r.path, route);
    }
    scope = scope
        .default_service(web::to(|| async { Err::<HttpResponse, _>(error::ApiError::NotFound("API route".into())) }));
    cfg.service(scope).route("/api/docs", web::get().to(docs_page));
    pages::configure(cfg);
}

/// The OpenAPI 3.1 document for `API`.
pub fn openapi() -> serde_json::Value {
    let mut paths = serde_json::Map::new();
    for r in API {
        let params: Vec<serde_json::Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| serde_json::json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = serde_json::json!({
            "summary": r.summary,
            "parameters": params,
            "responses": {
                "200": {"description": "success"},
                "4XX": {"description": "an error: {\"error\": {\"code\", \"message\", \"field\"?}}",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        if let Access::Scope(scope) = r.access {
            let scope = scope.as_str();
            op["security"] = serde_json::json!([{"session": [scope]}, {"token": [scope]}]);
            op["x-scope"] = serde_json::json!(scope);
        }
        if let Some(example) = r.body {
            op["requestBody"] = serde_json::json!({
                "required": true,
                "content": {"application/json": {"schema": {"type": "object"}, "example": example}},
            });
        }
        let path = format!("/api/v1{}", r.path);
        let entry = paths.entry(path).or_insert_with(|| serde_json::json!({}));
        entry[r.method] = op;
    }
    serde_json::json!({
        "openapi": "3.1.0",
        "info": {"title": "Arena API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Spaces, agents, matches, ledger and preference pairs. Errors carry a stable `code`: invalid_input, unauthenticated, bad_credentials, forbidden, not_found, conflict, insufficient_funds, rate_limited, over_capacity, bad_payload, unsupported_media_type, internal."},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": auth::SESSION_COOKIE},
                "token": {"type": "http", "scheme": "bearer"},
            },
            "schemas": {"Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}}}}}},
        },
    })
}

async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(openapi())
}

/// A small, self-contained page that renders the OpenAPI document (no CDN).
async fn docs_page() -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(include_str!("../../../web/static/api-docs.html"))
}
