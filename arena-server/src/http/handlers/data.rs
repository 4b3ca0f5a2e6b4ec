//! Preference data for buyers: how many pairs a filter selects and what
//! they cost, the free Spaces' pairs streamed as JSON Lines, dataset cards,
//! and paid exports as jobs (JSON Lines or Parquet files with their card,
//! downloadable by the buyer who paid).

use crate::context::Context;
use crate::domain::dataset::{Format, LabelSource, PairFilter, PairKind, dataset_card};
use crate::domain::user::Scope;
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::store::exports::{self as export_store, ExportRefused, ExportRequest};
use crate::store::pairs as pair_store;
use crate::store::spaces as space_store;
use actix_web::{HttpResponse, web};
use serde::Deserialize;

/// Pairs one export request may ask for.
pub const MAX_EXPORT: i64 = 1_000_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataQuery {
    /// Space slugs, comma-separated.
    #[serde(default)]
    spaces: Option<String>,
    #[serde(default)]
    space_version: Option<i32>,
    #[serde(default)]
    from: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    to: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    min_margin: Option<f64>,
    #[serde(default)]
    agreed_only: Option<bool>,
    #[serde(default)]
    min_rating: Option<f64>,
    #[serde(default)]
    max_rating: Option<f64>,
    #[serde(default)]
    min_chars: Option<i32>,
    #[serde(default)]
    max_chars: Option<i32>,
    /// Language codes, comma-separated.
    #[serde(default)]
    languages: Option<String>,
    #[serde(default)]
    dedupe: Option<bool>,
    #[serde(default)]
    chosen_passed: Option<bool>,
    #[serde(default)]
    rejected_passed: Option<bool>,
    /// "whole" or "decision".
    #[serde(default)]
    kind: Option<String>,
    /// "verifier", "judge" or "human".
    #[serde(default)]
    label_source: Option<String>,
    #[serde(default)]
    human_verified: Option<bool>,
    #[serde(default)]
    judge_agrees: Option<bool>,
    #[serde(default)]
    include_overruled: Option<bool>,
    #[serde(default)]
    format: Option<String>,
    /// Replace e-mail addresses, URLs and phone numbers.
    #[serde(default)]
    scrub_pii: Option<bool>,
    #[serde(default)]
    limit: Option<i64>,
}

impl DataQuery {
    pub fn filter(&self) -> Result<PairFilter, ApiError> {
        let list = |s: &Option<String>| -> Vec<String> {
            s.as_deref()
                .map(|s| s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let spaces = list(&self.spaces);
        let filter = PairFilter {
            spaces,
            space_version: self.space_version,
            from: self.from,
            to: self.to,
            min_margin: self.min_margin,
            agreed_only: self.agreed_only.unwrap_or(false),
            min_rating: self.min_rating,
            max_rating: self.max_rating,
            min_chars: self.min_chars,
            max_chars: self.max_chars,
            languages: list(&self.languages),
            dedupe: self.dedupe.unwrap_or(false),
            chosen_passed: self.chosen_passed,
            rejected_passed: self.rejected_passed,
            kind: self.kind.as_deref().map(PairKind::parse).transpose()?,
            label_source: self.label_source.as_deref().map(LabelSource::parse).transpose()?,
            human_verified: self.human_verified.unwrap_or(false),
            judge_agrees: self.judge_agrees,
            include_overruled: self.include_overruled.unwrap_or(false),
            free_reads: false,
        };
        filter.check()?;
        Ok(filter)
    }
}

/// GET /api/v1/data/count — the pairs a filter selects, and what an export
/// of them would cost.
pub async fn count(
    state: web::Data<Context>,
    caller: Caller,
    query: web::Query<DataQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Export)?;
    let filter = query.filter()?;
    count_allowed(&state, caller.user_id).await?;
    pair_store::enrich(&state.db).await?;
    let quote = export_store::quote(&state.db, &filter, MAX_EXPORT).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "pairs": quote.pairs, "price": quote.price, "licenses": quote.licenses, "filter": filter,
    })))
}

/// Counts (and quotes) one buyer may ask for per minute, the API's and the
/// `/data` page's together: each is a scan of the filtered pairs.
pub const COUNTS_PER_MINUTE: u32 = 60;

/// Counts one count against the buyer's allowance (a 429 past it).
pub async fn count_allowed(state: &Context, buyer: crate::domain::UserId) -> Result<(), ApiError> {
    crate::http::auth::count_attempt(state, &format!("data-count:{buyer}"), COUNTS_PER_MINUTE).await
}

/// The Spaces whose pairs anyone may read for free: public, and not sold
/// (`[data] price_per_pair = 0` in the current version). The others' pairs
/// and outputs are what they sell or keep private.
pub async fn free_spaces(state: &Context) -> Result<Vec<String>, ApiError> {
    let mut free = Vec::new();
    for (id, slug, version, price) in space_store::data_terms(&state.db).await? {
        if price > 0 {
            continue;
        }
        let space = state.spaces.get(&state.db, id, version).await.map_err(ApiError::internal)?;
        if space.visibility == crate::domain::space::Visibility::Public {
            free.push(slug);
        }
    }
    Ok(free)
}

/// Narrows `filter` to the Spaces whose pairs are free, or says which named
/// Space sells its pairs or keeps them private. None: no free Space has
/// pairs.
async fn free_only(state: &Context, mut filter: PairFilter) -> Result<Option<PairFilter>, ApiError> {
    let free = free_spaces(state).await?;
    let terms = space_store::data_terms(&state.db).await?;
    for slug in filter.spaces.iter().filter(|s| !free.contains(s)) {
        match terms.iter().find(|(_, p, _, _)| p == slug) {
            Some((_, _, _, price)) if *price > 0 => {
                return Err(ApiError::PaymentRequired(format!(
                    "Space {slug:?} sells its pairs at {price} credits each: buy an export (POST /api/v1/data/exports)"
                )));
            }
            Some(_) => {
                return Err(ApiError::PaymentRequired(format!(
                    "Space {slug:?} is private: its pairs are sold only as an export (POST /api/v1/data/exports)"
                )));
            }
            // No such Space: it selects nothing.
            None => {}
        }
    }
    if filter.spaces.is_empty() {
        filter.spaces = free;
        if filter.spaces.is_empty() {
            return Ok(None);
        }
    }
    // Human pairs a Space prices are sold, not read.
    filter.free_reads = true;
    Ok(Some(filter))
}

/// GET /api/v1/data/pairs — the selected pairs of free Spaces as JSON
/// Lines (a Space that sells its pairs is refused: buy an export).
pub async fn pairs(
    state: web::Data<Context>,
    caller: Caller,
    query: web::Query<DataQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Export)?;
    let filter = query.filter()?;
    let format = Format::parse(query.format.as_deref().unwrap_or("standard"))?;
    let limit = query.limit.unwrap_or(10_000);
    if !(1..=MAX_EXPORT).contains(&limit) {
        return Err(ApiError::invalid("limit", format!("limit is 1..={MAX_EXPORT}")));
    }
    let scrub = query.scrub_pii.unwrap_or(false);
    pair_store::enrich(&state.db).await?;
    let Some(filter) = free_only(&state, filter).await? else {
        return Ok(HttpResponse::Ok().content_type("application/x-ndjson").body(""));
    };
    let shape = match format {
        Format::Standard => dataset_files::Shape::Standard,
        Format::Conversational => dataset_files::Shape::Conversational,
    };
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(pair_store::export_filtered(state.db.clone(), filter, limit, tx));
    let body = futures_util::stream::unfold(rx, move |mut rx| async move {
        let item = match rx.recv().await? {
            Ok(p) => match dataset_files::json_line(&p.into_row(scrub), shape) {
                Ok(mut line) => {
                    line.push(b'\n');
                    Ok(bytes::Bytes::from(line))
                }
                Err(e) => Err(std::io::Error::other(e)),
            },
            Err(err) => {
                tracing::error!(error = %err, "data export failed midway");
                Err(std::io::Error::other("the export failed midway"))
            }
        };
        Some((item, rx))
    });
    Ok(HttpResponse::Ok().content_type("application/x-ndjson").streaming(body))
}

/// GET /api/v1/data/card — the dataset card (`README.md`, Hugging Face's
/// format) for the pairs a filter selects in `format`.
pub async fn card(
    state: web::Data<Context>,
    caller: Caller,
    query: web::Query<DataQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Export)?;
    let filter = query.filter()?;
    let format = Format::parse(query.format.as_deref().unwrap_or("standard"))?;
    pair_store::enrich(&state.db).await?;
    let parts = pair_store::card(&state.db, &filter).await?;
    let text = dataset_card(&filter, format, "pairs.jsonl", &parts);
    Ok(HttpResponse::Ok().content_type("text/markdown; charset=utf-8").body(text))
}

/// Exports one buyer's list shows.
const LIST_LIMIT: i64 = 200;

/// An export request: the filter's fields (as in the query of
/// `/data/count`, lists as JSON arrays) and how to write the files.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportBody {
    /// The buyer's key for this request: a retry with the same key returns
    /// the same export and pays nothing again.
    pub idempotency_key: String,
    #[serde(default)]
    pub filter: PairFilter,
    /// "jsonl" (default) or "parquet".
    #[serde(default)]
    pub format: Option<String>,
    /// "standard" (default) or "conversational".
    #[serde(default)]
    pub shape: Option<String>,
    #[serde(default)]
    pub gzip: bool,
    #[serde(default)]
    pub scrub_pii: bool,
    #[serde(default)]
    pub limit: Option<i64>,
    /// The most the buyer agrees to pay (the price shown by the count).
    #[serde(default)]
    pub max_price: Option<i64>,
    /// The licences the buyer accepts: every licence of the selected pairs
    /// must be among them.
    #[serde(default)]
    pub accept_licenses: Vec<String>,
}

impl ExportBody {
    /// Checks the request; the error names the field.
    pub fn request(&self, buyer: crate::domain::UserId) -> Result<ExportRequest, ApiError> {
        let key = self.idempotency_key.trim();
        if key.is_empty() || key.chars().count() > export_store::MAX_KEY_CHARS || key.chars().any(|c| c.is_control()) {
            return Err(ApiError::invalid(
                "idempotency_key",
                format!("idempotency_key is 1 to {} printable characters", export_store::MAX_KEY_CHARS),
            ));
        }
        self.filter.check()?;
        let format = match self.format.as_deref().unwrap_or("jsonl") {
            "jsonl" => "jsonl",
            "parquet" => "parquet",
            other => {
                return Err(ApiError::invalid(
                    "format",
                    format!("format {other:?} is not one of \"jsonl\", \"parquet\""),
                ));
            }
        };
        let shape = match Format::parse(self.shape.as_deref().unwrap_or("standard"))
            .map_err(|e| ApiError::invalid("shape", e.message))?
        {
            Format::Standard => "standard",
            Format::Conversational => "conversational",
        };
        if self.gzip && format == "parquet" {
            return Err(ApiError::invalid("gzip", "gzip applies to JSON Lines; Parquet is compressed inside"));
        }
        let limit = self.limit.unwrap_or(MAX_EXPORT);
        if !(1..=MAX_EXPORT).contains(&limit) {
            return Err(ApiError::invalid("limit", format!("limit is 1..={MAX_EXPORT}")));
        }
        if self.max_price.is_some_and(|p| p < 0) {
            return Err(ApiError::invalid("max_price", "max_price is 0 or more credits"));
        }
        Ok(ExportRequest {
            buyer,
            idempotency_key: key.to_owned(),
            filter: self.filter.clone(),
            format,
            shape,
            gzip: self.gzip,
            scrub_pii: self.scrub_pii,
            limit,
            max_price: self.max_price,
            accept_licenses: self.accept_licenses.clone(),
        })
    }
}

/// Pays for and queues an export (or finds the one made under the same
/// key), checking the licences first. The page and the API share it.
pub async fn create_export(state: &Context, req: &ExportRequest) -> Result<(export_store::Export, bool), ApiError> {
    pair_store::enrich(&state.db).await?;
    let quote = export_store::quote(&state.db, &req.filter, req.limit).await?;
    if let Some(missing) = quote.licenses.iter().find(|l| !req.accept_licenses.contains(l)) {
        return Err(ApiError::invalid(
            "accept_licenses",
            format!("accept the licence {missing:?} of the selected pairs (they carry: {})", quote.licenses.join(", ")),
        ));
    }
    let (export, new) = export_store::create(&state.db, req).await.map_err(|e| match e {
        ExportRefused::Empty => ApiError::invalid("filter", e.to_string()),
        ExportRefused::PriceRose { .. } => ApiError::conflict("max_price", e.to_string()),
        ExportRefused::CannotPay { .. } => ApiError::InsufficientFunds(e.to_string()),
        ExportRefused::TooMany(_) => ApiError::OverCapacity(e.to_string()),
        ExportRefused::Licence { .. } => ApiError::invalid("accept_licenses", e.to_string()),
        ExportRefused::FreeQuota(_) => ApiError::OverCapacity(e.to_string()),
        ExportRefused::Db(e) => e.into(),
    })?;
    if new {
        tokio::spawn(crate::work::exports::run_logged(state.db.clone(), state.data_dir.clone(), export.id));
    }
    Ok((export, new))
}

/// POST /api/v1/data/exports — buy and export the pairs a filter selects.
pub async fn create(
    state: web::Data<Context>,
    caller: Caller,
    body: web::Json<ExportBody>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Export)?;
    let (export, new) = create_export(&state, &body.request(caller.user_id)?).await?;
    let mut response = if new { HttpResponse::Created() } else { HttpResponse::Ok() };
    Ok(response.json(export))
}

/// The caller's export `id`: another buyer's is "not found", as if it did
/// not exist.
pub async fn own_export(state: &Context, caller: &Caller, id: uuid::Uuid) -> Result<export_store::Export, ApiError> {
    export_store::get(&state.db, id)
        .await?
        .filter(|e| e.buyer_id == caller.user_id)
        .ok_or_else(|| ApiError::NotFound(format!("export {id}")))
}

/// GET /api/v1/data/exports — the caller's exports, newest first.
pub async fn list(state: web::Data<Context>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Export)?;
    Ok(HttpResponse::Ok().json(export_store::list(&state.db, caller.user_id, LIST_LIMIT).await?))
}

/// GET /api/v1/data/exports/{id} — one of the caller's exports.
pub async fn get(
    state: web::Data<Context>,
    caller: Caller,
    id: web::Path<uuid::Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Export)?;
    Ok(HttpResponse::Ok().json(own_export(&state, &caller, *id).await?))
}

/// POST /api/v1/data/exports/{id}/retry — runs a failed export again (the
/// pairs it paid for are fixed; nothing is paid again).
pub async fn retry(
    state: web::Data<Context>,
    caller: Caller,
    id: web::Path<uuid::Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Export)?;
    let export = own_export(&state, &caller, *id).await?;
    if !export_store::retry(&state.db, export.id, caller.user_id).await? {
        return Err(ApiError::conflict("status", format!("export {} is {}, not failed", export.id, export.status)));
    }
    tokio::spawn(crate::work::exports::run_logged(state.db.clone(), state.data_dir.clone(), export.id));
    Ok(HttpResponse::Accepted()
        .json(serde_json::json!({"id": export.id, "status": crate::domain::ExportStatus::Queued})))
}

/// GET /api/v1/data/exports/{id}/files/{name} — one of a finished export's
/// files, to the buyer who paid for it.
pub async fn file(
    state: web::Data<Context>,
    caller: Caller,
    path: web::Path<(uuid::Uuid, String)>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Export)?;
    let (id, name) = path.into_inner();
    let export = own_export(&state, &caller, id).await?;
    download(&state, &export, &name).await
}

/// Streams a finished export's file named `name`: only a name the export
/// recorded (one of a fixed few) is opened, under the export's own folder.
pub async fn download(state: &Context, export: &export_store::Export, name: &str) -> Result<HttpResponse, ApiError> {
    use tokio::io::AsyncReadExt;
    if let Some(when) = export.expired_at {
        return Err(ApiError::Gone(format!(
            "export {}'s files were deleted on {} (kept {} days); the export and its pairs are still recorded",
            export.id,
            when.format("%Y-%m-%d"),
            state.settings.export_retention_days
        )));
    }
    let recorded = export.files.as_array().is_some_and(|files| files.iter().any(|f| f["name"] == name));
    let Some(name) = crate::work::exports::FILE_NAMES.iter().find(|n| **n == name && recorded) else {
        return Err(ApiError::NotFound(format!("file {name:?} of export {}", export.id)));
    };
    let path = crate::work::exports::export_dir(&state.data_dir, export.id).join(name);
    let file = tokio::fs::File::open(&path).await.map_err(ApiError::internal)?;
    let length = file.metadata().await.map_err(ApiError::internal)?.len();
    let body = futures_util::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    let content_type = match *name {
        "README.md" => "text/markdown; charset=utf-8",
        "pairs.jsonl" => "application/x-ndjson",
        "pairs.jsonl.gz" => "application/gzip",
        _ => "application/vnd.apache.parquet",
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("Content-Disposition", format!("attachment; filename=\"{name}\"")))
        .body(actix_web::body::SizedStream::new(length, body)))
}
