//! Opening a store from its database URL.

use std::sync::Arc;

use crate::{Backend, PostgresStore, SqliteStore, Store, StoreError, StoreResult};

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
