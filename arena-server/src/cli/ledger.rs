//! `arena ledger check | grant`.

use crate::store::ledger::{self, Leg};
use crate::store::users;
use sqlx::PgPool;
use std::process::ExitCode;
use uuid::Uuid;

/// Re-derives every balance; exits 1 when the ledger is broken.
pub async fn check(pool: &PgPool, json: bool) -> anyhow::Result<ExitCode> {
    let report = ledger::check(pool).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Issues credits to a user from the mint.
pub async fn grant(pool: &PgPool, username: &str, amount: i64, memo: &str) -> anyhow::Result<()> {
    anyhow::ensure!(amount > 0, "grant a positive amount");
    let user = users::by_username(pool, username).await?.ok_or_else(|| anyhow::anyhow!("no user {username:?}"))?;
    let mut tx = pool.begin().await?;
    let account = ledger::user_account(&mut tx, user.id).await?;
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
    println!("granted {amount} credits to {}; balance {}", user.username, ledger::balance(pool, account).await?);
    Ok(())
}
