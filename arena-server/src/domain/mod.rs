//! The arena's pure types and rules: ids, statuses, parsed input, Space
//! files, sampling settings, pairing, payouts, ratings, the match record's
//! hash and the training gate's decision.
//!
//! Nothing here talks to PostgreSQL, Redis or the network, and nothing
//! imports another room of this crate (the layering test in `lib.rs`
//! checks this). Ids and statuses derive `sqlx::Type` so the store can
//! bind and read them directly; that is a type mapping, not I/O. A
//! `parse` that fails returns a [`DomainError`] naming the field.

pub mod agent;
pub mod ids;
pub mod leaderboard;
pub mod pairing;
pub mod payout;
pub mod rating;
pub mod record;
pub mod settings;
pub mod space;
pub mod status;
pub mod training;
pub mod user;

pub use ids::{AgentId, JobId, MatchId, PairId, SpaceId, TokenId, UserId};
pub use status::{JobStatus, JobTrigger, MatchStatus, PolicyMode, Stage, Topic};

/// Input that breaks a rule: which field, and what a person should change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DomainError {
    pub field: String,
    pub message: String,
}

impl DomainError {
    pub fn new(field: &str, message: impl Into<String>) -> DomainError {
        DomainError { field: field.to_owned(), message: message.into() }
    }
}

/// A URL with its password replaced by `***`, fit for logs and messages.
pub fn redacted(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => "<unparseable url>".to_owned(),
    }
}
