//! `/`: what Arena is, the active Spaces with live counts, recent settled
//! matches and the best-rated agents.

use super::spaces::{Line, SpaceCard, cards, match_lines};
use super::{Chrome, Ctx, PageError, Visit, render};
use crate::domain::leaderboard::MIN_MATCHES;
use crate::domain::{MatchStatus, rating};
use crate::store::{agents, matches};
use actix_web::HttpResponse;
use askama::Template;

pub struct TopLine {
    pub agent_id: String,
    pub name: String,
    pub owner: String,
    pub space: String,
    pub rating: String,
    pub matches: i32,
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    chrome: Chrome,
    spaces: Vec<SpaceCard>,
    recent: Vec<Line>,
    top: Vec<TopLine>,
}

pub async fn page(state: Ctx, visit: Visit) -> Result<HttpResponse, PageError> {
    let spaces: Vec<SpaceCard> = cards(&state).await?.into_iter().filter(|s| s.active).collect();
    let recent = match_lines(matches::lines(&state.db, None, Some(MatchStatus::Settled), None, 10).await?);
    let top = agents::top(&state.db, MIN_MATCHES, 10)
        .await?
        .into_iter()
        .map(|t| TopLine {
            agent_id: t.agent_id.to_string(),
            name: t.name,
            owner: t.owner,
            space: t.space,
            rating: format!("{:.0}", rating::display(t.mu)),
            matches: t.matches,
        })
        .collect();
    let page = HomePage { chrome: visit.chrome.clone(), spaces, recent, top };
    render(&visit.chrome, &page)
}
