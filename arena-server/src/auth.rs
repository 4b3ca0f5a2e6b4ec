//! Who is calling: users with argon2 password hashes, login sessions held in
//! Redis (a new session id at every login), API tokens for scripts (random,
//! shown once, stored as a hash, scoped, revocable), and the per-caller write
//! limit. `Caller` is the extractor handlers take.

use crate::domain::{Password, Role, Scope, Username};
use crate::error::ApiError;
use crate::ledger::{self, Leg};
use crate::state::AppState;
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use futures_util::future::LocalBoxFuture;
use rand::RngCore;
use redis::AsyncCommands;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

pub const SESSION_COOKIE: &str = "arena_session";
const TOKEN_PREFIX: &str = "arena_";

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct User {
    pub id: Uuid,
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
    type Error = ApiError;
    fn try_from(value: String) -> Result<RoleColumn, ApiError> {
        Role::parse(&value).map(RoleColumn)
    }
}

/// A random secret: 32 bytes as hex.
fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

async fn hash_password(password: Password) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| ApiError::internal(anyhow::anyhow!("argon2: {e}")))
    })
    .await
    .map_err(ApiError::internal)?
}

/// A fixed hash verified when the username is unknown, so a wrong username
/// takes as long as a wrong password.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    Argon2::default().hash_password(b"no such user, no such password").map(|h| h.to_string()).unwrap_or_default()
});

async fn verify_password(hash: String, password: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .unwrap_or(false)
}

/// Creates a user, their account, and their starting credits from the mint,
/// all in one transaction.
pub async fn create_user(
    pool: &PgPool,
    username: &Username,
    password: Password,
    role: Role,
    starting_credits: i64,
) -> Result<User, ApiError> {
    let hash = hash_password(password).await?;
    let mut tx = pool.begin().await?;
    let user: User = sqlx::query_as(
        "insert into users (id, username, password_hash, role) values ($1, $2, $3, $4)
         returning id, username, role, created_at",
    )
    .bind(Uuid::new_v4())
    .bind(username.as_str())
    .bind(&hash)
    .bind(role.as_str())
    .fetch_one(&mut *tx)
    .await?;
    let account = Uuid::new_v4();
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

pub async fn user_by_id(pool: &PgPool, id: Uuid) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as("select id, username, role, created_at from users where id = $1").bind(id).fetch_optional(pool).await
}

/// Checks a username and password; the user on success.
pub async fn authenticate(pool: &PgPool, username: &str, password: &str) -> Result<User, ApiError> {
    let row: Option<(Uuid, String)> =
        sqlx::query_as("select id, password_hash from users where lower(username) = lower($1)")
            .bind(username)
            .fetch_optional(pool)
            .await?;
    let (id, hash) = match row {
        Some(row) => row,
        None => {
            verify_password(DUMMY_HASH.clone(), password.to_owned()).await;
            return Err(ApiError::BadCredentials);
        }
    };
    if !verify_password(hash, password.to_owned()).await {
        return Err(ApiError::BadCredentials);
    }
    user_by_id(pool, id).await?.ok_or(ApiError::BadCredentials)
}

/// Starts a session; returns the cookie value. Any session id the client
/// brought is not reused.
pub async fn start_session(state: &AppState, user: &User) -> Result<String, ApiError> {
    let secret = random_secret();
    let mut conn = state.redis.conn();
    let key = state.redis.key(&format!("session:{}", sha256_hex(&secret)));
    let _: () = conn.set_ex(key, user.id.to_string(), state.settings.session_ttl_s).await?;
    Ok(secret)
}

pub async fn end_session(state: &AppState, secret: &str) -> Result<(), ApiError> {
    let mut conn = state.redis.conn();
    let _: () = conn.del(state.redis.key(&format!("session:{}", sha256_hex(secret)))).await?;
    Ok(())
}

/// A new API token: the secret is returned here and never again.
#[derive(Debug, Serialize)]
pub struct NewToken {
    pub id: Uuid,
    pub name: String,
    pub token: String,
    pub scopes: Vec<Scope>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct TokenInfo {
    pub id: Uuid,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

pub async fn create_token(pool: &PgPool, user: &Caller, name: &str, scopes: &[Scope]) -> Result<NewToken, ApiError> {
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid("name", "a token name is 1–64 characters without control characters"));
    }
    if scopes.is_empty() {
        return Err(ApiError::invalid("scopes", "give the token at least one scope"));
    }
    for scope in scopes {
        if !user.has_scope(*scope) {
            return Err(ApiError::invalid(
                "scopes",
                format!("scope {:?} is beyond what you hold ({})", scope.as_str(), user.role.as_str()),
            ));
        }
    }
    let token = format!("{TOKEN_PREFIX}{}", random_secret());
    let id = Uuid::new_v4();
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    sqlx::query("insert into api_tokens (id, user_id, name, secret_hash, scopes) values ($1, $2, $3, $4, $5)")
        .bind(id)
        .bind(user.user_id)
        .bind(name)
        .bind(sha256_hex(&token))
        .bind(&names)
        .execute(pool)
        .await?;
    Ok(NewToken { id, name: name.to_owned(), token, scopes })
}

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    Session,
    Token { id: Uuid, scopes: Vec<Scope> },
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, Serialize)]
pub struct Caller {
    pub user_id: Uuid,
    pub username: String,
    pub role: Role,
    pub via: Via,
}

impl Caller {
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.role.scopes().contains(&scope)
            && match &self.via {
                Via::Session => true,
                Via::Token { scopes, .. } => scopes.contains(&scope),
            }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin && self.has_scope(Scope::Admin)
    }

    /// Refuses unless the caller holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.has_scope(scope) {
            Ok(())
        } else if self.role.scopes().contains(&scope) {
            Err(ApiError::Forbidden(format!("this token lacks the {:?} scope", scope.as_str())))
        } else {
            Err(ApiError::Forbidden(format!(
                "a {} cannot do this (needs the {:?} scope)",
                self.role.as_str(),
                scope.as_str()
            )))
        }
    }

    /// Checks the scope and counts one write against the caller's limit.
    pub async fn write(&self, state: &AppState, scope: Scope) -> Result<(), ApiError> {
        self.require(scope)?;
        let who = match &self.via {
            Via::Session => format!("user:{}", self.user_id),
            Via::Token { id, .. } => format!("token:{id}"),
        };
        count_attempt(state, &who, state.settings.writes_per_minute).await
    }
}

/// Counts one attempt of `who` in the current minute; refuses beyond `limit`.
pub async fn count_attempt(state: &AppState, who: &str, limit: u32) -> Result<(), ApiError> {
    let now = chrono::Utc::now().timestamp();
    let window = now / 60;
    let key = state.redis.key(&format!("ratelimit:{who}:{window}"));
    let mut conn = state.redis.conn();
    let (count,): (u32,) =
        redis::pipe().atomic().incr(&key, 1).expire(&key, 120).ignore().query_async(&mut conn).await?;
    if count > limit {
        return Err(ApiError::RateLimited { limit, retry_after_s: (60 - now % 60) as u64 });
    }
    Ok(())
}

/// Sign-in attempts per username per minute: argon2 makes each guess slow,
/// this makes guessing one account's password hopeless.
pub const LOGINS_PER_MINUTE: u32 = 10;
/// Registrations per client address per minute: each new account is minted
/// starting credits.
pub const REGISTRATIONS_PER_MINUTE: u32 = 20;

async fn identify(req: &HttpRequest, state: &AppState) -> Result<Caller, ApiError> {
    if let Some(header) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        let value = header.to_str().map_err(|_| ApiError::Unauthenticated)?;
        let token = value.strip_prefix("Bearer ").ok_or(ApiError::Unauthenticated)?.trim();
        if !token.starts_with(TOKEN_PREFIX) {
            return Err(ApiError::Unauthenticated);
        }
        let row: Option<(Uuid, Uuid, Vec<String>)> = sqlx::query_as(
            "update api_tokens set last_used_at = now() where secret_hash = $1 and revoked_at is null
             returning id, user_id, scopes",
        )
        .bind(sha256_hex(token))
        .fetch_optional(&state.db)
        .await?;
        let (id, user_id, scopes) = row.ok_or(ApiError::Unauthenticated)?;
        let user = user_by_id(&state.db, user_id).await?.ok_or(ApiError::Unauthenticated)?;
        let scopes = scopes.iter().filter_map(|s| Scope::parse(s).ok()).collect();
        return Ok(Caller { user_id, username: user.username, role: user.role.0, via: Via::Token { id, scopes } });
    }
    let cookie = req.cookie(SESSION_COOKIE).ok_or(ApiError::Unauthenticated)?;
    let mut conn = state.redis.conn();
    let key = state.redis.key(&format!("session:{}", sha256_hex(cookie.value())));
    let user_id: Option<String> = conn.get(&key).await?;
    let user_id = user_id.and_then(|u| Uuid::parse_str(&u).ok()).ok_or(ApiError::Unauthenticated)?;
    let user = user_by_id(&state.db, user_id).await?.ok_or(ApiError::Unauthenticated)?;
    Ok(Caller { user_id, username: user.username, role: user.role.0, via: Via::Session })
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = req
                .app_data::<web::Data<AppState>>()
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("AppState missing")))?
                .clone();
            identify(&req, &state).await
        })
    }
}

/// A caller when there is one; reading public data does not need one.
pub struct MaybeCaller(pub Option<Caller>);

impl FromRequest for MaybeCaller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<MaybeCaller, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let has_credentials =
            req.headers().contains_key(actix_web::http::header::AUTHORIZATION) || req.cookie(SESSION_COOKIE).is_some();
        let fut = Caller::from_request(req, payload);
        Box::pin(async move {
            if !has_credentials {
                return Ok(MaybeCaller(None));
            }
            // Credentials that do not check out are an error, not anonymity.
            fut.await.map(|c| MaybeCaller(Some(c)))
        })
    }
}
