//! `arena judge` and `arena judge calibrate`: the judge from the command line.

use super::args::{CalibrateArgs, JudgeArgs, JudgeTrainArgs, ModelArgs};
use super::model::model_path;
use crate::app::config::Settings;
use agent_runtime::model::default_threads;
use anyhow::{Context, bail};
use judge::trained::{self, FeatureTable, TrainedJudge};
use judge::{Embedder, Judge, JudgeConfig, JudgeMode, JudgeModel, MatchInput};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
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
    let model = JudgeModel::load(&path, threads)?;
    Ok(Some(Arc::new(model)))
}

/// The embedding model beside the judge model, for a combined judge that
/// reads embeddings (or when `always`).
fn load_embedder(
    cfg: &JudgeConfig,
    args: &ModelArgs,
    settings: &Settings,
    always: bool,
) -> anyhow::Result<Option<Arc<Embedder>>> {
    let needed = cfg.mode == JudgeMode::Combined && cfg.trained.as_ref().is_some_and(|t| t.judge.uses_embeddings());
    if !needed && !always {
        return Ok(None);
    }
    let dir = judge::embed::default_dir(&model_path(args, settings)?);
    Ok(Some(Arc::new(Embedder::load(&dir)?)))
}

pub fn judge(judge_args: &JudgeArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let args = &judge_args.model;
    let (Some(space), Some(input)) = (judge_args.space.as_deref(), judge_args.input.as_deref()) else {
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
    let embedder = load_embedder(&cfg, args, settings, false)?;
    let verdict = Judge::new(cfg, model)?.with_embedder(embedder).judge(&input_match)?;
    println!("{}", serde_json::to_string_pretty(&verdict)?);
    Ok(ExitCode::SUCCESS)
}

pub fn calibrate(calibrate: &CalibrateArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let CalibrateArgs { space, cases: cases_file, limit, json, answers, features, model: args } = calibrate;
    let (limit, json, answers, features) = (*limit, *json, answers.as_deref(), features.as_deref());
    let cfg = load_config(space)?;
    let mut cases = judge::calibrate::load_cases(cases_file)?;
    if let Some(n) = limit {
        cases.truncate(n);
    }
    let model = load_model(&cfg, args, settings)?;
    let embedder = load_embedder(&cfg, args, settings, answers.is_some() || features.is_some())?;
    let started = std::time::Instant::now();
    let mut report =
        judge::calibrate::run(cfg.clone(), model.clone(), embedder.clone(), &cases, |line| eprintln!("{line}"))?;
    if let Some(m) = model.as_ref().filter(|_| cfg.mode != JudgeMode::None) {
        report.template_consistency = Some(judge::calibrate::template_consistency(m, &cfg.rubric, &cases)?);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", judge::calibrate::render(&report, &space.display().to_string()));
        println!("\n({:.0} s)", started.elapsed().as_secs_f64());
    }
    let (table, timing_pairs) = match (answers, features) {
        (None, None) => return Ok(ExitCode::SUCCESS),
        (_, Some(path)) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            // Timed on the corpus's pairs, which this run has not read yet
            // (the red-team cases are cached by now).
            let corpus = judge::degrade::parse_corpus(trained::ANSWERS_JSONL)?;
            // One pair per answer (nothing shared), the gross families in turn.
            let mut fresh = judge::degrade::generate(&corpus, 1);
            fresh.retain(|p| {
                let k: usize = p.id.split('-').next().and_then(|k| k.parse().ok()).unwrap_or(0);
                p.family == judge::degrade::GROSS[k % judge::degrade::GROSS.len()]
            });
            (FeatureTable::parse(&text)?, fresh)
        }
        (Some(answers), None) => {
            // Read the corpus's degradation families with this Space's
            // rubric and caps (slow: every pair through both models).
            let model = match &model {
                Some(m) => m.clone(),
                None => Arc::new(JudgeModel::load(
                    &model_path(args, settings)?,
                    args.threads.unwrap_or_else(default_threads),
                )?),
            };
            let (pairs, sources) = corpus_pairs(answers, &[cases_file.to_owned()], 1)?;
            let reader = Judge::new(cfg.clone(), Some(model))?.with_embedder(embedder.clone());
            let table =
                trained::build_table(&reader, &pairs, sources, |done, total| eprintln!("read {done}/{total} pairs"))?;
            (table, pairs)
        }
    };
    let shipped = TrainedJudge::default_judge()?;
    println!("\n{}", trained::render_evaluation(&table, &shipped));
    // The combined judge's time per two-candidate match, all defenses.
    let model = match model {
        Some(m) => m,
        None => Arc::new(JudgeModel::load(&model_path(args, settings)?, args.threads.unwrap_or_else(default_threads))?),
    };
    let embedder = match embedder {
        Some(e) => Some(e),
        None => load_embedder(&cfg, args, settings, true)?,
    };
    let pairs = timing_pairs;
    let mut combined = (*cfg).clone();
    combined.mode = JudgeMode::Combined;
    combined.trained = Some(Arc::new(judge::spec::LoadedTrained {
        sha256: shipped.sha256(),
        judge: shipped,
        name: "default".to_owned(),
    }));
    let timed = Judge::new(Arc::new(combined), Some(model))?.with_embedder(embedder);
    let mut ms: Vec<f64> = Vec::new();
    // Fresh texts (nothing cached): a match is timed once.
    for p in pairs.iter().filter(|p| p.family != trained::NULL_FAMILY).take(40) {
        let input = MatchInput {
            prompt: p.prompt.clone(),
            reference: p.reference.clone(),
            candidates: vec![
                judge::Candidate { id: "a".to_owned(), text: p.better.clone() },
                judge::Candidate { id: "b".to_owned(), text: p.worse.clone() },
            ],
        };
        let t = std::time::Instant::now();
        timed.judge(&input)?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    let q = |f: f64| ms.get(((ms.len() as f64 - 1.0) * f).round() as usize).copied().unwrap_or(0.0);
    println!(
        "combined judge time per 2-candidate match (all defenses, {} matches, {} threads): p50 {:.0} ms, p99 {:.0} ms",
        ms.len(),
        args.threads.unwrap_or_else(default_threads),
        q(0.5),
        q(0.99)
    );
    Ok(ExitCode::SUCCESS)
}

fn file_sha256(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// The known-better pairs of a corpus of good answers (its degradation
/// families and its null set) plus red-team cases, and the files' sha256s.
fn corpus_pairs(
    answers: &Path,
    cases: &[std::path::PathBuf],
    seed: u64,
) -> anyhow::Result<(Vec<judge::degrade::Generated>, BTreeMap<String, String>)> {
    let text = std::fs::read_to_string(answers).with_context(|| format!("reading {}", answers.display()))?;
    let corpus = judge::degrade::parse_corpus(&text).map_err(|e| anyhow::anyhow!("{}: {e}", answers.display()))?;
    let mut sources = BTreeMap::new();
    sources.insert(answers.display().to_string(), file_sha256(answers)?);
    let mut pairs = judge::degrade::generate(&corpus, seed);
    pairs.extend(judge::degrade::null_pairs(&corpus));
    for file in cases {
        let loaded = judge::calibrate::load_cases(file)?;
        let name = file.file_stem().map_or("cases".to_owned(), |s| format!("redteam-{}", s.to_string_lossy()));
        pairs.extend(trained::from_cases(&loaded, &name));
        sources.insert(file.display().to_string(), file_sha256(file)?);
    }
    Ok((pairs, sources))
}

/// Most human pairs one training run reads.
const MAX_HUMAN_PAIRS: i64 = 20_000;

/// The arena's verified human pairs outside the votes' audit share, as
/// known-better pairs of the family "human" (runs on a blocking thread of
/// the CLI's runtime).
fn human_pairs(settings: &Settings) -> anyhow::Result<Vec<judge::degrade::Generated>> {
    use crate::domain::votes::{AUDIT_SHARE_PCT, in_audit_share};
    let handle = tokio::runtime::Handle::current();
    let rows = handle.block_on(async {
        let pool = crate::store::connect(&settings.database, std::time::Duration::from_secs(10)).await?;
        anyhow::Ok(crate::store::votes::training_pairs(&pool, MAX_HUMAN_PAIRS).await?)
    })?;
    Ok(rows
        .into_iter()
        .filter(|r| !in_audit_share(r.match_id.as_uuid(), AUDIT_SHARE_PCT))
        .map(|r| judge::degrade::Generated {
            id: format!("human-{}", r.id),
            family: "human".to_owned(),
            space: r.space,
            prompt: r.prompt,
            reference: r.reference,
            better: r.better,
            worse: r.worse,
        })
        .collect())
}

/// `arena judge train`.
pub fn train(train: &JudgeTrainArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let JudgeTrainArgs {
        answers,
        cases,
        features,
        features_out,
        out,
        exclude,
        without,
        refresh,
        seed,
        votes,
        model: args,
    } = train;
    let (features, features_out, seed) = (features.as_deref(), features_out.as_deref(), *seed);
    let started = std::time::Instant::now();
    let reader = || -> anyhow::Result<Judge> {
        let path = model_path(args, settings)?;
        let threads = args.threads.unwrap_or_else(default_threads);
        let model = Arc::new(JudgeModel::load(&path, threads)?);
        let embedder = Arc::new(Embedder::load(&judge::embed::default_dir(&path))?);
        // Read as a Space with the default rubric and a 160-token cap.
        let cfg = JudgeConfig::parse(
            "[judge]\nmode = \"pairwise\"\nmax_candidate_tokens = 160\n",
            &Default::default(),
            Path::new("."),
        )
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok(Judge::new(Arc::new(cfg), Some(model))?.with_embedder(Some(embedder)))
    };
    let table = match features {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let mut table = FeatureTable::parse(&text)?;
            if !refresh.is_empty() {
                let (pairs, sources) = corpus_pairs(answers, cases, seed)?;
                let chosen: Vec<_> = pairs.into_iter().filter(|p| refresh.contains(&p.family)).collect();
                eprintln!("reading {} pairs of {} again", chosen.len(), refresh.join(", "));
                let fresh = trained::build_table(&reader()?, &chosen, sources.clone(), |done, total| {
                    eprintln!("read {done}/{total} pairs ({:.0} s)", started.elapsed().as_secs_f64())
                })?;
                // In place of the old rows, so the table keeps its order.
                let at = table.rows.iter().position(|r| refresh.contains(&r.family)).unwrap_or(table.rows.len());
                table.rows.retain(|r| !refresh.contains(&r.family));
                let at = at.min(table.rows.len());
                table.rows.splice(at..at, fresh.rows);
                table.sources = sources;
                let mut bytes = serde_json::to_vec(&table)?;
                bytes.push(b'\n');
                if let Some(out) = features_out {
                    std::fs::write(out, &bytes).with_context(|| format!("writing {}", out.display()))?;
                }
                table = FeatureTable::parse(std::str::from_utf8(&bytes)?)?;
            }
            table
        }
        None => {
            let (mut pairs, mut sources) = corpus_pairs(answers, cases, seed)?;
            if *votes {
                let human = human_pairs(settings)?;
                eprintln!("{} verified human pairs from the arena's votes (the audit share left out)", human.len());
                sources.insert("arena votes (human_verified pairs)".to_owned(), format!("{} pairs", human.len()));
                pairs.extend(human);
            }
            let reader = reader()?;
            eprintln!("reading {} pairs with the judge model and the embedding model", pairs.len());
            let table = trained::build_table(&reader, &pairs, sources, |done, total| {
                eprintln!("read {done}/{total} pairs ({:.0} s)", started.elapsed().as_secs_f64())
            })?;
            let mut bytes = serde_json::to_vec(&table)?;
            bytes.push(b'\n');
            if let Some(path) = features_out {
                std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote the feature table {} (sha256 {})", path.display(), table.sha256());
            }
            // Fit on the table as the file gives it back, so that a refit
            // from the file (`--features`) gives the same bytes.
            FeatureTable::parse(std::str::from_utf8(&bytes)?)?
        }
    };
    let judge = trained::fit_artifact(&table, exclude, without, trained::DEFAULT_L2, trained::DEFAULT_ITERATIONS);
    std::fs::write(out, judge.to_bytes()).with_context(|| format!("writing {}", out.display()))?;
    println!("{} sha256 {}", out.display(), judge.sha256());
    println!(
        "fitted on {} pairs in {} families ({} null pairs set the tie threshold |z| < {:.4}; pairwise |s| < {:.4})",
        judge.manifest.families.values().sum::<usize>(),
        judge.manifest.families.len(),
        judge.manifest.null_pairs,
        judge.tie_threshold,
        judge.pairwise_tie
    );
    for (name, w) in judge.features.iter().zip(&judge.weights) {
        println!(
            "  {name:<16} {w:+.4}{}",
            if judge.held_at_zero.contains(name) { "  (held at zero when judging)" } else { "" }
        );
    }
    println!("\n{}", trained::render_evaluation(&table, &judge));
    println!("({:.0} s)", started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}
