//! Storage of Zivio Webhooks: one [`Store`] trait speaking domain types, implemented for the
//! embedded SQLite default and for PostgreSQL. Both pass one contract suite (`tests/contract.rs`).
//! Every tenant-owned method takes the tenant first, and multi-statement writes are one
//! transaction.

use std::sync::Arc;

use time::OffsetDateTime;
use zivio_core::directory::{BootstrapSeed, Role, Tenant, User};
use zivio_core::ids::{RoleName, TenantId, UserId};

mod common;
mod postgres;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
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
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_) => StoreError::Unavailable(error),
            other => StoreError::Internal(other),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

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

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// Applies pending migrations; harmless when there are none. On PostgreSQL this holds an
    /// advisory lock, so several instances may start at once.
    async fn migrate(&self) -> StoreResult<()>;

    /// Answers when the database does (readiness).
    async fn ping(&self) -> StoreResult<()>;

    /// Records `check` as the secrets key's check value unless one is recorded, and says
    /// whether the recorded one matches.
    async fn claim_key_check(&self, check: &str) -> StoreResult<KeyCheck>;

    /// On a database that has never been bootstrapped and holds no tenant, creates the seed's
    /// tenant, role and admin in one transaction and returns `true`. Otherwise changes nothing
    /// and returns `false`, also when several instances race.
    async fn bootstrap(&self, seed: &BootstrapSeed, now: OffsetDateTime) -> StoreResult<bool>;

    async fn tenant(&self, tenant: &TenantId) -> StoreResult<Option<Tenant>>;

    async fn role(&self, tenant: &TenantId, name: &RoleName) -> StoreResult<Option<Role>>;

    async fn user(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Option<User>>;

    /// The user's argon2id password hash, if a password was set.
    async fn password_hash(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Option<String>>;

    /// Waits for in-flight queries and closes every connection.
    async fn close(&self);
}

/// Connection settings shared by both backends.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `sqlite://<path>` or `postgres://...`.
    pub url: String,
    /// Upper bound on pooled connections (PostgreSQL; SQLite readers).
    pub max_connections: u32,
}

/// Opens the store the URL names, without migrating it.
pub async fn connect(options: &ConnectOptions) -> StoreResult<Arc<dyn Store>> {
    match backend_of(&options.url) {
        Some(Backend::Sqlite) => Ok(Arc::new(SqliteStore::connect(options).await?)),
        Some(Backend::Postgres) => Ok(Arc::new(PostgresStore::connect(options).await?)),
        None => Err(StoreError::Corrupt(format!(
            "unsupported database URL scheme in `{}`",
            redact_url(&options.url)
        ))),
    }
}

/// Which backend a database URL names, from its scheme.
pub fn backend_of(url: &str) -> Option<Backend> {
    let scheme = url.split_once(':').map(|(scheme, _)| scheme)?;
    match scheme {
        "sqlite" => Some(Backend::Sqlite),
        "postgres" | "postgresql" => Some(Backend::Postgres),
        _ => None,
    }
}

/// The URL without its password, for messages and logs.
pub fn redact_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("redacted"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<unparseable URL>".to_owned(),
    }
}

/// Turns stored text back into an id, reporting corruption rather than panicking.
fn stored<T, E: std::fmt::Display>(parsed: Result<T, E>) -> StoreResult<T> {
    parsed.map_err(|error| StoreError::Corrupt(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_follows_the_scheme() {
        assert_eq!(backend_of("sqlite://x.db"), Some(Backend::Sqlite));
        assert_eq!(backend_of("postgres://u@h/db"), Some(Backend::Postgres));
        assert_eq!(backend_of("postgresql://u@h/db"), Some(Backend::Postgres));
        assert_eq!(backend_of("mysql://u@h/db"), None);
        assert_eq!(backend_of("nothing"), None);
    }

    #[test]
    fn redaction_hides_passwords_only() {
        assert_eq!(
            redact_url("postgres://zivio:hunter2@db:5432/zivio"),
            "postgres://zivio:redacted@db:5432/zivio"
        );
        assert_eq!(redact_url("postgres://db/zivio"), "postgres://db/zivio");
        assert!(!redact_url("::hunter2").contains("hunter2"));
    }
}
