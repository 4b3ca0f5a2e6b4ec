//! `arena space validate | publish`: Space files from the command line.

use super::args::{SpaceDryRunArgs, SpacePublishArgs, SpaceValidateArgs};
use crate::app::config::Settings;
use crate::domain::space::Space;
use crate::store::spaces::{self, Publisher};
use crate::store::users;
use judge::files::SpaceFiles;
use sqlx::PgPool;
use std::path::Path;
use std::process::ExitCode;

/// Reads a Space file and the files it names from its own folder (relative
/// names inside it, regular files, sizes capped: `judge::files`); any file
/// that cannot be read is an error.
pub fn read_from_disk(path: &Path) -> Result<(String, SpaceFiles), String> {
    judge::files::read_space_whole(path)
}

/// Reads and checks a Space file; errors are rendered `FILE:LINE:COL: message`,
/// followed by why a file it names could not be read.
pub fn load_space(path: &Path) -> Result<Space, Vec<String>> {
    let read = judge::files::read_space(path).map_err(|e| vec![e])?;
    let base = path.parent().unwrap_or(Path::new("."));
    let file = path.display().to_string();
    let text = &read.source;
    match Space::parse(text, &read.files, base) {
        Ok(space) if read.problems.is_empty() => Ok(space),
        Ok(_) => Err(read.problems),
        Err(errs) => Err(errs.iter().map(|e| e.render(&file, text)).chain(read.problems.iter().cloned()).collect()),
    }
}

/// `arena space validate`: every file checked, every error printed.
/// Returns whether all were valid.
pub fn validate(args: &SpaceValidateArgs) -> bool {
    let mut ok = true;
    for path in &args.files {
        match load_space(path) {
            Ok(space) => println!(
                "{}: ok — {} ({} prompts, {} agents per match, {} verifiers, judge {}{})",
                path.display(),
                space.name,
                space.prompts.len(),
                space.agents_per_match,
                space.judge.verifiers.len(),
                format!("{:?}", space.judge.mode).to_lowercase(),
                space.game.as_ref().map(game_summary).unwrap_or_default()
            ),
            Err(errors) => {
                ok = false;
                for e in errors {
                    println!("{e}");
                }
            }
        }
    }
    ok
}

/// Who may publish as `owner`: a designer or an admin.
pub async fn publisher(pool: &PgPool, owner: &str) -> anyhow::Result<Publisher> {
    let user = users::by_username(pool, owner).await?.ok_or_else(|| anyhow::anyhow!("no user {owner:?}"))?;
    let role = user.role.0;
    anyhow::ensure!(
        role.scopes().contains(&crate::domain::user::Scope::Design),
        "{owner} is a {}: only designers and admins own Spaces",
        role.as_str()
    );
    Ok(Publisher { user: user.id, admin: role == crate::domain::user::Role::Admin, quota_bytes: None })
}

/// `arena space publish`: each file and the files it names, as `owner`.
pub async fn publish(args: &SpacePublishArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let pool = &super::pool(settings).await?;
    let by = publisher(pool, &args.owner).await?;
    let mut failed = false;
    for file in &args.files {
        let result = match read_from_disk(file) {
            Ok((source, extra)) => spaces::publish(pool, by, &source, &extra).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match result {
            Ok(p) if p.created => println!("{}: published {} version {}", file.display(), p.slug, p.version),
            Ok(p) => println!("{}: {} version {} unchanged", file.display(), p.slug, p.version),
            Err(e) => {
                failed = true;
                eprintln!("{}: {e}", file.display());
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Publishes one Space file (and the files it names) as `by`.
pub async fn publish_file(pool: &PgPool, by: Publisher, path: &Path) -> anyhow::Result<spaces::Published> {
    let (source, files) = read_from_disk(path).map_err(|e| anyhow::anyhow!(e))?;
    spaces::publish(pool, by, &source, &files).await.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// `arena space dry-run`: sample matches of a draft on the real runtime
/// and judge; the summary and the matches as JSON on stdout, progress on
/// stderr. An invalid file prints its errors and exits 1.
pub async fn dry_run(dry: &SpaceDryRunArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    use std::sync::Arc;
    let SpaceDryRunArgs { file: path, matches, model: args } = dry;
    let matches = *matches;
    let space = match load_space(path) {
        Ok(space) => space,
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    anyhow::ensure!(
        (1..=crate::work::dry_run::MAX_MATCHES).contains(&matches),
        "--matches is 1..={}",
        crate::work::dry_run::MAX_MATCHES
    );
    let model = super::model::model_path(args, settings)?;
    let threads = args.threads.unwrap_or_else(agent_runtime::model::default_threads);
    let started = std::time::Instant::now();
    let load = model.clone();
    let runtime = tokio::task::spawn_blocking(move || agent_runtime::engine::Runtime::load(&load, threads)).await??;
    let engine = agent_runtime::engine::Engine::start(Arc::new(runtime), Default::default());
    let generator = Arc::new(crate::work::generator::EngineGenerator { engine });
    let judge_model = if space.judge.needs_model() {
        let path = space.judge.model.clone().unwrap_or(model.clone());
        Some(Arc::new(
            tokio::task::spawn_blocking(move || judge::JudgeModel::load(&path, threads))
                .await?
                .map_err(anyhow::Error::msg)?,
        ))
    } else {
        None
    };
    let judge = Arc::new(judge::Judge::for_space(Arc::new(space.judge.clone()), judge_model, &model)?);
    eprintln!("dry run: models loaded in {:.1} s", started.elapsed().as_secs_f64());
    let seats = crate::work::dry_run::seats(Vec::new());
    let report = crate::work::dry_run::run(&space, generator, judge, matches, &seats, |done, n| {
        eprintln!("dry run: {done}/{n} matches")
    })
    .await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

/// A multi-turn Space's game in a few words, for `validate`.
fn game_summary(game: &referee::Referee) -> String {
    let kind = match &game.rules {
        referee::Rules::Negotiation(n) => format!("negotiation over {}", n.pot),
        referee::Rules::Script(s) => format!("script {}", s.name),
        rules => rules.kind().to_owned(),
    };
    let illegal = match game.illegal {
        referee::Illegal::Forfeit => "forfeit".to_owned(),
        referee::Illegal::Penalty { points, max } => format!("penalty {points}, forfeit past {max}"),
        referee::Illegal::Retry { retries } => format!("{retries} retries, then forfeit"),
    };
    format!("; {kind}, at most {} turns, illegal moves: {illegal}", game.turns.max_turns)
}
