use agent_runtime::model_file::{self, DEFAULT_MODEL};
use agent_runtime::train::Objective;
use arena_server::cli::{
    BenchCommand, Cli, Command, ExperimentCommand, JudgeCommand, LedgerCommand, ModelCommand, SpaceCommand,
    TrainCommand, UserCommand,
};
use arena_server::config::{self, Settings, redact_url};
use arena_server::startup::{Application, CONNECT_TIMEOUT, Options, Roles};
use arena_server::{
    admin_cli, bench_cli, db, doctor, experiment_cli, judge_cli, model_cli, space, telemetry, train_cli,
};
use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
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

async fn run(command: Command, settings: &mut Settings) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => {
            if let Some(host) = args.host {
                settings.server.host = host;
            }
            if let Some(port) = args.port {
                settings.server.port = port;
            }
            if args.no_migrate {
                settings.database.migrate_on_start = false;
            }
            telemetry::init(&settings.log);
            let roles = Roles::parse(&args.role).ok_or_else(|| anyhow::anyhow!("unknown role {:?}", args.role))?;
            if args.demo {
                let pool = db::connect(&settings.database, CONNECT_TIMEOUT).await?;
                db::migrate(&pool, &redact_url(&settings.database.url)).await?;
                admin_cli::seed(&pool, settings, std::path::Path::new("spaces")).await?;
            }
            let app = Application::build_with(settings.clone(), Options { roles, ..Options::default() }).await?;
            tracing::info!(address = %format!("http://{}:{}", settings.server.host, app.port()), "listening");
            app.run_until_stopped().await?;
            tracing::info!("stopped");
        }
        Command::Migrate => {
            telemetry::init(&settings.log);
            let url = redact_url(&settings.database.url);
            let pool = db::connect(&settings.database, CONNECT_TIMEOUT).await?;
            let applied = db::migrate(&pool, &url).await?;
            if applied.is_empty() {
                println!("{url}: no pending migrations ({} applied)", db::MIGRATOR.iter().count());
            }
            for (version, name) in applied {
                println!("applied {version} {name}");
            }
        }
        Command::Doctor => {
            let findings = doctor::run(settings).await;
            print!("{}", doctor::render(&findings));
            if findings.iter().any(|f| !f.ok) {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Model(ModelCommand::Fetch { out }) => {
            let out = out.unwrap_or_else(|| settings.model.path.clone());
            let verified = tokio::task::spawn_blocking(move || {
                model_file::fetch(&DEFAULT_MODEL, &out, |line| eprintln!("{line}"))
            })
            .await??;
            println!("{} sha256 {} ok", verified.path.display(), verified.sha256);
        }
        Command::Model(ModelCommand::Verify { model }) => {
            let mut model_settings = settings.model.clone();
            if let Some(path) = model {
                model_settings.sha256 = model_file::known_by_file_name(&path).map(|k| k.sha256.to_owned());
                model_settings.path = path;
            }
            let verified = tokio::task::spawn_blocking(move || {
                model_file::verify(&model_settings.path, model_settings.expected())
            })
            .await??;
            println!("{} sha256 {} ok", verified.path.display(), verified.sha256);
        }
        Command::Model(ModelCommand::Info { model }) => model_cli::info(&model, settings)?,
        Command::Model(ModelCommand::Tokenize { model, text }) => model_cli::tokenize(&model, &text, settings)?,
        Command::Model(ModelCommand::Generate(args)) => {
            let settings = settings.clone();
            tokio::task::spawn_blocking(move || model_cli::generate(args, &settings)).await??;
        }
        Command::Model(ModelCommand::Bench { model, reps, decode_tokens, no_llama_cpp, reference_ppl }) => {
            let settings = settings.clone();
            tokio::task::spawn_blocking(move || {
                model_cli::bench(&model, reps, decode_tokens, !no_llama_cpp, reference_ppl, &settings)
            })
            .await??;
        }
        Command::Judge(args) => {
            let settings = settings.clone();
            let code = tokio::task::spawn_blocking(move || match args.command {
                Some(JudgeCommand::Calibrate { space, cases, limit, json, model }) => {
                    judge_cli::calibrate(&space, &cases, limit, json, &model, &settings)
                }
                None => judge_cli::judge(args.space.as_deref(), args.input.as_deref(), &args.model, &settings),
            })
            .await??;
            return Ok(code);
        }
        Command::Space(SpaceCommand::Validate { files }) => {
            if !space::validate(&files) {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Space(SpaceCommand::Publish { files, owner }) => {
            let pool = db::connect(&settings.database, CONNECT_TIMEOUT).await?;
            return admin_cli::publish(&pool, &files, &owner).await;
        }
        Command::User(UserCommand::Create { username, role }) => {
            let pool = db::connect(&settings.database, CONNECT_TIMEOUT).await?;
            admin_cli::create_user(&pool, settings, &username, &role).await?;
        }
        Command::Ledger(LedgerCommand::Check { json }) => {
            let pool = db::connect(&settings.database, CONNECT_TIMEOUT).await?;
            let report = arena_server::ledger::check(&pool).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            if !report.ok() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Ledger(LedgerCommand::Grant { username, amount, memo }) => {
            let pool = db::connect(&settings.database, CONNECT_TIMEOUT).await?;
            admin_cli::grant(&pool, &username, amount, &memo).await?;
        }
        Command::VerifyLog { space } => {
            let pool = db::connect(&settings.database, CONNECT_TIMEOUT).await?;
            let report = arena_server::pipeline::settle::verify_log(&pool, &space).await?;
            match &report.broken {
                None => {
                    println!("{}: {} settled matches, chain intact, head {}", report.space, report.checked, report.head)
                }
                Some((seq, id, why)) => {
                    println!("{}: chain BROKEN at record {seq} (match {id}): {why}", report.space);
                    println!("{} records before it verify", report.checked);
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Command::Bench(BenchCommand::ControlPlane {
            matches,
            spaces,
            agents_per_match,
            players,
            no_pgbench,
            pgbench_seconds,
            matchmaker_interval_ms,
        }) => {
            let args = bench_cli::BenchArgs {
                matches,
                spaces,
                agents_per_match,
                players,
                pgbench: !no_pgbench,
                pgbench_seconds,
                matchmaker_interval_ms,
            };
            bench_cli::control_plane(settings, args).await?;
        }
        Command::Train(TrainCommand::Dpo(args)) => train_cli::train(&args, Objective::Dpo, settings)?,
        Command::Train(TrainCommand::Sft(args)) => train_cli::train(&args, Objective::Sft, settings)?,
        Command::Train(TrainCommand::Verify { manifest, model, pairs }) => {
            if !train_cli::verify(&manifest, model.as_deref(), pairs.as_deref())? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Train(TrainCommand::Bench { model, steps, batch_size, pairs, python, no_trl }) => {
            let args = train_cli::BenchArgs { steps, batch_size, pairs, python, trl: !no_trl };
            train_cli::bench(&model, &args, settings)?;
        }
        Command::Experiment(ExperimentCommand::Loop(args)) => experiment_cli::run(args, settings).await?,
        Command::Seed { spaces } => {
            let pool = db::connect(&settings.database, CONNECT_TIMEOUT).await?;
            db::migrate(&pool, &redact_url(&settings.database.url)).await?;
            admin_cli::seed(&pool, settings, &spaces).await?;
        }
        Command::Config => {
            match &settings.source_file {
                Some(path) => println!("config file: {}", path.display()),
                None => println!("config file: none (./arena.toml does not exist; --config or ARENA_CONFIG names one)"),
            }
            println!("precedence: defaults < config file < DATABASE_URL/REDIS_URL < ARENA_* variables < flags\n");
            println!("server        {}:{}", settings.server.host, settings.server.port);
            println!("database.url  {}", redact_url(&settings.database.url));
            println!("redis.url     {}  prefix {:?}", redact_url(&settings.redis.url), settings.redis.prefix);
            println!("model.path    {}", settings.model.path.display());
            println!("data_dir      {}\n", settings.data_dir.display());
            println!("environment variables:");
            for (name, what) in config::ENV_VARS {
                println!("  {name:<32} {what}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
