//! What a use case can refuse, in terms a client can act on. The HTTP layer maps each kind to
//! a status and a problem document.

use serde::Serialize;
use zivio_store::StoreError;

/// One invalid input field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No valid credentials (401).
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// Authenticated, but not allowed; the text says why (403).
    #[error("{0}")]
    Forbidden(String),
    /// The thing does not exist for this caller (404); never says whether it exists elsewhere.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Invalid input, field by field (422).
    #[error("the request is invalid")]
    Validation(Vec<FieldError>),
    /// Invalid input that the API contract answers with 400 rather than 422 (custom headers),
    /// field by field.
    #[error("the request is invalid")]
    BadRequest(Vec<FieldError>),
    /// An invalid query parameter (400), named.
    #[error("invalid query parameter `{}`: {}", .0.field, .0.message)]
    InvalidParameter(FieldError),
    /// Too many requests; try again after this many seconds (429).
    #[error("too many requests; retry after {0} s")]
    RateLimited(u64),
    /// Valid input that collides with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// Too much work of this kind at once (password hashing); retry after this many seconds
    /// (503).
    #[error("the service is busy; retry after {0} s")]
    Busy(u64),
    /// The database does not answer (503).
    #[error("the service is temporarily unavailable")]
    Unavailable(#[source] StoreError),
    /// A failure of ours (500); logged with its cause, never shown.
    #[error("internal error")]
    Internal(#[source] StoreError),
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        AppError::Validation(vec![FieldError::new(field, message)])
    }
}

impl From<crate::passwords::Busy> for AppError {
    fn from(_: crate::passwords::Busy) -> Self {
        AppError::Busy(crate::passwords::RETRY_AFTER_SECONDS)
    }
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => AppError::Unavailable(error),
            StoreError::NotFound { what } => AppError::NotFound(what),
            StoreError::Conflict { what } => AppError::Conflict(what.to_owned()),
            other => AppError::Internal(other),
        }
    }
}
