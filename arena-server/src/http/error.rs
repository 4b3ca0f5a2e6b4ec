//! The JSON API's one error type: a stable machine code, an HTTP status and
//! a message a person can act on. Unexpected failures are logged with their
//! cause chain and answered with a bare 500.

use crate::domain::DomainError;
use crate::store::StoreError;
use crate::store::ledger::LedgerError;
use crate::store::training::JobRefused;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request's content is wrong; `field` names where.
    #[error("{message}")]
    Invalid { field: String, message: String },
    #[error("sign in first (session cookie or `Authorization: Bearer` token)")]
    Unauthenticated,
    #[error("wrong username or password")]
    BadCredentials,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{message}")]
    Conflict { field: String, message: String },
    #[error("insufficient credits: {0}")]
    InsufficientFunds(String),
    /// The data asked for is sold, not given: buy an export.
    #[error("{0}")]
    PaymentRequired(String),
    /// It existed and is gone for good (an export's files past retention).
    #[error("{0}")]
    Gone(String),
    #[error("too many writes: at most {limit} per minute; retry in {retry_after_s} s")]
    RateLimited { limit: u32, retry_after_s: u64 },
    #[error("{0}")]
    OverCapacity(String),
    #[error("request body too large or unreadable: {0}")]
    Payload(String),
    #[error("{0}")]
    MediaType(String),
    /// The caller's storage quota would be exceeded.
    #[error("{0}")]
    OverQuota(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

#[derive(Serialize)]
struct Body<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Invalid { field: field.to_owned(), message: message.into() }
    }

    pub fn conflict(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Conflict { field: field.to_owned(), message: message.into() }
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> ApiError {
        ApiError::Internal(err.into())
    }

    /// The stable machine-readable code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid { .. } => "invalid_input",
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::BadCredentials => "bad_credentials",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict { .. } => "conflict",
            ApiError::InsufficientFunds(_) => "insufficient_funds",
            ApiError::PaymentRequired(_) => "payment_required",
            ApiError::Gone(_) => "gone",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::OverCapacity(_) => "over_capacity",
            ApiError::Payload(_) => "bad_payload",
            ApiError::MediaType(_) => "unsupported_media_type",
            ApiError::OverQuota(_) => "over_quota",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Invalid { .. } | ApiError::Payload(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthenticated | ApiError::BadCredentials => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::OverQuota(_) => StatusCode::FORBIDDEN,
            ApiError::MediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PaymentRequired(_) => StatusCode::PAYMENT_REQUIRED,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::Conflict { .. } | ApiError::InsufficientFunds(_) => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } | ApiError::OverCapacity(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(err) = self {
            tracing::error!(error = ?err, "request failed");
        }
        let field = match self {
            ApiError::Invalid { field, .. } | ApiError::Conflict { field, .. } => Some(field.as_str()),
            _ => None,
        };
        let mut response = HttpResponse::build(self.status_code());
        if let ApiError::RateLimited { retry_after_s, .. } = self {
            response.insert_header(("Retry-After", retry_after_s.to_string()));
        }
        response.json(Body { error: ErrorBody { code: self.code(), message: self.to_string(), field } })
    }
}

impl From<sqlx::Error> for ApiError {
    /// Constraint violations become 409/422 naming the field; everything
    /// else is internal.
    fn from(err: sqlx::Error) -> ApiError {
        if let sqlx::Error::Database(db) = &err {
            let constraint = db.constraint().unwrap_or_default();
            let field = match constraint {
                "users_username_key" => Some("username"),
                "agents_owner_name" => Some("name"),
                "spaces_slug_key" => Some("name"),
                _ => None,
            };
            if db.is_unique_violation()
                && let Some(field) = field
            {
                return ApiError::conflict(field, format!("this {field} is already taken"));
            }
            if db.is_check_violation() && constraint == "accounts_balance_check" {
                return ApiError::InsufficientFunds("the balance cannot go below zero".to_owned());
            }
        }
        // Every connection of the API's pool is busy (a flood): a 429 to
        // retry, not a 500 (the stages have a pool of their own).
        if matches!(err, sqlx::Error::PoolTimedOut) {
            return ApiError::OverCapacity("the server is busy; retry in a few seconds".to_owned());
        }
        ApiError::Internal(err.into())
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(err: redis::RedisError) -> ApiError {
        ApiError::Internal(err.into())
    }
}

impl From<LedgerError> for ApiError {
    fn from(err: LedgerError) -> ApiError {
        match err {
            LedgerError::InsufficientFunds { .. } => ApiError::InsufficientFunds(err.to_string()),
            LedgerError::Db(db) => ApiError::from(db),
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(err: DomainError) -> ApiError {
        ApiError::Invalid { field: err.field, message: err.message }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        match err {
            StoreError::Invalid(e) => e.into(),
            StoreError::NotFound(what) => ApiError::NotFound(what),
            StoreError::Forbidden(why) => ApiError::Forbidden(why),
            StoreError::OverQuota(why) => ApiError::OverQuota(why),
            StoreError::Conflict { field, message } => ApiError::Conflict { field, message },
            StoreError::Ledger(e) => e.into(),
            StoreError::Db(e) => e.into(),
            StoreError::Internal(e) => ApiError::Internal(e),
        }
    }
}

impl From<JobRefused> for ApiError {
    fn from(r: JobRefused) -> ApiError {
        match r {
            JobRefused::Open(_) => ApiError::conflict("agent", r.to_string()),
            JobRefused::TooManyOpen(_) => ApiError::OverCapacity(r.to_string()),
            JobRefused::TooFewPairs { .. } => ApiError::invalid("settings.min_pairs", r.to_string()),
            JobRefused::NoHoldout => ApiError::invalid("space", r.to_string()),
            JobRefused::GrpoInGame => ApiError::invalid("settings.objective", r.to_string()),
            JobRefused::CannotPay { .. } => ApiError::InsufficientFunds(r.to_string()),
            JobRefused::OverBudget(e) => e.into(),
            JobRefused::Db(e) => e.into(),
        }
    }
}

/// JSON bodies that fail to parse answer with our error shape, naming the
/// problem serde found.
pub fn json_config() -> actix_web::web::JsonConfig {
    actix_web::web::JsonConfig::default()
        .limit(256 * 1024)
        .error_handler(|err, _req| ApiError::invalid("body", format!("malformed JSON body: {err}")).into())
}

pub fn query_config() -> actix_web::web::QueryConfig {
    actix_web::web::QueryConfig::default()
        .error_handler(|err, _req| ApiError::invalid("query", format!("bad query string: {err}")).into())
}

pub fn path_config() -> actix_web::web::PathConfig {
    actix_web::web::PathConfig::default().error_handler(|err, _req| ApiError::NotFound(format!("path ({err})")).into())
}
