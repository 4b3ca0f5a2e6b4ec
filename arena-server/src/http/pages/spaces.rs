//! `/spaces` and `/spaces/{slug}`: the catalogue, and one Space — its rules
//! in words, the leaderboard (table, interval plot, head-to-head heatmap),
//! live and recent matches, and the form that enters an agent.

use super::chart::{self, Interval, Svg};
use super::extract::csrf_token;
use super::{Chrome, Ctx, Form, PageError, SignedIn, Visit, render, see_other, when};
use crate::domain::AgentId;
use crate::domain::leaderboard::MIN_MATCHES;
use crate::domain::space::RulesInWords;
use crate::http::handlers::agents as agent_actions;
use crate::http::leaderboard;
use crate::store::{agents, matches, spaces as space_store};
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use std::collections::HashMap;

pub struct SpaceCard {
    pub slug: String,
    pub description: String,
    pub owner: String,
    pub active: bool,
    pub agents_per_match: i32,
    pub entry_fee: i64,
    pub entries: i64,
    pub settled: i64,
    pub today: i64,
}

/// Every Space with its counts, and matches formed in the last 24 hours.
pub async fn cards(state: &Ctx) -> Result<Vec<SpaceCard>, PageError> {
    let since = chrono::Utc::now() - chrono::Duration::hours(24);
    let today: HashMap<String, i64> = matches::formed_since(&state.db, since).await?.into_iter().collect();
    Ok(space_store::list(&state.db)
        .await?
        .into_iter()
        .map(|s| SpaceCard {
            today: today.get(&s.slug).copied().unwrap_or(0),
            slug: s.slug,
            description: s.description,
            owner: s.owner,
            active: s.active,
            agents_per_match: s.agents_per_match,
            entry_fee: s.entry_fee,
            entries: s.entries,
            settled: s.matches_settled,
        })
        .collect())
}

#[derive(Template)]
#[template(path = "spaces.html")]
struct ListPage {
    chrome: Chrome,
    spaces: Vec<SpaceCard>,
}

pub async fn list(state: Ctx, visit: Visit) -> Result<HttpResponse, PageError> {
    let page = ListPage { chrome: visit.chrome.clone(), spaces: cards(&state).await? };
    render(&visit.chrome, &page)
}

pub struct BoardRow {
    pub rank: Option<usize>,
    pub agent_id: String,
    pub name: String,
    pub owner: String,
    pub rating: String,
    pub conservative: String,
    pub bt: String,
    pub matches: i32,
}

pub struct Line {
    pub id: String,
    pub short: String,
    pub status: String,
    pub seats: String,
    pub when: String,
}

pub fn match_lines(rows: Vec<matches::MatchLine>) -> Vec<Line> {
    rows.into_iter()
        .map(|m| Line {
            id: m.id.to_string(),
            short: m.id.to_string()[..8].to_owned(),
            status: m.status.as_str().to_owned(),
            seats: m.seats,
            when: when(&m.settled_at.unwrap_or(m.created_at)),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "space.html")]
struct SpacePage {
    chrome: Chrome,
    slug: String,
    description: String,
    owner: String,
    active: bool,
    version: i32,
    rules: RulesInWords,
    board: Vec<BoardRow>,
    battles: usize,
    min_matches: i32,
    intervals: Svg,
    heatmap: Svg,
    recent: Vec<Line>,
    my_agents: Vec<(String, String)>,
    entered: Option<String>,
    /// The judge against people, where the Space takes votes.
    people: Option<PeopleCard>,
}

/// The "judge vs people" card: what the audit share says in one glance.
pub struct PeopleCard {
    pub criterion: String,
    pub votes: u64,
    pub agreement: String,
    pub human_human: String,
    pub kappa: String,
    pub designer: bool,
}

#[derive(Template)]
#[template(path = "partials/match_list.html")]
struct LiveFragment {
    recent: Vec<Line>,
}

#[derive(Deserialize)]
pub struct SpaceQuery {
    #[serde(default)]
    entered: Option<String>,
}

pub async fn page(
    state: Ctx,
    visit: Visit,
    slug: web::Path<String>,
    query: web::Query<SpaceQuery>,
) -> Result<HttpResponse, PageError> {
    let row = space_store::by_slug(&state.db, &slug).await?.ok_or(PageError::NotFound)?;
    let space = state.spaces.get(&state.db, row.id, row.current_version).await.map_err(PageError::internal)?;
    let board = leaderboard::get(&state, row.id).await?;
    let mut ranked = 0;
    let rows: Vec<BoardRow> = board
        .rows
        .iter()
        .map(|r| {
            let rank = (r.matches >= MIN_MATCHES).then(|| {
                ranked += 1;
                ranked
            });
            BoardRow {
                rank,
                agent_id: r.agent_id.to_string(),
                name: r.name.clone(),
                owner: r.owner.clone(),
                rating: format!("{:.0}", r.rating),
                conservative: format!("{:.0}", r.conservative),
                bt: match (r.bt, r.bt_low, r.bt_high) {
                    (Some(p), Some(l), Some(h)) => format!("{p:.0} [{l:.0}, {h:.0}]"),
                    _ => "—".to_owned(),
                },
                matches: r.matches,
            }
        })
        .collect();
    let plotted: Vec<Interval> = board
        .rows
        .iter()
        .filter(|r| r.matches >= MIN_MATCHES)
        .filter_map(|r| Some(Interval { label: r.name.clone(), point: r.bt?, low: r.bt_low?, high: r.bt_high? }))
        .take(20)
        .collect();
    let intervals = chart::intervals("Bradley–Terry rating with its 95% bootstrap interval", &plotted);
    let top: Vec<&crate::domain::leaderboard::Row> = board.rows.iter().take(leaderboard::HEAD_TO_HEAD_AGENTS).collect();
    let labels: Vec<String> = top.iter().map(|r| r.name.clone()).collect();
    let cells: Vec<Vec<Option<f64>>> = top
        .iter()
        .map(|a| {
            top.iter()
                .map(|b| {
                    board
                        .head_to_head
                        .iter()
                        .find(|h| h.a == a.agent_id && h.b == b.agent_id && h.games > 0)
                        .map(|h| h.wins / h.games as f64)
                })
                .collect()
        })
        .collect();
    let heatmap = chart::heatmap("Win rate of the row's agent against the column's", &labels, &cells);
    let recent = match_lines(matches::lines(&state.db, Some(&row.slug), None, None, 20).await?);
    let my_agents = match &visit.caller {
        Some(c) => agents::names_of_owner(&state.db, c.user_id)
            .await?
            .into_iter()
            .map(|(id, name)| (id.to_string(), name))
            .collect(),
        None => Vec::new(),
    };
    let people = if space.votes.open {
        let audit = crate::store::votes::audit_summary(&state.db, row.id).await?;
        Some(PeopleCard {
            criterion: space.votes.criterion.clone(),
            votes: audit.votes,
            agreement: super::votes::rate_words(&audit.agreement),
            human_human: super::votes::rate_words(&audit.human_human),
            kappa: audit.kappa.map_or_else(|| "undefined yet".to_owned(), |k| format!("{k:.2}")),
            designer: visit.caller.as_ref().is_some_and(|c| c.username == row.owner || c.is_admin()),
        })
    } else {
        None
    };
    let page = SpacePage {
        people,
        chrome: visit.chrome.clone(),
        slug: row.slug.clone(),
        description: row.description.clone(),
        owner: row.owner.clone(),
        active: row.active,
        version: row.current_version,
        rules: space.rules_in_words(),
        board: rows,
        battles: board.battles,
        min_matches: MIN_MATCHES,
        intervals,
        heatmap,
        recent,
        my_agents,
        entered: query.entered.as_ref().map(|e| super::clip(e, 40)),
    };
    render(&visit.chrome, &page)
}

/// The recent-matches list alone, for the live view.
pub async fn live(state: Ctx, slug: web::Path<String>) -> Result<HttpResponse, PageError> {
    space_store::by_slug(&state.db, &slug).await?.ok_or(PageError::NotFound)?;
    let recent = match_lines(matches::lines(&state.db, Some(&slug), None, None, 20).await?);
    let html = LiveFragment { recent }.render().map_err(PageError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(html))
}

#[derive(Deserialize)]
pub struct EnterForm {
    #[serde(default)]
    csrf: String,
    agent: AgentId,
}

csrf_token!(text: EnterForm);

pub async fn enter(
    state: Ctx,
    user: SignedIn,
    slug: web::Path<String>,
    Form(form): Form<EnterForm>,
) -> Result<HttpResponse, PageError> {
    let caller = &user.caller;
    agent_actions::enter_space(&state, caller, form.agent, &slug).await?;
    let name = agents::agent(&state.db, form.agent).await?.map(|a| a.name).unwrap_or_default();
    let to = format!(
        "/spaces/{}?entered={}",
        slug.as_str(),
        url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>()
    );
    Ok(see_other(&to))
}
