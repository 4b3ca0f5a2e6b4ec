//! The editor: a new Space from an example (`/studio/new`) or the next
//! version of one's own (`/studio/{slug}`), its live check, and publishing.

use super::{EditorPage, base_files, current_draft, editor_again, example_files};
use crate::domain::space::{Checked, check_draft};
use crate::domain::user::Scope;
use crate::http::handlers::spaces::publish_space;
use crate::http::pages::extract::csrf_token;
use crate::http::pages::{Ctx, Designer, Form, FormError, PageError, render, see_other};
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

#[derive(Template)]
#[template(path = "partials/studio_check.html")]
struct CheckFragment {
    checked: Checked,
}

#[derive(Deserialize)]
pub struct NewQuery {
    #[serde(default)]
    example: Option<String>,
}

/// GET /studio/new?example=NAME — the editor on a copy of an example.
pub async fn new_page(state: Ctx, user: Designer, query: web::Query<NewQuery>) -> Result<HttpResponse, PageError> {
    let name = query.example.as_deref().unwrap_or("arithmetic");
    let (source, files) = example_files(name).ok_or(PageError::NotFound)?;
    let page = EditorPage::new(&state, &user, &format!("example:{name}"), source, &files, None).await?;
    render(&user.chrome, &page)
}

/// GET /studio/{slug} — the editor on the Space's current version.
pub async fn editor(state: Ctx, user: Designer, slug: web::Path<String>) -> Result<HttpResponse, PageError> {
    let (source, files) = current_draft(&state, &user.caller, &slug).await?;
    let page = EditorPage::new(&state, &user, &format!("space:{slug}"), source, &files, None).await?;
    render(&user.chrome, &page)
}

#[derive(Deserialize)]
pub struct DraftForm {
    #[serde(default)]
    csrf: String,
    #[serde(default, deserialize_with = "lf")]
    pub(super) source: String,
    #[serde(default)]
    pub(super) base: String,
}

csrf_token!(text: DraftForm);

/// A textarea's text as the file it stands for: browsers send its line
/// ends as CRLF, a file from the CLI has LF, and the same Space must hash
/// the same from either.
pub(super) fn lf<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(String::deserialize(d)?.replace("\r\n", "\n"))
}

/// Live checks one designer may ask for per minute.
pub const CHECKS_PER_MINUTE: u32 = 240;

/// POST /studio/check — the draft's problems or its rules (a fragment for
/// the editor's live check).
pub async fn check(state: Ctx, user: Designer, Form(form): Form<DraftForm>) -> Result<HttpResponse, PageError> {
    let caller = &user.caller;
    // Parsing is CPU work a keystroke asks for: bounded per designer.
    crate::http::auth::count_attempt(&state, &format!("studio-check:{}", caller.user_id), CHECKS_PER_MINUTE).await?;
    let files = base_files(&state, caller, &form.base).await?;
    let source = form.source;
    let checked =
        tokio::task::spawn_blocking(move || check_draft(&source, &files)).await.map_err(PageError::internal)?;
    let html = CheckFragment { checked }.render().map_err(PageError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(html))
}

/// POST /studio/publish — publishes the draft (a new Space, or the next
/// version of the designer's own) with its base's files.
pub async fn publish(state: Ctx, user: Designer, Form(form): Form<DraftForm>) -> Result<HttpResponse, PageError> {
    let caller = &user.caller;
    let files = base_files(&state, caller, &form.base).await?;
    let published = async {
        caller.write(&state, Scope::Design).await?;
        publish_space(&state, caller, &form.source, &files).await
    }
    .await;
    match published {
        Ok(p) => Ok(see_other(&format!("/studio/{}/versions", p.slug))),
        Err(err) => {
            let why = FormError::from_api(err)?;
            editor_again(&state, &user, &form.base, form.source, &files, why.message).await
        }
    }
}
