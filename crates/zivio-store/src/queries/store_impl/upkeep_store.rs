//! `UpkeepStore` on this backend.

use time::OffsetDateTime;

use crate::{OutboxMail, StoreResult, UpkeepStore};

use super::{BackendStore, history};
use history::Purge;

#[async_trait::async_trait]
impl UpkeepStore for BackendStore {
    async fn claim_mail(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<OutboxMail>> {
        let mut tx = self.begin_uncounted_write().await?;
        let claimed = history::claim_mail(&mut tx, now, lease_until, limit).await?;
        tx.commit().await?;
        Ok(claimed)
    }

    #[cfg(feature = "testing")]
    async fn unsent_mail(&self) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM mail_outbox WHERE sent_at IS NULL")
                .fetch_one(self.reader())
                .await?,
        )
    }

    async fn mail_sent(&self, id: i64, at: OffsetDateTime) -> StoreResult<()> {
        let mut tx = self.begin_uncounted_write().await?;
        history::mail_sent(&mut tx, id, at).await?;
        Ok(tx.commit().await?)
    }

    async fn mail_failed(&self, id: i64, error: &str, retry_at: OffsetDateTime) -> StoreResult<()> {
        let mut tx = self.begin_uncounted_write().await?;
        history::mail_failed(&mut tx, id, error, retry_at).await?;
        Ok(tx.commit().await?)
    }

    async fn purge_events(&self, cutoff: OffsetDateTime) -> StoreResult<u64> {
        let events = self.purge_in_batches(cutoff, 100, Purge::Events).await?;
        self.purge_in_batches(cutoff, 1_000, Purge::Rows(history::PURGE_MAIL))
            .await?;
        Ok(events)
    }

    async fn purge_health_counters(&self, cutoff: OffsetDateTime) -> StoreResult<u64> {
        self.purge_in_batches(cutoff, 1_000, Purge::Rows(history::PURGE_HEALTH_COUNTERS))
            .await
    }

    async fn purge_audit(&self, cutoff: OffsetDateTime) -> StoreResult<u64> {
        self.purge_in_batches(cutoff, 1_000, Purge::Rows(history::PURGE_AUDIT))
            .await
    }
}
