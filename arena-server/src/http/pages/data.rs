//! `/data`: preference data for buyers — each Space's pairs with their
//! count, licence, margin histogram and share of agreed judge orders; a
//! filter with its live count (the API's own `PairFilter` and SQL); ten
//! sample pairs side by side; downloads in TRL's formats through the API's
//! export. Buyers and admins only: a private Space's pairs are never shown
//! to anyone else.

use super::chart::{self, Svg};
use super::{Chrome, PageCtx, PageError, State, Visitor, render};
use crate::domain::dataset::PairFilter;
use crate::domain::user::Role;
use crate::store::pairs as pair_store;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

pub struct DatasetCard {
    pub space: String,
    pub pairs: i64,
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
    count: Option<i64>,
    error: Option<String>,
    samples: Vec<Sample>,
    query: String,
}

#[derive(Template)]
#[template(path = "partials/data_count.html")]
struct CountFragment {
    count: Option<i64>,
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
            ..Default::default()
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
        ] {
            if !v.trim().is_empty() {
                parts.push((k, v.trim().to_owned()));
            }
        }
        if self.agreed_only.as_deref() == Some("on") {
            parts.push(("agreed_only", "true".to_owned()));
        }
        url::form_urlencoded::Serializer::new(String::new()).extend_pairs(parts).finish()
    }
}

fn may_buy(ctx: &PageCtx) -> bool {
    ctx.caller.as_ref().is_some_and(|c| c.role == Role::Buyer || c.is_admin())
}

async fn count(state: &State, form: &FilterForm) -> Result<(Option<i64>, Option<String>), PageError> {
    match form.filter() {
        Ok(filter) => Ok((Some(pair_store::count_filtered(&state.db, &filter).await?), None)),
        Err(why) => Ok((None, Some(why))),
    }
}

pub async fn page(
    state: State,
    req: HttpRequest,
    caller: Visitor,
    form: web::Query<FilterForm>,
) -> Result<HttpResponse, PageError> {
    let ctx = PageCtx::new(&req, caller);
    ctx.signed_in(&req)?;
    let form = form.into_inner();
    let allowed = may_buy(&ctx);
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
            })
            .collect();
        counted = count(&state, &form).await?;
        query = form.api_query();
        if let Ok(filter) = form.filter() {
            let (tx, mut rx) = tokio::sync::mpsc::channel(16);
            tokio::spawn(pair_store::export_filtered(state.db.clone(), filter, 10, tx));
            while let Some(row) = rx.recv().await {
                let p = row?;
                samples.push(Sample {
                    space: p.space,
                    prompt: p.prompt,
                    chosen: p.chosen,
                    rejected: p.rejected,
                    margin: format!("{:.2}", p.margin),
                    agreed: p.consistent,
                });
            }
        }
    }
    let page = DataPage {
        chrome: ctx.chrome.clone(),
        allowed,
        datasets,
        form,
        count: counted.0,
        error: counted.1,
        samples,
        query,
    };
    render(&ctx.chrome, &page)
}

/// The filter's count alone, for the form's live update.
pub async fn live_count(
    state: State,
    req: HttpRequest,
    caller: Visitor,
    form: web::Query<FilterForm>,
) -> Result<HttpResponse, PageError> {
    let ctx = PageCtx::new(&req, caller);
    ctx.signed_in(&req)?;
    if !may_buy(&ctx) {
        return Err(PageError::Forbidden);
    }
    let (count, error) = count(&state, &form).await?;
    let html = CountFragment { count, error }.render().map_err(PageError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(html))
}
