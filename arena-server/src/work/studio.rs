//! The studio's runs, started from its pages: a dry run (sample matches of
//! a draft between baseline agents and the designer's own, on the studio's
//! engine, judged by the draft's judge) and a red team (`judge calibrate`
//! on the draft). Each registers in `Context::studio_runs` (one per
//! designer, `studio_runs::AT_ONCE` in the process), runs as a task of its
//! own, reports progress there and leaves its report there; nothing is
//! stored or paid.

use crate::context::Context;
use crate::context::studio_runs::{Outcome, RunRefused};
use crate::domain::space::Space;
use crate::domain::{AgentId, UserId};
use crate::work::dry_run::Seat;
use std::sync::Arc;
use uuid::Uuid;

/// Starts a dry run of `n` sample matches of `space` (a draft based on
/// `base`) with `seats`; its id, or why it cannot start now.
pub fn start_dry_run(
    ctx: &Context,
    owner: UserId,
    base: &str,
    space: Space,
    n: usize,
    seats: Vec<Seat>,
) -> Result<Uuid, RunRefused> {
    let started = ctx.studio_runs.register(owner, &space.name, base, n)?;
    let (id, ctx) = (started.id, ctx.clone());
    tokio::spawn(async move {
        let _slot = started.slot;
        let result = dry_run(&ctx, space, n, &seats, id).await;
        ctx.studio_runs.finish(id, shown(result).map(|r| Outcome::DryRun(Arc::new(r))));
    });
    Ok(id)
}

/// Starts a red team of `space` on `cases`; its id, or why it cannot start.
pub fn start_red_team(
    ctx: &Context,
    owner: UserId,
    base: &str,
    space: Space,
    cases: Vec<judge::calibrate::Case>,
) -> Result<Uuid, RunRefused> {
    let total = judge::calibrate::configurations().len();
    let started = ctx.studio_runs.register(owner, &space.name, base, total)?;
    let (id, ctx) = (started.id, ctx.clone());
    tokio::spawn(async move {
        let _slot = started.slot;
        let result = red_team(&ctx, space, cases, id).await;
        ctx.studio_runs.finish(id, shown(result).map(|r| Outcome::RedTeam(Arc::new(r))));
    });
    Ok(id)
}

/// An error as a designer may read it (no server paths).
fn shown<T>(result: anyhow::Result<T>) -> Result<T, String> {
    result.map_err(|e| crate::domain::shown::without_paths(&format!("{e:#}")))
}

/// The draft's judge on the studio's shared judge model (when it needs one)
/// and the shipped embedder.
async fn studio_judge(ctx: &Context, space: &Space) -> anyhow::Result<judge::Judge> {
    let model = if space.judge.needs_model() {
        Some(ctx.playground.judge_model().await.map_err(anyhow::Error::msg)?)
    } else {
        None
    };
    Ok(judge::Judge::for_space(Arc::new(space.judge.clone()), model, ctx.playground.model_path())?)
}

async fn dry_run(
    ctx: &Context,
    space: Space,
    n: usize,
    seats: &[Seat],
    id: Uuid,
) -> anyhow::Result<crate::domain::dry_run::Report> {
    let engine = ctx.playground.studio_engine().await.map_err(anyhow::Error::msg)?;
    let generator = Arc::new(crate::work::generator::EngineGenerator { engine });
    let judge = Arc::new(studio_judge(ctx, &space).await?);
    let runs = ctx.studio_runs.clone();
    crate::work::dry_run::run(&space, generator, judge, n, seats, move |done, _| runs.progress(id, done, None)).await
}

async fn red_team(
    ctx: &Context,
    space: Space,
    cases: Vec<judge::calibrate::Case>,
    id: Uuid,
) -> anyhow::Result<judge::calibrate::Report> {
    let judge = studio_judge(ctx, &space).await?;
    let (config, model, embedder) = (judge.config.clone(), judge.model.clone(), judge.embedder);
    let runs = ctx.studio_runs.clone();
    let report = tokio::task::spawn_blocking(move || {
        judge::calibrate::run(config, model, embedder, &cases, |line| runs.step(id, line))
    })
    .await??;
    Ok(report)
}

/// The designer's own agents `picks` as dry-run seats (each at its current
/// version, its adapter unpacked); None when one is not theirs.
pub async fn own_seats(ctx: &Context, owner: UserId, picks: &[AgentId]) -> anyhow::Result<Option<Vec<Seat>>> {
    let mut seats = Vec::new();
    for &agent in picks {
        let Some(row) = crate::store::agents::agent(&ctx.db, agent).await?.filter(|a| a.owner_id == owner) else {
            return Ok(None);
        };
        let versions = crate::store::agents::versions(&ctx.db, agent).await?;
        let Some(version) = versions.into_iter().find(|v| v.version == row.current_version) else {
            return Ok(None);
        };
        let adapter = match &version.adapter_sha256 {
            Some(sha) => Some(crate::store::adapters::materialize(&ctx.db, &ctx.data_dir, sha).await?),
            None => None,
        };
        seats.push(Seat {
            name: format!("{} v{}", row.name, row.current_version),
            system: version.system_prompt,
            sampling: serde_json::from_value(version.sampling).unwrap_or_default(),
            adapter,
        });
    }
    Ok(Some(seats))
}
