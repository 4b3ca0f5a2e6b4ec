//! Accounts and sign-in: registration, sessions, API tokens, credits.

use crate::context::Context;
use crate::domain::TokenId;
use crate::domain::user::{Password, Role, Scope, Username};
use crate::http::auth::{self, Caller, SESSION_COOKIE};
use crate::http::error::ApiError;
use crate::store::{ledger, users};
use actix_web::cookie::{Cookie, SameSite};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    username: String,
    password: String,
    #[serde(default = "default_role")]
    role: String,
}

fn default_role() -> String {
    "player".to_owned()
}

/// POST /api/v1/users — anyone may register as a player. Designer and
/// buyer accounts are granted by an admin (`PATCH /users/{username}` or
/// `arena user role`): a self-made designer could publish Spaces that take
/// players' fees, a self-made buyer could take the data.
#[tracing::instrument(skip_all)]
pub async fn register(
    state: web::Data<Context>,
    req: HttpRequest,
    body: web::Json<Register>,
) -> Result<HttpResponse, ApiError> {
    let role = Role::parse(&body.role)?;
    let user = register_user(&state, &req, &body.username, &body.password, role).await?;
    Ok(HttpResponse::Created().json(user))
}

/// Registration as the API and the sign-up page do it: checked, counted per
/// address, hashed under a permit; players only.
pub async fn register_user(
    state: &Context,
    req: &HttpRequest,
    username: &str,
    password: &str,
    role: Role,
) -> Result<users::User, ApiError> {
    let username = Username::parse(username)?;
    let password = Password::parse(password)?;
    match role {
        Role::Player => {}
        Role::Admin => return Err(ApiError::invalid("role", "admins are made with `arena user create --role admin`")),
        Role::Designer | Role::Buyer => {
            return Err(ApiError::invalid(
                "role",
                format!(
                    "{} accounts are granted by an admin: register as a player, then ask for the role",
                    role.as_str()
                ),
            ));
        }
    }
    auth::count_attempt(state, &format!("register:{}", auth::client_address(req)), auth::REGISTRATIONS_PER_MINUTE)
        .await?;
    let _permit = auth::hashing_permit(state).await?;
    Ok(users::create_user(&state.db, &username, password, role, state.settings.starting_credits).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleChange {
    role: String,
}

/// PATCH /api/v1/users/{username} — an admin grants a role.
pub async fn set_role(
    state: web::Data<Context>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<RoleChange>,
) -> Result<HttpResponse, ApiError> {
    caller.write(&state, Scope::Admin).await?;
    let role = Role::parse(&body.role)?;
    if role == Role::Admin {
        return Err(ApiError::invalid("role", "admins are made with `arena user create --role admin`"));
    }
    let user = users::set_role(&state.db, &path, role).await?.ok_or_else(|| ApiError::NotFound("user".into()))?;
    Ok(HttpResponse::Ok().json(user))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    username: String,
    password: String,
}

/// POST /api/v1/sessions — sets the session cookie. A name that cannot be
/// a username is refused before anything is counted or hashed; attempts
/// are limited per address and per address and username.
#[tracing::instrument(skip_all)]
pub async fn login(
    state: web::Data<Context>,
    req: HttpRequest,
    body: web::Json<Login>,
) -> Result<HttpResponse, ApiError> {
    let (user, cookie) = sign_in(&state, &req, &body.username, &body.password).await?;
    Ok(HttpResponse::Ok().cookie(cookie).json(user))
}

/// Sign-in as the API and the sign-in page do it; the user and a new
/// session's cookie (never the id the client brought).
pub async fn sign_in(
    state: &Context,
    req: &HttpRequest,
    username: &str,
    password: &str,
) -> Result<(users::User, Cookie<'static>), ApiError> {
    let username = Username::parse(username).map_err(|_| ApiError::BadCredentials)?;
    if password.len() > 1024 {
        return Err(ApiError::BadCredentials);
    }
    let address = auth::client_address(req);
    auth::count_attempt(state, &format!("login:{address}"), auth::LOGINS_PER_ADDRESS_PER_MINUTE).await?;
    let who = format!("login:{address}:{}", username.as_str().to_lowercase());
    auth::count_attempt(state, &who, auth::LOGINS_PER_MINUTE).await?;
    let _permit = auth::hashing_permit(state).await?;
    let user = auth::authenticate(state, username.as_str(), password).await?;
    if let Some(old) = req.cookie(SESSION_COOKIE) {
        auth::end_session(state, old.value()).await?;
    }
    let secret = auth::start_session(state, &user).await?;
    let cookie = Cookie::build(SESSION_COOKIE, secret)
        .path("/")
        .http_only(true)
        .secure(match state.settings.secure_cookies {
            crate::domain::settings::SecureCookies::Always => true,
            crate::domain::settings::SecureCookies::Never => false,
            crate::domain::settings::SecureCookies::Auto => auth::over_https(req),
        })
        .same_site(SameSite::Lax)
        .max_age(actix_web::cookie::time::Duration::seconds(state.settings.session_ttl_s as i64))
        .finish();
    Ok((user, cookie))
}

/// DELETE /api/v1/sessions — ends the current session.
pub async fn logout(state: web::Data<Context>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::NoContent().cookie(sign_out(&state, &req).await?).finish())
}

/// Ends the request's session; the cookie that removes it.
pub async fn sign_out(state: &Context, req: &HttpRequest) -> Result<Cookie<'static>, ApiError> {
    if let Some(cookie) = req.cookie(SESSION_COOKIE) {
        auth::end_session(state, cookie.value()).await?;
    }
    let mut gone = Cookie::build(SESSION_COOKIE, "").path("/").finish();
    gone.make_removal();
    Ok(gone)
}

/// GET /api/v1/me
pub async fn me(state: web::Data<Context>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Read)?;
    let mut conn = state.db.acquire().await?;
    let account = ledger::user_account(&mut conn, caller.user_id).await?;
    drop(conn);
    let balance = ledger::balance(&state.db, account).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "id": caller.user_id,
        "username": caller.username,
        "role": caller.role,
        "via": caller.via,
        "balance": balance,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementQuery {
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    before: Option<i64>,
}

/// GET /api/v1/me/ledger — the caller's entries, newest first.
pub async fn statement(
    state: web::Data<Context>,
    caller: Caller,
    query: web::Query<StatementQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Read)?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit", "limit is 1..=500"));
    }
    let mut conn = state.db.acquire().await?;
    let account = ledger::user_account(&mut conn, caller.user_id).await?;
    drop(conn);
    let balance = ledger::balance(&state.db, account).await?;
    let lines = ledger::statement(&state.db, account, limit, query.before).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "balance": balance, "entries": lines })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    name: String,
    scopes: Vec<String>,
    /// Days the token lives (1..=365, default 90).
    #[serde(default)]
    expires_in_days: Option<u32>,
}

/// POST /api/v1/tokens — the secret is in this answer only.
pub async fn create_token(
    state: web::Data<Context>,
    caller: Caller,
    body: web::Json<NewToken>,
) -> Result<HttpResponse, ApiError> {
    caller.write(&state, Scope::Read).await?;
    if caller.via != auth::Via::Session {
        return Err(ApiError::Forbidden("tokens are made from a signed-in session, not with another token".into()));
    }
    let scopes = body.scopes.iter().map(|s| Scope::parse(s)).collect::<Result<Vec<_>, _>>()?;
    let days = body.expires_in_days.unwrap_or(auth::TOKEN_DAYS_DEFAULT);
    let token = auth::create_token(&state, &caller, &body.name, &scopes, days).await?;
    Ok(HttpResponse::Created().json(token))
}

/// GET /api/v1/tokens — the caller's tokens, without secrets.
pub async fn list_tokens(state: web::Data<Context>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Read)?;
    let tokens = users::tokens(&state.db, caller.user_id).await?;
    Ok(HttpResponse::Ok().json(tokens))
}

/// DELETE /api/v1/tokens/{id} — revokes; the token stops working at once.
pub async fn revoke_token(
    state: web::Data<Context>,
    caller: Caller,
    path: web::Path<TokenId>,
) -> Result<HttpResponse, ApiError> {
    caller.write(&state, Scope::Read).await?;
    if !users::revoke_token(&state.db, caller.user_id, path.into_inner()).await? {
        return Err(ApiError::NotFound("token".into()));
    }
    Ok(HttpResponse::NoContent().finish())
}
