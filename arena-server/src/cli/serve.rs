//! `arena serve`: the platform, or one role of it.

use super::args::{ServeArgs, ServeRole};
use crate::app::config::{Settings, redact_url};
use crate::app::{Application, CONNECT_TIMEOUT, Options, Roles, telemetry};
use crate::store;

impl From<ServeRole> for Roles {
    fn from(role: ServeRole) -> Roles {
        match role {
            ServeRole::All => Roles::ALL,
            ServeRole::Web => Roles { web: true, ..Roles::NONE },
            ServeRole::Runtime => Roles { runtime: true, ..Roles::NONE },
            ServeRole::Judge => Roles { judge: true, ..Roles::NONE },
            ServeRole::Trainer => Roles { trainer: true, ..Roles::NONE },
        }
    }
}

pub async fn run(args: ServeArgs, settings: &mut Settings) -> anyhow::Result<()> {
    if let Some(host) = args.host {
        settings.server.host = host;
    }
    if let Some(port) = args.port {
        settings.server.port = port;
    }
    if !args.migrate {
        settings.database.migrate_on_start = false;
    }
    telemetry::init(&settings.log);
    if args.demo {
        let pool = store::connect(&settings.database, CONNECT_TIMEOUT).await?;
        store::migrate(&pool, &redact_url(&settings.database.url)).await?;
        super::seed::seed(&pool, settings, std::path::Path::new("spaces")).await?;
    }
    let options = Options { roles: args.role.into(), ..Options::default() };
    let app = Application::build_with(settings.clone(), options).await?;
    tracing::info!(address = %format!("http://{}:{}", settings.server.host, app.port()), "listening");
    app.run_until_stopped().await?;
    tracing::info!("stopped");
    Ok(())
}
