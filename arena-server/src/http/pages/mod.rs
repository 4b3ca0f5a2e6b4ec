//! The web pages: server-rendered askama templates (`web/templates/`), one
//! handler per page calling the same store functions and the same actions
//! (`http::handlers`) as the JSON API — a page adds presentation and bounds
//! the work a view asks for; the rules live in the actions. Handlers ask for
//! who is looking and for their forms through the extractors of `extract`.
//!
//! `PAGES` is the one table of page routes: it mounts them and the
//! authorization matrix test walks it as it walks `http::API`. Every
//! state-changing form carries a CSRF token (double submit: the
//! `arena_csrf` cookie, `SameSite=Strict` and `HttpOnly`, must equal the
//! form's `csrf` field) and must come from this origin. User text is
//! escaped by askama and never marked safe; charts are SVG drawn here from
//! numbers (`chart`), their labels escaped too.

pub mod account;
pub mod agents;
pub mod chart;
pub mod data;
pub mod extract;
pub mod home;
pub mod matches;
pub mod me;
pub mod spaces;
pub mod studio;
pub mod votes;
pub mod workers;

use crate::context::Context;
use crate::domain::user::Role;
use crate::http::auth::{MaybeCaller, Via};

use crate::http::error::ApiError;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, Route, web};
use askama::Template;
pub use extract::{Buyer, Designer, Form, SignedIn, Upload, Visit};

/// The Content-Security-Policy of every answer: scripts, styles and
/// connections from this origin only, no inline script or style, no
/// framing, forms post only here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub const CSRF_COOKIE: &str = "arena_csrf";

/// Who may open a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageAccess {
    /// Anyone (a signed-in viewer may see more).
    Public,
    /// Signed-in users (anyone else is sent to sign in).
    SignedIn,
}

/// One page route: method, path (stable: part of the interface), handler,
/// who may open it, and what it is.
pub struct PageRoute {
    pub method: &'static str,
    pub path: &'static str,
    pub access: PageAccess,
    pub summary: &'static str,
    route: fn() -> Route,
}

macro_rules! page {
    ($method:ident, $path:expr, $handler:path, $access:ident, $summary:expr) => {
        PageRoute {
            method: stringify!($method),
            path: $path,
            access: PageAccess::$access,
            summary: $summary,
            route: || web::$method().to($handler),
        }
    };
}

/// Every page route.
pub const PAGES: &[PageRoute] = &[
    page!(get, "/", home::page, Public, "What Arena is, active Spaces, recent matches, top agents"),
    page!(get, "/signup", account::signup_page, Public, "Sign-up form"),
    page!(post, "/signup", account::signup, Public, "Create a player account and sign in"),
    page!(get, "/signin", account::signin_page, Public, "Sign-in form"),
    page!(post, "/signin", account::signin, Public, "Sign in"),
    page!(post, "/signout", account::signout, Public, "Sign out"),
    page!(get, "/spaces", spaces::list, Public, "Every Space"),
    page!(get, "/spaces/{slug}", spaces::page, Public, "A Space: rules, leaderboard, live and recent matches"),
    page!(get, "/spaces/{slug}/live", spaces::live, Public, "A Space's recent matches (fragment for live updates)"),
    page!(post, "/spaces/{slug}/enter", spaces::enter, SignedIn, "Enter one of your agents into the Space"),
    page!(get, "/matches/{id}", matches::page, Public, "A match: prompt, outputs, verifiers, judge, pairs, ratings"),
    page!(get, "/matches/{id}/live", matches::live, Public, "A match's body (fragment for live updates)"),
    page!(get, "/agents/new", agents::new_page, SignedIn, "The agent builder"),
    page!(post, "/agents/new", agents::create, SignedIn, "Create an agent (with an optional adapter upload)"),
    page!(
        post,
        "/agents/new/playground",
        agents::playground,
        SignedIn,
        "The playground: the builder's settings answer a test prompt, streamed (SSE)"
    ),
    page!(get, "/agents/{id}", agents::page, Public, "An agent: ratings, matches; lineage and training for its owner"),
    page!(post, "/agents/{id}/rollback", agents::rollback, SignedIn, "Make an earlier version current"),
    page!(post, "/agents/{id}/leave", agents::leave, SignedIn, "Withdraw the agent from a Space"),
    page!(post, "/agents/{id}/train", agents::train, SignedIn, "Start a training job"),
    page!(post, "/agents/{id}/version", agents::new_version, SignedIn, "Make a new version (settings, adapter, note)"),
    page!(post, "/agents/{id}/policy", agents::policy, SignedIn, "Set the training policy in a Space"),
    page!(
        post,
        "/agents/{id}/open-workers",
        agents::open_workers,
        SignedIn,
        "Whether open workers may generate the agent's matches"
    ),
    page!(
        get,
        "/workers",
        workers::page,
        SignedIn,
        "Your open workers (an admin's: all): status, audits with reasons, stake, escrow, earnings; how to start one"
    ),
    page!(
        get,
        "/data",
        data::page,
        SignedIn,
        "Preference data for buyers: datasets, a filter with its count, a sample, downloads"
    ),
    page!(
        get,
        "/data/live-count",
        data::live_count,
        SignedIn,
        "The data filter's count and price (fragment for live updates)"
    ),
    page!(post, "/data/exports", data::export, SignedIn, "Buy the selected pairs and queue their export"),
    page!(get, "/data/exports", data::exports, SignedIn, "The buyer's exports: progress, files with hashes, cards"),
    page!(get, "/data/exports/live", data::exports_live, SignedIn, "The exports list (fragment for live updates)"),
    page!(
        get,
        "/data/exports/{id}/files/{name}",
        data::file,
        SignedIn,
        "Download a file of one of the buyer's exports"
    ),
    page!(get, "/studio", studio::list, SignedIn, "The designer's Spaces at a glance; new ones from the examples"),
    page!(get, "/studio/new", studio::editor::new_page, SignedIn, "The editor on a copy of an example (?example=NAME)"),
    page!(
        post,
        "/studio/new/files",
        studio::files::publish_with_file,
        SignedIn,
        "Publish a new Space from the draft with a file beside it"
    ),
    page!(
        post,
        "/studio/check",
        studio::editor::check,
        SignedIn,
        "Check a draft: its errors by line, or its rules in words (fragment)"
    ),
    page!(
        post,
        "/studio/publish",
        studio::editor::publish,
        SignedIn,
        "Publish a draft: a new Space or the next version"
    ),
    page!(
        post,
        "/studio/dry-run",
        studio::runs::dry_run,
        SignedIn,
        "Run sample matches of a draft with baseline agents; nothing published or paid"
    ),
    page!(
        post,
        "/studio/red-team",
        studio::runs::red_team,
        SignedIn,
        "Run the judge's red-team calibration on a draft (built-in and uploaded cases)"
    ),
    page!(
        get,
        "/studio/dry-runs/{id}",
        studio::runs::dry_run_page,
        SignedIn,
        "A dry run's or red team's live progress, then its report"
    ),
    page!(get, "/studio/dry-runs/{id}/events", studio::runs::dry_run_events, SignedIn, "A dry run's progress (SSE)"),
    page!(get, "/studio/{slug}", studio::editor::editor, SignedIn, "The editor on the Space's current version"),
    page!(
        get,
        "/studio/{slug}/versions",
        studio::versions::versions,
        SignedIn,
        "The Space's versions and a diff of any two"
    ),
    page!(
        post,
        "/studio/{slug}/files",
        studio::files::upload_file,
        SignedIn,
        "Publish the next version with a file added or replaced"
    ),
    page!(
        get,
        "/studio/{slug}/analytics",
        studio::analytics::analytics_page,
        SignedIn,
        "The Space's live numbers with charts"
    ),
    page!(
        get,
        "/vote",
        votes::page,
        SignedIn,
        "A battle: two nameless answers to one prompt and five buttons (keys 1–5)"
    ),
    page!(post, "/vote", votes::vote, SignedIn, "Vote on a battle's ballot; the reveal (fragment for htmx)"),
    page!(post, "/vote/report", votes::report, SignedIn, "Report the answers of a battle you voted on"),
    page!(get, "/spaces/{slug}/vote", votes::space_page, SignedIn, "A battle from one Space"),
    page!(
        get,
        "/studio/{slug}/audit",
        votes::audit_page,
        SignedIn,
        "The judge against people: agreement with intervals, κ, confusion, per-agent gaps, disagreements"
    ),
    page!(
        get,
        "/votes/integrity",
        votes::integrity_page,
        SignedIn,
        "Admins: votes excluded by reason and day, flagged voters, gold accuracy, reports"
    ),
    page!(get, "/me", me::page, SignedIn, "Balance, ledger statement, API tokens"),
    page!(post, "/me/tokens", me::create_token, SignedIn, "Create an API token (shown once)"),
    page!(post, "/me/tokens/{id}/revoke", me::revoke_token, SignedIn, "Revoke an API token"),
];

/// Mounts the pages (one resource per path, all its methods) and their
/// static files; any other path outside the API is the 404 page.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let mut paths: Vec<&str> = Vec::new();
    for p in PAGES {
        if !paths.contains(&p.path) {
            paths.push(p.path);
        }
    }
    for path in paths {
        let mut resource = web::resource(path)
            .app_data(form_config())
            .app_data(multipart_config())
            .app_data(path_config())
            .app_data(query_config());
        for p in PAGES.iter().filter(|p| p.path == path) {
            resource = match p.access {
                PageAccess::Public => resource.route((p.route)()),
                // Checked before the body is read: a stranger's upload is
                // never buffered.
                PageAccess::SignedIn => {
                    resource.route((p.route)().wrap(actix_web::middleware::from_fn(require_session)))
                }
            };
        }
        cfg.service(resource);
    }
    cfg.route("/static/{file:.*}", web::get().to(static_file));
    cfg.default_service(web::to(|| async { PageError::NotFound.error_response() }));
}

/// Route middleware of the signed-in pages: a write from another origin is
/// refused, a visitor without a session is sent to sign in — both before
/// the handler reads the request's body.
async fn require_session(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<actix_web::body::BoxBody>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    use actix_web::{FromRequest, HttpMessage};
    if !req.method().is_safe() && crate::http::auth::same_origin(req.request()).is_err() {
        return Ok(req.error_response(PageError::Csrf));
    }
    let caller = MaybeCaller::extract(req.request()).await.ok().and_then(|c| c.0).filter(|c| c.via == Via::Session);
    let Some(caller) = caller else {
        let back = if req.method().is_safe() { req.path().to_owned() } else { "/".to_owned() };
        return Ok(req.error_response(PageError::SignIn(back)));
    };
    // The page's extractors (`SignedIn` and those built on it) read it here.
    req.extensions_mut().insert(caller);
    next.call(req).await
}

fn form_config() -> web::FormConfig {
    // A Space file is the largest form a page sends (the studio's editor).
    web::FormConfig::default()
        .limit(judge::files::MAX_SOURCE_BYTES + 64 * 1024)
        .error_handler(|err, _| PageError::BadForm(format!("the form could not be read: {err}")).into())
}

fn multipart_config() -> actix_multipart::form::MultipartFormConfig {
    let limit = crate::store::adapters::MAX_WEIGHTS_BYTES + crate::store::adapters::MAX_CONFIG_BYTES + 256 * 1024;
    actix_multipart::form::MultipartFormConfig::default()
        .total_limit(limit)
        .memory_limit(limit)
        .error_handler(|err, _| PageError::BadForm(format!("the upload could not be read: {err}")).into())
}

fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|_, _| PageError::NotFound.into())
}

fn query_config() -> web::QueryConfig {
    web::QueryConfig::default()
        .error_handler(|err, _| PageError::BadForm(format!("the address's query could not be read: {err}")).into())
}

/// The files under `web/static/`, built into the binary (no path a request
/// names is ever opened).
const STATIC: &[(&str, &str, &[u8])] = &[
    ("arena.css", "text/css; charset=utf-8", include_bytes!("../../../../web/static/arena.css")),
    ("arena.js", "text/javascript; charset=utf-8", include_bytes!("../../../../web/static/arena.js")),
    (
        "vendor/htmx-2.0.11.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../../web/static/vendor/htmx-2.0.11.min.js"),
    ),
    ("api-docs.css", "text/css; charset=utf-8", include_bytes!("../../../../web/static/api-docs.css")),
    ("api-docs.js", "text/javascript; charset=utf-8", include_bytes!("../../../../web/static/api-docs.js")),
    (
        "vendor/htmx-LICENSE.txt",
        "text/plain; charset=utf-8",
        include_bytes!("../../../../web/static/vendor/htmx-LICENSE.txt"),
    ),
];

async fn static_file(path: web::Path<String>) -> HttpResponse {
    match STATIC.iter().find(|(name, _, _)| *name == path.as_str()) {
        Some((_, mime, bytes)) => {
            HttpResponse::Ok().content_type(*mime).insert_header(("Cache-Control", "public, max-age=3600")).body(*bytes)
        }
        None => PageError::NotFound.error_response(),
    }
}

/// The signed-in user as the pages show them.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub username: String,
    pub role: Role,
}

impl Viewer {
    /// Whether the viewer may design Spaces (the nav's studio link).
    pub fn designs(&self) -> bool {
        self.role.scopes().contains(&crate::domain::user::Scope::Design)
    }
}

/// What every page's frame needs: who is looking, and the form token.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub viewer: Option<Viewer>,
    pub csrf: String,
    /// A CSRF cookie to set with this answer (the first page a browser opens).
    new_csrf: bool,
}

fn random_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Refuses a form post without the matching CSRF token or from another
/// origin. Checked before the form changes anything.
pub fn check_csrf(req: &HttpRequest, sent: &str) -> Result<(), PageError> {
    crate::http::auth::same_origin(req).map_err(|_| PageError::Csrf)?;
    match req.cookie(CSRF_COOKIE) {
        Some(cookie) if !sent.is_empty() && constant_time_eq(cookie.value().as_bytes(), sent.as_bytes()) => Ok(()),
        _ => Err(PageError::Csrf),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn csrf_cookie(value: &str) -> Cookie<'static> {
    Cookie::build(CSRF_COOKIE, value.to_owned())
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .max_age(actix_web::cookie::time::Duration::days(1))
        .finish()
}

/// Renders a page with `status`, setting the CSRF cookie when it is new.
pub fn render_with(status: StatusCode, chrome: &Chrome, page: &impl Template) -> Result<HttpResponse, PageError> {
    let html = page.render().map_err(|e| PageError::internal(anyhow::anyhow!("template: {e}")))?;
    let mut response = HttpResponse::build(status);
    response.content_type("text/html; charset=utf-8").insert_header(("Cache-Control", "no-store"));
    if chrome.new_csrf {
        response.cookie(csrf_cookie(&chrome.csrf));
    }
    Ok(response.body(html))
}

pub fn render(chrome: &Chrome, page: &impl Template) -> Result<HttpResponse, PageError> {
    render_with(StatusCode::OK, chrome, page)
}

/// A redirect after a successful form post (303: the browser GETs `to`).
pub fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header(("Location", to.to_owned())).finish()
}

/// A page that could not be shown. 404 and 403 say nothing of what exists;
/// a 500 shows only an id that the log carries with the cause.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("not found")]
    NotFound,
    #[error("forbidden")]
    Forbidden,
    #[error("sign in first")]
    SignIn(String),
    #[error("the form expired or came from another site")]
    Csrf,
    #[error("{0}")]
    RateLimited(String),
    #[error("{0}")]
    BadForm(String),
    #[error("internal error {0}")]
    Internal(uuid::Uuid),
}

impl PageError {
    pub fn internal(err: impl Into<anyhow::Error>) -> PageError {
        let id = uuid::Uuid::new_v4();
        tracing::error!(request_id = %id, error = ?err.into(), "page failed");
        PageError::Internal(id)
    }
}

impl From<ApiError> for PageError {
    fn from(err: ApiError) -> PageError {
        match err {
            ApiError::NotFound(_) => PageError::NotFound,
            ApiError::Forbidden(_) | ApiError::Unauthenticated => PageError::Forbidden,
            ApiError::RateLimited { .. } | ApiError::OverCapacity(_) => PageError::RateLimited(err.to_string()),
            ApiError::Internal(e) => PageError::internal(e),
            other => PageError::internal(anyhow::anyhow!("unexpected error on a page: {other}")),
        }
    }
}

impl From<sqlx::Error> for PageError {
    fn from(err: sqlx::Error) -> PageError {
        PageError::internal(err)
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    chrome: Chrome,
    title: String,
    message: String,
    request_id: Option<String>,
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            PageError::NotFound => StatusCode::NOT_FOUND,
            PageError::Forbidden | PageError::Csrf => StatusCode::FORBIDDEN,
            PageError::SignIn(_) => StatusCode::SEE_OTHER,
            PageError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            PageError::BadForm(_) => StatusCode::BAD_REQUEST,
            PageError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let PageError::SignIn(back) = self {
            let to =
                format!("/signin?next={}", url::form_urlencoded::byte_serialize(back.as_bytes()).collect::<String>());
            return see_other(&to);
        }
        let (title, message, request_id) = match self {
            PageError::NotFound => ("Not found", "There is nothing here.".to_owned(), None),
            PageError::Forbidden => ("Forbidden", "You may not do this.".to_owned(), None),
            PageError::Csrf => (
                "Form expired",
                "This form expired or was sent from another site. Go back, reload the page and try again.".to_owned(),
                None,
            ),
            PageError::RateLimited(why) => ("Slow down", why.clone(), None),
            PageError::BadForm(why) => ("Bad request", why.clone(), None),
            PageError::Internal(id) => {
                ("Something went wrong", "The server could not show this page.".to_owned(), Some(id.to_string()))
            }
            PageError::SignIn(_) => ("Sign in", String::new(), None),
        };
        // The error page is shown without a viewer: it must not depend on
        // what failed.
        let chrome = Chrome { viewer: None, csrf: String::new(), new_csrf: false };
        let page = ErrorPage { chrome, title: title.to_owned(), message, request_id };
        match page.render() {
            Ok(html) => HttpResponse::build(self.status_code())
                .content_type("text/html; charset=utf-8")
                .insert_header(("Cache-Control", "no-store"))
                .body(html),
            Err(_) => HttpResponse::build(self.status_code()).content_type("text/plain").body(title),
        }
    }
}

/// A form's inline error: the field it belongs to and what to fix.
#[derive(Debug, Clone, Default)]
pub struct FormError {
    pub field: String,
    pub message: String,
}

impl FormError {
    /// The error an action gave, for the form: a person's mistake goes
    /// beside its field; anything else becomes an error page.
    pub fn from_api(err: ApiError) -> Result<FormError, PageError> {
        match err {
            ApiError::Invalid { field, message } | ApiError::Conflict { field, message } => {
                Ok(FormError { field, message })
            }
            ApiError::BadCredentials => Ok(FormError { field: "password".into(), message: err.to_string() }),
            ApiError::RateLimited { .. }
            | ApiError::OverCapacity(_)
            | ApiError::InsufficientFunds(_)
            | ApiError::PaymentRequired(_)
            | ApiError::OverQuota(_)
            | ApiError::Payload(_) => Ok(FormError { field: String::new(), message: err.to_string() }),
            other => Err(other.into()),
        }
    }

    /// The message for `field`, if this error is about it.
    pub fn on(&self, field: &str) -> Option<&str> {
        (self.field == field || self.field.starts_with(&format!("{field}."))).then_some(self.message.as_str())
    }
}

/// Formats a timestamp the way the pages show it.
pub fn when(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The first `n` characters of `text`, with an ellipsis when cut.
pub fn clip(text: &str, n: usize) -> String {
    if text.chars().count() <= n { text.to_owned() } else { text.chars().take(n).collect::<String>() + "…" }
}

/// The shared context, as page handlers get it.
pub type Ctx = web::Data<Context>;
