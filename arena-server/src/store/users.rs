//! Users and their API tokens: accounts with starting credits, password
//! checks, and tokens stored as the sha256 of their secret.

use super::StoreError;
use super::ledger::{self, Leg};
use crate::domain::user::{Password, Role, Scope, Username, hash_password, verify_password};
use crate::domain::{TokenId, UserId};
use serde::Serialize;
use sqlx::PgPool;

/// A user as the API shows them.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct User {
    pub id: UserId,
    pub username: String,
    #[sqlx(try_from = "String")]
    pub role: RoleColumn,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// `Role` as stored in the `users.role` text column.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(transparent)]
pub struct RoleColumn(pub Role);

impl TryFrom<String> for RoleColumn {
    type Error = crate::domain::DomainError;
    fn try_from(value: String) -> Result<RoleColumn, Self::Error> {
        Role::parse(&value).map(RoleColumn)
    }
}

/// Hashes off the async executor: argon2 takes tens of milliseconds.
async fn hash(password: Password) -> Result<String, StoreError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| StoreError::Internal(e.into()))?
        .map_err(|e| StoreError::Internal(anyhow::anyhow!(e)))
}

/// Creates a user, their account, and their starting credits from the mint,
/// all in one transaction.
pub async fn create_user(
    pool: &PgPool,
    username: &Username,
    password: Password,
    role: Role,
    starting_credits: i64,
) -> Result<User, StoreError> {
    let hash = hash(password).await?;
    let mut tx = pool.begin().await?;
    let user: User = sqlx::query_as(
        "insert into users (id, username, password_hash, role) values ($1, $2, $3, $4)
         returning id, username, role, created_at",
    )
    .bind(UserId::new())
    .bind(username.as_str())
    .bind(&hash)
    .bind(role.as_str())
    .fetch_one(&mut *tx)
    .await?;
    let account = uuid::Uuid::new_v4();
    sqlx::query("insert into accounts (id, kind, user_id) values ($1, 'user', $2)")
        .bind(account)
        .bind(user.id)
        .execute(&mut *tx)
        .await?;
    if starting_credits > 0 {
        ledger::post(
            &mut tx,
            &format!("signup:{}", user.id),
            "starting_credits",
            None,
            "starting credits",
            &[Leg::new(ledger::MINT, -starting_credits), Leg::new(account, starting_credits)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(user)
}

pub async fn by_id(pool: &PgPool, id: UserId) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as("select id, username, role, created_at from users where id = $1").bind(id).fetch_optional(pool).await
}

/// A user by name, compared without case.
pub async fn by_username(pool: &PgPool, username: &str) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as("select id, username, role, created_at from users where lower(username) = lower($1)")
        .bind(username)
        .fetch_optional(pool)
        .await
}

/// A fixed hash verified when the username is unknown, so a wrong username
/// takes as long as a wrong password.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    Password::parse("no such user, no such password").ok().and_then(|p| hash_password(&p).ok()).unwrap_or_default()
});

/// The user whose name and password these are; None for a wrong name or
/// password (which take equally long).
pub async fn authenticate(pool: &PgPool, username: &str, password: &str) -> Result<Option<User>, StoreError> {
    let row: Option<(UserId, String)> =
        sqlx::query_as("select id, password_hash from users where lower(username) = lower($1)")
            .bind(username)
            .fetch_optional(pool)
            .await?;
    let known = row.is_some();
    let (id, hash) = row.unwrap_or_else(|| (UserId(uuid::Uuid::nil()), DUMMY_HASH.clone()));
    let password = password.to_owned();
    let ok = tokio::task::spawn_blocking(move || verify_password(&hash, &password)).await.unwrap_or(false);
    if !(known && ok) {
        return Ok(None);
    }
    Ok(by_id(pool, id).await?)
}

/// A token as its owner sees it, without the secret.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct TokenInfo {
    pub id: TokenId,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// Stores a token by the sha256 of its secret.
pub async fn insert_token(
    pool: &PgPool,
    id: TokenId,
    user: UserId,
    name: &str,
    secret_hash: &str,
    scopes: &[Scope],
    expires_in_days: u32,
) -> Result<chrono::DateTime<chrono::Utc>, sqlx::Error> {
    let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    sqlx::query_scalar(
        "insert into api_tokens (id, user_id, name, secret_hash, scopes, expires_at)
         values ($1, $2, $3, $4, $5, now() + make_interval(days => $6)) returning expires_at",
    )
    .bind(id)
    .bind(user)
    .bind(name)
    .bind(secret_hash)
    .bind(&names)
    .bind(expires_in_days as i32)
    .fetch_one(pool)
    .await
}

/// A live token's holder, by the sha256 of its secret; marks it used.
#[derive(Debug, sqlx::FromRow)]
pub struct TokenHolder {
    pub id: TokenId,
    pub user_id: UserId,
    pub scopes: Vec<String>,
}

pub async fn use_token(pool: &PgPool, secret_hash: &str) -> Result<Option<TokenHolder>, sqlx::Error> {
    sqlx::query_as(
        "update api_tokens set last_used_at = now()
         where secret_hash = $1 and revoked_at is null and expires_at > now()
         returning id, user_id, scopes",
    )
    .bind(secret_hash)
    .fetch_optional(pool)
    .await
}

pub async fn tokens(pool: &PgPool, user: UserId) -> Result<Vec<TokenInfo>, sqlx::Error> {
    sqlx::query_as(
        "select id, name, scopes, created_at, last_used_at, revoked_at, expires_at from api_tokens
         where user_id = $1 order by created_at desc",
    )
    .bind(user)
    .fetch_all(pool)
    .await
}

/// Revokes one of `user`'s tokens; false when they have no such token.
pub async fn revoke_token(pool: &PgPool, user: UserId, token: TokenId) -> Result<bool, sqlx::Error> {
    let revoked =
        sqlx::query("update api_tokens set revoked_at = coalesce(revoked_at, now()) where id = $1 and user_id = $2")
            .bind(token)
            .bind(user)
            .execute(pool)
            .await?;
    Ok(revoked.rows_affected() == 1)
}

/// Gives a user another role; None when there is no such user.
pub async fn set_role(pool: &PgPool, username: &str, role: Role) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(
        "update users set role = $2 where lower(username) = lower($1) returning id, username, role, created_at",
    )
    .bind(username)
    .bind(role.as_str())
    .fetch_optional(pool)
    .await
}
