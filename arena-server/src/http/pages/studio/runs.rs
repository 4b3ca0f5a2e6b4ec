//! The studio's runs from the editor: a dry run of the draft (sample
//! matches between baseline agents and the designer's own on the real
//! runtime, judged by the draft's judge) and a red team (`judge calibrate`
//! on the draft); the designer watches either at `/studio/dry-runs/{id}`.
//! `work::studio` runs them and `Context::studio_runs` keeps them; these
//! pages start them and read them. Nothing is published, paid or stored.

use super::editor::lf;
use super::{base_files, editor_again};
use crate::context::studio_runs::{Outcome, RunRefused, RunView};
use crate::domain::space::Space;
use crate::domain::user::Scope;
use crate::http::pages::extract::csrf_token;
use crate::http::pages::{Chrome, Ctx, Designer, Form, PageError, Upload, render, see_other};
use crate::work::{dry_run, studio};
use actix_multipart::form::{MultipartForm, bytes::Bytes, text::Text};
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;

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

/// The red-team form: the draft (as the editor's form sends it, multipart),
/// a built-in corpus and/or the designer's own cases.
#[derive(MultipartForm)]
pub struct RedTeamForm {
    csrf: Text<String>,
    source: Text<String>,
    base: Text<String>,
    corpus: Option<Text<String>>,
    #[multipart(limit = "2MiB")]
    cases: Option<Bytes>,
}

csrf_token!(text: DryRunForm);
csrf_token!(multipart: RedTeamForm);

impl From<RunRefused> for PageError {
    fn from(refused: RunRefused) -> PageError {
        PageError::BadForm(refused.to_string())
    }
}

/// POST /studio/dry-run — starts sample matches of the draft between
/// baseline agents on the real runtime (the playground's engine) and the
/// Space's judge, and sends the designer to watch them
/// (`/studio/dry-runs/{id}`); nothing is published, paid or stored. An
/// invalid draft is refused with its errors; one dry run per designer at
/// a time.
pub async fn dry_run(state: Ctx, user: Designer, Form(form): Form<DryRunForm>) -> Result<HttpResponse, PageError> {
    let caller = &user.caller;
    caller.write(&state, Scope::Design).await?;
    let files = base_files(&state, caller, &form.base).await?;
    let n = form.sample_matches.unwrap_or(4).clamp(1, dry_run::MAX_MATCHES);
    let Ok(space) = Space::parse(&form.source, &files, Path::new(".")) else {
        let why = "the draft has errors: fix them before a dry run".to_owned();
        return editor_again(&state, &user, &form.base, form.source, &files, why).await;
    };
    if space.judge.model.is_some() {
        return Err(PageError::BadForm("a dry run uses the server's model: remove judge.model first".to_owned()));
    }
    let picks: Vec<crate::domain::AgentId> =
        [&form.agent_1, &form.agent_2].iter().filter_map(|pick| pick.trim().parse().ok()).collect();
    let own = studio::own_seats(&state, caller.user_id, &picks)
        .await
        .map_err(PageError::internal)?
        .ok_or(PageError::NotFound)?;
    let id = studio::start_dry_run(&state, caller.user_id, &form.base, space, n, dry_run::seats(own))?;
    Ok(see_other(&format!("/studio/dry-runs/{id}")))
}

/// The built-in red-team corpora (`spaces/redteam/`), by example.
pub(super) const CORPORA: &[(&str, &str)] = &[
    ("arithmetic", include_str!("../../../../../spaces/redteam/arithmetic.jsonl")),
    ("explain", include_str!("../../../../../spaces/redteam/explain.jsonl")),
    ("json-contact", include_str!("../../../../../spaces/redteam/json-contact.jsonl")),
];

/// Cases one red-team run may hold.
pub const MAX_CASES: usize = 400;

/// POST /studio/red-team — runs `judge calibrate` on the draft: the chosen
/// built-in corpus and the uploaded cases, under every defence setting;
/// the designer watches it at `/studio/dry-runs/{id}`. Nothing is stored.
pub async fn red_team(
    state: Ctx,
    user: Designer,
    Upload(form): Upload<RedTeamForm>,
) -> Result<HttpResponse, PageError> {
    let caller = &user.caller;
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
        cases.extend(
            judge::calibrate::parse_cases(text, &name, MAX_CASES).map_err(|e| PageError::BadForm(e.to_string()))?,
        );
    }
    if let Some(upload) = form.cases.filter(|b| !b.data.is_empty()) {
        let text = std::str::from_utf8(&upload.data)
            .map_err(|_| PageError::BadForm("the cases file is not UTF-8".to_owned()))?;
        cases.extend(
            judge::calibrate::parse_cases(text, "your cases", MAX_CASES)
                .map_err(|e| PageError::BadForm(e.to_string()))?,
        );
    }
    if cases.is_empty() || cases.len() > MAX_CASES {
        return Err(PageError::BadForm(format!("choose a corpus or upload cases (1 to {MAX_CASES})")));
    }
    let id = studio::start_red_team(&state, caller.user_id, &base, space, cases)?;
    Ok(see_other(&format!("/studio/dry-runs/{id}")))
}

#[derive(Template)]
#[template(path = "studio_dry_run.html")]
struct DryRunPage {
    chrome: Chrome,
    base: String,
    name: String,
    report: crate::domain::dry_run::Report,
    rates: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "studio_red_team.html")]
struct RedTeamPage {
    chrome: Chrome,
    base: String,
    name: String,
    report: Arc<judge::calibrate::Report>,
    /// Per family: attack successes under all defences and under none.
    families: Vec<(String, String, String)>,
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
pub async fn dry_run_page(state: Ctx, user: Designer, path: web::Path<uuid::Uuid>) -> Result<HttpResponse, PageError> {
    let id = path.into_inner();
    let RunView { name, base, done, total, note, result, .. } =
        state.studio_runs.get(id, user.caller.user_id).ok_or(PageError::NotFound)?;
    let chrome = user.chrome.clone();
    match result {
        Some(Ok(Outcome::DryRun(report))) => {
            let rates = report
                .summary
                .verifier_pass_rate
                .iter()
                .map(|(k, v)| (k.clone(), format!("{:.0}%", v * 100.0)))
                .collect();
            render(&user.chrome, &DryRunPage { chrome, base, name, report: (*report).clone(), rates })
        }
        Some(Ok(Outcome::RedTeam(report))) => {
            let families = red_team_families(&report);
            render(&user.chrome, &RedTeamPage { chrome, base, name, report, families })
        }
        other => {
            let error = other.and_then(|r| r.err());
            let page = DryRunProgressPage { chrome, id: id.to_string(), name, done, total, note, error };
            render(&user.chrome, &page)
        }
    }
}

/// Per attack family: its successes with every defence on, and with none.
fn red_team_families(report: &judge::calibrate::Report) -> Vec<(String, String, String)> {
    let none = report.configs.get(1);
    let Some(all) = report.configs.first() else { return Vec::new() };
    all.by_attack
        .iter()
        .map(|(family, won, n)| {
            let undefended = none
                .and_then(|c| c.by_attack.iter().find(|f| f.0 == *family))
                .map_or("—".to_owned(), |f| format!("{}/{}", f.1, f.2));
            (family.clone(), format!("{won}/{n}"), undefended)
        })
        .collect()
}

/// GET /studio/dry-runs/{id}/events — Server-Sent Events: `progress`
/// ({done, total}) as matches finish, then `done` (or `problem`).
pub async fn dry_run_events(
    state: Ctx,
    user: Designer,
    path: web::Path<uuid::Uuid>,
) -> Result<HttpResponse, PageError> {
    let id = path.into_inner();
    let owner = user.caller.user_id;
    state.studio_runs.get(id, owner).ok_or(PageError::NotFound)?;
    let runs = state.studio_runs.clone();
    let event =
        |kind: &str, data: serde_json::Value| actix_web::web::Bytes::from(format!("event: {kind}\ndata: {data}\n\n"));
    // One event when the count moves, the last when the run ends (or after
    // ten minutes, whichever is first).
    let body = futures_util::stream::unfold((None::<usize>, false, 0u32), move |(last, ended, mut ticks)| {
        let runs = runs.clone();
        async move {
            if ended || ticks > 1200 {
                return None;
            }
            loop {
                let run = runs.get(id, owner)?;
                if let Some(result) = &run.result {
                    let bytes = match result {
                        Ok(_) => event("done", serde_json::json!({"done": run.done, "total": run.total})),
                        Err(message) => event("problem", serde_json::json!({"message": message})),
                    };
                    return Some((Ok::<_, std::io::Error>(bytes), (Some(run.done), true, ticks)));
                }
                if last != Some(run.done) {
                    let data = serde_json::json!({"done": run.done, "total": run.total, "note": run.note});
                    return Some((Ok(event("progress", data)), (Some(run.done), false, ticks)));
                }
                ticks += 1;
                if ticks > 1200 {
                    return None;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(body))
}
