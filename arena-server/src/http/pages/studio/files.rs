//! A Space's own files (a prompt file, a schema) from the browser: the next
//! version with a file added or replaced, or a new Space published with one
//! file beside its draft.

use super::{base_files, current_draft, editor_again};
use crate::domain::user::Scope;
use crate::http::error::ApiError;
use crate::http::handlers::spaces::publish_space;
use crate::http::pages::extract::csrf_token;
use crate::http::pages::{Ctx, Designer, FormError, PageError, SignedIn, Upload, see_other};
use actix_multipart::form::{MultipartForm, bytes::Bytes, text::Text};
use actix_web::{HttpResponse, web};
use std::collections::BTreeMap;

/// The file form: a path inside the Space (as its TOML names it) and the
/// file's text; sizes are capped by the multipart limits and then by the
/// Space's own limits at publish.
#[derive(MultipartForm)]
pub struct FileForm {
    csrf: Text<String>,
    path: Text<String>,
    #[multipart(limit = "16MiB")]
    file: Bytes,
}

/// The new-Space file form: the draft (kept in step with the editor by
/// arena.js; without script it is the text the page was rendered with),
/// its base, and one file to publish beside it.
#[derive(MultipartForm)]
pub struct NewFileForm {
    csrf: Text<String>,
    source: Text<String>,
    base: Text<String>,
    path: Text<String>,
    #[multipart(limit = "16MiB")]
    file: Bytes,
}

csrf_token!(multipart: FileForm, NewFileForm);

/// POST /studio/new/files — publishes a new Space from the draft with one
/// uploaded file beside the base's files (a prompt file or schema the
/// draft names), so a Space whose TOML names its own file can be published
/// from the browser the first time.
pub async fn publish_with_file(
    state: Ctx,
    user: Designer,
    Upload(form): Upload<NewFileForm>,
) -> Result<HttpResponse, PageError> {
    let base = form.base.into_inner();
    let source = form.source.into_inner().replace("\r\n", "\n");
    let files = base_files(&state, &user.caller, &base).await?;
    publish_file(&state, &user, &base, source, files, form.path.into_inner(), form.file).await
}

/// POST /studio/{slug}/files — publishes the next version of the designer's
/// Space with `path` added or replaced by the uploaded text (the current
/// version's TOML and other files unchanged), as `arena space publish`
/// would with that file on disk. A name outside the Space or text that is
/// not UTF-8 is refused and changes nothing.
pub async fn upload_file(
    state: Ctx,
    user: Designer,
    slug: web::Path<String>,
    Upload(form): Upload<FileForm>,
) -> Result<HttpResponse, PageError> {
    let (source, files) = current_draft(&state, &user.caller, &slug).await?;
    publish_file(&state, &user, &format!("space:{slug}"), source, files, form.path.into_inner(), form.file).await
}

/// Publishes `source` with `files` and the uploaded `file` at `path`; on a
/// refusal, the editor again with what was wrong.
async fn publish_file(
    state: &Ctx,
    user: &SignedIn,
    base: &str,
    source: String,
    mut files: BTreeMap<String, String>,
    path: String,
    file: Bytes,
) -> Result<HttpResponse, PageError> {
    let caller = &user.caller;
    let path = path.trim().to_owned();
    let done = async {
        judge::files::check_name(&path).map_err(|e| ApiError::invalid("path", e))?;
        let text = String::from_utf8(file.data.to_vec())
            .map_err(|_| ApiError::invalid("file", "the file is not UTF-8 text"))?;
        files.insert(path.clone(), text.replace("\r\n", "\n"));
        caller.write(state, Scope::Design).await?;
        publish_space(state, caller, &source, &files).await
    }
    .await;
    match done {
        Ok(p) => Ok(see_other(&format!("/studio/{}/versions", p.slug))),
        Err(err) => {
            let why = FormError::from_api(err)?;
            let field = if why.field.is_empty() { "file" } else { &why.field };
            editor_again(state, user, base, source, &files, format!("{field}: {}", why.message)).await
        }
    }
}
