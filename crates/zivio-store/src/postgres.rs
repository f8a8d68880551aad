//! The PostgreSQL store for production and scale-out: a connection pool with
//! `synchronous_commit=on` (a commit is durable before it is acknowledged), migrations under an
//! advisory lock so that several instances may start at once.

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use time::OffsetDateTime;
use zivio_core::directory::{BootstrapSeed, Role, Tenant, User};
use zivio_core::ids::{RoleName, TenantId, UserId};

use crate::{Backend, ConnectOptions, KeyCheck, Store, StoreError, StoreResult};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

mod queries {
    crate::common::common_queries!(sqlx::Postgres, super::timestamptz);
}

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
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn migrate(&self) -> StoreResult<()> {
        // sqlx's migrator holds a PostgreSQL advisory lock for the whole run.
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(StoreError::Migration)
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn claim_key_check(&self, check: &str) -> StoreResult<KeyCheck> {
        queries::claim_key_check(&self.pool, check).await
    }

    async fn bootstrap(&self, seed: &BootstrapSeed, now: OffsetDateTime) -> StoreResult<bool> {
        // Racing instances serialise on the marker row's unique key: the loser sees a conflict.
        let mut tx = self.pool.begin().await?;
        let created = queries::bootstrap(&mut tx, seed, now).await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn tenant(&self, tenant: &TenantId) -> StoreResult<Option<Tenant>> {
        queries::tenant(&self.pool, tenant).await
    }

    async fn role(&self, tenant: &TenantId, name: &RoleName) -> StoreResult<Option<Role>> {
        queries::role(&self.pool, tenant, name).await
    }

    async fn user(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Option<User>> {
        queries::user(&self.pool, tenant, user).await
    }

    async fn password_hash(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Option<String>> {
        queries::password_hash(&self.pool, tenant, user).await
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// PostgreSQL keeps times as `timestamptz`.
fn timestamptz(at: OffsetDateTime) -> OffsetDateTime {
    at
}
