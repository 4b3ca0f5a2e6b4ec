//! The designers' studio: `/studio` (the designer's Spaces at a glance and
//! new ones from the examples), the editor (`/studio/new`,
//! `/studio/{slug}`: the TOML checked on every change, each error with its
//! line, the rules in words), publishing (the API's own `publish`, so a
//! Space published here is byte-identical to one from the CLI with the same
//! files), versions with a diff between any two (versions that change what
//! players pay or win flagged), a dry run of the draft on the real runtime
//! and judge, and live analytics. Designers and admins only; a Space's
//! pages are its designer's (and admins') alone.

pub mod analytics;
pub mod editor;
pub mod files;
pub mod runs;
pub mod versions;

use super::{Chrome, Ctx, Designer, PageError, SignedIn, render, render_with};
use crate::domain::space::{Checked, check_draft};
use crate::http::auth::Caller;
use crate::store::spaces as space_store;
use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use askama::Template;
use std::collections::BTreeMap;

/// An example Space: its name, its TOML and the files it names (path, text).
pub type Example = (&'static str, &'static str, &'static [(&'static str, &'static str)]);

/// The examples a new Space starts from.
pub const EXAMPLES: &[Example] = &[
    (
        "arithmetic",
        include_str!("../../../../../spaces/arithmetic.toml"),
        &[("prompts/arithmetic.jsonl", include_str!("../../../../../spaces/prompts/arithmetic.jsonl"))],
    ),
    ("explain", include_str!("../../../../../spaces/explain.toml"), &[]),
    (
        "json-contact",
        include_str!("../../../../../spaces/json-contact.toml"),
        &[("schemas/contact.json", include_str!("../../../../../spaces/schemas/contact.json"))],
    ),
    (
        "contact-cards",
        include_str!("../../../../../spaces/contact-cards.toml"),
        &[("schemas/contact.json", include_str!("../../../../../spaces/schemas/contact.json"))],
    ),
];

fn example_files(name: &str) -> Option<(String, BTreeMap<String, String>)> {
    EXAMPLES.iter().find(|(n, _, _)| *n == name).map(|(_, source, files)| {
        ((*source).to_owned(), files.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    })
}

/// The caller's Space `slug` (an admin's: any); anyone else's is "not found".
async fn own_space(state: &Ctx, caller: &Caller, slug: &str) -> Result<space_store::SpaceOwner, PageError> {
    space_store::id_and_owner(&state.db, slug)
        .await?
        .filter(|s| s.owner_id == caller.user_id || caller.is_admin())
        .ok_or(PageError::NotFound)
}

pub struct SpaceLine {
    pub slug: String,
    pub version: i32,
    pub active: bool,
    /// Why the platform paused it (its referee kept failing), if it did.
    pub paused_reason: Option<String>,
    pub settled_24h: i64,
    pub pairs: i64,
    pub decisiveness: String,
}

#[derive(Template)]
#[template(path = "studio.html")]
struct StudioPage {
    chrome: Chrome,
    spaces: Vec<SpaceLine>,
    examples: Vec<&'static str>,
}

/// GET /studio
pub async fn list(state: Ctx, user: Designer) -> Result<HttpResponse, PageError> {
    let caller = &user.caller;
    let mut spaces = Vec::new();
    for row in crate::store::analytics::designer_spaces(&state.db, caller.user_id, caller.is_admin()).await? {
        spaces.push(SpaceLine {
            decisiveness: row.decisiveness.map_or("—".to_owned(), |d| format!("{:.2}", d)),
            slug: row.slug,
            version: row.current_version,
            active: row.active,
            paused_reason: row.paused_reason,
            settled_24h: row.settled_24h,
            pairs: row.pairs,
        });
    }
    let examples = EXAMPLES.iter().map(|e| e.0).collect();
    render(&user.chrome, &StudioPage { chrome: user.chrome.clone(), spaces, examples })
}

#[derive(Template)]
#[template(path = "studio_editor.html")]
struct EditorPage {
    chrome: Chrome,
    /// The Space being edited, or None for a new one.
    slug: Option<String>,
    /// Where the draft's files come from: "space:SLUG" or "example:NAME".
    base: String,
    source: String,
    files: Vec<String>,
    checked: Checked,
    publish_error: Option<String>,
    /// The built-in red-team corpora's names.
    corpora: Vec<&'static str>,
    /// The designer's own agents (id, name), to seat in a dry run.
    agents: Vec<(String, String)>,
}

impl EditorPage {
    /// The editor on `source` and `files`, drafted from `base`
    /// ("space:SLUG" edits that Space; "example:NAME" starts a new one),
    /// with `publish_error` above the publish button.
    async fn new(
        state: &Ctx,
        user: &SignedIn,
        base: &str,
        source: String,
        files: &BTreeMap<String, String>,
        publish_error: Option<String>,
    ) -> Result<EditorPage, PageError> {
        let agents = crate::store::agents::names_of_owner(&state.db, user.caller.user_id)
            .await?
            .into_iter()
            .map(|(id, name)| (id.to_string(), name))
            .collect();
        Ok(EditorPage {
            chrome: user.chrome.clone(),
            slug: base.strip_prefix("space:").map(str::to_owned),
            base: base.to_owned(),
            checked: check_draft(&source, files),
            source,
            files: files.keys().cloned().collect(),
            publish_error,
            corpora: runs::CORPORA.iter().map(|c| c.0).collect(),
            agents,
        })
    }
}

/// The editor again, with what stopped the designer's action (422).
async fn editor_again(
    state: &Ctx,
    user: &SignedIn,
    base: &str,
    source: String,
    files: &BTreeMap<String, String>,
    error: String,
) -> Result<HttpResponse, PageError> {
    let page = EditorPage::new(state, user, base, source, files, Some(error)).await?;
    render_with(StatusCode::UNPROCESSABLE_ENTITY, &user.chrome, &page)
}

/// The current version of the designer's Space `slug`: its TOML and files.
async fn current_draft(
    state: &Ctx,
    caller: &Caller,
    slug: &str,
) -> Result<(String, BTreeMap<String, String>), PageError> {
    let space = own_space(state, caller, slug).await?;
    let current = space_store::current_version(&state.db, space.id).await?;
    let version = space_store::version(&state.db, space.id, current).await?.ok_or(PageError::NotFound)?;
    Ok((version.source, serde_json::from_value(version.files).unwrap_or_default()))
}

/// The files a draft is checked and published with: the current version's
/// of the designer's own Space, or an example's.
async fn base_files(state: &Ctx, caller: &Caller, base: &str) -> Result<BTreeMap<String, String>, PageError> {
    if let Some(name) = base.strip_prefix("example:") {
        return example_files(name).map(|(_, f)| f).ok_or(PageError::NotFound);
    }
    if let Some(slug) = base.strip_prefix("space:") {
        return Ok(current_draft(state, caller, slug).await?.1);
    }
    Ok(BTreeMap::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drafts_errors_are_placed_on_their_lines() {
        let (source, files) = example_files("arithmetic").unwrap();
        assert!(check_draft(&source, &files).problems.is_empty());
        let broken = source.replacen("agents_per_match = ", "agents_per_match = 99 #", 1);
        let checked = check_draft(&broken, &files);
        let p = checked.problems.first().expect("an error");
        assert!(p.text.contains("agents_per_match"), "{} {}", p.line, p.text);
        assert_eq!(broken.lines().nth(p.line - 1), Some(p.text.as_str()));
        // Without its prompt file the example names the missing file.
        let missing = check_draft(&source, &BTreeMap::new());
        assert!(
            missing.problems.iter().any(|p| p.message.contains("arithmetic.jsonl")),
            "{:?}",
            missing.problems.iter().map(|p| &p.message).collect::<Vec<_>>()
        );
    }
}
