//! The embedded SQLite store: one file in WAL mode, `synchronous=FULL` so a commit is on disk,
//! one writer connection (SQLite allows one writer at a time anyway; `BEGIN IMMEDIATE` takes
//! the lock up front) and a pool of read-only connections. Times are Unix milliseconds.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};
use time::OffsetDateTime;

use crate::{Backend, ConnectOptions, StoreError, StoreResult};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

mod directory {
    crate::common::directory_queries!(sqlx::Sqlite, super::to_db, super::from_db, i64);
}
mod events {
    crate::common::event_queries!(sqlx::Sqlite, super::to_db, super::from_db, i64);
}
mod history {
    crate::common::history_queries!(
        sqlx::Sqlite,
        super::to_db,
        super::from_db,
        i64,
        "EXPLAIN QUERY PLAN ",
        "detail"
    );
}
mod queue {
    // One writer at a time: the claim cannot race another claim.
    crate::common::queue_queries!(
        sqlx::Sqlite,
        super::to_db,
        super::from_db,
        i64,
        "UPDATE deliveries SET lease_owner = $1, lease_expires_at = $3
     WHERE id IN (SELECT id FROM (
                      SELECT id, next_attempt_at,
                             ROW_NUMBER() OVER (PARTITION BY webhook_id ORDER BY next_attempt_at) AS place
                      FROM deliveries
                      WHERE state = 'pending' AND next_attempt_at <= $2
                        AND (lease_owner IS NULL OR lease_expires_at <= $2)
                        AND webhook_id NOT IN (SELECT value FROM json_each($5)))
                  WHERE place <= $6
                  ORDER BY next_attempt_at LIMIT $4)"
    );
}
mod webhooks {
    crate::common::webhook_queries!(sqlx::Sqlite, super::to_db, super::from_db, i64);
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

    fn reader(&self) -> &SqlitePool {
        &self.readers
    }

    fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    async fn begin_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn run_migrations(&self) -> StoreResult<()> {
        MIGRATOR
            .run(&self.writer)
            .await
            .map_err(StoreError::Migration)
    }

    /// One instance owns an embedded database: in-process wake-ups are all there is.
    async fn announce_work(&self, _: &mut Transaction<'static, Sqlite>) -> StoreResult<()> {
        Ok(())
    }

    async fn listen(&self, _: std::sync::Arc<tokio::sync::Notify>) -> StoreResult<()> {
        Ok(())
    }

    async fn close_pools(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }
}

crate::common::store_impl!(SqliteStore, Backend::Sqlite);

/// SQLite keeps times as Unix milliseconds: compact, and they sort as numbers.
fn to_db(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn from_db(millis: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
