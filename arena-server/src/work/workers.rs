//! Open runtime workers, the server's side: leasing formed matches to a
//! worker (the assignment fixed here: prompt token ids, base and adapter
//! by sha256, sampling and seed), taking its signed answer (checks at no
//! model cost, then accepted or held for audit), the auditor that replays
//! held answers on the reference runtime, and the upkeep that expires
//! leases and releases escrow.
//!
//! A worker is a hostile user: nothing it sends is stored as an output
//! before the checks pass, an audited answer waits for its replay, and a
//! match is generated once whatever arrives late or twice.

use crate::context::Context;
use crate::domain::worker::{self, Assignment, Identity, RolloutRecord, check_record, tokens_sha256};
use crate::domain::{MatchId, MatchStatus};
use crate::queue::{Event, Events};
use crate::store::matches::{self, NewOutput};
use crate::store::workers::{self as store, Job, Worker};
use agent_runtime::audit::{Claim, Tier};
use agent_runtime::{Finish, Runtime};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// How long a match's answer may wait for its audit before another worker
/// may take it.
const AUDIT_CLAIM_S: u64 = 600;

/// Why a worker gets no lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaseRefused {
    #[error("this worker has left; register a new one")]
    Left,
    #[error("this worker is banned until {0} after a failed audit")]
    Banned(chrono::DateTime<Utc>),
    #[error("this worker declared model {declared}; this server runs {ours}: start it with that file")]
    WrongModel { declared: String, ours: String },
    #[error("lease {0} is still open: answer it first")]
    Open(Uuid),
    #[error("the stake holds {0} credits, under the minimum of {1}: register a worker with a new stake")]
    Stake(i64, i64),
}

/// A lease as the worker receives it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseOut {
    pub lease_id: Uuid,
    pub deadline: chrono::DateTime<Utc>,
    pub jobs: Vec<Assignment>,
}

/// The reference recipe: what this process's kernels compute.
pub fn reference_recipe() -> &'static str {
    agent_runtime::quant::kernels().recipe()
}

fn template_sha256(rt: &Runtime) -> String {
    hex::encode(Sha256::digest(rt.template.source().as_bytes()))
}

/// Leases up to `max_jobs` seats (whole matches) to `w`, waiting up to
/// `wait` for work. `None`: nothing came.
pub async fn lease(
    ctx: &Context,
    w: &Worker,
    max_jobs: usize,
    wait: Duration,
) -> anyhow::Result<Result<Option<LeaseOut>, LeaseRefused>> {
    if w.status != "active" {
        return Ok(Err(LeaseRefused::Left));
    }
    if let Some(until) = w.banned_until.filter(|u| *u > Utc::now()) {
        return Ok(Err(LeaseRefused::Banned(until)));
    }
    if w.model_sha256 != ctx.base_model {
        return Ok(Err(LeaseRefused::WrongModel { declared: w.model_sha256.clone(), ours: ctx.base_model.clone() }));
    }
    let staked = store::staked(&ctx.db, w.id).await?;
    if staked < ctx.settings.worker_min_stake {
        return Ok(Err(LeaseRefused::Stake(staked, ctx.settings.worker_min_stake)));
    }
    if let Some(open) = store::open_lease(&ctx.db, w.id).await? {
        if open.deadline > Utc::now() {
            return Ok(Err(LeaseRefused::Open(open.id)));
        }
        let mut conn = ctx.db.acquire().await?;
        store::expire(&mut conn, None).await?;
    }
    let rt = ctx.playground.reference().await.map_err(anyhow::Error::msg)?;
    let until = tokio::time::Instant::now() + wait;
    loop {
        if let Some(out) = try_lease(ctx, w, staked, &rt, max_jobs.clamp(1, w.max_batch as usize)).await? {
            return Ok(Ok(Some(out)));
        }
        if tokio::time::Instant::now() + Duration::from_millis(500) > until {
            return Ok(Ok(None));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn try_lease(
    ctx: &Context,
    w: &Worker,
    staked: i64,
    rt: &Arc<Runtime>,
    max_jobs: usize,
) -> anyhow::Result<Option<LeaseOut>> {
    let econ = ctx.settings.economics();
    let max_tokens = econ.max_job_tokens(staked, w.clean_streak);
    let mut tx = ctx.db.begin().await?;
    let candidates = store::candidates(&mut tx, w.owner_id, w.id, (max_jobs as i64) * 4).await?;
    let mut chosen: Vec<MatchId> = Vec::new();
    let mut seats_taken = 0usize;
    for c in &candidates {
        let Ok(space) = ctx.spaces.get(&ctx.db, c.space_id, c.space_version).await else { continue };
        // Games lease step by step through the runtime role (not yet to
        // workers); a Space that sells or hides its outputs keeps them off
        // machines the operator does not run.
        if space.game.is_some()
            || space.visibility != crate::domain::space::Visibility::Public
            || space.data.per_pair > 0
        {
            continue;
        }
        let seats = c.seats as usize;
        if seats_taken + seats > max_jobs || (space.max_new_tokens as i64) * (seats as i64) > max_tokens {
            continue;
        }
        seats_taken += seats;
        chosen.push(c.id);
    }
    if chosen.is_empty() {
        return Ok(None);
    }
    let seats = matches::generate_seats(&ctx.db, &chosen).await?;
    let attempts = store::attempts(&mut tx, &chosen).await?;
    let base = template_sha256(rt);
    let mut jobs = Vec::with_capacity(seats.len());
    for seat in &seats {
        let space = ctx.spaces.get(&ctx.db, seat.space_id, seat.space_version).await?;
        let slot = seat.slot as usize;
        let params = seat.sampling.params(
            space.max_new_tokens as usize,
            super::generator::match_seed(seat.sampling.seed, seat.match_id.0, slot),
        );
        let prompt = super::generator::chat_prompt(&seat.system_prompt, &seat.prompt);
        let rt2 = rt.clone();
        let prompt_tokens = tokio::task::spawn_blocking(move || rt2.prompt_tokens(&prompt)).await??;
        let attempt =
            attempts.iter().find(|(m, s, _)| *m == seat.match_id && *s == seat.slot).map_or(0, |(_, _, n)| *n as i32);
        jobs.push(Assignment {
            job_id: Uuid::new_v4(),
            match_id: seat.match_id,
            slot: seat.slot,
            attempt,
            identity: Identity {
                base_sha256: ctx.base_model.clone(),
                adapter_sha256: seat.adapter_sha256.clone(),
                template_sha256: base.clone(),
                runtime_version: w.runtime_version.clone(),
                recipe: w.recipe.clone(),
                params,
                prompt_sha256: tokens_sha256(&prompt_tokens),
            },
            prompt_tokens,
        });
    }
    let lease_id = Uuid::new_v4();
    let deadline = Utc::now() + chrono::Duration::seconds(ctx.settings.worker_lease_s as i64);
    store::insert_lease(&mut tx, w.id, lease_id, deadline, &jobs).await?;
    tx.commit().await?;
    tracing::info!(worker = %w.id, lease = %lease_id, jobs = jobs.len(), "leased");
    Ok(Some(LeaseOut { lease_id, deadline, jobs }))
}

/// A signed record as a worker sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    pub record: RolloutRecord,
    pub signature: String,
}

/// Why an answer was refused (nothing changed).
#[derive(Debug, thiserror::Error)]
pub enum AnswerRefused {
    #[error("lease {0} is not open (answered, expired or left): a late or second answer changes nothing")]
    Closed(Uuid),
    #[error("{0}")]
    Invalid(String),
}

/// What happened to an answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answered {
    /// Matches whose answers were accepted now.
    pub accepted: usize,
    /// Matches held for an audit (their pay waits for it).
    pub auditing: usize,
    /// Matches another worker generated first (nothing stored or paid).
    pub void: usize,
    /// Matches rejected at once: a signed record that broke a rule.
    pub rejected: usize,
}

/// Takes a lease's answer: every job answered, every signature valid
/// (else refused, nothing changes); then per match the records checked
/// against their assignments. A record that breaks a rule is signed
/// evidence: the match fails its audit now. The rest are accepted, or held
/// for an audit when the match's draw is under the worker's rate, it came
/// back faster than the device could generate, or it repeats an earlier
/// sampled answer.
pub async fn answer(
    ctx: &Context,
    w: &Worker,
    lease_id: Uuid,
    answers: Vec<Signed>,
) -> anyhow::Result<Result<Answered, AnswerRefused>> {
    let Some(lease) = store::lease(&ctx.db, lease_id).await? else {
        return Ok(Err(AnswerRefused::Closed(lease_id)));
    };
    if lease.worker_id != w.id || lease.state != "open" || lease.deadline < Utc::now() {
        return Ok(Err(AnswerRefused::Closed(lease_id)));
    }
    let jobs = store::lease_jobs(&ctx.db, lease_id).await?;
    if answers.len() != jobs.len() {
        return Ok(Err(AnswerRefused::Invalid(format!(
            "the lease has {} jobs; the answer has {} records",
            jobs.len(),
            answers.len()
        ))));
    }
    let mut by_job: Vec<(&Job, &Signed)> = Vec::with_capacity(jobs.len());
    for job in &jobs {
        let Some(signed) = answers.iter().find(|a| a.record.job_id == job.id) else {
            return Ok(Err(AnswerRefused::Invalid(format!("no record for job {}", job.id))));
        };
        if let Err(why) = signed.record.verify(&w.public_key, &signed.signature) {
            return Ok(Err(AnswerRefused::Invalid(format!("job {}: {why}", job.id))));
        }
        by_job.push((job, signed));
    }
    let rt = ctx.playground.reference().await.map_err(anyhow::Error::msg)?;
    let vocab = rt.config().vocab;
    let secret = store::audit_secret(&ctx.db).await?;
    let rate = worker::audit_rate(w.clean_streak, ctx.settings.economics().audit_floor);
    let device = worker::Device::parse(&w.device).unwrap_or(worker::Device::Cuda);
    let elapsed_s = (Utc::now() - lease.created_at).num_milliseconds().max(1) as f64 / 1000.0;
    // Per match: the rule broken, if any, and why an audit is due.
    let mut plans: Vec<(MatchId, Option<String>, Vec<&'static str>)> = Vec::new();
    let mut notes: Vec<(Uuid, &RolloutRecord, String, serde_json::Value)> = Vec::new();
    for (job, signed) in &by_job {
        let r = &signed.record;
        let broken = check_record(&job.assignment, lease_id, r, vocab, rt.end_of_turn()).err();
        let key = completion_key(&job.assignment.identity, &r.tokens);
        let mut why: Vec<&'static str> = Vec::new();
        if r.tokens.len() as f64 / elapsed_s > device.max_tokens_per_s() {
            why.push("faster than the device generates");
        }
        if job.assignment.identity.params.temperature > 0.0 && store::seen_completion(&ctx.db, &key, job.id).await? {
            why.push("a sampled answer seen before");
        }
        notes.push((
            job.id,
            r,
            hex::encode(r.digest()),
            serde_json::json!({ "completion_key": key, "signature": signed.signature }),
        ));
        match plans.iter_mut().find(|(m, _, _)| *m == job.match_id) {
            Some((_, b, w)) => {
                if b.is_none() {
                    *b = broken;
                }
                w.extend(why);
            }
            None => plans.push((job.match_id, broken, why)),
        }
    }
    let pots = store::pots(&ctx.db, &plans.iter().map(|(m, _, _)| *m).collect::<Vec<_>>()).await?;
    for (m, _, why) in &mut plans {
        if worker::audit_draw(&secret, *m) < rate {
            why.push("drawn");
        }
        if pots.iter().any(|(id, pot)| id == m && *pot >= ctx.settings.worker_full_audit_pot) {
            why.push("a large pot");
        }
    }
    // Store every record under the lease's close: the held ones as
    // `auditing` (the auditor's), the rest as they are until accepted here.
    let held: Vec<MatchId> =
        plans.iter().filter(|(_, broken, why)| broken.is_none() && !why.is_empty()).map(|(m, _, _)| *m).collect();
    let states: Vec<(Uuid, &RolloutRecord, String, serde_json::Value, &str)> = notes
        .into_iter()
        .map(|(job, r, sha, note)| {
            let state = if held.contains(&r.match_id) { "auditing" } else { "leased" };
            (job, r, sha, note, state)
        })
        .collect();
    let mut tx = ctx.db.begin().await?;
    if !store::store_answers(&mut tx, lease_id, &states, AUDIT_CLAIM_S).await? {
        return Ok(Err(AnswerRefused::Closed(lease_id)));
    }
    tx.commit().await?;
    let jobs = store::lease_jobs(&ctx.db, lease_id).await?;
    let mut out = Answered { accepted: 0, auditing: 0, void: 0, rejected: 0 };
    for (m, broken, why) in plans {
        let mine: Vec<Job> = jobs.iter().filter(|j| j.match_id == m).cloned().collect();
        if let Some(rule) = broken {
            let finding = serde_json::json!({ "fault": "rule", "why": rule, "tier": "checks" });
            penalize(ctx, &mine, finding).await?;
            out.rejected += 1;
        } else if !why.is_empty() {
            tracing::info!(worker = %w.id, match_id = %m, reasons = ?why, "held for audit");
            out.auditing += 1;
        } else if finish(ctx, &rt, &mine, None).await? {
            out.accepted += 1;
        } else {
            out.void += 1;
        }
    }
    Ok(Ok(out))
}

/// sha256 of the adapter, prompt and completion: the same answer to the
/// same agent and prompt, whatever the seed.
fn completion_key(identity: &Identity, tokens: &[u32]) -> String {
    let mut h = Sha256::new();
    h.update(identity.adapter_sha256.as_deref().unwrap_or("-"));
    h.update(&identity.prompt_sha256);
    h.update(tokens_sha256(tokens));
    hex::encode(h.finalize())
}

/// The text a record's tokens decode to, cut at a stop string as the
/// engine cuts it.
fn text_of(rt: &Runtime, r: &RolloutRecord) -> anyhow::Result<String> {
    let mut text = rt.tokenizer.decode(&r.tokens, true)?;
    if r.finish == Finish::Stop
        && let Some(cut) = r.identity.params.stop.iter().filter_map(|s| text.find(s.as_str())).min()
    {
        text.truncate(cut);
    }
    Ok(text)
}

/// Accepts one match's jobs (see `store::workers::accept`); true when the
/// match advanced.
async fn finish(ctx: &Context, rt: &Runtime, jobs: &[Job], audit: Option<serde_json::Value>) -> anyhow::Result<bool> {
    let mut outputs = Vec::with_capacity(jobs.len());
    for job in jobs {
        let Some(r) = &job.record else { return Ok(false) };
        outputs.push(NewOutput {
            match_id: job.match_id,
            slot: job.slot,
            text: text_of(rt, r)?,
            finish: serde_json::to_value(r.finish)?.as_str().unwrap_or("length").to_owned(),
            tokens: r.tokens.len() as i32,
        });
    }
    let mut tx = ctx.db.begin().await?;
    let advanced = store::accept(&mut tx, jobs, &outputs, audit, ctx.settings.worker_pay_per_ktoken).await?;
    tx.commit().await?;
    if advanced && let Some(first) = jobs.first() {
        let space = matches::slugs(&ctx.db, &[first.match_id]).await?.pop().map(|s| s.slug).unwrap_or_default();
        Events::publish_many(&ctx.redis, &[Event::new(first.match_id, space, MatchStatus::Generated)]).await;
    }
    Ok(advanced)
}

/// A failed audit: rejected, slashed, banned; the match goes back to the pool.
async fn penalize(ctx: &Context, jobs: &[Job], finding: serde_json::Value) -> anyhow::Result<()> {
    let mut tx = ctx.db.begin().await?;
    let penalty =
        store::reject(&mut tx, jobs, finding.clone(), ctx.settings.worker_slash_pct, ctx.settings.worker_ban_s as i64)
            .await?;
    tx.commit().await?;
    if let (Some(p), Some(first)) = (penalty, jobs.first()) {
        tracing::warn!(worker = %first.worker_id, match_id = %first.match_id, slashed = p.slashed,
                       forfeited = p.forfeited, %finding, "audit failed");
    }
    Ok(())
}

/// Replays one match's held jobs on the reference runtime and accepts or
/// rejects them. Exact tier when the worker ran this process's recipe,
/// tolerant otherwise.
pub async fn audit_match(ctx: &Context, rt: &Arc<Runtime>, jobs: Vec<Job>) -> anyhow::Result<bool> {
    let mut replays = Vec::new();
    for job in &jobs {
        let Some(record) = job.record.clone() else { continue };
        let adapter = match &record.identity.adapter_sha256 {
            Some(sha) => Some(crate::store::adapters::materialize(&ctx.db, &ctx.data_dir, sha).await?),
            None => None,
        };
        let tier = if record.identity.recipe == reference_recipe() {
            Tier::Exact
        } else {
            Tier::Tolerant { logprob: TOLERANT_LOGPROB, near_tie: TOLERANT_NEAR_TIE, max_near_ties: 4 }
        };
        let (rt2, prompt) = (rt.clone(), job.assignment.prompt_tokens.clone());
        let replay = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let adapter = match &adapter {
                Some(dir) => Some(rt2.adapter(dir)?),
                None => None,
            };
            let claim = Claim {
                prompt: &prompt,
                tokens: &record.tokens,
                logprobs: &record.logprobs,
                finish: record.finish,
                end_token: record.end_token,
                params: &record.identity.params,
            };
            Ok(rt2.replay(&claim, adapter.as_deref(), tier)?)
        })
        .await??;
        replays.push((job.slot, tier, replay));
    }
    let failed = replays.iter().find(|(_, _, r)| r.fault.is_some());
    // The tolerant tier's statistics just outside its limits are a soft
    // fail: the match is run again elsewhere, the worker's streak (its
    // reputation) starts over, nothing is slashed.
    let soft = replays.iter().filter(|(_, _, r)| r.fault.is_some()).all(|(_, tier, r)| {
        matches!(tier, Tier::Tolerant { .. })
            && match &r.fault {
                Some(agent_runtime::audit::Fault::Logprob { claimed, computed, .. }) => {
                    (claimed - computed).abs() <= 10.0 * TOLERANT_LOGPROB
                }
                Some(agent_runtime::audit::Fault::Token { .. }) => r.max_logprob_diff <= 10.0 * TOLERANT_LOGPROB,
                _ => false,
            }
    });
    let summary = serde_json::json!({
        "audited_at": Utc::now(),
        "soft": failed.is_some() && soft,
        "seats": replays.iter().map(|(slot, tier, r)| serde_json::json!({
            "slot": slot, "tier": tier, "positions": r.positions, "max_logprob_diff": r.max_logprob_diff,
            "near_ties": r.near_ties, "fault": r.fault.as_ref().map(|f| f.to_string()),
        })).collect::<Vec<_>>(),
    });
    if failed.is_some() {
        if soft {
            let mut tx = ctx.db.begin().await?;
            store::soft_reject(&mut tx, &jobs, summary).await?;
            tx.commit().await?;
        } else {
            penalize(ctx, &jobs, summary).await?;
        }
        return Ok(false);
    }
    finish(ctx, rt, &jobs, Some(summary)).await?;
    Ok(true)
}

/// The tolerant tier's limits, for a worker whose recipe is not the
/// server's (another CPU's kernel path, CUDA): twice the worst honest drift
/// of a calibration run (`arena lab audit-bench --calibrate --rollouts 24
/// --lengths 32` on a 2-core AMD EPYC: scalar and AVX-512 rollouts replayed
/// on AVX2 drifted at most 0.0019 nats; one token of 1,536 differed from
/// the replay's draw, its interval 0.047 from the seeded uniform draw — a
/// candidate moving across top-p's edge shifts every interval). A fault
/// within ten times the log-prob limit is a soft fail (no slash).
pub const TOLERANT_LOGPROB: f32 = 0.004;
/// See [`TOLERANT_LOGPROB`]; in probability (`agent_runtime::audit::Tier::Tolerant`).
pub const TOLERANT_NEAR_TIE: f32 = 0.094;

/// The auditor: replays held answers, oldest first, until `stop`.
pub async fn run_auditor(ctx: Context, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let pending = match store::auditing(&ctx.db, 8).await {
            Ok(jobs) => jobs,
            Err(err) => {
                tracing::warn!(error = %err, "auditor cannot read held answers");
                Vec::new()
            }
        };
        if pending.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(300)) => continue,
                _ = stop.changed() => return,
            }
        }
        let rt = match ctx.playground.reference().await {
            Ok(rt) => rt,
            Err(err) => {
                tracing::error!(error = %err, "auditor has no reference runtime");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        let mut groups: Vec<Vec<Job>> = Vec::new();
        for job in pending {
            match groups.iter_mut().find(|g| g[0].match_id == job.match_id && g[0].lease_id == job.lease_id) {
                Some(g) => g.push(job),
                None => groups.push(vec![job]),
            }
        }
        for jobs in groups {
            if *stop.borrow() {
                return;
            }
            let m = jobs[0].match_id;
            if let Err(err) = audit_match(&ctx, &rt, jobs).await {
                tracing::warn!(match_id = %m, error = %err, "audit could not run; it will be retried");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Expires leases past their deadline every second and releases escrow
/// (and the stakes of workers that left) every ten, until `stop`.
pub async fn run_upkeep(ctx: Context, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
        tick += 1;
        let result: anyhow::Result<()> = async {
            let mut conn = ctx.db.acquire().await?;
            let n = store::expire(&mut conn, None).await?;
            if n > 0 {
                tracing::info!(leases = n, "worker leases expired");
            }
            drop(conn);
            if tick.is_multiple_of(10) {
                store::release(&ctx.db, ctx.settings.worker_escrow_s).await?;
            }
            Ok(())
        }
        .await;
        if let Err(err) = result {
            tracing::warn!(error = %err, "worker upkeep failed");
        }
    }
}
