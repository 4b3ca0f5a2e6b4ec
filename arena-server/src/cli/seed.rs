//! `arena seed` (and `arena serve --demo`): demo users, the example Spaces
//! and a few agents entered in each, idempotently.

use super::args::SeedArgs;
use super::space::publish_file;
use crate::app::config::Settings;
use crate::domain::agent::AgentSampling;
use crate::domain::user::{Password, Role, Username};
use crate::domain::{AgentId, rating};
use crate::store::agents::{self, NewAgentVersion};
use crate::store::spaces::Publisher;
use crate::store::users;
use sqlx::PgPool;
use std::path::Path;

/// The demo users' password: ARENA_DEMO_PASSWORD (`scripts/up` keeps one
/// per install under the data directory), or a fresh random one. Never a
/// published constant: anyone could sign in as the demo designer.
fn demo_password() -> String {
    match std::env::var("ARENA_DEMO_PASSWORD") {
        Ok(p) if !p.is_empty() => p,
        _ => {
            let mut bytes = [0u8; 12];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
            hex::encode(bytes)
        }
    }
}

/// The demo's players and their agents: (user, agent name, system prompt, temperature).
const DEMO_AGENTS: &[(&str, &str, &str, f32)] = &[
    (
        "alice",
        "careful",
        "You are a careful assistant. Work the problem out briefly, then state the final answer plainly.",
        0.3,
    ),
    ("bob", "terse", "Answer with as few words as possible. Give only the answer.", 0.7),
    ("carol", "friendly", "You are a friendly, helpful assistant.", 0.9),
    ("dave", "expert", "You are an expert. Be precise and correct; never guess.", 0.2),
];

/// Demo users, the example Spaces and agents entered in each (idempotent).
/// `arena seed`: migrates, then seeds (idempotent).
pub async fn run(args: &SeedArgs, settings: &Settings) -> anyhow::Result<()> {
    let pool = super::pool(settings).await?;
    crate::store::migrate(&pool, &crate::app::config::redact_url(&settings.database.url)).await?;
    seed(&pool, settings, &args.spaces).await
}

pub async fn seed(pool: &PgPool, settings: &Settings, spaces_dir: &Path) -> anyhow::Result<()> {
    let base_model = match &settings.model.sha256 {
        Some(sha) => sha.clone(),
        None => {
            let path = settings.model.path.clone();
            tokio::task::spawn_blocking(move || agent_runtime::model_file::verify(&path, None)).await??.sha256
        }
    };
    let demo_password = demo_password();
    let created = std::cell::Cell::new(false);
    let ensure_user = |name: &'static str, role: Role| {
        let (demo_password, created) = (&demo_password, &created);
        async move {
            if let Some(user) = users::by_username(pool, name).await? {
                return Ok::<_, anyhow::Error>(user);
            }
            let username = Username::parse(name)?;
            let password = Password::parse(demo_password)?;
            created.set(true);
            Ok(users::create_user(pool, &username, password, role, settings.arena.starting_credits).await?)
        }
    };
    let designer = ensure_user("designer", Role::Designer).await?;
    ensure_user("buyer", Role::Buyer).await?;
    let by = Publisher { user: designer.id, admin: false, quota_bytes: None };
    let mut slugs = Vec::new();
    for name in [
        "arithmetic.toml",
        "json-contact.toml",
        "explain.toml",
        "tic-tac-toe.toml",
        "negotiation.toml",
        "debate.toml",
        "nim.toml",
        "rock-paper-scissors.toml",
    ] {
        slugs.push(publish_file(pool, by, &spaces_dir.join(name)).await?.slug);
    }
    for (user, agent, prompt, temperature) in DEMO_AGENTS {
        let player = ensure_user(user, Role::Player).await?;
        let agent_id = match agents::by_owner_and_name(pool, player.id, agent).await? {
            Some(id) => id,
            None => {
                let id = AgentId::new();
                let mut tx = pool.begin().await?;
                agents::insert_agent(&mut tx, id, player.id, agent).await?;
                let sampling = AgentSampling { temperature: *temperature, seed: 1, ..AgentSampling::default() };
                NewAgentVersion {
                    agent: id,
                    version: 1,
                    base_model: &base_model,
                    system_prompt: prompt,
                    sampling: &sampling,
                    adapter_sha256: None,
                    parent: None,
                    training_job: None,
                    note: "demo",
                }
                .insert(&mut tx)
                .await?;
                tx.commit().await?;
                id
            }
        };
        let initial = rating::initial();
        for slug in &slugs {
            agents::enter_if_new(pool, agent_id, player.id, slug, initial.rating, initial.uncertainty).await?;
        }
    }
    let password = if created.get() {
        format!("password of the users made now: {demo_password}")
    } else {
        "users existed already; their passwords are unchanged".to_owned()
    };
    println!("demo seeded: Spaces {}; players alice, bob, carol, dave; designer; buyer ({password})", slugs.join(", "));
    Ok(())
}
