//! The embedded SQLite store: one file in WAL mode, `synchronous=FULL` so a commit is on disk,
//! one writer connection (SQLite allows one writer at a time anyway; `BEGIN IMMEDIATE` takes
//! the lock up front) and a pool of read-only connections. Times are Unix milliseconds. The hot
//! writes are committed in groups (`commit_groups`): one fsync for every write waiting.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use crate::common::claims::webhooks_with_free_work;
use crate::{Backend, ConnectOptions, StoreError, StoreResult};

// Each backend compiles the shared queries as its own module (see queries/mod.rs).
#[allow(clippy::duplicate_mod)]
#[path = "queries/mod.rs"]
mod queries;

/// What `queries` is compiled with for this backend.
type Db = sqlx::Sqlite;
type DbTime = i64;
type BackendStore = SqliteStore;
const BACKEND: Backend = Backend::Sqlite;
/// The first `$1` ids of new payloads: the next ones after the largest (one writer at a time).
const PAYLOAD_IDS: &str =
    "WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1)
     SELECT (SELECT COALESCE(max(id), 0) FROM payloads) + i FROM n";
const INSERT_PAYLOADS: &str = "INSERT INTO payloads (id, event_id, body) ";
/// How a query plan is asked for, and the column of its text (tests check plans).
#[cfg(feature = "testing")]
const EXPLAIN: &str = "EXPLAIN QUERY PLAN ";
#[cfg(feature = "testing")]
const PLAN_COLUMN: &str = "detail";
/// What locks the webhooks a record changes: nothing, one writer at a time already excludes
/// everyone.
const LOCK_WEBHOOKS: Option<&str> = None;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How a claim of a recovery passes over rows other instances are claiming.
const SKIP_LOCKED: &str = "";
/// Claims due work per webhook (so a backlog cannot crowd out the others; each webhook's oldest
/// due work no one holds, read from its partial index by webhook and due time, so a claim costs
/// steps per webhook, not per queued delivery), oldest first, of the webhooks with free work
/// (`hooks`, see `webhooks_with_free_work!`). One writer at a time: the claim cannot race
/// another claim.
pub(crate) const CLAIM: &str = concat!(
    webhooks_with_free_work!(),
    "UPDATE deliveries SET lease_owner = $1, lease_expires_at = $3
     WHERE id IN (SELECT d.id
                  FROM hooks
                  JOIN deliveries d ON d.id IN (
                      SELECT id FROM deliveries
                      WHERE webhook_id = hooks.id AND state = 'pending' AND lease_owner IS NULL
                        AND next_attempt_at <= $2
                      ORDER BY next_attempt_at LIMIT $6)
                  WHERE hooks.id NOT IN (SELECT value FROM json_each($5))
                  ORDER BY d.next_attempt_at LIMIT $4)"
);
/// Takes over, under lease `$1` until `$3`, up to `$4` due deliveries whose lease ended before
/// `$2` (their holder died or stalled), of webhooks not in `$5`, read from the index of held
/// deliveries by lease end.
pub(crate) const TAKE_OVER_ENDED_LEASES: &str =
    "UPDATE deliveries SET lease_owner = $1, lease_expires_at = $3
     WHERE id IN (SELECT id FROM deliveries
                  WHERE state = 'pending' AND lease_owner IS NOT NULL
                    AND lease_expires_at <= $2 AND next_attempt_at <= $2
                    AND webhook_id NOT IN (SELECT value FROM json_each($5))
                  ORDER BY lease_expires_at LIMIT $4)";

pub struct SqliteStore {
    writer: SqlitePool,
    readers: SqlitePool,
    jobs: mpsc::UnboundedSender<Job>,
    committer: tokio::task::JoinHandle<()>,
    /// Counts writes that may change what a send depends on (webhooks, the directory): one
    /// process owns the database, and every write holds its one writer connection, so a claim
    /// that reads this number under the same connection knows whether anything changed since.
    changes: Arc<AtomicU64>,
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
        let (jobs, waiting) = mpsc::unbounded_channel();
        let committer = tokio::spawn(commit_groups(writer.clone(), waiting));
        Ok(Self {
            writer,
            readers,
            jobs,
            committer,
            changes: Arc::new(AtomicU64::new(0)),
        })
    }

    fn reader(&self) -> &SqlitePool {
        &self.readers
    }

    fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// A write transaction that may change webhooks or the directory: counted as a change once
    /// it holds the writer connection (never before, or a claim between could miss it), and
    /// again when it ends (so that what was read on other connections while it ran is not taken
    /// for current).
    async fn begin_write(&self) -> StoreResult<CountedWrite> {
        let transaction = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        self.changes.fetch_add(1, Ordering::SeqCst);
        Ok(CountedWrite {
            transaction: Some(transaction),
            changes: self.changes.clone(),
        })
    }

    /// A write transaction that changes neither webhooks nor the directory (the delivery queue,
    /// mail, session activity, purges): not counted.
    async fn begin_uncounted_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    fn change_counter(&self) -> Option<Arc<AtomicU64>> {
        Some(self.changes.clone())
    }

    async fn run_migrations(&self) -> StoreResult<()> {
        MIGRATOR
            .run(&self.writer)
            .await
            .map_err(StoreError::Migration)
    }

    /// Hands `work` to the group committer and waits until its group is committed.
    async fn write_grouped<R, F>(&self, work: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> crate::Work<'c, R> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move |connection| {
            Box::pin(async move {
                let result = work(connection).await;
                let succeeded = result.is_ok();
                let deliver: Deliver = Box::new(move |committed| {
                    let _ = answer.send(committed.and(result));
                });
                (succeeded, deliver)
            })
        });
        self.jobs.send(job).map_err(|_| not_committed())?;
        answered.await.map_err(|_| not_committed())?
    }

    async fn listen(&self, _: std::sync::Arc<tokio::sync::Notify>) -> StoreResult<()> {
        Ok(())
    }

    async fn close_pools(&self) {
        self.readers.close().await;
        self.writer.close().await;
        self.committer.abort();
    }
}

/// One hot write, type-erased: runs in its own savepoint and returns whether it succeeded and
/// how to answer its caller once the group's commit is known.
/// A write transaction that counts itself as a change again when it ends, committed or not.
pub(crate) struct CountedWrite {
    transaction: Option<Transaction<'static, Sqlite>>,
    changes: Arc<AtomicU64>,
}

impl CountedWrite {
    pub(crate) async fn commit(mut self) -> Result<(), sqlx::Error> {
        match self.transaction.take() {
            Some(transaction) => transaction.commit().await,
            None => Ok(()),
        }
    }
}

impl std::ops::Deref for CountedWrite {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        self.transaction.as_deref().expect("open until committed")
    }
}

impl std::ops::DerefMut for CountedWrite {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.transaction
            .as_deref_mut()
            .expect("open until committed")
    }
}

impl Drop for CountedWrite {
    fn drop(&mut self) {
        self.changes.fetch_add(1, Ordering::SeqCst);
    }
}

type Job = Box<
    dyn for<'c> FnOnce(
            &'c mut SqliteConnection,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = (bool, Deliver)> + Send + 'c>,
        > + Send,
>;
type Deliver = Box<dyn FnOnce(StoreResult<()>) + Send>;

/// Writes waiting at once share one transaction, so one fsync acknowledges them all.
const MAX_GROUP: usize = 256;

/// Group commit: takes every write waiting, runs each in a savepoint of one `BEGIN IMMEDIATE`
/// transaction (a failing write rolls back alone), commits once, then answers them all. A
/// write is acknowledged only after the commit that holds it is on disk.
async fn commit_groups(writer: SqlitePool, mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = jobs.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let mut delivers = Vec::with_capacity(group.len());
        let committed = run_group(&writer, group, &mut delivers).await;
        for deliver in delivers {
            deliver(match &committed {
                Ok(()) => Ok(()),
                Err(error) => Err(StoreError::Commit(error.to_string())),
            });
        }
    }
}

async fn run_group(
    writer: &SqlitePool,
    group: Vec<Job>,
    delivers: &mut Vec<Deliver>,
) -> Result<(), sqlx::Error> {
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    if group.len() == 1 {
        // Alone, a write needs no savepoint: if it fails, the transaction is rolled back.
        let job = group.into_iter().next().expect("one job");
        let (succeeded, deliver) = job(&mut tx).await;
        delivers.push(deliver);
        return match succeeded {
            true => tx.commit().await,
            false => tx.rollback().await,
        };
    }
    for job in group {
        sqlx::query("SAVEPOINT grouped_write")
            .execute(&mut *tx)
            .await?;
        let (succeeded, deliver) = job(&mut tx).await;
        delivers.push(deliver);
        if !succeeded {
            sqlx::query("ROLLBACK TO SAVEPOINT grouped_write")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("RELEASE SAVEPOINT grouped_write")
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// The write's group was abandoned before it ran (the store closed, or an earlier statement of
/// the group failed).
fn not_committed() -> StoreError {
    StoreError::Commit("the write was not run".to_owned())
}

/// One instance owns an embedded database: in-process wake-ups are all there is.
async fn announce_work(_: &mut SqliteConnection) -> StoreResult<()> {
    Ok(())
}

/// SQLite keeps times as Unix milliseconds: compact, and they sort as numbers.
fn to_db(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn from_db(millis: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
