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
pub mod dataset;
pub mod dry_run;
pub mod ids;
pub mod leaderboard;
pub mod pairing;
pub mod payout;
pub mod prompts;
pub mod rating;
pub mod record;
pub mod settings;
pub mod shown;
pub mod space;
pub mod status;
pub mod training;
pub mod turns;
pub mod user;
pub mod votes;
pub mod worker;

pub use ids::{AgentId, JobId, MatchId, PairId, SpaceId, TokenId, UserId};
pub use status::{ExportStatus, JobStatus, JobTrigger, MatchStatus, PolicyMode, Stage, Topic};

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

/// Query parameters that carry secrets in connection URLs.
const SECRET_PARAMS: &[&str] = &["password", "pass", "pwd", "secret", "token", "auth", "sslpassword", "key"];

/// A URL with its password (in the userinfo or a query parameter such as
/// `?password=`) replaced by `***`, fit for logs and messages.
pub fn redacted(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            if url.query().is_some() {
                let pairs: Vec<(String, String)> = url
                    .query_pairs()
                    .map(|(k, v)| {
                        let secret = SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str());
                        (k.into_owned(), if secret { "***".to_owned() } else { v.into_owned() })
                    })
                    .collect();
                url.query_pairs_mut().clear().extend_pairs(pairs);
            }
            url.to_string()
        }
        Err(_) => "<unparseable url>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_in_urls_are_redacted() {
        assert_eq!(super::redacted("postgres://a:hunter2@h/db"), "postgres://a:***@h/db");
        let q = super::redacted("postgres://h/db?user=a&password=hunter2&sslmode=require");
        assert!(!q.contains("hunter2") && q.contains("sslmode=require") && q.contains("user=a"), "{q}");
        assert!(!super::redacted("redis://h/0?PASSWORD=s3cret").contains("s3cret"));
        assert_eq!(super::redacted("not a url"), "<unparseable url>");
    }
}
