//! Operator commands that act on the database directly: creating users,
//! publishing Space files, granting credits, and seeding the demo.

use crate::auth::{self, Caller, Via};
use crate::config::Settings;
use crate::domain::{Password, Role, Username};
use crate::ledger::{self, Leg};
use crate::routes::agents::{AgentSampling, insert_version};
use crate::space_store;
use sqlx::PgPool;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use uuid::Uuid;

/// The demo's password for every demo user; printed by `arena seed`.
pub const DEMO_PASSWORD: &str = "arena-demo-password";

async fn caller_for(pool: &PgPool, username: &str) -> anyhow::Result<Caller> {
    let row: Option<(Uuid, String, String)> =
        sqlx::query_as("select id, username, role from users where lower(username) = lower($1)")
            .bind(username)
            .fetch_optional(pool)
            .await?;
    let (user_id, username, role) = row.ok_or_else(|| anyhow::anyhow!("no user {username:?}"))?;
    let role = Role::parse(&role).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Caller { user_id, username, role, via: Via::Session })
}

pub async fn create_user(pool: &PgPool, settings: &Settings, username: &str, role: &str) -> anyhow::Result<()> {
    let username = Username::parse(username).map_err(|e| anyhow::anyhow!("{e}"))?;
    let role = Role::parse(role).map_err(|e| anyhow::anyhow!("{e}"))?;
    let password = match std::env::var("ARENA_NEW_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            eprintln!("password (one line on stdin):");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    let password = Password::parse(&password).map_err(|e| anyhow::anyhow!("{e}"))?;
    let user = auth::create_user(pool, &username, password, role, settings.arena.starting_credits)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("created {} ({}) {}", user.username, role.as_str(), user.id);
    Ok(())
}

pub async fn publish(pool: &PgPool, files: &[PathBuf], owner: &str) -> anyhow::Result<ExitCode> {
    let caller = caller_for(pool, owner).await?;
    anyhow::ensure!(
        caller.has_scope(crate::domain::Scope::Design),
        "{owner} is a {}: only designers and admins own Spaces",
        caller.role.as_str()
    );
    let mut failed = false;
    for file in files {
        let result = match space_store::read_from_disk(file) {
            Ok((source, extra)) => {
                space_store::publish(pool, &caller, &source, &extra).await.map_err(|e| e.to_string())
            }
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

pub async fn grant(pool: &PgPool, username: &str, amount: i64, memo: &str) -> anyhow::Result<()> {
    anyhow::ensure!(amount > 0, "grant a positive amount");
    let caller = caller_for(pool, username).await?;
    let mut tx = pool.begin().await?;
    let account = ledger::user_account(&mut tx, caller.user_id).await?;
    ledger::post(
        &mut tx,
        &format!("grant:{}", Uuid::new_v4()),
        "grant",
        None,
        memo,
        &[Leg::new(ledger::MINT, -amount), Leg::new(account, amount)],
    )
    .await?;
    tx.commit().await?;
    println!("granted {amount} credits to {}; balance {}", caller.username, ledger::balance(pool, account).await?);
    Ok(())
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
pub async fn seed(pool: &PgPool, settings: &Settings, spaces_dir: &Path) -> anyhow::Result<()> {
    let base_model = match &settings.model.sha256 {
        Some(sha) => sha.clone(),
        None => {
            let path = settings.model.path.clone();
            tokio::task::spawn_blocking(move || agent_runtime::model_file::verify(&path, None)).await??.sha256
        }
    };
    let ensure_user = |name: &'static str, role: Role| async move {
        let exists: Option<Uuid> = sqlx::query_scalar("select id from users where lower(username) = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?;
        if exists.is_none() {
            let username = Username::parse(name).map_err(|e| anyhow::anyhow!("{e}"))?;
            let password = Password::parse(DEMO_PASSWORD).map_err(|e| anyhow::anyhow!("{e}"))?;
            auth::create_user(pool, &username, password, role, settings.arena.starting_credits)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        caller_for(pool, name).await
    };
    let designer = ensure_user("designer", Role::Designer).await?;
    ensure_user("buyer", Role::Buyer).await?;
    let mut slugs = Vec::new();
    for name in ["arithmetic.toml", "json-contact.toml", "explain.toml"] {
        let path = spaces_dir.join(name);
        let (source, files) = space_store::read_from_disk(&path).map_err(|e| anyhow::anyhow!(e))?;
        let published = space_store::publish(pool, &designer, &source, &files)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        slugs.push(published.slug);
    }
    for (user, agent, prompt, temperature) in DEMO_AGENTS {
        let player = ensure_user(user, Role::Player).await?;
        let existing: Option<Uuid> =
            sqlx::query_scalar("select id from agents where owner_id = $1 and lower(name) = $2")
                .bind(player.user_id)
                .bind(agent)
                .fetch_optional(pool)
                .await?;
        let agent_id = match existing {
            Some(id) => id,
            None => {
                let id = Uuid::new_v4();
                let mut tx = pool.begin().await?;
                sqlx::query("insert into agents (id, owner_id, name, current_version) values ($1, $2, $3, 1)")
                    .bind(id)
                    .bind(player.user_id)
                    .bind(agent)
                    .execute(&mut *tx)
                    .await?;
                let sampling = AgentSampling { temperature: *temperature, seed: 1, ..AgentSampling::default() };
                insert_version(&mut tx, id, 1, &base_model, prompt, &sampling, &None, None, None, "demo")
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                tx.commit().await?;
                id
            }
        };
        let initial = crate::rating::initial();
        for slug in &slugs {
            sqlx::query(
                "insert into entries (agent_id, space_id, owner_id, mu, sigma)
                 select $1, id, $2, $3, $4 from spaces where slug = $5 on conflict do nothing",
            )
            .bind(agent_id)
            .bind(player.user_id)
            .bind(initial.rating)
            .bind(initial.uncertainty)
            .bind(slug)
            .execute(pool)
            .await?;
        }
    }
    println!(
        "demo seeded: Spaces {}; players alice, bob, carol, dave; designer; buyer (password {DEMO_PASSWORD:?})",
        slugs.join(", ")
    );
    Ok(())
}
