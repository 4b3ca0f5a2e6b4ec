//! Who is calling: login sessions held in Redis (a new session id at every
//! login), API tokens for scripts (random, shown once, stored as a hash,
//! scoped, revocable), and the per-caller write limit. `Caller` is the
//! extractor handlers take; users and tokens are stored by `store::users`.

use super::error::ApiError;
use crate::context::Context;
use crate::domain::user::{Role, Scope};
use crate::domain::{TokenId, UserId};
use crate::store::spaces::Publisher;
use crate::store::users::{self, User};
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use rand::RngCore;
use redis::AsyncCommands;
use serde::Serialize;
use sha2::{Digest, Sha256};

pub const SESSION_COOKIE: &str = "arena_session";
const TOKEN_PREFIX: &str = "arena_";

/// A random secret: 32 bytes as hex.
fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Checks a username and password; the user on success.
pub async fn authenticate(state: &Context, username: &str, password: &str) -> Result<User, ApiError> {
    users::authenticate(&state.db, username, password).await?.ok_or(ApiError::BadCredentials)
}

/// Starts a session; returns the cookie value. Any session id the client
/// brought is not reused.
pub async fn start_session(state: &Context, user: &User) -> Result<String, ApiError> {
    let secret = random_secret();
    let mut conn = state.redis.conn();
    let key = state.redis.key(&format!("session:{}", sha256_hex(&secret)));
    let _: () = conn.set_ex(key, user.id.to_string(), state.settings.session_ttl_s).await?;
    Ok(secret)
}

pub async fn end_session(state: &Context, secret: &str) -> Result<(), ApiError> {
    let mut conn = state.redis.conn();
    let _: () = conn.del(state.redis.key(&format!("session:{}", sha256_hex(secret)))).await?;
    Ok(())
}

/// A new API token: the secret is returned here and never again.
#[derive(Debug, Serialize)]
pub struct NewToken {
    pub id: TokenId,
    pub name: String,
    pub token: String,
    pub scopes: Vec<Scope>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// How long a token lives unless asked otherwise, and at most.
pub const TOKEN_DAYS_DEFAULT: u32 = 90;
pub const TOKEN_DAYS_MAX: u32 = 365;

/// A new token for `user`, living `expires_in_days` (1..=365) days.
pub async fn create_token(
    state: &Context,
    user: &Caller,
    name: &str,
    scopes: &[Scope],
    expires_in_days: u32,
) -> Result<NewToken, ApiError> {
    if !(1..=TOKEN_DAYS_MAX).contains(&expires_in_days) {
        return Err(ApiError::invalid(
            "expires_in_days",
            format!("a token lives 1..={TOKEN_DAYS_MAX} days, not {expires_in_days}"),
        ));
    }
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
    let id = TokenId::new();
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    let expires_at =
        users::insert_token(&state.db, id, user.user_id, name, &sha256_hex(&token), &scopes, expires_in_days).await?;
    Ok(NewToken { id, name: name.to_owned(), token, scopes, expires_at })
}

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    Session,
    Token { id: TokenId, scopes: Vec<Scope> },
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, Serialize)]
pub struct Caller {
    pub user_id: UserId,
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

    /// Who publishes a Space as this caller.
    /// The caller as a publisher, with their storage quota (an admin has none).
    pub fn publisher(&self, quota_bytes: i64) -> Publisher {
        let admin = self.is_admin();
        Publisher { user: self.user_id, admin, quota_bytes: (!admin).then_some(quota_bytes) }
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

    /// Checks the scope and counts one write against the user's limit.
    pub async fn write(&self, state: &Context, scope: Scope) -> Result<(), ApiError> {
        self.require(scope)?;
        // Per user, whatever token or session writes: more tokens are no
        // more writes.
        count_attempt(state, &format!("user:{}", self.user_id), state.settings.writes_per_minute).await
    }
}

/// Counts one attempt of `who` in the current minute; refuses beyond `limit`.
pub async fn count_attempt(state: &Context, who: &str, limit: u32) -> Result<(), ApiError> {
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

/// Sign-in attempts per client address and username per minute: argon2
/// makes each guess slow, this makes guessing one account's password from
/// one address hopeless. It is counted per address, so a stranger who
/// spends it cannot lock the owner out of their own sign-in.
pub const LOGINS_PER_MINUTE: u32 = 10;
/// Sign-in attempts per client address per minute, whatever the username.
pub const LOGINS_PER_ADDRESS_PER_MINUTE: u32 = 30;
/// Registrations per client address per minute: each new account is minted
/// starting credits.
pub const REGISTRATIONS_PER_MINUTE: u32 = 20;
/// How long a sign-in waits for a hashing permit before it is refused.
pub const HASHING_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The client's address: the connection's own, unless it comes from a
/// trusted proxy (`arena.trusted_proxies`) — then the rightmost address of
/// `X-Forwarded-For` that is not itself a trusted proxy. Anyone else's
/// `X-Forwarded-For` is ignored: it is a header a client could forge.
pub fn client_address(req: &HttpRequest) -> String {
    let Some(peer) = req.peer_addr().map(|a| a.ip()) else { return "unknown".to_owned() };
    let proxies = match req.app_data::<actix_web::web::Data<Context>>() {
        Some(ctx) if !ctx.settings.trusted_proxies.is_empty() => &ctx.settings.trusted_proxies,
        _ => return peer.to_string(),
    };
    let trusted = |ip: std::net::IpAddr| proxies.iter().any(|n| n.contains(ip));
    if !trusted(peer) {
        return peer.to_string();
    }
    let hops: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        match hop.parse::<std::net::IpAddr>() {
            Ok(ip) if trusted(ip) => continue,
            Ok(ip) => return ip.to_string(),
            // Garbage from the client's side of the chain: the last proxy's
            // peer is all that is known.
            Err(_) => break,
        }
    }
    peer.to_string()
}

/// Whether the request reached the platform over HTTPS: directly, or
/// through a trusted proxy that says so (`X-Forwarded-Proto`).
pub fn over_https(req: &HttpRequest) -> bool {
    if req.app_config().secure() {
        return true;
    }
    let from_proxy = match (req.peer_addr(), req.app_data::<actix_web::web::Data<Context>>()) {
        (Some(peer), Some(ctx)) => ctx.settings.trusted_proxies.iter().any(|n| n.contains(peer.ip())),
        _ => false,
    };
    from_proxy
        && req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.split(',').next().is_some_and(|first| first.trim().eq_ignore_ascii_case("https")))
}

/// A permit to hash one password; a 429 when the server is saturated.
pub async fn hashing_permit(state: &Context) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    match tokio::time::timeout(HASHING_WAIT, state.hashing.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(ApiError::OverCapacity("sign-in is busy; retry in a few seconds".into())),
    }
}

async fn identify(req: &HttpRequest, state: &Context) -> Result<Caller, ApiError> {
    if let Some(header) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        let value = header.to_str().map_err(|_| ApiError::Unauthenticated)?;
        let token = value.strip_prefix("Bearer ").ok_or(ApiError::Unauthenticated)?.trim();
        if !token.starts_with(TOKEN_PREFIX) {
            return Err(ApiError::Unauthenticated);
        }
        let holder = users::use_token(&state.db, &sha256_hex(token)).await?.ok_or(ApiError::Unauthenticated)?;
        let user = users::by_id(&state.db, holder.user_id).await?.ok_or(ApiError::Unauthenticated)?;
        let scopes = holder.scopes.iter().filter_map(|s| Scope::parse(s).ok()).collect();
        return Ok(Caller {
            user_id: holder.user_id,
            username: user.username,
            role: user.role.0,
            via: Via::Token { id: holder.id, scopes },
        });
    }
    let cookie = req.cookie(SESSION_COOKIE).ok_or(ApiError::Unauthenticated)?;
    // A browser sends the cookie with requests other sites make it send:
    // a write on a cookie must come from our own pages.
    if !req.method().is_safe() {
        same_origin(req)?;
    }
    let mut conn = state.redis.conn();
    let key = state.redis.key(&format!("session:{}", sha256_hex(cookie.value())));
    let user_id: Option<String> = conn.get(&key).await?;
    let user_id = user_id.and_then(|u| u.parse::<UserId>().ok()).ok_or(ApiError::Unauthenticated)?;
    let user = users::by_id(&state.db, user_id).await?.ok_or(ApiError::Unauthenticated)?;
    Ok(Caller { user_id, username: user.username, role: user.role.0, via: Via::Session })
}

/// Refuses a request a browser made on another site's behalf: an `Origin`
/// other than this server's, or `Sec-Fetch-Site` other than same-origin
/// (or none, a typed address). Clients that are not browsers send neither
/// and are let through; the cookie is also `SameSite=Lax`.
pub fn same_origin(req: &HttpRequest) -> Result<(), ApiError> {
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err(ApiError::Forbidden(format!(
            "a cross-site request ({site}) cannot write with a session cookie; use this site's pages or an API token"
        )));
    }
    if let Some(origin) = headers.get(actix_web::http::header::ORIGIN) {
        let info = req.connection_info();
        let ours = format!("{}://{}", info.scheme(), info.host());
        if origin.to_str().ok() != Some(ours.as_str()) {
            return Err(ApiError::Forbidden(format!(
                "origin {:?} is not this server ({ours}); writes with a session cookie come from its own pages",
                origin.to_str().unwrap_or("?")
            )));
        }
    }
    Ok(())
}

/// Route middleware: identifies the caller and checks `scope` before the
/// handler's extractors read the request; the caller is kept in the
/// request for the handler's `Caller`.
pub async fn require_scope(
    scope: Scope,
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<actix_web::body::BoxBody>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    use actix_web::HttpMessage;
    let checked = async {
        let caller = Caller::extract(req.request()).await?;
        caller.require(scope)?;
        Ok::<Caller, ApiError>(caller)
    }
    .await;
    match checked {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.call(req).await
        }
        Err(err) => Ok(req.error_response(err)),
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        use actix_web::HttpMessage;
        let known = req.extensions().get::<Caller>().cloned();
        let req = req.clone();
        Box::pin(async move {
            if let Some(caller) = known {
                return Ok(caller);
            }
            let state = req
                .app_data::<web::Data<Context>>()
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("the Context is missing")))?
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
