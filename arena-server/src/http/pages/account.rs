//! Sign-up, sign-in and sign-out forms. They call the API's own
//! registration and sign-in (`handlers::users`): the same checks, limits
//! and a new session id at every sign-in.

use super::{Chrome, FormError, PageCtx, PageError, State, Visitor, check_csrf, render_with, see_other};
use crate::http::handlers::users;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

#[derive(Template)]
#[template(path = "signup.html")]
struct SignupPage {
    chrome: Chrome,
    username: String,
    error: FormError,
    starting_credits: i64,
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SigninPage {
    chrome: Chrome,
    username: String,
    next: String,
    error: FormError,
}

#[derive(Deserialize)]
pub struct AccountForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

#[derive(Deserialize)]
pub struct NextQuery {
    #[serde(default)]
    next: Option<String>,
}

/// Only a path on this site: never a URL that leaves it. Browsers drop
/// tabs and newlines from URLs (`/\t/evil` becomes `//evil`), so only a
/// plain set of characters passes.
pub fn safe_next(next: &str) -> String {
    let plain = next.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-_.~?=&%".contains(&b));
    let ok = plain && next.starts_with('/') && !next.starts_with("//") && next.len() <= 512;
    if ok { next.to_owned() } else { "/".to_owned() }
}

pub async fn signup_page(state: State, req: HttpRequest, caller: Visitor) -> Result<HttpResponse, PageError> {
    let ctx = PageCtx::new(&req, caller);
    let page = SignupPage {
        chrome: ctx.chrome.clone(),
        username: String::new(),
        error: FormError::default(),
        starting_credits: state.settings.starting_credits,
    };
    super::render(&ctx.chrome, &page)
}

pub async fn signup(
    state: State,
    req: HttpRequest,
    caller: Visitor,
    form: web::Form<AccountForm>,
) -> Result<HttpResponse, PageError> {
    check_csrf(&req, &form.csrf)?;
    let ctx = PageCtx::new(&req, caller);
    match users::register_user(&state, &req, &form.username, &form.password, "player").await {
        Ok(_) => {
            let (_, cookie) = users::sign_in(&state, &req, &form.username, &form.password).await?;
            Ok(HttpResponse::SeeOther().cookie(cookie).insert_header(("Location", "/agents/new")).finish())
        }
        Err(err) => {
            let page = SignupPage {
                chrome: ctx.chrome.clone(),
                username: form.username.chars().take(64).collect(),
                error: FormError::from_api(err)?,
                starting_credits: state.settings.starting_credits,
            };
            render_with(StatusCode::UNPROCESSABLE_ENTITY, &ctx.chrome, &page)
        }
    }
}

pub async fn signin_page(
    req: HttpRequest,
    caller: Visitor,
    query: web::Query<NextQuery>,
) -> Result<HttpResponse, PageError> {
    let ctx = PageCtx::new(&req, caller);
    let next = safe_next(query.next.as_deref().unwrap_or("/"));
    let page = SigninPage { chrome: ctx.chrome.clone(), username: String::new(), next, error: FormError::default() };
    super::render(&ctx.chrome, &page)
}

pub async fn signin(
    state: State,
    req: HttpRequest,
    caller: Visitor,
    form: web::Form<AccountForm>,
) -> Result<HttpResponse, PageError> {
    check_csrf(&req, &form.csrf)?;
    let ctx = PageCtx::new(&req, caller);
    let next = safe_next(&form.next);
    match users::sign_in(&state, &req, &form.username, &form.password).await {
        Ok((_, cookie)) => Ok(HttpResponse::SeeOther().cookie(cookie).insert_header(("Location", next)).finish()),
        Err(err) => {
            let status = match &err {
                crate::http::error::ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::UNAUTHORIZED,
            };
            let page = SigninPage {
                chrome: ctx.chrome.clone(),
                username: form.username.chars().take(64).collect(),
                next,
                error: FormError::from_api(err)?,
            };
            render_with(status, &ctx.chrome, &page)
        }
    }
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

pub async fn signout(state: State, req: HttpRequest, form: web::Form<CsrfOnly>) -> Result<HttpResponse, PageError> {
    check_csrf(&req, &form.csrf)?;
    let gone = users::sign_out(&state, &req).await?;
    let mut response = see_other("/");
    response.add_cookie(&gone).map_err(PageError::internal)?;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_never_leaves_the_site() {
        for bad in [
            "//evil.example",
            "/\t/evil.example",
            "/\\evil",
            "https://evil.example",
            "/\r\nSet-Cookie:x",
            "javascript:x",
            "",
        ] {
            assert_eq!(safe_next(bad), "/", "{bad:?}");
        }
        for good in ["/me", "/agents/3f1c?x=1", "/spaces/arithmetic"] {
            assert_eq!(safe_next(good), good);
        }
    }
}
