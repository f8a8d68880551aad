//! The embedded SQLite store: one file in WAL mode, `synchronous=FULL` so a commit is on disk,
//! one writer connection (SQLite allows one writer at a time anyway) and a pool of read-only
//! connections. Times are stored as Unix milliseconds.

use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use time::OffsetDateTime;
use zivio_core::directory::{BootstrapSeed, Role, Tenant, User};
use zivio_core::ids::{RoleName, TenantId, UserId};

use crate::{Backend, ConnectOptions, KeyCheck, Store, StoreError, StoreResult};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

mod queries {
    crate::common::common_queries!(sqlx::Sqlite, super::millis);
}

pub struct SqliteStore {
    writer: SqlitePool,
    readers: SqlitePool,
}

impl SqliteStore {
    pub async fn connect(options: &ConnectOptions) -> StoreResult<Self> {
        let base = SqliteConnectOptions::from_str(&options.url)?
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-16000");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full),
            )
            .await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .connect_with(base.read_only(true))
            .await?;
        Ok(Self { writer, readers })
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR
            .run(&self.writer)
            .await
            .map_err(StoreError::Migration)
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.readers).await?;
        Ok(())
    }

    async fn claim_key_check(&self, check: &str) -> StoreResult<KeyCheck> {
        queries::claim_key_check(&self.writer, check).await
    }

    async fn bootstrap(&self, seed: &BootstrapSeed, now: OffsetDateTime) -> StoreResult<bool> {
        // IMMEDIATE takes the write lock up front, so another process cannot interleave.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let created = queries::bootstrap(&mut tx, seed, now).await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn tenant(&self, tenant: &TenantId) -> StoreResult<Option<Tenant>> {
        queries::tenant(&self.readers, tenant).await
    }

    async fn role(&self, tenant: &TenantId, name: &RoleName) -> StoreResult<Option<Role>> {
        queries::role(&self.readers, tenant, name).await
    }

    async fn user(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Option<User>> {
        queries::user(&self.readers, tenant, user).await
    }

    async fn password_hash(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Option<String>> {
        queries::password_hash(&self.readers, tenant, user).await
    }

    async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }
}

/// SQLite keeps times as Unix milliseconds: compact, and they sort as numbers.
fn millis(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}
