//! `/workers`: the signed-in user's open workers (an admin's: every
//! worker) — status, throughput, audits passed and failed with the
//! reasons, reputation (the audit rate), stake, escrow and earnings over
//! time — and the one command that starts a worker.

use super::chart::{self, Svg};
use super::{Chrome, Ctx, PageError, SignedIn, render, when};
use crate::domain::worker;
use crate::store::workers as store;
use actix_web::HttpResponse;
use askama::Template;

struct WorkerLine {
    name: String,
    owner: String,
    status: String,
    recipe: String,
    jobs: i64,
    tokens: i64,
    passed: i32,
    failed: i32,
    rate: String,
    staked: i64,
    escrow: i64,
    earned: i64,
    slashed: i64,
    banned_until: Option<String>,
    last_seen: String,
}

struct FindingLine {
    worker: String,
    match_id: String,
    when: String,
    why: String,
}

#[derive(Template)]
#[template(path = "workers.html")]
struct WorkersPage {
    chrome: Chrome,
    all: bool,
    workers: Vec<WorkerLine>,
    findings: Vec<FindingLine>,
    earnings: Svg,
    server: String,
    min_stake: i64,
    pay_per_ktoken: i64,
    escrow_h: String,
    floor_pct: u32,
    slash_pct: i64,
}

/// The first reason a rejected record's audit gives.
fn reason(audit: &serde_json::Value) -> String {
    if let Some(why) = audit["why"].as_str() {
        return format!("broke a rule: {why}");
    }
    audit["seats"]
        .as_array()
        .and_then(|seats| {
            seats.iter().find_map(|s| {
                s["fault"].as_str().map(|f| format!("seat {}: {f}", s["slot"].as_i64().unwrap_or_default()))
            })
        })
        .unwrap_or_else(|| "failed its audit".to_owned())
}

pub async fn page(state: Ctx, user: SignedIn, req: actix_web::HttpRequest) -> Result<HttpResponse, PageError> {
    let caller = &user.caller;
    let all = caller.is_admin();
    let owner = if all { None } else { Some(caller.user_id) };
    let floor = state.settings.economics().audit_floor;
    let workers = store::list(&state.db, owner)
        .await?
        .into_iter()
        .map(|v| WorkerLine {
            rate: format!("{:.0}%", 100.0 * worker::audit_rate(v.worker.clean_streak, floor)),
            name: v.worker.name,
            owner: v.owner,
            status: v.worker.status,
            recipe: v.worker.recipe,
            jobs: v.worker.jobs_done,
            tokens: v.worker.tokens_done,
            passed: v.worker.audits_passed,
            failed: v.worker.audits_failed,
            staked: v.staked,
            escrow: v.escrow,
            earned: v.earned,
            slashed: v.slashed,
            banned_until: v.worker.banned_until.filter(|t| *t > chrono::Utc::now()).map(|t| when(&t)),
            last_seen: v.worker.last_seen.map_or_else(|| "never".to_owned(), |t| when(&t)),
        })
        .collect();
    let findings = store::findings(&state.db, owner, 20)
        .await?
        .into_iter()
        .map(|f| FindingLine {
            worker: f.worker,
            match_id: f.match_id.to_string(),
            when: f.answered_at.as_ref().map_or_else(String::new, when),
            why: reason(&f.audit),
        })
        .collect();
    let days = store::pay_by_day(&state.db, owner, 7).await?;
    let labels: Vec<String> = days.iter().map(|(d, _)| d.format("%m-%d").to_string()).collect();
    let values: Vec<i64> = days.iter().map(|(_, v)| *v).collect();
    let earnings = chart::bars("Credits paid into escrow per day", &labels, &values);
    let info = req.connection_info();
    let page = WorkersPage {
        chrome: user.visit().chrome,
        all,
        workers,
        findings,
        earnings,
        server: format!("{}://{}", info.scheme(), info.host()),
        min_stake: state.settings.worker_min_stake,
        pay_per_ktoken: state.settings.worker_pay_per_ktoken,
        escrow_h: format!("{:.1}", state.settings.worker_escrow_s as f64 / 3600.0),
        floor_pct: state.settings.worker_audit_floor_pct,
        slash_pct: state.settings.worker_slash_pct,
    };
    render(&page.chrome, &page)
}
