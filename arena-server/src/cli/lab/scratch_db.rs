//! A throwaway database for a benchmark: created under a fresh name on the
//! configured PostgreSQL server, dropped when the benchmark is done, so a
//! bench never touches the platform's own data.

use crate::app::config::Settings;
use secrecy::{ExposeSecret, SecretString};

pub struct ScratchDb {
    /// The database's name (`arena_{prefix}_{id}`).
    pub name: String,
    /// A short random id, also used to name the bench's users and Spaces.
    pub id: String,
    admin: sqlx::PgPool,
    server_url: String,
}

impl ScratchDb {
    /// Creates `arena_{prefix}_{id}` beside the configured database.
    pub async fn create(settings: &Settings, prefix: &str) -> anyhow::Result<ScratchDb> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let server_url = settings.database.url.expose_secret().to_owned();
        let admin = sqlx::PgPool::connect(&with_database(&server_url, "postgres")?).await?;
        let name = format!("arena_{prefix}_{id}");
        crate::store::create_database(&admin, &name).await?;
        Ok(ScratchDb { name, id, admin, server_url })
    }

    /// The database's URL.
    pub fn url(&self) -> anyhow::Result<String> {
        with_database(&self.server_url, &self.name)
    }

    /// `settings` pointed at this database.
    pub fn settings(&self, settings: &Settings) -> anyhow::Result<Settings> {
        let mut settings = settings.clone();
        settings.database.url = SecretString::from(self.url()?);
        Ok(settings)
    }

    /// A second scratch database on the same server (`{name}_{suffix}`).
    pub async fn sibling(&self, suffix: &str) -> anyhow::Result<ScratchDb> {
        let name = format!("{}_{suffix}", self.name);
        crate::store::create_database(&self.admin, &name).await?;
        Ok(ScratchDb {
            name,
            id: format!("{}{suffix}", self.id),
            admin: self.admin.clone(),
            server_url: self.server_url.clone(),
        })
    }

    /// The server's `postgres` database, for what a bench runs beside ours.
    pub fn admin(&self) -> &sqlx::PgPool {
        &self.admin
    }

    /// Drops the database.
    pub async fn drop(self) -> anyhow::Result<()> {
        crate::store::drop_database(&self.admin, &self.name).await?;
        Ok(())
    }
}

/// `url` naming database `name` instead.
pub fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let mut url = url::Url::parse(url)?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}
