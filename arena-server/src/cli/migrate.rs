//! `arena migrate`: apply pending migrations and exit.

use crate::app::config::{Settings, redact_url};
use crate::app::{CONNECT_TIMEOUT, telemetry};
use crate::store;

pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    telemetry::init(&settings.log);
    let url = redact_url(&settings.database.url);
    let pool = store::connect(&settings.database, CONNECT_TIMEOUT).await?;
    let applied = store::migrate(&pool, &url).await?;
    if applied.is_empty() {
        println!("{url}: no pending migrations ({} applied)", store::MIGRATOR.iter().count());
    }
    for (version, name) in applied {
        println!("applied {version} {name}");
    }
    Ok(())
}
