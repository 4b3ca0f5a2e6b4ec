//! `/me`: balance, the ledger statement (paged), API tokens — made (shown
//! once) and revoked with the API's own functions.

use super::extract::CsrfOnly;
use super::{Chrome, Ctx, Form, FormError, PageError, SignedIn, render, render_with, see_other, when};
use crate::domain::TokenId;
use crate::domain::user::Scope;
use crate::http::auth;
use crate::store::{ledger, users};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use std::collections::HashMap;

/// Ledger lines a page shows.
const PAGE_LINES: i64 = 25;

struct Line {
    when: String,
    kind: String,
    memo: String,
    match_id: Option<String>,
    amount: i64,
    balance_after: i64,
}

struct TokenLine {
    id: String,
    name: String,
    scopes: String,
    created: String,
    expires: String,
    state: &'static str,
    active: bool,
}

struct NewTokenShown {
    name: String,
    scopes: String,
    expires: String,
    secret: String,
}

#[derive(Template)]
#[template(path = "me.html")]
struct MePage {
    chrome: Chrome,
    username: String,
    role: &'static str,
    balance: i64,
    /// Credits earned from buyers' exports of pairs this user's agents or
    /// Spaces made, and from how many sales.
    data_income: (i64, i64),
    lines: Vec<Line>,
    before: Option<i64>,
    older: Option<i64>,
    tokens: Vec<TokenLine>,
    scopes: Vec<String>,
    new_token: Option<NewTokenShown>,
    error: FormError,
}

#[derive(Deserialize)]
pub struct MeQuery {
    #[serde(default)]
    before: Option<i64>,
}

async fn me_page(
    state: &Ctx,
    user: &SignedIn,
    before: Option<i64>,
    new_token: Option<NewTokenShown>,
    error: FormError,
) -> Result<MePage, PageError> {
    let caller = &user.caller;
    let mut conn = state.db.acquire().await?;
    let account = ledger::user_account(&mut conn, caller.user_id).await.map_err(PageError::internal)?;
    drop(conn);
    let balance = ledger::balance(&state.db, account).await.map_err(PageError::internal)?;
    let rows = ledger::statement(&state.db, account, PAGE_LINES + 1, before).await.map_err(PageError::internal)?;
    let older = (rows.len() as i64 > PAGE_LINES).then(|| rows[PAGE_LINES as usize - 1].entry);
    let lines = rows
        .into_iter()
        .take(PAGE_LINES as usize)
        .map(|l| Line {
            when: when(&l.created_at),
            kind: if l.account == "user" { l.kind } else { format!("{} (a worker's {} account)", l.kind, l.account) },
            memo: l.memo,
            match_id: l.match_id.map(|m| m.to_string()),
            amount: l.amount,
            balance_after: l.balance_after,
        })
        .collect();
    let now = chrono::Utc::now();
    let tokens = users::tokens(&state.db, caller.user_id)
        .await?
        .into_iter()
        .map(|t| TokenLine {
            active: t.revoked_at.is_none() && t.expires_at > now,
            id: t.id.to_string(),
            name: t.name,
            scopes: t.scopes.join(", "),
            created: when(&t.created_at),
            expires: when(&t.expires_at),
            state: if t.revoked_at.is_some() {
                "revoked"
            } else if t.expires_at <= now {
                "expired"
            } else {
                "active"
            },
        })
        .collect();
    Ok(MePage {
        chrome: user.chrome.clone(),
        username: caller.username.clone(),
        role: caller.role.as_str(),
        balance,
        data_income: crate::store::exports::data_income(&state.db, caller.user_id).await?,
        lines,
        before,
        older,
        tokens,
        scopes: caller.role.scopes().iter().map(|s| s.as_str().to_owned()).collect(),
        new_token,
        error,
    })
}

pub async fn page(state: Ctx, user: SignedIn, query: web::Query<MeQuery>) -> Result<HttpResponse, PageError> {
    let page = me_page(&state, &user, query.before, None, FormError::default()).await?;
    render(&user.chrome, &page)
}

/// POST /me/tokens: `name`, `expires_in_days`, and a `scope_NAME=on` per scope.
pub async fn create_token(
    state: Ctx,
    user: SignedIn,
    Form(form): Form<HashMap<String, String>>,
) -> Result<HttpResponse, PageError> {
    let caller = &user.caller;
    if form.len() > 16 {
        return Err(PageError::Forbidden);
    }
    let mut scopes = Vec::new();
    for (key, _) in form.iter().filter(|(k, v)| k.starts_with("scope_") && v.as_str() == "on") {
        match Scope::parse(&key["scope_".len()..]) {
            Ok(scope) => scopes.push(scope),
            Err(_) => return Err(PageError::Forbidden),
        }
    }
    let days = match form.get("expires_in_days").map(|d| d.trim().parse::<u32>()) {
        None => Ok(auth::TOKEN_DAYS_DEFAULT),
        Some(Ok(d)) => Ok(d),
        Some(Err(_)) => {
            Err(crate::http::error::ApiError::invalid("expires_in_days", "give a whole number of days, 1 to 365"))
        }
    };
    let name = form.get("name").cloned().unwrap_or_default();
    let made = match days {
        Ok(days) => {
            caller.write(&state, Scope::Read).await.map_err(PageError::from)?;
            auth::create_token(&state, caller, &name, &scopes, days).await
        }
        Err(e) => Err(e),
    };
    match made {
        Ok(token) => {
            let shown = NewTokenShown {
                name: token.name,
                scopes: token.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                expires: when(&token.expires_at),
                secret: token.token,
            };
            let page = me_page(&state, &user, None, Some(shown), FormError::default()).await?;
            render_with(StatusCode::CREATED, &user.chrome, &page)
        }
        Err(err) => {
            let page = me_page(&state, &user, None, None, FormError::from_api(err)?).await?;
            render_with(StatusCode::UNPROCESSABLE_ENTITY, &user.chrome, &page)
        }
    }
}

pub async fn revoke_token(
    state: Ctx,
    user: SignedIn,
    path: web::Path<TokenId>,
    _: Form<CsrfOnly>,
) -> Result<HttpResponse, PageError> {
    let caller = &user.caller;
    caller.write(&state, Scope::Read).await?;
    if !users::revoke_token(&state.db, caller.user_id, path.into_inner()).await? {
        return Err(PageError::NotFound);
    }
    Ok(see_other("/me"))
}
