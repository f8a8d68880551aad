//! What store operations answer: errors, the backend, the key check.

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found: {what}")]
    NotFound { what: &'static str },
    #[error("conflict: {what}")]
    Conflict { what: &'static str },
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Internal(#[source] sqlx::Error),
    #[error("migration failed")]
    Migration(#[source] sqlx::migrate::MigrateError),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// The transaction holding this write (with others, on SQLite) did not commit.
    #[error("the write could not be committed: {0}")]
    Commit(String),
}

/// The work of one grouped write, borrowing its connection.
pub(crate) type Work<'c, R> =
    std::pin::Pin<Box<dyn std::future::Future<Output = StoreResult<R>> + Send + 'c>>;

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::RowNotFound => StoreError::NotFound { what: "row" },
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_) => StoreError::Unavailable(error),
            other => StoreError::Internal(other),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The `what` of the `Conflict` refusing a key or session to an inactive user.
pub const INACTIVE_USER: &str = "the user is inactive";

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The outcome of presenting the secrets key's check value to the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// No key was recorded yet; this one now is.
    Recorded,
    /// The recorded key is this one.
    Matches,
    /// The database was set up with a different key.
    Mismatch,
}

/// Turns stored text back into a domain value, reporting corruption rather than panicking.
pub(crate) fn stored<T, E: std::fmt::Display>(parsed: Result<T, E>) -> StoreResult<T> {
    parsed.map_err(|error| StoreError::Corrupt(error.to_string()))
}

/// Reads a stored id or state back: the text of a column that only this service writes; one it
/// cannot parse is reported as corrupt.
pub(crate) fn parse_stored<T>(
    text: String,
    parse: fn(&str) -> Option<T>,
    what: &str,
) -> StoreResult<T> {
    parse(&text).ok_or_else(|| StoreError::Corrupt(format!("{what} `{text}`")))
}

pub(crate) fn webhook_id(text: String) -> StoreResult<zivio_core::webhook::WebhookId> {
    parse_stored(text, zivio_core::webhook::WebhookId::parse, "webhook id")
}

pub(crate) fn event_id(text: String) -> StoreResult<zivio_core::event::EventId> {
    parse_stored(text, zivio_core::event::EventId::parse, "event id")
}

pub(crate) fn attempt_id(text: String) -> StoreResult<zivio_core::delivery::AttemptId> {
    parse_stored(text, zivio_core::delivery::AttemptId::parse, "attempt id")
}

pub(crate) fn delivery_state(text: String) -> StoreResult<zivio_core::delivery::DeliveryState> {
    parse_stored(
        text,
        zivio_core::delivery::DeliveryState::parse,
        "delivery state",
    )
}

/// A unique-key violation means the caller asked for something that collides.
pub(crate) fn conflict_on_unique(error: sqlx::Error, what: &'static str) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict { what },
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound {
            what: "referenced record",
        },
        _ => StoreError::from(error),
    }
}
