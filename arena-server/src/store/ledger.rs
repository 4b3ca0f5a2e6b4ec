//! The double-entry ledger. Every movement of credits is one transaction of
//! entries that sum to zero, posted under an idempotency key inside the
//! caller's database transaction. Balances are kept on the account rows,
//! which also serialise concurrent spending: the row lock plus the
//! "never below zero" condition means exactly as many debits succeed as the
//! balance covers. Entries are append-only (a trigger refuses UPDATE and
//! DELETE), and `arena ledger check` re-derives every balance from them.

use crate::domain::{MatchId, MatchStatus, UserId};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use std::collections::BTreeMap;
use uuid::Uuid;

/// The account credits are issued from; its balance is minus all credits issued.
pub const MINT: Uuid = Uuid::from_u128(0x0a);
/// Where house cuts and rounding remainders go.
pub const HOUSE: Uuid = Uuid::from_u128(0x0b);

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("account {account} holds {balance} credits, {needed} needed")]
    InsufficientFunds { account: Uuid, balance: i64, needed: i64 },
    #[error("a ledger transaction must sum to zero; these legs sum to {0}")]
    Unbalanced(i64),
    #[error("no account {0}")]
    NoAccount(Uuid),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// One side of a movement: a positive amount credits the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leg {
    pub account: Uuid,
    pub amount: i64,
}

impl Leg {
    pub fn new(account: Uuid, amount: i64) -> Leg {
        Leg { account, amount }
    }
}

/// What `post` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Posted {
    New(Uuid),
    /// The key was already used: nothing was posted again.
    Duplicate,
}

/// Posts a balanced transaction within `conn`'s transaction. On any error
/// the caller must roll back (the transaction row may have been written).
pub async fn post(
    conn: &mut PgConnection,
    idempotency_key: &str,
    kind: &str,
    match_id: Option<MatchId>,
    memo: &str,
    legs: &[Leg],
) -> Result<Posted, LedgerError> {
    let sum: i64 = legs.iter().map(|l| l.amount).sum();
    if sum != 0 {
        return Err(LedgerError::Unbalanced(sum));
    }
    // One net amount per account; zero legs vanish.
    let mut net: BTreeMap<Uuid, i64> = BTreeMap::new();
    for leg in legs {
        *net.entry(leg.account).or_default() += leg.amount;
    }
    net.retain(|_, amount| *amount != 0);
    let id = Uuid::new_v4();
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "insert into ledger_transactions (id, idempotency_key, kind, match_id, memo) values ($1, $2, $3, $4, $5)
         on conflict (idempotency_key) do nothing returning id",
    )
    .bind(id)
    .bind(idempotency_key)
    .bind(kind)
    .bind(match_id)
    .bind(memo)
    .fetch_optional(&mut *conn)
    .await?;
    if inserted.is_none() {
        return Ok(Posted::Duplicate);
    }
    if net.is_empty() {
        return Ok(Posted::New(id));
    }
    let accounts: Vec<Uuid> = net.keys().copied().collect();
    let amounts: Vec<i64> = net.values().copied().collect();
    // Lock in account order so two transactions never wait on each other in
    // a cycle, then apply every leg in one statement.
    let locked: Vec<(Uuid, i64, String)> =
        sqlx::query_as("select id, balance, kind from accounts where id = any($1) order by id for update")
            .bind(&accounts)
            .fetch_all(&mut *conn)
            .await?;
    for account in &accounts {
        let Some((_, balance, kind)) = locked.iter().find(|(id, _, _)| id == account) else {
            return Err(LedgerError::NoAccount(*account));
        };
        let amount = net[account];
        if kind != "mint" && balance + amount < 0 {
            return Err(LedgerError::InsufficientFunds { account: *account, balance: *balance, needed: -amount });
        }
    }
    sqlx::query(
        "with legs as (select * from unnest($2::uuid[], $3::bigint[]) as l(account, amount)),
              moved as (update accounts a set balance = a.balance + legs.amount from legs
                        where a.id = legs.account returning a.id, legs.amount, a.balance)
         insert into ledger_entries (transaction_id, account_id, amount, balance_after)
         select $1, id, amount, balance from moved",
    )
    .bind(id)
    .bind(&accounts)
    .bind(&amounts)
    .execute(&mut *conn)
    .await?;
    Ok(Posted::New(id))
}

/// One balanced transaction for `post_many`.
#[derive(Debug, Clone)]
pub struct Posting {
    pub idempotency_key: String,
    pub kind: &'static str,
    pub match_id: Option<MatchId>,
    pub memo: String,
    pub legs: Vec<Leg>,
}

/// Posts many transactions in three statements, within `conn`'s
/// transaction: every account any of them touches is locked at once in id
/// order (so batches never deadlock each other), each account's balance
/// moves once, and every entry records the running balance after it. A
/// posting whose key was already used posts nothing. On error the caller
/// must roll back.
pub async fn post_many(conn: &mut PgConnection, postings: &[Posting]) -> Result<Vec<Posted>, LedgerError> {
    for posting in postings {
        let sum: i64 = posting.legs.iter().map(|l| l.amount).sum();
        if sum != 0 {
            return Err(LedgerError::Unbalanced(sum));
        }
    }
    let ids: Vec<Uuid> = postings.iter().map(|_| Uuid::new_v4()).collect();
    let keys: Vec<&str> = postings.iter().map(|p| p.idempotency_key.as_str()).collect();
    let kinds: Vec<&str> = postings.iter().map(|p| p.kind).collect();
    let matches: Vec<Option<MatchId>> = postings.iter().map(|p| p.match_id).collect();
    let memos: Vec<&str> = postings.iter().map(|p| p.memo.as_str()).collect();
    let fresh: Vec<Uuid> = sqlx::query_scalar(
        "insert into ledger_transactions (id, idempotency_key, kind, match_id, memo)
         select * from unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::text[])
         on conflict (idempotency_key) do nothing returning id",
    )
    .bind(&ids)
    .bind(&keys)
    .bind(&kinds)
    .bind(&matches)
    .bind(&memos)
    .fetch_all(&mut *conn)
    .await?;
    let (mut tx_col, mut account_col, mut amount_col) = (Vec::new(), Vec::new(), Vec::new());
    let mut totals: BTreeMap<Uuid, i64> = BTreeMap::new();
    for (posting, id) in postings.iter().zip(&ids) {
        if !fresh.contains(id) {
            continue;
        }
        for leg in posting.legs.iter().filter(|l| l.amount != 0) {
            tx_col.push(*id);
            account_col.push(leg.account);
            amount_col.push(leg.amount);
            *totals.entry(leg.account).or_default() += leg.amount;
        }
    }
    if !totals.is_empty() {
        let accounts: Vec<Uuid> = totals.keys().copied().collect();
        let locked: Vec<(Uuid, i64, String)> =
            sqlx::query_as("select id, balance, kind from accounts where id = any($1) order by id for update")
                .bind(&accounts)
                .fetch_all(&mut *conn)
                .await?;
        for (account, total) in &totals {
            let Some((_, balance, kind)) = locked.iter().find(|(id, _, _)| id == account) else {
                return Err(LedgerError::NoAccount(*account));
            };
            if kind != "mint" && balance + total < 0 {
                return Err(LedgerError::InsufficientFunds { account: *account, balance: *balance, needed: -total });
            }
        }
        sqlx::query(
            "with legs as (select *, row_number() over () as ord
                           from unnest($1::uuid[], $2::uuid[], $3::bigint[]) as l(tx, account, amount)),
                  totals as (select account, sum(amount)::bigint as total from legs group by account),
                  moved as (update accounts a set balance = a.balance + t.total from totals t
                            where a.id = t.account returning a.id, a.balance as after, t.total)
             insert into ledger_entries (transaction_id, account_id, amount, balance_after)
             select l.tx, l.account, l.amount,
                    m.after - m.total + sum(l.amount) over (partition by l.account order by l.ord)
             from legs l join moved m on m.id = l.account order by l.ord",
        )
        .bind(&tx_col)
        .bind(&account_col)
        .bind(&amount_col)
        .execute(&mut *conn)
        .await?;
    }
    Ok(ids.iter().map(|id| if fresh.contains(id) { Posted::New(*id) } else { Posted::Duplicate }).collect())
}

/// Posts in a transaction of its own.
pub async fn transfer(
    pool: &PgPool,
    idempotency_key: &str,
    kind: &str,
    memo: &str,
    legs: &[Leg],
) -> Result<Posted, LedgerError> {
    let mut tx = pool.begin().await?;
    let posted = post(&mut tx, idempotency_key, kind, None, memo, legs).await?;
    tx.commit().await?;
    Ok(posted)
}

/// The user's account, created with the account row of a new user.
pub async fn user_account(conn: &mut PgConnection, user_id: UserId) -> Result<Uuid, LedgerError> {
    sqlx::query_scalar("select id from accounts where kind = 'user' and user_id = $1")
        .bind(user_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(LedgerError::NoAccount(user_id.0))
}

pub async fn balance(pool: &PgPool, account: Uuid) -> Result<i64, LedgerError> {
    sqlx::query_scalar("select balance from accounts where id = $1")
        .bind(account)
        .fetch_optional(pool)
        .await?
        .ok_or(LedgerError::NoAccount(account))
}

/// One entry as a user's statement shows it.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct StatementLine {
    pub entry: i64,
    pub transaction_id: Uuid,
    pub kind: String,
    pub match_id: Option<MatchId>,
    pub memo: String,
    pub amount: i64,
    pub balance_after: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Which of the user's accounts: `user` (their balance), or an open
    /// worker's `stake` or `escrow` (slashes and pay show there).
    pub account: String,
}

/// The newest entries of a user's account and of their open workers'
/// stake and escrow accounts first, at most `limit`, before entry `before`.
pub async fn statement(
    pool: &PgPool,
    account: Uuid,
    limit: i64,
    before: Option<i64>,
) -> Result<Vec<StatementLine>, LedgerError> {
    Ok(sqlx::query_as(
        "select e.id as entry, e.transaction_id, t.kind, t.match_id, t.memo, e.amount, e.balance_after, e.created_at,
                a.kind as account
         from ledger_entries e join ledger_transactions t on t.id = e.transaction_id
         join accounts a on a.id = e.account_id
         where (e.account_id = $1
                or e.account_id in (select w.id from accounts w join workers k on k.id = w.worker_id
                                    join accounts u on u.user_id = k.owner_id and u.kind = 'user'
                                    where u.id = $1))
           and ($2::bigint is null or e.id < $2)
         order by e.id desc limit $3",
    )
    .bind(account)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// What `arena ledger check` found.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub transactions: i64,
    pub entries: i64,
    /// Sum of every entry: zero in a sound ledger.
    pub entries_sum: i64,
    /// Credits ever issued by the mint (minus the mint's balance).
    pub issued: i64,
    pub held_by_users: i64,
    pub in_pots: i64,
    pub house: i64,
    /// Open workers' stakes and escrowed pay.
    pub staked: i64,
    pub in_escrow: i64,
    /// Transactions whose entries do not sum to zero.
    pub unbalanced_transactions: Vec<Uuid>,
    /// Accounts whose balance differs from the sum of their entries: (account, balance, sum).
    pub mismatched_accounts: Vec<(Uuid, i64, i64)>,
    /// Non-mint accounts below zero.
    pub negative_accounts: Vec<Uuid>,
    /// Pots of settled or failed matches that still hold credits.
    pub stranded_pots: Vec<MatchId>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.entries_sum == 0
            && self.unbalanced_transactions.is_empty()
            && self.mismatched_accounts.is_empty()
            && self.negative_accounts.is_empty()
            && self.stranded_pots.is_empty()
    }

    pub fn render(&self) -> String {
        let mut out = format!(
            "transactions {}\nentries {}\nsum of entries {}\nissued {}\n  held by users {}\n  in match pots {}\n  house {}\n  staked by workers {}\n  in workers' escrow {}\n",
            self.transactions,
            self.entries,
            self.entries_sum,
            self.issued,
            self.held_by_users,
            self.in_pots,
            self.house,
            self.staked,
            self.in_escrow
        );
        for id in &self.unbalanced_transactions {
            out += &format!("UNBALANCED transaction {id}\n");
        }
        for (id, balance, sum) in &self.mismatched_accounts {
            out += &format!("MISMATCH account {id}: balance {balance}, entries sum to {sum}\n");
        }
        for id in &self.negative_accounts {
            out += &format!("NEGATIVE account {id}\n");
        }
        for id in &self.stranded_pots {
            out += &format!("STRANDED pot of finished match {id}\n");
        }
        out += if self.ok() { "ledger ok\n" } else { "ledger BROKEN\n" };
        out
    }
}

/// Re-derives every balance from the entries and checks conservation.
pub async fn check(pool: &PgPool) -> Result<CheckReport, LedgerError> {
    let (transactions, entries, entries_sum): (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from ledger_transactions), count(*), coalesce(sum(amount), 0)::bigint
         from ledger_entries",
    )
    .fetch_one(pool)
    .await?;
    let unbalanced_transactions: Vec<Uuid> =
        sqlx::query_scalar("select transaction_id from ledger_entries group by transaction_id having sum(amount) <> 0")
            .fetch_all(pool)
            .await?;
    let mismatched_accounts: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "select a.id, a.balance, coalesce(s.total, 0)::bigint from accounts a
         left join (select account_id, sum(amount) as total from ledger_entries group by account_id) s
           on s.account_id = a.id
         where a.balance <> coalesce(s.total, 0)",
    )
    .fetch_all(pool)
    .await?;
    let negative_accounts: Vec<Uuid> =
        sqlx::query_scalar("select id from accounts where kind <> 'mint' and balance < 0").fetch_all(pool).await?;
    let stranded_pots: Vec<MatchId> = sqlx::query_scalar(
        "select a.match_id from accounts a join matches m on m.id = a.match_id
         where a.kind = 'pot' and a.balance <> 0 and m.status = any($1)",
    )
    .bind(&[MatchStatus::Settled, MatchStatus::Failed][..])
    .fetch_all(pool)
    .await?;
    let totals: Vec<(String, i64)> =
        sqlx::query_as("select kind, coalesce(sum(balance), 0)::bigint from accounts group by kind")
            .fetch_all(pool)
            .await?;
    let total = |kind: &str| totals.iter().find(|(k, _)| k == kind).map_or(0, |(_, v)| *v);
    Ok(CheckReport {
        transactions,
        entries,
        entries_sum,
        issued: -total("mint"),
        held_by_users: total("user"),
        in_pots: total("pot"),
        house: total("house"),
        staked: total("stake"),
        in_escrow: total("escrow"),
        unbalanced_transactions,
        mismatched_accounts,
        negative_accounts,
        stranded_pots,
    })
}
