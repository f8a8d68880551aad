//! The `Store` implementation both backends share. Reads go to `reader()`, writes run in one
//! `begin_write()` transaction each, together with their audit entry. The hot writes (publishing,
//! renewing a lease before sending, recording an attempt) go through `write_grouped`: on SQLite
//! concurrent ones share one transaction and one fsync (group commit), each in its own savepoint
//! so one failing write does not take the others down.

use time::OffsetDateTime;
use zivio_core::directory::BootstrapSeed;

use crate::{Backend, KeyCheck, Store, StoreResult};

use super::{
    BACKEND, BackendStore, SKIP_LOCKED, announce_work, directory, events, history, keys, pacing,
    queue, records, recoveries, sessions, webhooks,
};

mod access_store;
mod directory_store;
mod event_store;
mod history_store;
mod queue_store;
mod recovery_store;
mod upkeep_store;
mod webhook_store;

#[async_trait::async_trait]
impl Store for BackendStore {
    fn backend(&self) -> Backend {
        BACKEND
    }

    async fn migrate(&self) -> StoreResult<()> {
        self.run_migrations().await
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(self.reader()).await?;
        Ok(())
    }

    async fn claim_key_check(&self, check: &str) -> StoreResult<KeyCheck> {
        directory::claim_key_check(self.writer(), check).await
    }

    async fn bootstrap(&self, seed: &BootstrapSeed, now: OffsetDateTime) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let created = directory::bootstrap(&mut tx, seed, now).await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn close(&self) {
        self.close_pools().await;
    }
}

impl BackendStore {
    /// Runs a purge one bounded transaction at a time (a large backlog never holds a
    /// long write), until a batch comes back short.
    async fn purge_in_batches(
        &self,
        cutoff: OffsetDateTime,
        batch: i64,
        purge: history::Purge,
    ) -> StoreResult<u64> {
        let mut total = 0;
        loop {
            let mut tx = self.begin_uncounted_write().await?;
            let deleted = history::purge_batch(&mut tx, purge, cutoff, batch).await?;
            tx.commit().await?;
            total += deleted;
            if deleted < batch.unsigned_abs() {
                return Ok(total);
            }
        }
    }
}
