//! The `arena` command line: `args` holds clap's types; each command's code
//! is in the file of its name. `main` parses and calls [`main`] here.

pub mod abuse;
pub mod args;
pub mod bench;
pub mod bench_pages;
pub mod config;
pub mod doctor;
pub mod experiment;
pub mod export;
pub mod games;
pub mod judge;
pub mod ledger;
pub mod migrate;
pub mod model;
pub mod seed;
pub mod serve;
pub mod space;
pub mod train;
pub mod user;
pub mod verify_log;

use crate::app::CONNECT_TIMEOUT;
use crate::app::config::{Settings, redact_url};
use crate::store;
use agent_runtime::train::Objective;
use args::{
    BenchCommand, Cli, Command, ExperimentCommand, JudgeCommand, LedgerCommand, ModelCommand, SpaceCommand,
    TrainCommand, UserCommand,
};
use std::process::ExitCode;

/// Loads the settings and runs the command; the process's exit code.
pub async fn main(cli: Cli) -> ExitCode {
    let mut settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    match run(cli.command, &mut settings).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", report(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each cause shown once: our error messages
/// already embed their direct cause.
fn report(err: &anyhow::Error) -> String {
    let mut message = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
}

async fn pool(settings: &Settings) -> anyhow::Result<sqlx::PgPool> {
    Ok(store::connect(&settings.database, CONNECT_TIMEOUT).await?)
}

/// Runs blocking model work off the async executor.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> anyhow::Result<T> + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await?
}

async fn run(command: Command, settings: &mut Settings) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve::run(args, settings).await?,
        Command::Migrate => migrate::run(settings).await?,
        Command::Doctor => {
            let findings = doctor::run(settings).await;
            print!("{}", doctor::render(&findings));
            if findings.iter().any(|f| !f.ok) {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Model(ModelCommand::Fetch { out }) => {
            let out = out.unwrap_or_else(|| settings.model.path.clone());
            blocking(move || model::fetch(&out)).await?
        }
        Command::Model(ModelCommand::Verify { model: path }) => {
            let settings = settings.clone();
            blocking(move || model::verify(path, &settings)).await?
        }
        Command::Model(ModelCommand::Info { model: args }) => model::info(&args, settings)?,
        Command::Model(ModelCommand::Tokenize { model: args, text }) => model::tokenize(&args, &text, settings)?,
        Command::Model(ModelCommand::Generate(args)) => {
            let settings = settings.clone();
            blocking(move || model::generate(args, &settings)).await?
        }
        Command::Model(ModelCommand::Bench { model: args, reps, decode_tokens, no_llama_cpp, reference_ppl }) => {
            let settings = settings.clone();
            blocking(move || model::bench(&args, reps, decode_tokens, !no_llama_cpp, reference_ppl, &settings)).await?
        }
        Command::Judge(args) => {
            let settings = settings.clone();
            return blocking(move || match args.command {
                Some(JudgeCommand::Calibrate { space, cases, limit, json, answers, features, model }) => {
                    judge::calibrate(
                        &space,
                        &cases,
                        limit,
                        json,
                        answers.as_deref(),
                        features.as_deref(),
                        &model,
                        &settings,
                    )
                }
                Some(JudgeCommand::Train {
                    answers,
                    cases,
                    features,
                    features_out,
                    refresh,
                    out,
                    exclude,
                    without,
                    seed,
                    model,
                }) => judge::train(
                    &answers,
                    &cases,
                    features.as_deref(),
                    features_out.as_deref(),
                    &out,
                    &exclude,
                    &without,
                    &refresh,
                    seed,
                    &model,
                    &settings,
                ),
                None => judge::judge(args.space.as_deref(), args.input.as_deref(), &args.model, &settings),
            })
            .await;
        }
        Command::Space(SpaceCommand::Validate { files }) => {
            if !space::validate(&files) {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Space(SpaceCommand::DryRun { file, matches, model }) => {
            return space::dry_run(&file, matches, &model, settings).await;
        }
        Command::Space(SpaceCommand::Publish { files, owner }) => {
            return space::publish(&pool(settings).await?, &files, &owner).await;
        }
        Command::User(UserCommand::Create { username, role }) => {
            user::create(&pool(settings).await?, settings, &username, role).await?
        }
        Command::User(UserCommand::Role { username, role }) => {
            user::set_role(&pool(settings).await?, &username, role).await?
        }
        Command::Ledger(LedgerCommand::Check { json }) => return ledger::check(&pool(settings).await?, json).await,
        Command::Ledger(LedgerCommand::Grant { username, amount, memo, key }) => {
            ledger::grant(&pool(settings).await?, &username, amount, &memo, key.as_deref()).await?
        }
        Command::VerifyLog { space } => return verify_log::run(&pool(settings).await?, &space).await,
        Command::Bench(BenchCommand::ControlPlane {
            matches,
            spaces,
            agents_per_match,
            players,
            no_pgbench,
            pgbench_seconds,
            matchmaker_interval_ms,
            game_turns,
        }) => {
            let args = bench::ControlPlaneArgs {
                matches,
                spaces,
                agents_per_match,
                players,
                pgbench: !no_pgbench,
                pgbench_seconds,
                matchmaker_interval_ms,
                game_turns,
            };
            bench::control_plane(settings, args).await?;
        }
        Command::Bench(BenchCommand::Games { space, games: n, threads, no_forfeit }) => {
            games::bench(&space, n, threads, no_forfeit, settings).await?;
        }
        Command::Bench(BenchCommand::Export { pairs, keep, out }) => {
            export::bench(settings, export::ExportBenchArgs { pairs, keep, out }).await?;
        }
        Command::Export(a) => {
            let filter = crate::domain::dataset::PairFilter {
                spaces: a.space,
                min_margin: a.min_margin,
                agreed_only: a.agreed_only,
                dedupe: a.dedupe,
                languages: a.languages,
                min_rating: a.min_rating,
                max_rating: a.max_rating,
                min_chars: a.min_chars,
                max_chars: a.max_chars,
                ..Default::default()
            };
            let args = export::ExportArgs {
                filter,
                format: a.format,
                conversational: a.conversational,
                gzip: a.gzip,
                scrub_pii: a.scrub_pii,
                limit: a.limit,
                out: a.out,
            };
            export::export(&pool(settings).await?, args).await?;
        }
        Command::Bench(BenchCommand::Pages { matches, requests }) => {
            bench_pages::run(settings, bench_pages::PagesArgs { matches, requests }).await?;
        }
        Command::Bench(BenchCommand::Abuse { seconds, clients, streams, max_requests, hostile_space }) => {
            abuse::run(settings, abuse::AbuseArgs { seconds, clients, streams, max_requests, hostile_space }).await?;
        }
        Command::Train(TrainCommand::Dpo(args)) => train::train(&args, Objective::Dpo, settings)?,
        Command::Train(TrainCommand::Sft(args)) => train::train(&args, Objective::Sft, settings)?,
        Command::Train(TrainCommand::Grpo(args)) => train::grpo(&args, settings)?,
        Command::Train(TrainCommand::Verify { manifest, model, pairs }) => {
            if !train::verify(&manifest, model.as_deref(), pairs.as_deref())? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Train(TrainCommand::BenchGrpo {
            model,
            steps,
            group,
            prompts_per_step,
            iterations,
            max_new_tokens,
            rank,
            beta,
            space,
            python,
            no_trl,
        }) => {
            let args = train::GrpoBenchArgs {
                steps,
                group,
                prompts_per_step,
                iterations,
                max_new_tokens,
                rank,
                beta,
                space,
                python,
                trl: !no_trl,
            };
            train::bench_grpo(&model, &args, settings)?;
        }
        Command::Train(TrainCommand::Bench { model, steps, batch_size, pairs, python, no_trl }) => {
            let args = train::DpoBenchArgs { steps, batch_size, pairs, python, trl: !no_trl };
            train::bench(&model, &args, settings)?;
        }
        Command::Experiment(ExperimentCommand::Loop(args)) => experiment::run(args, settings).await?,
        Command::Experiment(ExperimentCommand::Games(args)) => games::run(args, settings).await?,
        Command::Seed { spaces } => {
            let pool = pool(settings).await?;
            store::migrate(&pool, &redact_url(&settings.database.url)).await?;
            seed::seed(&pool, settings, &spaces).await?;
        }
        Command::Config => config::show(settings),
    }
    Ok(ExitCode::SUCCESS)
}
