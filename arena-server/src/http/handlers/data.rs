//! Preference data for buyers: how many pairs a filter selects, and the
//! pairs themselves as JSON Lines in TRL's standard or conversational
//! format with their provenance, streamed in bounded memory, optionally
//! PII-scrubbed. (Priced exports as jobs, Parquet and dataset cards build
//! on this.)

use crate::context::Context;
use crate::domain::dataset::{Format, PairFilter, dataset_card, scrub_pii};
use crate::domain::user::Scope;
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::store::pairs as pair_store;
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
    #[serde(default)]
    format: Option<String>,
    /// Replace e-mail addresses, URLs and phone numbers.
    #[serde(default)]
    scrub_pii: Option<bool>,
    #[serde(default)]
    limit: Option<i64>,
}

impl DataQuery {
    fn filter(&self) -> Result<PairFilter, ApiError> {
        let spaces: Vec<String> = self
            .spaces
            .as_deref()
            .map(|s| s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default();
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
        };
        filter.check()?;
        Ok(filter)
    }
}

/// GET /api/v1/data/count — the pairs a filter selects.
pub async fn count(
    state: web::Data<Context>,
    caller: Caller,
    query: web::Query<DataQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Export)?;
    let filter = query.filter()?;
    let n = pair_store::count_filtered(&state.db, &filter).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "pairs": n, "filter": filter })))
}

/// GET /api/v1/data/pairs — the selected pairs as JSON Lines.
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
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(pair_store::export_filtered(state.db.clone(), filter, limit, tx));
    let body = futures_util::stream::unfold(rx, move |mut rx| async move {
        let item = match rx.recv().await? {
            Ok(p) => {
                let clean = |t: &str| if scrub { scrub_pii(t) } else { t.to_owned() };
                let mut line =
                    format.fields(Some(&clean(&p.system)), &clean(&p.prompt), &clean(&p.chosen), &clean(&p.rejected));
                let provenance = serde_json::json!({
                    "id": p.id, "match_id": p.match_id, "space": p.space, "space_version": p.space_version,
                    "margin": p.margin, "consistent": p.consistent, "license": p.license,
                    "chosen_agent": p.chosen_agent, "chosen_version": p.chosen_version, "chosen_rating": p.chosen_rating,
                    "rejected_agent": p.rejected_agent, "rejected_version": p.rejected_version,
                    "rejected_rating": p.rejected_rating, "record_hash": p.record_hash, "created_at": p.created_at,
                    "judge": {
                        "p_chosen_first": p.detail["p_chosen_first"], "p_chosen_second": p.detail["p_chosen_second"],
                        "model_sha256": p.detail["judge_model_sha256"], "template_sha256": p.detail["judge_template_sha256"],
                    },
                    "chosen_verifiers": p.chosen_verifiers, "rejected_verifiers": p.rejected_verifiers,
                });
                if let (Some(line), Some(extra)) = (line.as_object_mut(), provenance.as_object()) {
                    line.extend(extra.clone());
                }
                Ok(bytes::Bytes::from(format!("{line}\n")))
            }
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
    let parts = pair_store::card(&state.db, &filter).await?;
    let text = dataset_card(&filter, format, "pairs.jsonl", &parts);
    Ok(HttpResponse::Ok().content_type("text/markdown; charset=utf-8").body(text))
}
