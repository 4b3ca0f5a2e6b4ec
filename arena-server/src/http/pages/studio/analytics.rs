//! A Space's live numbers for its designer, with charts.

use super::own_space;
use crate::http::pages::chart::{self, Svg};
use crate::http::pages::{Chrome, Ctx, Designer, PageError, render};
use crate::store::analytics::{self, Analytics};
use actix_web::{HttpResponse, web};
use askama::Template;

#[derive(Template)]
#[template(path = "studio_analytics.html")]
struct AnalyticsPage {
    chrome: Chrome,
    slug: String,
    a: Analytics,
    per_hour: Svg,
    pass_rates: Svg,
    /// A line per verifier (guards left out): its pass rate hour by hour.
    over_time: Vec<Svg>,
}

/// GET /studio/{slug}/analytics
pub async fn analytics_page(state: Ctx, user: Designer, slug: web::Path<String>) -> Result<HttpResponse, PageError> {
    let caller = &user.caller;
    let space = own_space(&state, caller, &slug).await?;
    let a = analytics::of_space(&state.db, space.id).await?;
    let labels: Vec<String> = a.per_hour.iter().map(|(h, _)| h.format("%H").to_string()).collect();
    let counts: Vec<i64> = a.per_hour.iter().map(|(_, n)| *n).collect();
    let per_hour = chart::bars(&format!("Matches settled per hour in {}", slug.as_str()), &labels, &counts);
    let names: Vec<String> = a.verifier_pass_rates.keys().cloned().collect();
    let rates: Vec<i64> = a.verifier_pass_rates.values().map(|r| (r * 100.0).round() as i64).collect();
    let pass_rates = chart::bars("Verifier pass rate (%)", &names, &rates);
    let now = chrono::Utc::now();
    let over_time = a
        .verifier_hourly
        .iter()
        .filter(|(name, _)| !name.starts_with("guard:"))
        .map(|(name, points)| {
            let series = chart::Series {
                name: name.clone(),
                points: points.iter().map(|(h, r)| ((*h - now).num_minutes() as f64 / 60.0, r * 100.0)).collect(),
            };
            chart::lines(&format!("{name}: pass rate (%) by hour"), "hours ago (negative)", &[series])
        })
        .filter(|svg| !svg.is_empty())
        .collect();
    render(
        &user.chrome,
        &AnalyticsPage { chrome: user.chrome.clone(), slug: slug.into_inner(), a, per_hour, pass_rates, over_time },
    )
}
