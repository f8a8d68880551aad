//! The PostgreSQL store for production and scale-out: a connection pool with
//! `synchronous_commit=on` (a commit is durable before it is acknowledged), migrations under an
//! advisory lock so that several instances may start at once.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use time::OffsetDateTime;

use crate::common::claims::webhooks_with_free_work;
use crate::{Backend, ConnectOptions, StoreError, StoreResult};

/// The channel on which instances announce newly queued deliveries.
const WORK_CHANNEL: &str = "zivio_deliveries";

// Each backend compiles the shared queries as its own module (see queries/mod.rs).
#[allow(clippy::duplicate_mod)]
#[path = "queries/mod.rs"]
mod queries;

/// What `queries` is compiled with for this backend.
type Db = sqlx::Postgres;
type DbTime = OffsetDateTime;
type BackendStore = PostgresStore;
const BACKEND: Backend = Backend::Postgres;
/// The first `$1` ids of new payloads, drawn in advance from the identity's sequence.
const PAYLOAD_IDS: &str =
    "SELECT nextval(pg_get_serial_sequence('payloads', 'id')) FROM generate_series(1, $1)";
const INSERT_PAYLOADS: &str = "INSERT INTO payloads (id, event_id, body) OVERRIDING SYSTEM VALUE ";
/// How a query plan is asked for, and the column of its text (tests check plans).
#[cfg(feature = "testing")]
const EXPLAIN: &str = "EXPLAIN ";
#[cfg(feature = "testing")]
const PLAN_COLUMN: usize = 0;
/// How a record locks the webhooks it changes, in one order so that records cannot deadlock.
const LOCK_WEBHOOKS: Option<&str> = Some(") ORDER BY id FOR NO KEY UPDATE");

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How a claim of a recovery passes over rows other instances are claiming.
const SKIP_LOCKED: &str = " FOR UPDATE SKIP LOCKED";
/// Claims due work per webhook (so a backlog cannot crowd out the others; each webhook's oldest
/// due work no one holds, read from its partial index by webhook and due time, so a claim costs
/// steps per webhook, not per queued delivery); concurrent claims from other instances skip rows
/// already being claimed. Only webhooks with free work are visited (`hooks`, see
/// `webhooks_with_free_work!`). No ORDER BY before the LIMIT: it would lock every webhook's share,
/// not just those claimed, and starve concurrent claims; webhooks are visited in id order.
pub(crate) const CLAIM: &str = concat!(
    webhooks_with_free_work!(),
    "UPDATE deliveries SET lease_owner = $1, lease_expires_at = $3
     WHERE id IN (SELECT due.id
                  FROM hooks
                  CROSS JOIN LATERAL (
                      SELECT id FROM deliveries
                      WHERE webhook_id = hooks.id AND state = 'pending' AND lease_owner IS NULL
                        AND next_attempt_at <= $2
                      ORDER BY next_attempt_at LIMIT $6
                      FOR UPDATE SKIP LOCKED) due
                  WHERE hooks.id NOT IN (SELECT jsonb_array_elements_text($5::jsonb))
                  LIMIT $4)"
);
/// Takes over, under lease `$1` until `$3`, up to `$4` due deliveries whose lease ended before
/// `$2` (their holder died or stalled), of webhooks not in `$5`, skipping those another
/// transaction holds (their holder recording them, another claim), so that claims never wait for
/// each other or for a record. The ids go through an array looked up by primary key: joined back
/// as `id IN (SELECT …)`, the generic plan of a prepared statement hash-joins the whole table.
pub(crate) const TAKE_OVER_ENDED_LEASES: &str =
    "UPDATE deliveries SET lease_owner = $1, lease_expires_at = $3
     WHERE id = ANY(ARRAY(SELECT id FROM deliveries
                          WHERE state = 'pending' AND lease_owner IS NOT NULL
                            AND lease_expires_at <= $2 AND next_attempt_at <= $2
                            AND webhook_id NOT IN (SELECT jsonb_array_elements_text($5::jsonb))
                          ORDER BY lease_expires_at LIMIT $4
                          FOR NO KEY UPDATE SKIP LOCKED))";

pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    pub async fn connect(options: &ConnectOptions) -> StoreResult<Self> {
        let connect = PgConnectOptions::from_str(&options.url)?
            .application_name("zivio-webhooks")
            .options([("synchronous_commit", "on")]);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(connect)
            .await?;
        Ok(Self { pool })
    }

    fn reader(&self) -> &PgPool {
        &self.pool
    }

    fn writer(&self) -> &PgPool {
        &self.pool
    }

    async fn begin_write(&self) -> StoreResult<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    async fn begin_uncounted_write(&self) -> StoreResult<Transaction<'static, Postgres>> {
        self.begin_write().await
    }

    /// Several instances share the database: no instance can know alone that nothing changed,
    /// so every send reads the webhook's state first.
    fn change_counter(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicU64>> {
        None
    }

    async fn run_migrations(&self) -> StoreResult<()> {
        // sqlx's migrator holds a PostgreSQL advisory lock for the whole run.
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(StoreError::Migration)
    }

    /// Runs `work` in a transaction of its own: PostgreSQL commits concurrent transactions in
    /// groups by itself.
    async fn write_grouped<R, F>(&self, work: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: for<'c> FnOnce(&'c mut PgConnection) -> crate::Work<'c, R> + Send + 'static,
    {
        let mut tx = self.pool.begin().await?;
        let result = work(&mut tx).await?;
        tx.commit().await?;
        Ok(result)
    }

    async fn listen(&self, wake: std::sync::Arc<tokio::sync::Notify>) -> StoreResult<()> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen(WORK_CHANNEL).await?;
        loop {
            // `recv` reconnects by itself after a dropped connection.
            match listener.recv().await {
                Ok(_) => wake.notify_one(),
                Err(sqlx::Error::PoolClosed) => return Ok(()),
                Err(error) => {
                    tracing::warn!(error = %error, "listening for new work failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn close_pools(&self) {
        self.pool.close().await;
    }
}

/// Tells every instance listening that new work was committed (delivered on commit).
async fn announce_work(tx: &mut PgConnection) -> StoreResult<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(WORK_CHANNEL)
        .execute(tx)
        .await?;
    Ok(())
}

/// PostgreSQL keeps times as `timestamptz`, at microsecond precision.
fn to_db(at: OffsetDateTime) -> OffsetDateTime {
    at
}

fn from_db(at: OffsetDateTime) -> OffsetDateTime {
    at
}
