//! The designers' studio: `/studio` (the designer's Spaces at a glance and
//! new ones from the examples), the editor (`/studio/new`,
//! `/studio/{slug}`: the TOML checked on every change, each error with its
//! line, the rules in words), publishing (the API's own `publish`, so a
//! Space published here is byte-identical to one from the CLI with the same
//! files), versions with a diff between any two (versions that change what
//! players pay or win flagged), a dry run of the draft on the real runtime
//! and judge, and live analytics. Designers and admins only; a Space's
//! pages are its designer's (and admins') alone.

use super::chart::{self, Svg};
use super::{Chrome, PageCtx, PageError, State, Visitor, check_csrf, render, see_other};
use crate::domain::space::Space;
use crate::domain::user::Scope;
use crate::store::analytics::{self, Analytics};
use crate::store::spaces as space_store;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// An example Space: its name, its TOML and the files it names (path, text).
pub type Example = (&'static str, &'static str, &'static [(&'static str, &'static str)]);

/// The examples a new Space starts from.
pub const EXAMPLES: &[Example] = &[
    (
        "arithmetic",
        include_str!("../../../../spaces/arithmetic.toml"),
        &[("prompts/arithmetic.jsonl", include_str!("../../../../spaces/prompts/arithmetic.jsonl"))],
    ),
    ("explain", include_str!("../../../../spaces/explain.toml"), &[]),
    (
        "json-contact",
        include_str!("../../../../spaces/json-contact.toml"),
        &[("schemas/contact.json", include_str!("../../../../spaces/schemas/contact.json"))],
    ),
    (
        "contact-cards",
        include_str!("../../../../spaces/contact-cards.toml"),
        &[("schemas/contact.json", include_str!("../../../../spaces/schemas/contact.json"))],
    ),
];

fn example_files(name: &str) -> Option<(String, BTreeMap<String, String>)> {
    EXAMPLES.iter().find(|(n, _, _)| *n == name).map(|(_, source, files)| {
        ((*source).to_owned(), files.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    })
}

fn may_design(ctx: &PageCtx) -> Result<&crate::http::auth::Caller, PageError> {
    let caller = ctx.caller.as_ref().ok_or(PageError::Forbidden)?;
    if caller.has_scope(Scope::Design) { Ok(caller) } else { Err(PageError::Forbidden) }
}

/// The caller's Space `slug` (an admin's: any); anyone else's is "not found".
async fn own_space(
    state: &State,
    caller: &crate::http::auth::Caller,
    slug: &str,
) -> Result<space_store::SpaceOwner, PageError> {
    space_store::id_and_owner(&state.db, slug)
        .await?
        .filter(|s| s.owner_id == caller.user_id || caller.is_admin())
        .ok_or(PageError::NotFound)
}

/// One error of a draft, placed.
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// The line's text.
    pub text: String,
}

/// A draft checked: its problems, or what its rules mean in words.
pub struct Checked {
    pub problems: Vec<Problem>,
    pub rules: Option<crate::domain::space::RulesInWords>,
    pub name: String,
}

/// Parses a draft against `files`; every error with its line and column.
pub fn check_draft(source: &str, files: &BTreeMap<String, String>) -> Checked {
    let placed = |start: usize, message: String| {
        let start = start.min(source.len());
        let before = &source[..start];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        let text = source.lines().nth(line - 1).unwrap_or_default().to_owned();
        Problem { line, column, message, text }
    };
    if source.len() > judge::files::MAX_SOURCE_BYTES {
        return Checked {
            problems: vec![placed(0, format!("the Space file exceeds {} bytes", judge::files::MAX_SOURCE_BYTES))],
            rules: None,
            name: String::new(),
        };
    }
    match Space::parse(source, files, Path::new(".")) {
        Ok(space) => Checked { problems: Vec::new(), rules: Some(space.rules_in_words()), name: space.name },
        Err(errors) => Checked {
            problems: errors.into_iter().map(|e| placed(e.span.start, e.message)).collect(),
            rules: None,
            name: String::new(),
        },
    }
}

pub struct SpaceLine {
    pub slug: String,
    pub version: i32,
    pub active: bool,
    /// Why the platform paused it (its referee kept failing), if it did.
    pub paused_reason: Option<String>,
    pub settled_24h: i64,
    pub pairs: i64,
    pub decisiveness: String,
}

#[derive(Template)]
#[template(path = "studio.html")]
struct StudioPage {
    chrome: Chrome,
    spaces: Vec<SpaceLine>,
    examples: Vec<&'static str>,
}

/// GET /studio
pub async fn list(state: State, req: HttpRequest, caller: Visitor) -> Result<HttpResponse, PageError> {
    let ctx = PageCtx::new(&req, caller);
    ctx.signed_in(&req)?;
    let caller = may_design(&ctx)?;
    let mut spaces = Vec::new();
    for row in analytics::designer_spaces(&state.db, caller.user_id, caller.is_admin()).await? {
        spaces.push(SpaceLine {
            decisiveness: row.decisiveness.map_or("—".to_owned(), |d| format!("{:.2}", d)),
            slug: row.slug,
            version: row.current_version,
            active: row.active,
            paused_reason: row.paused_reason,
            settled_24h: row.settled_24h,
            pairs: row.pairs,
        });
    }
    let examples = EXAMPLES.iter().map(|e| e.0).collect();
    render(&ctx.chrome, &StudioPage { chrome: ctx.chrome.clone(), spaces, examples })
}

#[derive(Template)]
#[template(path = "studio_editor.html")]
struct EditorPage {
    chrome: Chrome,
    /// The Space being edited, or None for a new one.
    slug: Option<String>,
    /// Where the draft's files come from: "space:SLUG" or "example:NAME".
    base: String,
    source: String,
    files: Vec<String>,
    checked: Checked,
    publish_error: Option<String>,
    /// The built-in red-team corpora's names.
    corpora: Vec<&'static str>,
    /// The designer's own agents (id, name), to seat in a dry run.
    agents: Vec<(String, String)>,
}

async fn own_agents(state: &State, caller: &crate::http::auth::Caller) -> Result<Vec<(String, String)>, PageError> {
    Ok(crate::store::agents::names_of_owner(&state.db, caller.user_id)
        .await?
        .into_iter()
        .map(|(id, name)| (id.to_string(), name))
        .collect())
}

fn corpora() -> Vec<&'static str> {
    CORPORA.iter().map(|c| c.0).collect()
}

#[derive(Template)]
#[template(path = "partials/studio_check.html")]
struct CheckFragment {
    checked: Checked,
}

#[derive(Deserialize)]
pub struct NewQuery {
    #[serde(default)]
    example: Option<String>,
}

/// GET /studio/new?example=NAME — the editor on a copy of an example.
pub async fn new_page(
    state: State,
    req: HttpRequest,
    caller: Visitor,
    query: web::Query<NewQuery>,
) -> Result<HttpResponse, PageError> {
    let ctx = PageCtx::new(&req, caller);
    ctx.signed_in(&req)?;
    let caller = may_design(&ctx)?;
    let name = query.example.as_deref().unwrap_or("arithmetic");
    let (source, files) = example_files(name).ok_or(PageError::NotFound)?;
    let checked = check_draft(&source, &files);
    render(
        &ctx.chrome,
        &EditorPage {
            chrome: ctx.chrome.clone(),
            slug: None,
            base: format!("example:{name}"),
            source,
            files: files.keys().cloned().collect(),
            checked,
            publish_error: None,
            corpora: corpora(),
            agents: own_agents(&state, caller).await?,
        },
    )
}

/// The files a draft is checked and published with: the current version's
/// of the designer's own Space, or an example's.
async fn base_files(
    state: &State,
    caller: &crate::http::auth::Caller,
    base: &str,
) -> Result<BTreeMap<String, String>, PageError> {
    if let Some(name) = base.strip_prefix("example:") {
        return example_files(name).map(|(_, f)| f).ok_or(PageError::NotFound);
    }
    if let Some(slug) = base.strip_prefix("space:") {
        let space = own_space(state, caller, slug).await?;
        let current = space_store::current_version(&state.db, space.id).await?;
        let version = space_store::version(&state.db, space.id, current).await?.ok_or(PageError::NotFound)?;
        return Ok(serde_json::from_value(version.files).unwrap_or_default());
    }
    Ok(BTreeMap::new())
}

/// GET /studio/{slug} — the editor on the Space's current version.
pub async fn editor(
    state: State,
    req: HttpRequest,
    caller: Visitor,
    slug: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let ctx = PageCtx::new(&req, caller);
    ctx.signed_in(&req)?;
    let caller = may_design(&ctx)?;
    let space = own_space(&state, caller, &slug).await?;
    let current = space_store::current_version(&state.db, space.id).await?;
    let version = space_store::version(&state.db, space.id, current).await?.ok_or(PageError::NotFound)?;
    let files: BTreeMap<String, String> = serde_json::from_value(version.files).unwrap_or_default();
    let checked = check_draft(&version.source, &files);
    render(
        &ctx.chrome,
        &EditorPage {
            chrome: ctx.chrome.clone(),
            slug: Some(slug.clone()),
            base: format!("space:{slug}"),
            source: version.source,
            files: files.keys().cloned().collect(),
            checked,
            publish_error: None,
            corpora: corpora(),
            agents: own_agents(&state, caller).await?,
        },
    )
}

#[derive(Deserialize)]
pub struct DraftForm {
    #[serde(default)]
    csrf: String,
    #[serde(default, deserialize_with = "lf")]
    source: String,
    #[serde(default)]
    base: String,
}

/// A textarea's text as the file it stands for: browsers send its line
/// ends as CRLF, a file from the CLI has LF, and the same Space must hash
/// the same from either.
fn lf<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(String::deserialize(d)?.replace("\r\n", "\n"))
}

/// Live checks one designer may ask for per minute.
pub const CHECKS_PER_MINUTE: u32 = 240;

/// POST /studio/check — the draft's problems or its rules (a fragment for
/// the editor's live check).
pub async fn check(
    state: State,
    req: HttpRequest,
    caller: Visitor,
    form: web::Form<DraftForm>,
) -> Result<HttpResponse, PageError> {
    check_csrf(&req, &form.csrf)?;
    let ctx = PageCtx::new(&req, caller);
    ctx.signed_in(&req)?;
    let caller = may_design(&ctx)?;
    // Parsing is CPU work a keystroke asks for: bounded per designer.
    crate::http::auth::count_attempt(&state, &format!("studio-check:{}", caller.user_id), CHECKS_PER_MINUTE).await?;
    let files = base_files(&state, caller, &form.base).await?;
    let source = form.source.clone();
    let checked =
        tokio::task::spawn_blocking(move || check_draft(&source, &files)).await.map_err(PageError::internal)?;
    let html = CheckFragment { checked }.render().map_err(PageError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(html))
}

/// POST /studio/publish — publishes the draft (a new Space, or the next
/// version of the designer's own) with its base's files.
pub async fn publish(
    state: State,
    req: HttpRequest,
    caller: Visitor,
    form: web::Form<DraftForm>,
) -> Result<HttpResponse, PageError> {
    check_csrf(&req, &form.csrf)?;
    let ctx = PageCtx::new(&req, caller);
    ctx.signed_in(&req)?;
    let caller = may_design(&ctx)?;
    let files = base_files(&state, caller, &form.base).await?;
    let published = async {
        caller.write(&state, Scope::Design).await?;
        Ok::<_, crate::http::error::ApiError>(
            space_store::publish(&state.db, caller.publisher(state.settings.storage_quota_bytes), &form.source, &files)
                .await?,
        )
    }
    .await;
    match published {
        Ok(p) => Ok(see_other(&format!("/studio/{}/versions", p.slug))),
        Err(err) => {
            let why = super::FormError::from_api(err)?;
            let checked = check_draft(&form.source, &files);
            let page = EditorPage {
                chrome: ctx.chrome.clone(),
                slug: form.base.strip_prefix("space:").map(str::to_owned),
                base: form.base.clone(),
                source: form.source.clone(),
                files: files.keys().cloned().collect(),
                checked,
                publish_error: Some(why.message),
                corpora: corpora(),
                agents: own_agents(&state, caller).await?,
            };
            super::render_with(actix_web::http::StatusCode::UNPROCESSABLE_ENTITY, &ctx.chrome, &page)
        }
    }
}

/// The file form: a path inside the Space (as its TOML names it) and the
/// file's text; sizes are capped by the multipart limits and then by the
/// Space's own limits at publish.
#[derive(actix_multipart::form::MultipartForm)]
pub struct FileForm {
    csrf: actix_multipart::form::text::Text<String>,
    path: actix_multipart::form::text::Text<String>,
    #[multipart(limit = "16MiB")]
    file: actix_multipart::form::bytes::Bytes,
}

/// The new-Space file form: the draft (kept in step with the editor by
/// arena.js; without script it is the text the page was rendered with),
/// its base, and one file to publish beside it.
#[derive(actix_multipart::form::MultipartForm)]
pub struct NewFileForm {
    csrf: actix_multipart::form::text::Text<String>,
    source: actix_multipart::form::text::Text<String>,
    base: actix_multipart::form::text::Text<String>,
    path: actix_multipart::form::text::Text<String>,
    #[multipart(limit = "16MiB")]
    file: actix_multipart::form::bytes::Bytes,
}

/// POST /studio/new/files — publishes a new Space from the draft with one
/// uploaded file beside the base's files (a prompt file or schema the
/// draft names), so a Space whose TOML names its own file can be published
/// from the browser the first time.
pub async fn publish_with_file(
    state: State,
    req: HttpRequest,
    caller: Visitor,
    form: actix_multipart::form::MultipartForm<NewFileForm>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    check_csrf(&req, &form.csrf)?;
    let ctx = PageCtx::new(&req, caller);
    ctx.signed_in(&req)?;
    let caller = may_design(&ctx)?;
    let base = form.base.into_inner();
    let source = form.source.into_inner().replace("\r\n", "\n");
    let mut files = base_files(&state, caller, &base).await?;
    let path = form.path.into_inner().trim().to_owned();
    let done = async {
        judge::files::check_name(&path).map_err(|e| crate::http::error::ApiError::invalid("path", e))?;
        let text = String::from_utf8(form.file.data.to_vec())
            .map_err(|_| crate::http::error::ApiError::invalid("file", "the file is not UTF-8 text"))?;
        files.insert(path.clone(), text.replace("\r\n", "\n"));
        caller.write(&state, Scope::Design).await?;
        Ok::<_, crate::http::error::ApiError>(
            space_store::publish(&state.db, caller.publisher(state.settings.storage_quota_bytes), &source, &files)
                .await?,
        )
    }
    .await;
    match done {
        Ok(p) => Ok(see_other(&format!("/studio/{}/versions", p.slug))),
        Err(err) => {
            let why = super::FormError::from_api(err)?;
            let page = EditorPage {
                chrome: ctx.chrome.clone(),
                slug: base.strip_prefix("space:").map(str::to_owned),
                checked: check_draft(&source, &files),
                base,
                source,
                files: files.keys().cloned().collect(),
                publish_error: Some(format!(
                    "{}: {}",
                    if why.field.is_empty() { "file" } else { &why.field },
                    why.message
                )),
                corpora: corpora(),
                agents: own_agents(&state, caller).await?,
            };
            super::render_with(actix_web::http::StatusCode::UNPROCESSABLE_ENTITY, &ctx.chrome, &page)
        }
    }
}

/// POST /studio/{slug}/files — publishes the next version of the designer's
/// Space with `path` added or replaced by the uploaded text (the current
/// version's TOML and other files unchanged), as `arena space publish`
/// would with that file on disk. A name outside the Space or text that is
/// not UTF-8 is refused and changes nothing.
pub async fn upload_file(
    state: State,
    req: HttpRequest,
    caller: Visitor,
    slug: web::Path<String>,
    form: actix_multipart::form::MultipartForm<FileForm>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    check_csrf(&req, &form.csrf)?;
    let ctx = PageCtx::new(&req, caller);
    ctx.signed_in(&req)?;
    let caller = may_design(&ctx)?;
    let space = own_space(&state, caller, &slug).await?;
    let current = space_store::current_version(&state.db, space.id).await?;
    let version = space_store::version(&state.db, space.id, current).await?.ok_or(PageError::NotFound)?;
    let mut files: BTreeMap<String, String> = serde_json::from_value(version.files).unwrap_or_default();
    let path = form.path.into_inner().trim().to_owned();
    let done = async {
        judge::files::check_name(&path).map_err(|e| crate::http::error::ApiError::invalid("path", e))?;
        let text = String::from_utf8(form.file.data.to_vec())
            .map_err(|_| crate::http::error::ApiError::invalid("file", "the file is not UTF-8 text"))?;
        files.insert(path.clone(), text.replace("\r\n", "\n"));
        caller.write(&state, Scope::Design).await?;
        Ok::<_, crate::http::error::ApiError>(
            space_store::publish(
                &state.db,
                caller.publisher(state.settings.storage_quota_bytes),
                &version.source,
                &files,
            )
            .await?,
        )
    }
    .await;
    match done {
        Ok(p) => Ok(see_other(&format!("/studio/{}/versions", p.slug))),
        Err(err) => {
            let why = super::FormError::from_api(err)?;
            let page = EditorPage {
                chrome: ctx.chrome.clone(),
                slug: Some(slug.to_string()),
                base: format!("space:{slug}"),
                checked: check_draft(&version.source, &files),
                source: version.source,
                files: files.keys().cloned().collect(),
                publish_error: Some(format!(
                    "{}: {}",
                    if why.field.is_empty() { "file" } else { &why.field },
                    why.message
                )),
                corpora: corpora(),
                agents: own_agents(&state, caller).await?,
            };
            super::render_with(actix_web::http::StatusCode::UNPROCESSABLE_ENTITY, &ctx.chrome, &page)
        }
    }
}

/// One line of a diff.
#[derive(Debug, Clone)]
pub struct DiffLine {
    /// ' ' (unchanged), '+', '-', '~' (unchanged lines folded, a note) or
    /// '!' (a part too large to diff, a note).
    pub op: char,
    pub text: String,
}

/// A line diff of `a` to `b` (longest common subsequence; sources are
/// capped in size, so the table stays small).
pub fn diff_lines(a: &str, b: &str) -> Vec<DiffLine> {
    let (x, y): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    // What the two share at either end costs nothing to diff.
    let head = x.iter().zip(&y).take_while(|(p, q)| p == q).count();
    let tail = x[head..].iter().rev().zip(y[head..].iter().rev()).take_while(|(p, q)| p == q).count();
    let (mx, my) = (&x[head..x.len() - tail], &y[head..y.len() - tail]);
    let (n, m) = (mx.len(), my.len());
    let mut out: Vec<DiffLine> = x[..head].iter().map(|t| DiffLine { op: ' ', text: (*t).to_owned() }).collect();
    if n.saturating_mul(m) > MAX_DIFF_CELLS {
        out.push(DiffLine {
            op: '!',
            text: format!("{n} lines against {m} differ here: too large to diff line by line"),
        });
    } else {
        let mut lcs = vec![vec![0u32; m + 1]; n + 1];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[i][j] = if mx[i] == my[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n || j < m {
            if i < n && j < m && mx[i] == my[j] {
                out.push(DiffLine { op: ' ', text: mx[i].to_owned() });
                i += 1;
                j += 1;
            } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
                // What went out before what came in.
                out.push(DiffLine { op: '-', text: mx[i].to_owned() });
                i += 1;
            } else {
                out.push(DiffLine { op: '+', text: my[j].to_owned() });
                j += 1;
            }
        }
    }
    out.extend(x[x.len() - tail..].iter().map(|t| DiffLine { op: ' ', text: (*t).to_owned() }));
    if out.len() > MAX_DIFF_LINES { fold(out) } else { out }
}

/// Lines a diff shows at most: past it, unchanged runs keep three lines of
/// context each side, and what is still too long is cut with a note.
pub const MAX_DIFF_LINES: usize = 2_000;

fn fold(lines: Vec<DiffLine>) -> Vec<DiffLine> {
    const CONTEXT: usize = 3;
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let run = lines[i..].iter().take_while(|l| l.op == ' ').count();
        if run > 2 * CONTEXT + 1 {
            let keep_head = if i == 0 { 0 } else { CONTEXT };
            let keep_tail = if i + run == lines.len() { 0 } else { CONTEXT };
            out.extend(lines[i..i + keep_head].iter().cloned());
            out.push(DiffLine { op: '~', text: format!("… {} unchanged lines", run - keep_head - keep_tail) });
            out.extend(lines[i + run - keep_tail..i + run].iter().cloned());
            i += run;
        } else {
            out.push(lines[i].clone());
            i += 1;
        }
    }
    if out.len() > MAX_DIFF_LINES {
        let cut = out.len() - MAX_DIFF_LINES;
        out.truncate(MAX_DIFF_LINES);
        out.push(DiffLine { op: '~', text: format!("… {cut} more lines of changes not shown") });
    }
    out
}

/// Cells (changed lines of one side × of the other) a diff may compute: a
/// few megabytes and milliseconds; beyond, the page says the change is too
/// large to diff.
pub const MAX_DIFF_CELLS: usize = 4_000_000;

/// The files a version added, removed or changed against the one before:
/// part of the terms players agree to, as the Space file is.
pub fn file_changes(before: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (name, text) in now {
        match before.get(name) {
            None => out.push(format!("file {name} added")),
            Some(old) if old != text => out.push(format!("file {name} changed")),
            _ => {}
        }
    }
    out.extend(before.keys().filter(|n| !now.contains_key(*n)).map(|n| format!("file {n} removed")));
    out
}

/// What changed between two versions that players pay or win by: the
/// fee, the payout, the match size, the hard checks. Empty: nothing.
pub fn money_changes(a: &Space, b: &Space) -> Vec<String> {
    let mut out = Vec::new();
    if a.entry_fee != b.entry_fee {
        out.push(format!("entry fee {} → {}", a.entry_fee, b.entry_fee));
    }
    if a.payout != b.payout {
        out.push("payout".to_owned());
    }
    if a.agents_per_match != b.agents_per_match {
        out.push(format!("agents per match {} → {}", a.agents_per_match, b.agents_per_match));
    }
    let hard = |s: &Space| -> Vec<String> {
        s.judge.verifiers.iter().filter(|v| v.hard).map(|v| format!("{} ({})", v.name, v.kind_name())).collect()
    };
    if hard(a) != hard(b) {
        out.push("hard checks".to_owned());
    }
    out
}

pub struct VersionRow {
    pub version: i32,
    pub sha256: String,
    pub when: String,
    /// What it changed that players pay or win by, against the version before.
    pub money: Vec<String>,
}

#[derive(Template)]
#[template(path = "studio_versions.html")]
struct VersionsPage {
    chrome: Chrome,
    slug: String,
    versions: Vec<VersionRow>,
    a: i32,
    b: i32,
    diff: Vec<DiffLine>,
}

#[derive(Deserialize)]
pub struct DiffQuery {
    #[serde(default)]
    a: Option<i32>,
    #[serde(default)]
    b: Option<i32>,
}

/// GET /studio/{slug}/versions?a=N&b=M — the versions, and the diff of two.
pub async fn versions(
    state: State,
    req: HttpRequest,
    caller: Visitor,
    slug: web::Path<String>,
    query: web::Query<DiffQuery>,
) -> Result<HttpResponse, PageError> {
    let ctx = PageCtx::new(&req, caller);
    ctx.signed_in(&req)?;
    let caller = may_design(&ctx)?;
    let space = own_space(&state, caller, &slug).await?;
    let lines = space_store::versions(&state.db, space.id).await?;
    let newest = lines.first().map_or(1, |l| l.version);
    let b = query.b.unwrap_or(newest);
    let a = query.a.unwrap_or((b - 1).max(1));
    let mut parsed: BTreeMap<i32, Option<Space>> = BTreeMap::new();
    let mut sources: BTreeMap<i32, String> = BTreeMap::new();
    let mut all_files: BTreeMap<i32, BTreeMap<String, String>> = BTreeMap::new();
    for l in &lines {
        if let Some(v) = space_store::version(&state.db, space.id, l.version).await? {
            let files: BTreeMap<String, String> = serde_json::from_value(v.files).unwrap_or_default();
            parsed.insert(l.version, Space::parse(&v.source, &files, Path::new(".")).ok());
            sources.insert(l.version, v.source);
            all_files.insert(l.version, files);
        }
    }
    let versions = lines
        .iter()
        .map(|l| VersionRow {
            version: l.version,
            sha256: l.sha256.clone(),
            when: super::when(&l.created_at),
            money: {
                let mut changes = match (parsed.get(&(l.version - 1)), parsed.get(&l.version)) {
                    (Some(Some(before)), Some(Some(now))) => money_changes(before, now),
                    _ => Vec::new(),
                };
                if let (Some(before), Some(now)) = (all_files.get(&(l.version - 1)), all_files.get(&l.version)) {
                    changes.extend(file_changes(before, now));
                }
                changes
            },
        })
        .collect();
    let (from, to) = (sources.get(&a).ok_or(PageError::NotFound)?, sources.get(&b).ok_or(PageError::NotFound)?);
    // A diff is CPU work bounded by `MAX_DIFF_CELLS`: off the request thread.
    let (from, to) = (from.clone(), to.clone());
    let diff = tokio::task::spawn_blocking(move || diff_lines(&from, &to)).await.map_err(PageError::internal)?;
    render(&ctx.chrome, &VersionsPage { chrome: ctx.chrome.clone(), slug: slug.into_inner(), versions, a, b, diff })
}

#[derive(Template)]
#[template(path = "studio_analytics.html")]
struct AnalyticsPage {
    chrome: Chrome,
    slug: String,
    a: Analytics,
    per_hour: Svg,
    pass_rates: Svg,
    /// A line per verifier (guards left out): its pass rate hour by hour.
    over_time: Vec<Svg>,
}

/// GET /studio/{slug}/analytics
pub async fn analytics_page(
    state: State,
    req: HttpRequest,
    caller: Visitor,
    slug: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let ctx = PageCtx::new(&req, caller);
    ctx.signed_in(&req)?;
    let caller = may_design(&ctx)?;
    let space = own_space(&state, caller, &slug).await?;
    let a = analytics::of_space(&state.db, space.id).await?;
    let labels: Vec<String> = a.per_hour.iter().map(|(h, _)| h.format("%H").to_string()).collect();
    let counts: Vec<i64> = a.per_hour.iter().map(|(_, n)| *n).collect();
    let per_hour = chart::bars(&format!("Matches settled per hour in {}", slug.as_str()), &labels, &counts);
    let names: Vec<String> = a.verifier_pass_rates.keys().cloned().collect();
    let rates: Vec<i64> = a.verifier_pass_rates.values().map(|r| (r * 100.0).round() as i64).collect();
    let pass_rates = chart::bars("Verifier pass rate (%)", &names, &rates);
    let now = chrono::Utc::now();
    let over_time = a
        .verifier_hourly
        .iter()
        .filter(|(name, _)| !name.starts_with("guard:"))
        .map(|(name, points)| {
            let series = chart::Series {
                name: name.clone(),
                points: points.iter().map(|(h, r)| ((*h - now).num_minutes() as f64 / 60.0, r * 100.0)).collect(),
            };
            chart::lines(&format!("{name}: pass rate (%) by hour"), "hours ago (negative)", &[series])
        })
        .filter(|svg| !svg.is_empty())
        .collect();
    render(
        &ctx.chrome,
        &AnalyticsPage { chrome: ctx.chrome.clone(), slug: slug.into_inner(), a, per_hour, pass_rates, over_time },
    )
}

#[derive(Deserialize)]
pub struct DryRunForm {
    #[serde(default)]
    csrf: String,
    #[serde(default, deserialize_with = "lf")]
    source: String,
    #[serde(default)]
    base: String,
    /// Sample matches (named so as not to shadow the form's own `matches`
    /// method in the browser's DOM).
    #[serde(default)]
    sample_matches: Option<usize>,
    /// Up to two of the designer's own agents to seat beside the baselines.
    #[serde(default)]
    agent_1: String,
    #[serde(default)]
    agent_2: String,
}

#[derive(Template)]
#[template(path = "studio_dry_run.html")]
struct DryRunPage {
    chrome: Chrome,
    base: String,
    name: String,
    report: crate::work::dry_run::Report,
    rates: Vec<(String, String)>,
}

/// POST /studio/dry-run — starts sample matches of the draft between
/// baseline agents on the real runtime (the playground's engine) and the
/// Space's judge, and sends the designer to watch them
/// (`/studio/dry-runs/{id}`); nothing is published, paid or stored. An
/// invalid draft is refused with its errors; one dry run per designer at
/// a time.
pub async fn dry_run(
    state: State,
    req: HttpRequest,
    caller: Visitor,
    form: web::Form<DryRunForm>,
) -> Result<HttpResponse, PageError> {
    check_csrf(&req, &form.csrf)?;
    let ctx = PageCtx::new(&req, caller);
    ctx.signed_in(&req)?;
    let caller = may_design(&ctx)?;
    caller.write(&state, Scope::Design).await?;
    let files = base_files(&state, caller, &form.base).await?;
    let n = form.sample_matches.unwrap_or(4).clamp(1, crate::work::dry_run::MAX_MATCHES);
    let space = match Space::parse(&form.source, &files, Path::new(".")) {
        Ok(space) => space,
        Err(_) => {
            let page = EditorPage {
                chrome: ctx.chrome.clone(),
                slug: form.base.strip_prefix("space:").map(str::to_owned),
                base: form.base.clone(),
                source: form.source.clone(),
                files: files.keys().cloned().collect(),
                checked: check_draft(&form.source, &files),
                publish_error: Some("the draft has errors: fix them before a dry run".to_owned()),
                corpora: corpora(),
                agents: own_agents(&state, caller).await?,
            };
            return super::render_with(actix_web::http::StatusCode::UNPROCESSABLE_ENTITY, &ctx.chrome, &page);
        }
    };
    if space.judge.model.is_some() {
        return Err(PageError::BadForm("a dry run uses the server's model: remove judge.model first".to_owned()));
    }
    let mut own = Vec::new();
    for pick in [&form.agent_1, &form.agent_2] {
        let Ok(agent) = pick.trim().parse::<crate::domain::AgentId>() else { continue };
        let row = crate::store::agents::agent(&state.db, agent)
            .await?
            .filter(|a| a.owner_id == caller.user_id)
            .ok_or(PageError::NotFound)?;
        let version = crate::store::agents::versions(&state.db, agent)
            .await?
            .into_iter()
            .find(|v| v.version == row.current_version)
            .ok_or(PageError::NotFound)?;
        let adapter = match &version.adapter_sha256 {
            Some(sha) => Some(
                crate::store::adapters::materialize(&state.db, &state.data_dir, sha)
                    .await
                    .map_err(PageError::internal)?,
            ),
            None => None,
        };
        own.push(crate::work::dry_run::Seat {
            name: format!("{} v{}", row.name, row.current_version),
            system: version.system_prompt,
            sampling: serde_json::from_value(version.sampling).unwrap_or_default(),
            adapter,
        });
    }
    let seats = crate::work::dry_run::seats(own);
    let (id, slot) = register_run(&state, caller.user_id, &space.name, &form.base, n)?;
    let state = state.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let result = run_dry(&state, space, n, &seats, id)
            .await
            .map_err(|e| crate::domain::shown::without_paths(&format!("{e:#}")));
        finish_run(id, result.map(|r| Outcome::DryRun(std::sync::Arc::new(r))));
    });
    Ok(see_other(&format!("/studio/dry-runs/{id}")))
}

fn finish_run(id: uuid::Uuid, result: Result<Outcome, String>) {
    if let Ok(mut runs) = dry_runs().lock()
        && let Some(run) = runs.get_mut(&id)
    {
        run.result = Some(result);
    }
}

/// Registers a run for `owner` (one running each; the oldest finished
/// dropped beyond `KEPT_DRY_RUNS`) and returns its id with its slot (the
/// process runs `STUDIO_RUNS_AT_ONCE` at once: the next designer is told
/// how long to wait, not queued behind it).
fn register_run(
    state: &State,
    owner: crate::domain::UserId,
    name: &str,
    base: &str,
    total: usize,
) -> Result<(uuid::Uuid, tokio::sync::OwnedSemaphorePermit), PageError> {
    let mut runs = dry_runs().lock().map_err(|_| PageError::internal(anyhow::anyhow!("run registry poisoned")))?;
    if runs.values().any(|r| r.owner == owner && r.result.is_none()) {
        return Err(PageError::BadForm("one dry run or red team at a time: wait for yours to finish".to_owned()));
    }
    let Ok(slot) = state.playground.studio_slots.clone().try_acquire_owned() else {
        // The running runs' own pace says how long they have left.
        let left = runs
            .values()
            .filter(|r| r.result.is_none())
            .map(|r| {
                let per = r.started.elapsed().as_secs_f64() / r.done.max(1) as f64;
                (per * (r.total.saturating_sub(r.done)) as f64).ceil() as u64
            })
            .min()
            .unwrap_or(30)
            .clamp(5, 600);
        return Err(PageError::BadForm(format!(
            "busy: another designer's dry run or red team is running; try again in about {left} s"
        )));
    };
    while runs.len() >= KEPT_DRY_RUNS {
        let Some(oldest) =
            runs.iter().filter(|(_, r)| r.result.is_some()).min_by_key(|(_, r)| r.started).map(|(k, _)| *k)
        else {
            return Err(PageError::BadForm("too many runs are in progress: try again shortly".to_owned()));
        };
        runs.remove(&oldest);
    }
    let id = uuid::Uuid::new_v4();
    runs.insert(
        id,
        DryRunState {
            owner,
            name: name.to_owned(),
            base: base.to_owned(),
            done: 0,
            total,
            started: std::time::Instant::now(),
            note: String::new(),
            result: None,
        },
    );
    Ok((id, slot))
}

/// The built-in red-team corpora (`spaces/redteam/`), by example.
const CORPORA: &[(&str, &str)] = &[
    ("arithmetic", include_str!("../../../../spaces/redteam/arithmetic.jsonl")),
    ("explain", include_str!("../../../../spaces/redteam/explain.jsonl")),
    ("json-contact", include_str!("../../../../spaces/redteam/json-contact.jsonl")),
];

/// Cases one red-team run may hold.
pub const MAX_CASES: usize = 400;

/// Parses red-team cases (JSON Lines, `#` comments allowed); the error
/// names the source and line.
pub fn parse_cases(text: &str, source: &str) -> Result<Vec<judge::calibrate::Case>, String> {
    let mut cases = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if cases.len() == MAX_CASES {
            return Err(format!("{source}: more than {MAX_CASES} cases"));
        }
        cases.push(serde_json::from_str(line).map_err(|e| format!("{source}:{}: {e}", n + 1))?);
    }
    Ok(cases)
}

/// The red-team form: the draft (as the editor's form sends it, multipart),
/// a built-in corpus and/or the designer's own cases.
#[derive(actix_multipart::form::MultipartForm)]
pub struct RedTeamForm {
    csrf: actix_multipart::form::text::Text<String>,
    source: actix_multipart::form::text::Text<String>,
    base: actix_multipart::form::text::Text<String>,
    corpus: Option<actix_multipart::form::text::Text<String>>,
    #[multipart(limit = "2MiB")]
    cases: Option<actix_multipart::form::bytes::Bytes>,
}

/// POST /studio/red-team — runs `judge calibrate` on the draft: the chosen
/// built-in corpus and the uploaded cases, under every defence setting;
/// the designer watches it at `/studio/dry-runs/{id}`. Nothing is stored.
pub async fn red_team(
    state: State,
    req: HttpRequest,
    caller: Visitor,
    form: actix_multipart::form::MultipartForm<RedTeamForm>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    check_csrf(&req, &form.csrf)?;
    let ctx = PageCtx::new(&req, caller);
    ctx.signed_in(&req)?;
    let caller = may_design(&ctx)?;
    caller.write(&state, Scope::Design).await?;
    let base = form.base.into_inner();
    let source = form.source.into_inner().replace("\r\n", "\n");
    let files = base_files(&state, caller, &base).await?;
    let space = Space::parse(&source, &files, Path::new("."))
        .map_err(|_| PageError::BadForm("the draft has errors: fix them before a red team".to_owned()))?;
    if space.judge.model.is_some() {
        return Err(PageError::BadForm("a red team uses the server's model: remove judge.model first".to_owned()));
    }
    let mut cases = Vec::new();
    if let Some(name) = form.corpus.map(|c| c.into_inner()).filter(|c| !c.is_empty()) {
        let (_, text) =
            CORPORA.iter().find(|(n, _)| *n == name).ok_or(PageError::BadForm(format!("no corpus {name:?}")))?;
        cases.extend(parse_cases(text, &name).map_err(PageError::BadForm)?);
    }
    if let Some(upload) = form.cases.filter(|b| !b.data.is_empty()) {
        let text = std::str::from_utf8(&upload.data)
            .map_err(|_| PageError::BadForm("the cases file is not UTF-8".to_owned()))?;
        cases.extend(parse_cases(text, "your cases").map_err(PageError::BadForm)?);
    }
    if cases.is_empty() || cases.len() > MAX_CASES {
        return Err(PageError::BadForm(format!("choose a corpus or upload cases (1 to {MAX_CASES})")));
    }
    let total = judge::calibrate::configurations().len();
    let (id, slot) = register_run(&state, caller.user_id, &space.name, &base, total)?;
    let state = state.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let result = async {
            let model = if space.judge.needs_model() {
                Some(state.playground.judge_model().await.map_err(anyhow::Error::msg)?)
            } else {
                None
            };
            let config = std::sync::Arc::new(space.judge.clone());
            let embedder = judge::Judge::new(config.clone(), model.clone())?
                .with_embedder_for(state.playground.model_path())?
                .embedder;
            let report = tokio::task::spawn_blocking(move || {
                judge::calibrate::run(config, model, embedder, &cases, |line| {
                    if let Ok(mut runs) = dry_runs().lock()
                        && let Some(run) = runs.get_mut(&id)
                    {
                        run.done += 1;
                        run.note = line.to_owned();
                    }
                })
            })
            .await??;
            anyhow::Ok(report)
        }
        .await
        .map_err(|e| crate::domain::shown::without_paths(&format!("{e:#}")));
        finish_run(id, result.map(|r| Outcome::RedTeam(std::sync::Arc::new(r))));
    });
    Ok(see_other(&format!("/studio/dry-runs/{id}")))
}

#[derive(Template)]
#[template(path = "studio_red_team.html")]
struct RedTeamPage {
    chrome: Chrome,
    base: String,
    name: String,
    report: std::sync::Arc<judge::calibrate::Report>,
    /// Per family: attack successes under all defences and under none.
    families: Vec<(String, String, String)>,
}

/// Dry runs one process keeps (finished ones are dropped oldest first).
const KEPT_DRY_RUNS: usize = 32;

/// A dry run in progress or done, in this process's memory (a dry run
/// stores nothing).
struct DryRunState {
    owner: crate::domain::UserId,
    name: String,
    base: String,
    done: usize,
    total: usize,
    started: std::time::Instant,
    /// The last progress line (the red team's per-configuration results).
    note: String,
    result: Option<Result<Outcome, String>>,
}

/// What a finished studio run produced.
#[derive(Clone)]
enum Outcome {
    DryRun(std::sync::Arc<crate::work::dry_run::Report>),
    RedTeam(std::sync::Arc<judge::calibrate::Report>),
}

fn dry_runs() -> &'static std::sync::Mutex<std::collections::HashMap<uuid::Uuid, DryRunState>> {
    static RUNS: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<uuid::Uuid, DryRunState>>> =
        std::sync::OnceLock::new();
    RUNS.get_or_init(Default::default)
}

async fn run_dry(
    state: &State,
    space: Space,
    n: usize,
    seats: &[crate::work::dry_run::Seat],
    id: uuid::Uuid,
) -> anyhow::Result<crate::work::dry_run::Report> {
    use std::sync::Arc;
    let engine = state.playground.studio_engine().await.map_err(anyhow::Error::msg)?;
    let generator = Arc::new(crate::work::generator::EngineGenerator { engine });
    let judge_model = if space.judge.needs_model() {
        Some(state.playground.judge_model().await.map_err(anyhow::Error::msg)?)
    } else {
        None
    };
    let judge = Arc::new(
        judge::Judge::new(Arc::new(space.judge.clone()), judge_model)?
            .with_embedder_for(state.playground.model_path())?,
    );
    crate::work::dry_run::run(&space, generator, judge, n, seats, move |done, _| {
        if let Ok(mut runs) = dry_runs().lock()
            && let Some(run) = runs.get_mut(&id)
        {
            run.done = done;
        }
    })
    .await
}

#[derive(Template)]
#[template(path = "studio_dry_run_progress.html")]
struct DryRunProgressPage {
    chrome: Chrome,
    id: String,
    name: String,
    done: usize,
    total: usize,
    note: String,
    error: Option<String>,
}

/// GET /studio/dry-runs/{id} — the dry run's progress (live), then its report.
pub async fn dry_run_page(
    req: HttpRequest,
    caller: Visitor,
    path: web::Path<uuid::Uuid>,
) -> Result<HttpResponse, PageError> {
    let ctx = PageCtx::new(&req, caller);
    ctx.signed_in(&req)?;
    let caller = may_design(&ctx)?;
    let id = path.into_inner();
    let (name, base, done, total, note, result) = {
        let runs = dry_runs().lock().map_err(|_| PageError::internal(anyhow::anyhow!("dry-run registry poisoned")))?;
        let run = runs.get(&id).filter(|r| r.owner == caller.user_id).ok_or(PageError::NotFound)?;
        (run.name.clone(), run.base.clone(), run.done, run.total, run.note.clone(), run.result.clone())
    };
    match result {
        Some(Ok(Outcome::DryRun(report))) => {
            let rates = report
                .summary
                .verifier_pass_rate
                .iter()
                .map(|(k, v)| (k.clone(), format!("{:.0}%", v * 100.0)))
                .collect();
            render(
                &ctx.chrome,
                &DryRunPage { chrome: ctx.chrome.clone(), base, name, report: (*report).clone(), rates },
            )
        }
        Some(Ok(Outcome::RedTeam(report))) => {
            let none = report.configs.get(1);
            let families = report
                .configs
                .first()
                .map(|all| {
                    all.by_attack
                        .iter()
                        .map(|(family, won, n)| {
                            let undefended = none
                                .and_then(|c| c.by_attack.iter().find(|f| f.0 == *family))
                                .map_or("—".to_owned(), |f| format!("{}/{}", f.1, f.2));
                            (family.clone(), format!("{won}/{n}"), undefended)
                        })
                        .collect()
                })
                .unwrap_or_default();
            render(&ctx.chrome, &RedTeamPage { chrome: ctx.chrome.clone(), base, name, report, families })
        }
        other => render(
            &ctx.chrome,
            &DryRunProgressPage {
                chrome: ctx.chrome.clone(),
                id: id.to_string(),
                name,
                done,
                total,
                note,
                error: other.and_then(|r| r.err()),
            },
        ),
    }
}

/// GET /studio/dry-runs/{id}/events — Server-Sent Events: `progress`
/// ({done, total}) as matches finish, then `done` (or `problem`).
pub async fn dry_run_events(
    req: HttpRequest,
    caller: Visitor,
    path: web::Path<uuid::Uuid>,
) -> Result<HttpResponse, PageError> {
    let ctx = PageCtx::new(&req, caller);
    ctx.signed_in(&req)?;
    let caller = may_design(&ctx)?;
    let id = path.into_inner();
    let owner = caller.user_id;
    {
        let runs = dry_runs().lock().map_err(|_| PageError::internal(anyhow::anyhow!("dry-run registry poisoned")))?;
        runs.get(&id).filter(|r| r.owner == owner).ok_or(PageError::NotFound)?;
    }
    let event =
        |kind: &str, data: serde_json::Value| actix_web::web::Bytes::from(format!("event: {kind}\ndata: {data}\n\n"));
    // One event when the count moves, the last when the run ends (or after
    // ten minutes, whichever is first).
    let body = futures_util::stream::unfold((None::<usize>, false, 0u32), move |(last, ended, mut ticks)| async move {
        if ended || ticks > 1200 {
            return None;
        }
        loop {
            let now = dry_runs().lock().ok().and_then(|runs| {
                runs.get(&id)
                    .map(|r| (r.done, r.total, r.note.clone(), r.result.as_ref().map(|x| x.as_ref().err().cloned())))
            });
            let (done, total, note, finished) = now?;
            if let Some(problem) = finished {
                let bytes = match problem {
                    None => event("done", serde_json::json!({"done": done, "total": total})),
                    Some(message) => event("problem", serde_json::json!({"message": message})),
                };
                return Some((Ok::<_, std::io::Error>(bytes), (Some(done), true, ticks)));
            }
            if last != Some(done) {
                return Some((
                    Ok(event("progress", serde_json::json!({"done": done, "total": total, "note": note}))),
                    (Some(done), false, ticks),
                ));
            }
            ticks += 1;
            if ticks > 1200 {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_of_huge_versions_is_bounded() {
        let a: String = (0..300_000).map(|i| format!("line {i}\n")).collect();
        let b = a.replacen("line 150000\n", "line 150000 changed\n", 1);
        let d = diff_lines(&a, &b);
        assert!(d.len() <= MAX_DIFF_LINES + 1, "{} lines", d.len());
        let changed: Vec<(char, &str)> =
            d.iter().filter(|l| l.op == '+' || l.op == '-').map(|l| (l.op, l.text.as_str())).collect();
        assert_eq!(changed, vec![('-', "line 150000"), ('+', "line 150000 changed")]);
        assert!(d.iter().any(|l| l.op == '~' && l.text.contains("unchanged lines")));
        // Two versions with nothing in common: too large to diff, said so.
        let c: String = (0..300_000).map(|i| format!("other {i}\n")).collect();
        let d = diff_lines(&a, &c);
        assert!(d.len() <= 2 && d.iter().any(|l| l.op == '!' && l.text.contains("too large")), "{:?}", &d[..2]);
    }

    #[test]
    fn the_diff_rebuilds_both_sides() {
        let a = "name = \"x\"\nentry_fee = 10\n\n[payout]\nshares = [1.0]\n";
        let b = "name = \"x\"\nentry_fee = 20\n\n[payout]\nshares = [1.0]\nhouse_cut = 0.1\n";
        let d = diff_lines(a, b);
        let old: Vec<&str> = d.iter().filter(|l| l.op != '+').map(|l| l.text.as_str()).collect();
        let new: Vec<&str> = d.iter().filter(|l| l.op != '-').map(|l| l.text.as_str()).collect();
        assert_eq!(old, a.lines().collect::<Vec<_>>());
        assert_eq!(new, b.lines().collect::<Vec<_>>());
        assert_eq!(d.iter().filter(|l| l.op != ' ').count(), 3, "fee out, fee in, house cut in");
        let fee: Vec<char> = d.iter().filter(|l| l.text.starts_with("entry_fee")).map(|l| l.op).collect();
        assert_eq!(fee, ['-', '+'], "the old line first");
    }

    #[test]
    fn a_drafts_errors_are_placed_on_their_lines() {
        let (source, files) = example_files("arithmetic").unwrap();
        assert!(check_draft(&source, &files).problems.is_empty());
        let broken = source.replacen("agents_per_match = ", "agents_per_match = 99 #", 1);
        let checked = check_draft(&broken, &files);
        let p = checked.problems.first().expect("an error");
        assert!(p.text.contains("agents_per_match"), "{} {}", p.line, p.text);
        assert_eq!(broken.lines().nth(p.line - 1), Some(p.text.as_str()));
        // Without its prompt file the example names the missing file.
        let missing = check_draft(&source, &BTreeMap::new());
        assert!(
            missing.problems.iter().any(|p| p.message.contains("arithmetic.jsonl")),
            "{:?}",
            missing.problems.iter().map(|p| &p.message).collect::<Vec<_>>()
        );
    }
}
