//! `arena ledger check | grant`.

use super::args::{GrantArgs, LedgerCheckArgs};
use crate::app::config::Settings;
use crate::store::ledger::{self, Leg};
use crate::store::users;
use std::process::ExitCode;

/// Re-derives every balance; exits 1 when the ledger is broken.
pub async fn check(args: &LedgerCheckArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let report = ledger::check(&super::pool(settings).await?).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Issues credits to a user from the mint, once per idempotency key.
pub async fn grant(args: &GrantArgs, settings: &Settings) -> anyhow::Result<()> {
    let pool = &super::pool(settings).await?;
    let GrantArgs { username, amount, memo, key } = args;
    let (amount, key) = (*amount, key.as_deref());
    anyhow::ensure!(amount > 0, "grant a positive amount");
    let user = users::by_username(pool, username).await?.ok_or_else(|| anyhow::anyhow!("no user {username:?}"))?;
    let key = match key {
        Some(key) => format!("grant:{key}"),
        None => format!("grant:{}:{amount}:{memo}:{}", user.id, chrono::Utc::now().date_naive()),
    };
    let mut tx = pool.begin().await?;
    let account = ledger::user_account(&mut tx, user.id).await?;
    let posted =
        ledger::post(&mut tx, &key, "grant", None, memo, &[Leg::new(ledger::MINT, -amount), Leg::new(account, amount)])
            .await?;
    tx.commit().await?;
    let balance = ledger::balance(pool, account).await?;
    match posted {
        ledger::Posted::New(_) => println!("granted {amount} credits to {}; balance {balance}", user.username),
        ledger::Posted::Duplicate => println!(
            "not granted again: this grant ({key}) was made already; balance {balance} (give --key to grant once more)"
        ),
    }
    Ok(())
}
