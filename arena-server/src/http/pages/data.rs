//! `/data`: preference data for buyers — each Space's pairs with their
//! count, price, licence, margin histogram and share of agreed judge
//! orders; a filter with its live count and price (the API's own
//! `PairFilter`, SQL and quote); ten sample pairs side by side; an export
//! form that buys the selection (the API's own `create_export`).
//! `/data/exports`: the buyer's exports with progress, files and cards.
//! Buyers and admins only: a private Space's pairs are never shown to
//! anyone else.

use super::chart::{self, Svg};
use super::extract::csrf_token;
use super::{Buyer, Chrome, Ctx, Form, PageError, SignedIn, render};
use crate::domain::dataset::PairFilter;
use crate::http::auth::Caller;
use crate::http::handlers::data::{ExportBody, MAX_EXPORT, create_export, download};
use crate::store::exports::{self as export_store, Quote};
use crate::store::pairs as pair_store;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

pub struct DatasetCard {
    pub space: String,
    pub pairs: i64,
    pub price: i64,
    pub agreed: String,
    pub license: String,
    pub histogram: Svg,
}

pub struct Sample {
    pub space: String,
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
    pub margin: String,
    pub agreed: bool,
}

#[derive(Template)]
#[template(path = "data.html")]
struct DataPage {
    chrome: Chrome,
    allowed: bool,
    datasets: Vec<DatasetCard>,
    form: FilterForm,
    quote: Option<Quote>,
    error: Option<String>,
    samples: Vec<Sample>,
    query: String,
    /// A fresh key per rendering: submitting the export form twice (a
    /// double click, a reload) buys once.
    idempotency_key: String,
    export_error: Option<String>,
}

#[derive(Template)]
#[template(path = "partials/data_count.html")]
struct CountFragment {
    quote: Option<Quote>,
    error: Option<String>,
}

/// The filter as the form sends it (text fields, empty = no bound).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FilterForm {
    #[serde(default)]
    pub spaces: String,
    #[serde(default)]
    pub min_margin: String,
    #[serde(default)]
    pub agreed_only: Option<String>,
    #[serde(default)]
    pub min_rating: String,
    #[serde(default)]
    pub max_rating: String,
    #[serde(default)]
    pub min_chars: String,
    #[serde(default)]
    pub max_chars: String,
    /// Language codes, comma-separated.
    #[serde(default)]
    pub languages: String,
    #[serde(default)]
    pub dedupe: Option<String>,
    /// "", "yes" or "no".
    #[serde(default)]
    pub chosen_passed: String,
    #[serde(default)]
    pub rejected_passed: String,
    /// "", "whole" or "decision".
    #[serde(default)]
    pub kind: String,
    /// "", "verifier", "judge", "human" or "human_verified".
    #[serde(default)]
    pub label_source: String,
    /// "", "yes" or "no".
    #[serde(default)]
    pub judge_agrees: String,
    #[serde(default)]
    pub include_overruled: Option<String>,
}

impl FilterForm {
    fn filter(&self) -> Result<PairFilter, String> {
        fn num<T: std::str::FromStr>(field: &str, text: &str) -> Result<Option<T>, String> {
            let text = text.trim();
            if text.is_empty() {
                return Ok(None);
            }
            text.parse().map(Some).map_err(|_| format!("{field} must be a number"))
        }
        let filter = PairFilter {
            spaces: self.spaces.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect(),
            min_margin: num("min_margin", &self.min_margin)?,
            agreed_only: self.agreed_only.as_deref() == Some("on"),
            min_rating: num("min_rating", &self.min_rating)?,
            max_rating: num("max_rating", &self.max_rating)?,
            min_chars: num("min_chars", &self.min_chars)?,
            max_chars: num("max_chars", &self.max_chars)?,
            languages: self.languages.split(',').map(|l| l.trim().to_lowercase()).filter(|l| !l.is_empty()).collect(),
            dedupe: self.dedupe.as_deref() == Some("on"),
            chosen_passed: yes_no("chosen_passed", &self.chosen_passed)?,
            rejected_passed: yes_no("rejected_passed", &self.rejected_passed)?,
            kind: match self.kind.trim() {
                "" => None,
                k => Some(crate::domain::dataset::PairKind::parse(k).map_err(|e| e.to_string())?),
            },
            label_source: match self.label_source.trim() {
                "" => None,
                "human_verified" => Some(crate::domain::dataset::LabelSource::Human),
                l => Some(crate::domain::dataset::LabelSource::parse(l).map_err(|e| e.to_string())?),
            },
            human_verified: self.label_source.trim() == "human_verified",
            judge_agrees: yes_no("judge_agrees", &self.judge_agrees)?,
            include_overruled: self.include_overruled.as_deref() == Some("on"),
            free_reads: false,
            space_version: None,
            from: None,
            to: None,
        };
        filter.check().map_err(|e| e.to_string())?;
        Ok(filter)
    }

    /// The same filter as the API's query string.
    fn api_query(&self) -> String {
        let mut parts: Vec<(&str, String)> = Vec::new();
        for (k, v) in [
            ("spaces", &self.spaces),
            ("min_margin", &self.min_margin),
            ("min_rating", &self.min_rating),
            ("max_rating", &self.max_rating),
            ("min_chars", &self.min_chars),
            ("max_chars", &self.max_chars),
            ("languages", &self.languages),
            ("kind", &self.kind),
        ] {
            if !v.trim().is_empty() {
                parts.push((k, v.trim().to_owned()));
            }
        }
        if self.agreed_only.as_deref() == Some("on") {
            parts.push(("agreed_only", "true".to_owned()));
        }
        if self.dedupe.as_deref() == Some("on") {
            parts.push(("dedupe", "true".to_owned()));
        }
        for (k, v) in [("chosen_passed", &self.chosen_passed), ("rejected_passed", &self.rejected_passed)] {
            if let Ok(Some(b)) = yes_no(k, v) {
                parts.push((k, b.to_string()));
            }
        }
        url::form_urlencoded::Serializer::new(String::new()).extend_pairs(parts).finish()
    }
}

fn yes_no(field: &str, text: &str) -> Result<Option<bool>, String> {
    match text.trim() {
        "" => Ok(None),
        "yes" => Ok(Some(true)),
        "no" => Ok(Some(false)),
        other => Err(format!("{field} is yes, no or empty, not {other:?}")),
    }
}

async fn count(state: &Ctx, form: &FilterForm, caller: &Caller) -> Result<(Option<Quote>, Option<String>), PageError> {
    if let Err(limited) = crate::http::handlers::data::count_allowed(state, caller.user_id).await {
        return Ok((None, Some(limited.to_string())));
    }
    match form.filter() {
        Ok(filter) => {
            pair_store::enrich(&state.db).await?;
            Ok((Some(export_store::quote(&state.db, &filter, MAX_EXPORT).await?), None))
        }
        Err(why) => Ok((None, Some(why))),
    }
}

/// Sample pairs shown of each Space that sells its pairs.
pub const SOLD_SAMPLES: i64 = 3;

pub async fn page(state: Ctx, user: SignedIn, form: web::Query<FilterForm>) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    let allowed = user.buys();
    let (mut datasets, mut samples, mut counted, mut query) = (Vec::new(), Vec::new(), (None, None), String::new());
    if allowed {
        let labels: Vec<String> = (0..10).map(|b| format!("{:.1}", b as f64 * 0.2)).collect();
        datasets = pair_store::datasets(&state.db)
            .await?
            .into_iter()
            .map(|d| DatasetCard {
                histogram: chart::bars(&format!("Pairs by margin in {}", d.space), &labels, &d.margins),
                agreed: format!("{:.0}%", d.agreed * 100.0),
                license: d.license.unwrap_or_else(|| "not stated".to_owned()),
                space: d.space,
                pairs: d.pairs,
                price: d.price,
            })
            .collect();
        counted = count(&state, &form, &user.caller).await?;
        query = form.api_query();
        if let Ok(filter) = form.filter() {
            // Free Spaces' pairs follow the filter; a Space that sells its
            // pairs (or keeps them private) shows its few fixed samples,
            // whatever the filter says.
            let free = crate::http::handlers::data::free_spaces(&state).await?;
            let named = |s: &String| filter.spaces.is_empty() || filter.spaces.contains(s);
            let sold: Vec<String> =
                datasets.iter().map(|d| d.space.clone()).filter(|s| !free.contains(s) && named(s)).collect();
            let mut walk = filter.clone();
            walk.spaces = free.into_iter().filter(|s| named(s)).collect();
            let mut pairs = Vec::new();
            if !walk.spaces.is_empty() {
                let (tx, mut rx) = tokio::sync::mpsc::channel(16);
                tokio::spawn(pair_store::export_filtered(state.db.clone(), walk, 10, tx));
                while let Some(row) = rx.recv().await {
                    pairs.push(row?);
                }
            }
            if !sold.is_empty() {
                pairs.extend(pair_store::fixed_samples(&state.db, &sold, SOLD_SAMPLES).await?);
            }
            samples = pairs
                .into_iter()
                .map(|p| Sample {
                    space: p.space,
                    prompt: p.prompt,
                    chosen: p.chosen,
                    rejected: p.rejected,
                    margin: format!("{:.2}", p.margin),
                    agreed: p.consistent,
                })
                .collect();
        }
    }
    let page = DataPage {
        chrome: user.chrome.clone(),
        allowed,
        datasets,
        form,
        quote: counted.0,
        error: counted.1,
        samples,
        query,
        idempotency_key: uuid::Uuid::new_v4().to_string(),
        export_error: None,
    };
    render(&user.chrome, &page)
}

/// The filter's count alone, for the form's live update.
pub async fn live_count(state: Ctx, user: Buyer, form: web::Query<FilterForm>) -> Result<HttpResponse, PageError> {
    let (quote, error) = count(&state, &form, &user.caller).await?;
    let html = CountFragment { quote, error }.render().map_err(PageError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(html))
}

/// The export form: the filter's fields again, and how to write the files.
#[derive(Debug, Deserialize)]
pub struct ExportForm {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    filter: FilterForm,
    #[serde(default)]
    idempotency_key: String,
    /// "jsonl", "jsonl.gz" or "parquet".
    #[serde(default)]
    file: String,
    #[serde(default)]
    shape: String,
    #[serde(default)]
    scrub_pii: Option<String>,
    /// The price the buyer was shown.
    #[serde(default)]
    max_price: String,
    /// The licences the buyer accepted, comma-separated ("" when the box
    /// was not ticked).
    #[serde(default)]
    accept_licenses: Option<String>,
}

csrf_token!(text: ExportForm);

/// POST /data/exports — buys the selection and queues its export.
pub async fn export(state: Ctx, user: Buyer, Form(form): Form<ExportForm>) -> Result<HttpResponse, PageError> {
    let caller = &user.caller;
    let made = async {
        let filter = form.filter.filter().map_err(|why| crate::http::error::ApiError::invalid("filter", why))?;
        let (format, gzip) = match form.file.as_str() {
            "parquet" => ("parquet", false),
            "jsonl.gz" => ("jsonl", true),
            _ => ("jsonl", false),
        };
        let max_price = form.max_price.trim().parse::<i64>().ok();
        let body = ExportBody {
            idempotency_key: form.idempotency_key.clone(),
            filter,
            format: Some(format.to_owned()),
            shape: Some(if form.shape == "conversational" { "conversational" } else { "standard" }.to_owned()),
            gzip,
            scrub_pii: form.scrub_pii.as_deref() == Some("on"),
            limit: None,
            max_price,
            accept_licenses: form
                .accept_licenses
                .as_deref()
                .unwrap_or_default()
                .split('|')
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
        };
        create_export(&state, &body.request(caller.user_id)?).await
    }
    .await;
    match made {
        Ok(_) => Ok(super::see_other("/data/exports")),
        Err(err) => {
            let why = super::FormError::from_api(err)?;
            let (quote, error) = count(&state, &form.filter, &user.caller).await?;
            let page = DataPage {
                chrome: user.chrome.clone(),
                allowed: true,
                datasets: Vec::new(),
                query: form.filter.api_query(),
                form: form.filter,
                quote,
                error,
                samples: Vec::new(),
                idempotency_key: uuid::Uuid::new_v4().to_string(),
                export_error: Some(why.message),
            };
            super::render_with(actix_web::http::StatusCode::UNPROCESSABLE_ENTITY, &user.chrome, &page)
        }
    }
}

pub struct ExportRow {
    pub id: String,
    pub when: String,
    pub status: String,
    pub pairs: i64,
    pub rows: i64,
    pub percent: i64,
    pub price: i64,
    pub what: String,
    pub licenses: String,
    pub error: Option<String>,
    pub files: Vec<ExportFile>,
}

pub struct ExportFile {
    pub name: String,
    pub bytes: String,
    pub sha256: String,
}

#[derive(Template)]
#[template(path = "data_exports.html")]
struct ExportsPage {
    chrome: Chrome,
    allowed: bool,
    exports: Vec<ExportRow>,
    live: bool,
}

#[derive(Template)]
#[template(path = "partials/data_exports.html")]
struct ExportsList {
    exports: Vec<ExportRow>,
    /// Whether any is still queued or running (the list then refreshes).
    live: bool,
}

fn human_bytes(n: u64) -> String {
    match n {
        0..1_024 => format!("{n} B"),
        1_024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

async fn exports_list(state: &Ctx, caller: &crate::http::auth::Caller) -> Result<ExportsList, PageError> {
    let exports = export_store::list(&state.db, caller.user_id, 100).await?;
    let live = exports.iter().any(|e| e.status.in_progress());
    let exports = exports
        .into_iter()
        .map(|e| ExportRow {
            id: e.id.to_string(),
            when: super::when(&e.created_at),
            percent: if e.pairs > 0 { (e.rows_written * 100 / e.pairs).clamp(0, 100) } else { 100 },
            what: format!(
                "{}{}, {}{}",
                if e.format == "parquet" { "Parquet" } else { "JSON Lines" },
                if e.gzip { " (gzip)" } else { "" },
                e.shape,
                if e.scrub_pii { ", PII scrubbed" } else { "" }
            ),
            licenses: e.licenses.join(", "),
            files: e
                .files
                .as_array()
                .map(|files| {
                    files
                        .iter()
                        .map(|f| ExportFile {
                            name: f["name"].as_str().unwrap_or_default().to_owned(),
                            bytes: human_bytes(f["bytes"].as_u64().unwrap_or(0)),
                            sha256: f["sha256"].as_str().unwrap_or_default().to_owned(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            status: e.status.to_string(),
            pairs: e.pairs,
            rows: e.rows_written,
            price: e.price,
            error: e.error,
        })
        .collect();
    Ok(ExportsList { exports, live })
}

/// GET /data/exports — the buyer's exports.
pub async fn exports(state: Ctx, user: SignedIn) -> Result<HttpResponse, PageError> {
    let caller = &user.caller;
    let allowed = user.buys();
    let list =
        if allowed { exports_list(&state, caller).await? } else { ExportsList { exports: Vec::new(), live: false } };
    render(&user.chrome, &ExportsPage { chrome: user.chrome.clone(), allowed, exports: list.exports, live: list.live })
}

/// GET /data/exports/live — the list alone, refreshed while exports run.
pub async fn exports_live(state: Ctx, user: Buyer) -> Result<HttpResponse, PageError> {
    let caller = &user.caller;
    let html = exports_list(&state, caller).await?.render().map_err(PageError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(html))
}

/// GET /data/exports/{id}/files/{name} — a file of one of the buyer's
/// exports; anyone else's is "not found".
pub async fn file(
    state: Ctx,
    user: SignedIn,
    path: web::Path<(uuid::Uuid, String)>,
) -> Result<HttpResponse, PageError> {
    let caller = &user.caller;
    let (id, name) = path.into_inner();
    let export =
        export_store::get(&state.db, id).await?.filter(|e| e.buyer_id == caller.user_id).ok_or(PageError::NotFound)?;
    download(&state, &export, &name).await.map_err(|_| PageError::NotFound)
}
