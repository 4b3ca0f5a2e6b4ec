//! `/vote` and `/spaces/{slug}/vote`: one battle card — the criterion, the
//! prompt, answers A and B rendered alike, five labelled buttons (keys 1–5)
//! — and, once voted, the reveal swapped in its place (htmx; a plain post
//! renders the page). `/studio/{slug}/audit`: the judge against people for
//! the designer. `/votes/integrity`: the operator's view of excluded votes,
//! flagged voters, gold accuracy and reports.

use super::chart::{self, Interval, Svg};
use super::extract::csrf_token;
use super::{Chrome, Ctx, Designer, Form, PageError, SignedIn, render, when};
use crate::domain::votes::{self, Audit, Call, Rate, Reason};
use crate::http::auth::client_address;
use crate::http::handlers::votes::{self as actions, Card};
use crate::store::votes::{self as store, Reveal};
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

/// The reveal as the page shows it.
pub struct RevealView {
    pub vote_id: String,
    pub match_id: String,
    pub choice: String,
    pub counted: bool,
    pub why_not: Option<String>,
    pub a: String,
    pub b: String,
    pub gold: Option<String>,
    pub judge: Option<String>,
    pub crowd: String,
    pub with_judge: Option<bool>,
    pub with_crowd: Option<bool>,
    pub next: String,
}

fn seat_words(s: &Option<store::RevealSeat>) -> String {
    s.as_ref()
        .map_or_else(|| "an answer".to_owned(), |s| format!("{} by {} (rating {:.0})", s.agent, s.owner, s.rating))
}

fn choice_words(c: votes::Choice) -> &'static str {
    match c {
        votes::Choice::A => "A is better",
        votes::Choice::B => "B is better",
        votes::Choice::Tie => "a tie",
        votes::Choice::Bad => "both are bad",
        votes::Choice::Skip => "skip",
    }
}

fn reason_words(r: Reason) -> &'static str {
    match r {
        Reason::Skipped => "you skipped this battle",
        Reason::TooFast => "it came faster than the answers can be read",
        Reason::OverCap => "you reached today's limit of counted votes",
        Reason::Identity => "an answer names an agent or its owner",
        Reason::Gold => "this was a check battle: it rates voters, not agents",
    }
}

fn call_words(c: Call) -> &'static str {
    match c {
        Call::First => "A is better",
        Call::Second => "B is better",
        Call::Tie => "a tie",
    }
}

impl RevealView {
    pub fn of(r: &Reveal, next: String) -> RevealView {
        let why_not = match (r.counted, r.reason) {
            (true, _) => None,
            (false, Some(reason)) => Some(reason_words(reason).to_owned()),
            (false, None) => Some("your votes are on hold: the checks found them unreliable".to_owned()),
        };
        let [a, b, t] = r.crowd;
        RevealView {
            vote_id: r.vote_id.to_string(),
            match_id: r.match_id.to_string(),
            choice: choice_words(r.choice).to_owned(),
            counted: r.counted,
            why_not,
            a: seat_words(&r.a),
            b: seat_words(&r.b),
            gold: r.gold.map(|second| {
                format!(
                    "Answer {} answered this prompt; answer {} answered another one.",
                    if second { "B" } else { "A" },
                    if second { "A" } else { "B" }
                )
            }),
            judge: r
                .gold
                .is_none()
                .then(|| format!("{} (confidence {:.0}%)", call_words(r.judge), 100.0 * r.confidence)),
            crowd: if a + b + t == 0 {
                "no counted votes yet".to_owned()
            } else {
                format!("A {a} · B {b} · tie {t} ({} counted)", a + b + t)
            },
            with_judge: actions::agrees(r, r.judge),
            with_crowd: actions::crowd_call(r).and_then(|c| actions::agrees(r, c)),
            next,
        }
    }
}

#[derive(Template)]
#[template(path = "vote.html")]
struct VotePage {
    chrome: Chrome,
    scope: Option<String>,
    card: Option<Card>,
    reveal: Option<RevealView>,
    error: Option<String>,
    spaces: Vec<String>,
}

#[derive(Template)]
#[template(path = "partials/vote_error.html")]
struct ErrorFragment {
    message: String,
}

#[derive(Template)]
#[template(path = "partials/vote_reveal.html")]
struct RevealFragment {
    chrome: Chrome,
    reveal: RevealView,
}

async fn battle_page(state: &Ctx, user: &SignedIn, space: Option<String>) -> Result<HttpResponse, PageError> {
    let spaces: Vec<String> = store::voting_spaces(&state.db).await?.into_iter().map(|s| s.slug).collect();
    if let Some(s) = &space
        && !spaces.contains(s)
    {
        return Err(PageError::NotFound);
    }
    let card = actions::next_battle(state, &user.caller, space.as_deref()).await?;
    let chrome = user.visit().chrome;
    let page = VotePage { chrome: chrome.clone(), scope: space, card, reveal: None, error: None, spaces };
    render(&chrome, &page)
}

/// GET /vote — a battle from any Space that takes votes.
pub async fn page(state: Ctx, user: SignedIn) -> Result<HttpResponse, PageError> {
    battle_page(&state, &user, None).await
}

/// GET /spaces/{slug}/vote — a battle from one Space.
pub async fn space_page(state: Ctx, user: SignedIn, slug: web::Path<String>) -> Result<HttpResponse, PageError> {
    battle_page(&state, &user, Some(slug.into_inner())).await
}

#[derive(Deserialize)]
pub struct VoteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    ballot: String,
    #[serde(default)]
    choice: String,
    /// The Space the voter was voting in (the next battle's scope).
    #[serde(default)]
    scope: String,
}

csrf_token!(text: VoteForm, ReportForm);

/// POST /vote — the vote; the reveal (a fragment for htmx, else the page).
pub async fn vote(
    state: Ctx,
    user: SignedIn,
    req: HttpRequest,
    Form(form): Form<VoteForm>,
) -> Result<HttpResponse, PageError> {
    let next = if form.scope.is_empty() || form.scope.len() > 64 {
        "/vote".to_owned()
    } else {
        format!("/spaces/{}/vote", url::form_urlencoded::byte_serialize(form.scope.as_bytes()).collect::<String>())
    };
    let chrome = user.visit().chrome;
    let htmx = req.headers().contains_key("HX-Request");
    match actions::cast_vote(&state, &user.caller, &client_address(&req), &form.ballot, &form.choice).await {
        Ok(reveal) => {
            let view = RevealView::of(&reveal, next);
            if htmx {
                render(&chrome, &RevealFragment { chrome: chrome.clone(), reveal: view })
            } else {
                let page = VotePage {
                    chrome: chrome.clone(),
                    scope: None,
                    card: None,
                    reveal: Some(view),
                    error: None,
                    spaces: vec![],
                };
                render(&chrome, &page)
            }
        }
        Err(err) => {
            let message = match super::FormError::from_api(err) {
                Ok(e) => e.message,
                Err(PageError::Forbidden) => "You may not vote on this battle: you own one of its agents, or designed \
                                              its Space."
                    .to_owned(),
                Err(other) => return Err(other),
            };
            if htmx {
                // htmx swaps only a success: the error replaces the card.
                return render(&chrome, &ErrorFragment { message });
            }
            let page = VotePage {
                chrome: chrome.clone(),
                scope: None,
                card: None,
                reveal: None,
                error: Some(message),
                spaces: vec![],
            };
            super::render_with(actix_web::http::StatusCode::UNPROCESSABLE_ENTITY, &chrome, &page)
        }
    }
}

#[derive(Deserialize)]
pub struct ReportForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    vote: String,
    #[serde(default)]
    reason: String,
}

/// POST /vote/report — a report on the battle of one's own vote.
pub async fn report(state: Ctx, user: SignedIn, Form(form): Form<ReportForm>) -> Result<HttpResponse, PageError> {
    let vote =
        uuid::Uuid::parse_str(form.vote.trim()).map_err(|_| PageError::BadForm("vote: not a vote's id".to_owned()))?;
    match actions::report_vote(&state, &user.caller, vote, &form.reason).await {
        Ok(()) => Ok(HttpResponse::Ok().content_type("text/html; charset=utf-8").body(
            "<p class=\"notice good\" id=\"reported\" role=\"status\">Reported. An operator will look at it.</p>",
        )),
        Err(crate::http::error::ApiError::Invalid { message, .. }) => Err(PageError::BadForm(message)),
        Err(e) => Err(e.into()),
    }
}

/// A rate as the audit page writes it: "70.0% (35 of 50; 95% interval 56.3–80.9%)".
pub fn rate_words(r: &Rate) -> String {
    if r.n == 0 {
        return "no data yet".to_owned();
    }
    format!("{:.1}% ({} of {}; 95% interval {:.1}–{:.1}%)", 100.0 * r.p, r.k, r.n, 100.0 * r.lo, 100.0 * r.hi)
}

struct GapLine {
    agent: String,
    human: String,
    judge: String,
    gap: String,
}

struct DisagreementLine {
    match_id: String,
    human: String,
    judge: String,
    votes: u32,
}

#[derive(Template)]
#[template(path = "studio_audit.html")]
struct AuditPage {
    chrome: Chrome,
    slug: String,
    audit: Audit,
    counted: i64,
    voters: i64,
    share_pct: u8,
    agreement: String,
    agreement_decisive: String,
    human_human: String,
    human_human_decisive: String,
    coverage: String,
    kappa: String,
    needed_more: u64,
    confusion: Vec<(String, Vec<u64>)>,
    gaps: Vec<GapLine>,
    disagreements: Vec<DisagreementLine>,
    chart: Svg,
}

/// GET /studio/{slug}/audit — the judge against people on the Space's
/// audit share.
pub async fn audit_page(state: Ctx, user: Designer, slug: web::Path<String>) -> Result<HttpResponse, PageError> {
    let space = crate::store::spaces::id_and_owner(&state.db, &slug)
        .await?
        .filter(|s| s.owner_id == user.caller.user_id || user.caller.is_admin())
        .ok_or(PageError::NotFound)?;
    let audit = actions::audit_of(&state, space.id).await?;
    let (counted, voters) = store::space_counts(&state.db, space.id).await?;
    let rows = ["A (lower slot) better", "B better", "tie"];
    let confusion = rows.iter().zip(audit.confusion.iter()).map(|(r, c)| ((*r).to_owned(), c.to_vec())).collect();
    let chart = chart::intervals(
        "Judge–human agreement, human–human agreement (per cent, 95% intervals)",
        &[
            ("judge–people", &audit.agreement),
            ("judge–people, decisive", &audit.agreement_decisive),
            ("people–people", &audit.human_human),
            ("people–people, decisive", &audit.human_human_decisive),
        ]
        .iter()
        .filter(|(_, r)| r.n > 0)
        .map(|(label, r)| Interval {
            label: (*label).to_owned(),
            point: 100.0 * r.p,
            low: 100.0 * r.lo,
            high: 100.0 * r.hi,
        })
        .collect::<Vec<_>>(),
    );
    let page = AuditPage {
        chrome: user.chrome.clone(),
        slug: slug.into_inner(),
        counted,
        voters,
        share_pct: votes::AUDIT_SHARE_PCT,
        agreement: rate_words(&audit.agreement),
        agreement_decisive: rate_words(&audit.agreement_decisive),
        human_human: rate_words(&audit.human_human),
        human_human_decisive: rate_words(&audit.human_human_decisive),
        coverage: rate_words(&audit.coverage),
        kappa: audit.kappa.map_or_else(|| "undefined yet".to_owned(), |k| format!("{k:.3}")),
        needed_more: audit.needed.saturating_sub(audit.votes),
        confusion,
        gaps: audit
            .agents
            .iter()
            .map(|g| GapLine {
                agent: g.agent.clone(),
                human: rate_words(&g.human),
                judge: rate_words(&g.judge),
                gap: format!("{:+.1}", g.gap),
            })
            .collect(),
        disagreements: audit
            .disagreements
            .iter()
            .take(100)
            .map(|d| DisagreementLine {
                match_id: d.match_id.to_string(),
                human: call_words(d.human).to_owned(),
                judge: call_words(d.judge).to_owned(),
                votes: d.votes,
            })
            .collect(),
        chart,
        audit,
    };
    render(&user.chrome, &page)
}

struct DayLine {
    day: String,
    counted: i64,
    excluded: i64,
    share: String,
    reasons: String,
}

struct FlagLine {
    username: String,
    votes: i64,
    gold: String,
    flagged: bool,
    why: String,
}

struct ReportLine {
    match_id: String,
    reporter: String,
    reason: String,
    when: String,
}

#[derive(Template)]
#[template(path = "votes_integrity.html")]
struct IntegrityPage {
    chrome: Chrome,
    days: Vec<DayLine>,
    voters: Vec<FlagLine>,
    gold: String,
    reports: Vec<ReportLine>,
    chart: Svg,
}

/// GET /votes/integrity — for admins (anyone else: not found).
pub async fn integrity_page(state: Ctx, user: SignedIn) -> Result<HttpResponse, PageError> {
    if !user.caller.is_admin() {
        return Err(PageError::NotFound);
    }
    let rows = store::reasons_by_day(&state.db, 14).await?;
    let mut days: Vec<DayLine> = Vec::new();
    for (day, reason, n) in rows {
        let key = day.format("%Y-%m-%d").to_string();
        let at = match days.iter().position(|d| d.day == key) {
            Some(at) => at,
            None => {
                days.push(DayLine { day: key, counted: 0, excluded: 0, share: String::new(), reasons: String::new() });
                days.len() - 1
            }
        };
        let line = &mut days[at];
        match reason {
            None => line.counted += n,
            Some(r) => {
                line.excluded += n;
                if !line.reasons.is_empty() {
                    line.reasons.push_str(", ");
                }
                line.reasons.push_str(&format!("{r} {n}"));
            }
        }
    }
    for d in &mut days {
        let total = d.counted + d.excluded;
        d.share = if total == 0 { "–".into() } else { format!("{:.0}%", 100.0 * d.excluded as f64 / total as f64) };
    }
    let labels: Vec<String> = days.iter().map(|d| d.day[5..].to_owned()).collect();
    let values: Vec<i64> = days
        .iter()
        .map(|d| if d.counted + d.excluded == 0 { 0 } else { 100 * d.excluded / (d.counted + d.excluded) })
        .collect();
    let chart = chart::bars("Share of votes excluded per day (%)", &labels, &values);
    let (gold_total, gold_right) = store::gold_accuracy(&state.db).await?;
    let voters = store::voter_lines(&state.db, 50)
        .await?
        .into_iter()
        .map(|v| FlagLine {
            gold: if v.gold_total == 0 {
                "no checks yet".into()
            } else {
                format!("{} of {}", v.gold_right, v.gold_total)
            },
            username: v.username,
            votes: v.votes,
            flagged: v.flagged,
            why: v.flag_reason.unwrap_or_default(),
        })
        .collect();
    let reports = store::reports(&state.db, 50)
        .await?
        .into_iter()
        .map(|r| ReportLine {
            match_id: r.match_id.to_string(),
            reporter: r.reporter,
            reason: r.reason.replace('_', " "),
            when: when(&r.created_at),
        })
        .collect();
    let gold = if gold_total == 0 {
        "no check battles answered yet".to_owned()
    } else {
        format!("{:.1}% ({gold_right} of {gold_total})", 100.0 * gold_right as f64 / gold_total as f64)
    };
    let page = IntegrityPage { chrome: user.visit().chrome, days, voters, gold, reports, chart };
    render(&page.chrome, &page)
}
