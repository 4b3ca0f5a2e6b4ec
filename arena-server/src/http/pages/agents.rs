//! The agent builder (`/agents/new`) and an agent's page (`/agents/{id}`):
//! public ratings per Space with their history and recent matches; for the
//! owner also the versions as a lineage, training jobs with their curves
//! and gate, roll back, leave a Space, start a job. Every action is the
//! API's own (`handlers::agents`, `handlers::adapters`, `handlers::training`).

use super::chart::{self, Series, Svg};
use super::extract::csrf_token;
use super::spaces::{Line, match_lines};
use super::{Chrome, Ctx, Form, FormError, PageError, SignedIn, Upload, Visit, render, render_with, see_other, when};
use crate::domain::agent::AgentSampling;
use crate::domain::training::{JobSettings, TrainingPolicy};
use crate::domain::{AgentId, JobId, rating};
use crate::http::error::ApiError;
use crate::http::handlers::{adapters as adapter_actions, agents as agent_actions, training as training_actions};
use crate::store::{agents, matches, training};
use actix_multipart::form::{MultipartForm, bytes::Bytes, text::Text};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

/// What the builder form holds, to show it again with its errors.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Draft {
    pub name: String,
    pub system_prompt: String,
    pub temperature: String,
    pub top_p: String,
    pub top_k: String,
    pub repetition_penalty: String,
    pub seed: String,
    pub stop: String,
}

impl Default for Draft {
    fn default() -> Draft {
        let d = AgentSampling::default();
        Draft {
            name: String::new(),
            system_prompt: String::new(),
            temperature: d.temperature.to_string(),
            top_p: d.top_p.to_string(),
            top_k: d.top_k.to_string(),
            repetition_penalty: d.repetition_penalty.to_string(),
            seed: d.seed.to_string(),
            stop: String::new(),
        }
    }
}

#[derive(Template)]
#[template(path = "agent_new.html")]
struct NewPage {
    chrome: Chrome,
    draft: Draft,
    error: FormError,
}

pub async fn new_page(user: SignedIn) -> Result<HttpResponse, PageError> {
    render(&user.chrome, &NewPage { chrome: user.chrome.clone(), draft: Draft::default(), error: FormError::default() })
}

/// The builder's and the new-version form's multipart body: the
/// settings, and optionally a PEFT adapter's two files (sizes capped by the
/// multipart limits); the builder sends a name, the new-version form a note
/// and may ask to remove the adapter.
#[derive(MultipartForm)]
pub struct AgentForm {
    csrf: Text<String>,
    name: Option<Text<String>>,
    system_prompt: Text<String>,
    temperature: Text<String>,
    top_p: Text<String>,
    top_k: Text<String>,
    repetition_penalty: Text<String>,
    seed: Text<String>,
    stop: Text<String>,
    note: Option<Text<String>>,
    remove_adapter: Option<Text<String>>,
    #[multipart(limit = "64KiB")]
    adapter_config: Option<Bytes>,
    #[multipart(limit = "64MiB")]
    adapter_weights: Option<Bytes>,
}

csrf_token!(multipart: AgentForm);

/// An adapter form's files, when both were sent (an empty file input is none).
type Files = (Option<Bytes>, Option<Bytes>);

impl AgentForm {
    /// The CSRF token, the settings as typed, the note, whether to remove
    /// the adapter, and the adapter's files.
    fn into_parts(self) -> (Draft, String, bool, Files) {
        let draft = Draft {
            name: self.name.map(Text::into_inner).unwrap_or_default(),
            system_prompt: self.system_prompt.into_inner(),
            temperature: self.temperature.into_inner(),
            top_p: self.top_p.into_inner(),
            top_k: self.top_k.into_inner(),
            repetition_penalty: self.repetition_penalty.into_inner(),
            seed: self.seed.into_inner(),
            stop: self.stop.into_inner(),
        };
        let remove = self.remove_adapter.is_some_and(|r| r.as_str() == "on");
        let files =
            (self.adapter_config.filter(|f| !f.data.is_empty()), self.adapter_weights.filter(|f| !f.data.is_empty()));
        (draft, self.note.map(Text::into_inner).unwrap_or_default(), remove, files)
    }
}

/// What a form asks of the adapter: None keeps it (or has none), Some(None)
/// removes it, Some(Some(sha)) is a new one, validated and stored here.
async fn adapter_choice(
    state: &Ctx,
    caller: &crate::http::auth::Caller,
    files: Files,
    remove: bool,
) -> Result<Option<Option<String>>, ApiError> {
    match (files, remove) {
        ((None, None), false) => Ok(None),
        ((None, None), true) => Ok(Some(None)),
        ((Some(config), Some(weights)), false) => {
            let summary = adapter_actions::store_adapter(state, caller, config.data.to_vec(), weights.data.to_vec())
                .await
                .map_err(|e| match e {
                    ApiError::Invalid { message, .. } => ApiError::invalid("adapter", message),
                    other => other,
                })?;
            Ok(Some(summary["sha256"].as_str().map(str::to_owned)))
        }
        (_, true) => Err(ApiError::invalid("adapter", "upload a new adapter or remove the current one, not both")),
        _ => Err(ApiError::invalid(
            "adapter",
            "an adapter is two files: adapter_config.json and adapter_model.safetensors; give both or neither",
        )),
    }
}

fn number<T: std::str::FromStr>(field: &str, text: &str) -> Result<T, ApiError> {
    text.trim()
        .parse()
        .map_err(|_| ApiError::invalid(&format!("sampling.{field}"), format!("{field} must be a number")))
}

fn sampling(form: &Draft) -> Result<AgentSampling, ApiError> {
    Ok(AgentSampling {
        temperature: number("temperature", &form.temperature)?,
        top_p: number("top_p", &form.top_p)?,
        top_k: number("top_k", &form.top_k)?,
        repetition_penalty: number("repetition_penalty", &form.repetition_penalty)?,
        seed: number("seed", &form.seed)?,
        stop: form.stop.lines().map(str::to_owned).filter(|s| !s.is_empty()).collect(),
    })
}

pub async fn create(state: Ctx, user: SignedIn, Upload(form): Upload<AgentForm>) -> Result<HttpResponse, PageError> {
    let (draft, _, _, files) = form.into_parts();
    let caller = &user.caller;
    let made = async {
        let sampling = sampling(&draft)?;
        let adapter = adapter_choice(&state, caller, files, false).await?.flatten();
        let body = agent_actions::NewAgent::new(draft.name.clone(), draft.system_prompt.clone(), sampling, adapter);
        agent_actions::create_agent(&state, caller, body).await
    }
    .await;
    match made {
        Ok(id) => Ok(see_other(&format!("/agents/{id}"))),
        Err(err) => {
            let page = NewPage { chrome: user.chrome.clone(), draft, error: FormError::from_api(err)? };
            render_with(StatusCode::UNPROCESSABLE_ENTITY, &user.chrome, &page)
        }
    }
}

pub struct EntryLine {
    pub space: String,
    pub rating: String,
    pub conservative: String,
    pub matches: i32,
    pub active: bool,
    pub paused: Option<String>,
}

pub struct VersionLine {
    pub version: i32,
    pub current: bool,
    pub parent: Option<i32>,
    pub job: Option<String>,
    pub adapter: Option<String>,
    pub note: String,
    pub system_prompt: String,
    pub created: String,
}

pub struct JobLine {
    pub id: String,
    pub short: String,
    pub space: String,
    pub status: String,
    pub progress: String,
    pub price: i64,
    pub created: String,
    pub gate: Option<String>,
    pub error: Option<String>,
    pub curve: Svg,
    pub rewards: Svg,
}

#[derive(Template)]
#[template(path = "agent.html")]
struct AgentPage {
    chrome: Chrome,
    id: String,
    name: String,
    owner: String,
    current: i32,
    created: String,
    entries: Vec<EntryLine>,
    history: Svg,
    recent: Vec<Line>,
    is_owner: bool,
    versions: Vec<VersionLine>,
    jobs: Vec<JobLine>,
    /// The current version's settings, to edit into a new version.
    draft: Draft,
    has_adapter: bool,
    policies: Vec<PolicyLine>,
    /// Whether open workers may generate its matches.
    open_workers: bool,
    error: FormError,
}

pub struct PolicyLine {
    pub space: String,
    pub every: Option<i32>,
}

fn metric(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

async fn agent_page(state: &Ctx, visit: &Visit, id: AgentId, error: FormError) -> Result<AgentPage, PageError> {
    agent_page_with(state, visit, id, error, None).await
}

/// The page; `typed` is the new-version form as the owner filled it (shown
/// again beside its error instead of the current version's settings).
async fn agent_page_with(
    state: &Ctx,
    visit: &Visit,
    id: AgentId,
    error: FormError,
    typed: Option<Draft>,
) -> Result<AgentPage, PageError> {
    let row = agents::agent(&state.db, id).await?.ok_or(PageError::NotFound)?;
    let entries = agents::entries(&state.db, id)
        .await?
        .into_iter()
        .map(|e| EntryLine {
            rating: format!("{:.0}", rating::display(e.mu)),
            conservative: format!("{:.0}", rating::display(e.mu - 3.0 * e.sigma)),
            matches: e.matches,
            active: e.active,
            paused: (e.accepted_version < e.terms_version).then(|| {
                format!("the Space changed its terms in version {}; enter again to accept them", e.terms_version)
            }),
            space: e.space,
        })
        .collect();
    let points = matches::rating_history(&state.db, id, 500).await?;
    let mut spaces: Vec<String> = points.iter().map(|p| p.space.clone()).collect();
    spaces.dedup();
    spaces.sort();
    spaces.dedup();
    let series: Vec<Series> = spaces
        .iter()
        .take(2)
        .map(|space| Series {
            name: space.clone(),
            points: points
                .iter()
                .filter(|p| &p.space == space)
                .enumerate()
                .map(|(i, p)| ((i + 1) as f64, rating::display(p.mu_after)))
                .collect(),
        })
        .collect();
    let history = chart::lines("Rating after each match", "matches played", &series);
    let recent = match_lines(matches::lines(&state.db, None, None, Some(id), 15).await?);
    let is_owner = visit.caller.as_ref().is_some_and(|c| c.user_id == row.owner_id || c.is_admin());
    let (mut versions, mut jobs, mut policies) = (Vec::new(), Vec::new(), Vec::new());
    let (mut draft, mut has_adapter) = (Draft::default(), false);
    if is_owner {
        let rows = agents::versions(&state.db, id).await?;
        if let Some(current) = rows.iter().find(|v| v.version == row.current_version) {
            let sampling: AgentSampling = serde_json::from_value(current.sampling.clone()).unwrap_or_default();
            draft = Draft {
                name: row.name.clone(),
                system_prompt: current.system_prompt.clone(),
                temperature: sampling.temperature.to_string(),
                top_p: sampling.top_p.to_string(),
                top_k: sampling.top_k.to_string(),
                repetition_penalty: sampling.repetition_penalty.to_string(),
                seed: sampling.seed.to_string(),
                stop: sampling.stop.join("\n"),
            };
            has_adapter = current.adapter_sha256.is_some();
        }
        versions = rows
            .into_iter()
            .map(|v| VersionLine {
                version: v.version,
                current: v.version == row.current_version,
                parent: v.parent_version,
                job: v.training_job_id.map(|j| j.to_string()[..8].to_owned()),
                adapter: v.adapter_sha256.map(|s| s[..12.min(s.len())].to_owned()),
                note: v.note,
                system_prompt: super::clip(&v.system_prompt, 200),
                created: when(&v.created_at),
            })
            .collect();
        let mut conn = state.db.acquire().await?;
        policies = training::policies(&mut conn, id)
            .await?
            .into_iter()
            .map(|p| PolicyLine { space: p.space, every: p.every_pairs })
            .collect();
        for job in training::jobs_of(&mut conn, id).await?.into_iter().take(10) {
            let j = training::job(&mut conn, job).await?;
            let steps = training::metrics(&mut conn, job).await?;
            let step = |v: &serde_json::Value| metric(v, "step");
            let curve = chart::lines(
                "Training loss per step",
                "step",
                &[Series { name: "loss".into(), points: steps.iter().map(|m| (step(m), metric(m, "loss"))).collect() }],
            );
            let series = |pairs: &[(&str, &str)]| -> Vec<Series> {
                pairs
                    .iter()
                    .map(|&(name, key)| Series {
                        name: name.into(),
                        points: steps.iter().map(|m| (step(m), metric(m, key))).collect(),
                    })
                    .collect()
            };
            // A GRPO job's steps carry the group rewards instead of pairs'.
            let grpo = steps.first().is_some_and(|m| m.get("reward_mean").is_some());
            let rewards = if grpo {
                chart::lines(
                    "Reward, pass rate, skipped groups and KL per step",
                    "step",
                    &series(&[
                        ("mean reward", "reward_mean"),
                        ("pass rate", "pass_rate"),
                        ("share of groups skipped", "skipped_share"),
                        ("KL to the parent", "kl"),
                    ]),
                )
            } else {
                chart::lines(
                    "Reward accuracy and margin per step",
                    "step",
                    &series(&[("reward accuracy", "reward_accuracy"), ("reward margin", "reward_margin")]),
                )
            };
            let gate = j.gate.as_ref().and_then(|g| g["reason"].as_str().map(str::to_owned));
            jobs.push(JobLine {
                id: job.to_string(),
                short: job.to_string()[..8].to_owned(),
                space: j.slug,
                status: j.status.as_str().to_owned(),
                progress: match j.steps {
                    Some(n) if n > 0 => format!("step {} of {n} ({:.0}%)", j.step, 100.0 * j.step as f64 / n as f64),
                    _ => format!("step {}", j.step),
                },
                price: j.price,
                created: when(&j.created_at),
                gate,
                error: j.error,
                curve,
                rewards,
            });
        }
    }
    Ok(AgentPage {
        chrome: visit.chrome.clone(),
        id: id.to_string(),
        name: row.name,
        owner: row.owner,
        current: row.current_version,
        created: when(&row.created_at),
        entries,
        history,
        recent,
        is_owner,
        versions,
        jobs,
        draft: typed.unwrap_or(draft),
        has_adapter,
        policies,
        open_workers: row.open_workers,
        error,
    })
}

pub async fn page(state: Ctx, visit: Visit, path: web::Path<AgentId>) -> Result<HttpResponse, PageError> {
    let page = agent_page(&state, &visit, path.into_inner(), FormError::default()).await?;
    render(&visit.chrome, &page)
}

/// After an owner's action: back to the page, or the page with the error.
async fn after(state: &Ctx, visit: &Visit, id: AgentId, done: Result<(), ApiError>) -> Result<HttpResponse, PageError> {
    match done {
        Ok(()) => Ok(see_other(&format!("/agents/{id}"))),
        Err(err) => {
            let page = agent_page(state, visit, id, FormError::from_api(err)?).await?;
            render_with(StatusCode::UNPROCESSABLE_ENTITY, &visit.chrome, &page)
        }
    }
}

#[derive(Deserialize)]
pub struct OpenWorkersForm {
    #[serde(default)]
    csrf: String,
    /// A checkbox: present ("on") when ticked.
    #[serde(default)]
    open_workers: Option<String>,
}

/// The owner's choice whether open workers may run the agent.
pub async fn open_workers(
    state: Ctx,
    user: SignedIn,
    path: web::Path<AgentId>,
    Form(form): Form<OpenWorkersForm>,
) -> Result<HttpResponse, PageError> {
    let id = path.into_inner();
    let open = form.open_workers.is_some_and(|v| v == "on");
    let done = agent_actions::set_open_workers(&state, &user.caller, id, open).await;
    after(&state, &user.visit(), id, done).await
}

#[derive(Deserialize)]
pub struct RollbackForm {
    #[serde(default)]
    csrf: String,
    version: i32,
}

pub async fn rollback(
    state: Ctx,
    user: SignedIn,
    path: web::Path<AgentId>,
    Form(form): Form<RollbackForm>,
) -> Result<HttpResponse, PageError> {
    let caller = &user.caller;
    let id = path.into_inner();
    let done = agent_actions::roll_back(&state, caller, id, form.version).await;
    after(&state, &user.visit(), id, done).await
}

#[derive(Deserialize)]
pub struct LeaveForm {
    #[serde(default)]
    csrf: String,
    space: String,
}

pub async fn leave(
    state: Ctx,
    user: SignedIn,
    path: web::Path<AgentId>,
    Form(form): Form<LeaveForm>,
) -> Result<HttpResponse, PageError> {
    let caller = &user.caller;
    let id = path.into_inner();
    let done = agent_actions::leave_space(&state, caller, id, &form.space).await;
    after(&state, &user.visit(), id, done).await
}

#[derive(Deserialize)]
pub struct TrainForm {
    #[serde(default)]
    csrf: String,
    space: String,
    #[serde(default)]
    steps: String,
}

pub async fn train(
    state: Ctx,
    user: SignedIn,
    path: web::Path<AgentId>,
    Form(form): Form<TrainForm>,
) -> Result<HttpResponse, PageError> {
    let caller = &user.caller;
    let id = path.into_inner();
    let settings = match form.steps.trim() {
        "" => Ok(None),
        steps => steps
            .parse::<u32>()
            .map(|s| Some(JobSettings { steps: Some(s as usize), ..JobSettings::default() }))
            .map_err(|_| ApiError::invalid("settings.steps", "steps must be a whole number")),
    };
    let done = match settings {
        Ok(settings) => training_actions::start_job(&state, caller, id, &form.space, settings).await.map(|_: JobId| ()),
        Err(e) => Err(e),
    };
    after(&state, &user.visit(), id, done).await
}

csrf_token!(text: OpenWorkersForm, RollbackForm, LeaveForm, TrainForm, PlaygroundQuery, PolicyForm);

/// Tokens the playground answers with at most.
pub const PLAYGROUND_TOKENS: usize = 96;
/// Playground answers one user may ask for per minute.
pub const PLAYGROUND_PER_MINUTE: u32 = 20;

#[derive(Deserialize)]
pub struct PlaygroundQuery {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    prompt: String,
    /// The builder's fields as they stand.
    #[serde(flatten)]
    draft: Draft,
}

fn sse_event(kind: &str, data: serde_json::Value) -> actix_web::web::Bytes {
    actix_web::web::Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

/// POST /agents/new/playground — the builder's current settings answer a
/// test prompt, streamed as Server-Sent Events: `token` pieces, then `done`
/// (or `problem` with what went wrong). Same checks as the agent itself.
/// A POST (read by the page with `fetch`), so the system prompt never
/// travels in a URL (logs, history, a proxy's access log).
pub async fn playground(
    state: Ctx,
    user: SignedIn,
    Form(query): Form<PlaygroundQuery>,
) -> Result<HttpResponse, PageError> {
    use agent_runtime::chat::Message;
    use agent_runtime::engine::{Prompt, Request};
    let caller = &user.caller;
    let problem = |message: String| {
        HttpResponse::Ok()
            .content_type("text/event-stream")
            .insert_header(("Cache-Control", "no-cache"))
            .body(sse_event("problem", serde_json::json!({ "message": message })))
    };
    let PlaygroundQuery { prompt: asked, draft, .. } = query;
    let checked = (|| {
        let sampling = sampling(&draft)?;
        sampling.check()?;
        let system = crate::domain::agent::parse_system_prompt(&draft.system_prompt)?;
        let prompt = asked.trim().to_owned();
        if prompt.is_empty() || prompt.chars().count() > 2_000 {
            return Err(ApiError::invalid("prompt", "give a test prompt of 1 to 2,000 characters"));
        }
        Ok((sampling, system, prompt))
    })();
    let (sampling, system, prompt) = match checked {
        Ok(c) => c,
        Err(ApiError::Invalid { message, .. }) => return Ok(problem(message)),
        Err(other) => return Err(other.into()),
    };
    if let Err(err) =
        crate::http::auth::count_attempt(&state, &format!("playground:{}", caller.user_id), PLAYGROUND_PER_MINUTE).await
    {
        return Ok(problem(err.to_string()));
    }
    let engine = match state.playground.engine().await {
        Ok(engine) => engine,
        Err(why) => return Ok(problem(crate::domain::shown::without_paths(&why))),
    };
    let mut messages = Vec::new();
    if !system.is_empty() {
        messages.push(Message::system(&system));
    }
    messages.push(Message::user(&prompt));
    let request = Request {
        prompt: Prompt::Chat(messages),
        adapter: None,
        params: sampling.params(PLAYGROUND_TOKENS, sampling.seed),
        logprobs: false,
    };
    let (pieces, done) = match engine.submit_streaming(request) {
        Ok(channels) => channels,
        Err(err) => return Ok(problem(err.to_string())),
    };
    enum Phase {
        Pieces(
            tokio::sync::mpsc::UnboundedReceiver<String>,
            tokio::sync::oneshot::Receiver<agent_runtime::Result<agent_runtime::engine::Completion>>,
        ),
        Over,
    }
    let body = futures_util::stream::unfold(Phase::Pieces(pieces, done), |phase| async move {
        match phase {
            Phase::Over => None,
            Phase::Pieces(mut pieces, done) => match pieces.recv().await {
                Some(text) => Some((
                    Ok::<_, actix_web::Error>(sse_event("token", serde_json::json!({ "text": text }))),
                    Phase::Pieces(pieces, done),
                )),
                // The engine drops the stream when the answer is complete.
                None => {
                    let last = match done.await {
                        Ok(Ok(c)) => {
                            sse_event("done", serde_json::json!({ "tokens": c.tokens.len(), "finish": c.finish }))
                        }
                        Ok(Err(e)) => sse_event("problem", serde_json::json!({ "message": e.to_string() })),
                        Err(_) => sse_event("problem", serde_json::json!({ "message": "the engine stopped" })),
                    };
                    Some((Ok(last), Phase::Over))
                }
            },
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

pub async fn new_version(
    state: Ctx,
    user: SignedIn,
    path: web::Path<AgentId>,
    Upload(form): Upload<AgentForm>,
) -> Result<HttpResponse, PageError> {
    let (draft, note, remove, files) = form.into_parts();
    let caller = &user.caller;
    let id = path.into_inner();
    let done = async {
        let sampling = sampling(&draft)?;
        let adapter = adapter_choice(&state, caller, files, remove).await?;
        let body = agent_actions::NewVersion::new(draft.system_prompt.clone(), sampling, adapter, note);
        agent_actions::make_version(&state, caller, id, body).await
    }
    .await;
    match done {
        Ok(()) => Ok(see_other(&format!("/agents/{id}"))),
        Err(err) => {
            let page = agent_page_with(&state, &user.visit(), id, FormError::from_api(err)?, Some(draft)).await?;
            render_with(StatusCode::UNPROCESSABLE_ENTITY, &user.chrome, &page)
        }
    }
}

#[derive(Deserialize)]
pub struct PolicyForm {
    #[serde(default)]
    csrf: String,
    space: String,
    mode: String,
    #[serde(default)]
    every_pairs: String,
}

pub async fn policy(
    state: Ctx,
    user: SignedIn,
    path: web::Path<AgentId>,
    Form(form): Form<PolicyForm>,
) -> Result<HttpResponse, PageError> {
    let caller = &user.caller;
    let id = path.into_inner();
    let every = match (form.mode.as_str(), form.every_pairs.trim()) {
        ("every", text) => match text.parse::<i32>() {
            Ok(n) => Ok(Some(n)),
            Err(_) => Err(ApiError::invalid("every_pairs", "give how many new pairs start a job: a whole number")),
        },
        _ => Ok(None),
    };
    let policy = every.and_then(|every| Ok(TrainingPolicy::parse(&form.mode, every)?));
    let done = match policy {
        Ok(policy) => {
            let defaults = JobSettings::default();
            training_actions::set_training_policy(&state, caller, id, &form.space, policy, &defaults).await
        }
        Err(e) => Err(e),
    };
    after(&state, &user.visit(), id, done).await
}
