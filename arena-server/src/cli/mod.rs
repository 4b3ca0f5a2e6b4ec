//! The `arena` command line: `args` holds clap's types, one `Args` struct
//! per command, which the command's function takes whole; each operator
//! command's code is in the file of its name, and the benchmarks and
//! experiments are in `lab/`. `main` parses and calls [`main`] here.

pub mod args;
pub mod config;
pub mod doctor;
pub mod export;
pub mod judge;
pub mod lab;
pub mod ledger;
pub mod migrate;
pub mod model;
pub mod seed;
pub mod serve;
pub mod space;
pub mod train;
pub mod user;
pub mod verify_log;
pub mod worker;

use crate::app::CONNECT_TIMEOUT;
use crate::app::config::Settings;
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

/// Runs blocking model work off the async executor, with its own copy of
/// the settings.
async fn blocking<T: Send + 'static>(
    settings: &Settings,
    f: impl FnOnce(&Settings) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || f(&settings)).await?
}

/// What a command's function returns, as the process's exit code.
trait Done {
    fn code(self) -> ExitCode;
}

impl Done for () {
    fn code(self) -> ExitCode {
        ExitCode::SUCCESS
    }
}

impl Done for ExitCode {
    fn code(self) -> ExitCode {
        self
    }
}

/// A check that passed (true) or failed (false, exit 1).
impl Done for bool {
    fn code(self) -> ExitCode {
        if self { ExitCode::SUCCESS } else { ExitCode::FAILURE }
    }
}

async fn run(command: Command, settings: &mut Settings) -> anyhow::Result<ExitCode> {
    use lab::{abuse, control_plane, experiment, export_bench, games, model_bench, pages, train_bench};
    Ok(match command {
        Command::Serve(a) => serve::run(a, settings).await?.code(),
        Command::Migrate => migrate::run(settings).await?.code(),
        Command::Doctor => doctor::check(settings).await.code(),
        Command::Config => {
            config::show(settings);
            ExitCode::SUCCESS
        }
        Command::Model(ModelCommand::Fetch(a)) => blocking(settings, move |s| model::fetch(&a, s)).await?.code(),
        Command::Model(ModelCommand::Verify(a)) => blocking(settings, move |s| model::verify(&a, s)).await?.code(),
        Command::Model(ModelCommand::Info(a)) => model::info(&a, settings)?.code(),
        Command::Model(ModelCommand::Tokenize(a)) => model::tokenize(&a, settings)?.code(),
        Command::Model(ModelCommand::Generate(a)) => blocking(settings, move |s| model::generate(&a, s)).await?.code(),
        Command::Model(ModelCommand::Bench(a)) => blocking(settings, move |s| model_bench::run(&a, s)).await?.code(),
        Command::Judge(a) => blocking(settings, move |s| match &a.command {
            Some(JudgeCommand::Calibrate(c)) => judge::calibrate(c, s),
            Some(JudgeCommand::Train(t)) => judge::train(t, s),
            None => judge::judge(&a, s),
        })
        .await?
        .code(),
        Command::Space(SpaceCommand::Validate(a)) => space::validate(&a).code(),
        Command::Space(SpaceCommand::DryRun(a)) => space::dry_run(&a, settings).await?.code(),
        Command::Space(SpaceCommand::Publish(a)) => space::publish(&a, settings).await?.code(),
        Command::User(UserCommand::Create(a)) => user::create(&a, settings).await?.code(),
        Command::User(UserCommand::Role(a)) => user::set_role(&a, settings).await?.code(),
        Command::Ledger(LedgerCommand::Check(a)) => ledger::check(&a, settings).await?.code(),
        Command::Ledger(LedgerCommand::Grant(a)) => ledger::grant(&a, settings).await?.code(),
        Command::VerifyLog(a) => verify_log::run(&a, settings).await?.code(),
        Command::Export(a) => export::run(&a, settings).await?.code(),
        Command::Seed(a) => seed::run(&a, settings).await?.code(),
        Command::Worker(a) => worker::run(&a, settings).await?.code(),
        Command::Lab(args::LabCommand::CheatWorker(a)) => worker::cheat(&a, settings).await?.code(),
        Command::Lab(args::LabCommand::VoteSim(a)) => lab::vote_sim::run(&a).code(),
        Command::Lab(args::LabCommand::AuditBench(a)) => {
            blocking(settings, move |s| lab::audit_bench::run(&a, s)).await?.code()
        }
        Command::Train(TrainCommand::Dpo(a)) => train::train(&a, Objective::Dpo, settings)?.code(),
        Command::Train(TrainCommand::Sft(a)) => train::train(&a, Objective::Sft, settings)?.code(),
        Command::Train(TrainCommand::Grpo(a)) => train::grpo(&a, settings)?.code(),
        Command::Train(TrainCommand::Verify(a)) => train::verify(&a)?.code(),
        Command::Train(TrainCommand::Bench(a)) => train_bench::dpo(&a, settings)?.code(),
        Command::Train(TrainCommand::BenchGrpo(a)) => train_bench::grpo(&a, settings)?.code(),
        Command::Bench(BenchCommand::ControlPlane(a)) => control_plane::run(&a, settings).await?.code(),
        Command::Bench(BenchCommand::Games(a)) => games::bench(&a, settings).await?.code(),
        Command::Bench(BenchCommand::Export(a)) => export_bench::run(&a, settings).await?.code(),
        Command::Bench(BenchCommand::Pages(a)) => pages::run(&a, settings).await?.code(),
        Command::Bench(BenchCommand::Abuse(a)) => abuse::run(&a, settings).await?.code(),
        Command::Experiment(ExperimentCommand::Loop(a)) => experiment::run(&a, settings).await?.code(),
        Command::Experiment(ExperimentCommand::Games(a)) => games::run(&a, settings).await?.code(),
    })
}
