//! `arena judge` and `arena judge calibrate`: the judge from the command line.

use super::args::ModelArgs;
use super::model::model_path;
use crate::app::config::Settings;
use agent_runtime::model::default_threads;
use anyhow::{Context, bail};
use judge::{Judge, JudgeConfig, JudgeModel, MatchInput};
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

/// The Space's judge configuration; invalid files print every error as
/// `FILE:LINE:COL: message`.
fn load_config(space: &Path) -> anyhow::Result<Arc<JudgeConfig>> {
    match JudgeConfig::load(space) {
        Ok(cfg) => Ok(Arc::new(cfg)),
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            bail!(
                "{} is not a valid Space ({} error{})",
                space.display(),
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            )
        }
    }
}

fn load_model(cfg: &JudgeConfig, args: &ModelArgs, settings: &Settings) -> anyhow::Result<Option<Arc<JudgeModel>>> {
    if !cfg.needs_model() {
        return Ok(None);
    }
    // The Space's own judge model wins over --model and the configured default.
    let path = match &cfg.model {
        Some(path) => path.clone(),
        None => model_path(args, settings)?,
    };
    let threads = args.threads.unwrap_or_else(default_threads);
    let model = JudgeModel::load(&path, threads).map_err(anyhow::Error::msg)?;
    Ok(Some(Arc::new(model)))
}

pub fn judge(
    space: Option<&Path>,
    input: Option<&Path>,
    args: &ModelArgs,
    settings: &Settings,
) -> anyhow::Result<ExitCode> {
    let (Some(space), Some(input)) = (space, input) else {
        bail!("arena judge needs --space FILE and --input MATCH.json");
    };
    let cfg = load_config(space)?;
    let text = if input == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading the match from stdin")?;
        s
    } else {
        std::fs::read_to_string(input).with_context(|| format!("reading {}", input.display()))?
    };
    let input_match: MatchInput = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a match: expected {{\"prompt\", \"reference\"?, \"candidates\": [{{\"id\", \"text\"}}]}}",
            input.display()
        )
    })?;
    let model = load_model(&cfg, args, settings)?;
    let verdict = Judge::new(cfg, model)?.judge(&input_match)?;
    println!("{}", serde_json::to_string_pretty(&verdict)?);
    Ok(ExitCode::SUCCESS)
}

pub fn calibrate(
    space: &Path,
    cases: &Path,
    limit: Option<usize>,
    json: bool,
    args: &ModelArgs,
    settings: &Settings,
) -> anyhow::Result<ExitCode> {
    let cfg = load_config(space)?;
    let mut cases = judge::calibrate::load_cases(cases).map_err(anyhow::Error::msg)?;
    if let Some(n) = limit {
        cases.truncate(n);
    }
    let model = load_model(&cfg, args, settings)?;
    let started = std::time::Instant::now();
    let report = judge::calibrate::run(cfg, model, &cases, |line| eprintln!("{line}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", judge::calibrate::render(&report, &space.display().to_string()));
        println!("\n({:.0} s)", started.elapsed().as_secs_f64());
    }
    Ok(ExitCode::SUCCESS)
}
