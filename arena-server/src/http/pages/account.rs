//! Sign-up, sign-in and sign-out forms. They call the API's own
//! registration and sign-in (`handlers::users`): the same checks, limits
//! and a new session id at every sign-in.

use super::extract::{CsrfOnly, csrf_token};
use super::{Chrome, Ctx, Form, FormError, PageError, Visit, render_with, see_other};
use crate::domain::user::Role;
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

pub async fn signup_page(state: Ctx, visit: Visit) -> Result<HttpResponse, PageError> {
    let page = SignupPage {
        chrome: visit.chrome.clone(),
        username: String::new(),
        error: FormError::default(),
        starting_credits: state.settings.starting_credits,
    };
    super::render(&visit.chrome, &page)
}

pub async fn signup(
    state: Ctx,
    req: HttpRequest,
    visit: Visit,
    Form(form): Form<AccountForm>,
) -> Result<HttpResponse, PageError> {
    match users::register_user(&state, &req, &form.username, &form.password, Role::Player).await {
        Ok(_) => {
            let (_, cookie) = users::sign_in(&state, &req, &form.username, &form.password).await?;
            Ok(HttpResponse::SeeOther().cookie(cookie).insert_header(("Location", "/agents/new")).finish())
        }
        Err(err) => {
            let page = SignupPage {
                chrome: visit.chrome.clone(),
                username: form.username.chars().take(64).collect(),
                error: FormError::from_api(err)?,
                starting_credits: state.settings.starting_credits,
            };
            render_with(StatusCode::UNPROCESSABLE_ENTITY, &visit.chrome, &page)
        }
    }
}

pub async fn signin_page(visit: Visit, query: web::Query<NextQuery>) -> Result<HttpResponse, PageError> {
    let next = safe_next(query.next.as_deref().unwrap_or("/"));
    let page = SigninPage { chrome: visit.chrome.clone(), username: String::new(), next, error: FormError::default() };
    super::render(&visit.chrome, &page)
}

pub async fn signin(
    state: Ctx,
    req: HttpRequest,
    visit: Visit,
    Form(form): Form<AccountForm>,
) -> Result<HttpResponse, PageError> {
    let next = safe_next(&form.next);
    match users::sign_in(&state, &req, &form.username, &form.password).await {
        Ok((_, cookie)) => Ok(HttpResponse::SeeOther().cookie(cookie).insert_header(("Location", next)).finish()),
        Err(err) => {
            let status = match &err {
                crate::http::error::ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::UNAUTHORIZED,
            };
            let page = SigninPage {
                chrome: visit.chrome.clone(),
                username: form.username.chars().take(64).collect(),
                next,
                error: FormError::from_api(err)?,
            };
            render_with(status, &visit.chrome, &page)
        }
    }
}

csrf_token!(text: AccountForm);

pub async fn signout(state: Ctx, req: HttpRequest, _: Form<CsrfOnly>) -> Result<HttpResponse, PageError> {
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
