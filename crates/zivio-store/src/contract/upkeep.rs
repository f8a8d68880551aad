//! Work in the background: the mail outbox and retention.

use time::OffsetDateTime;

use crate::{OutboxMail, StoreResult};

#[async_trait::async_trait]
pub trait UpkeepStore: Send + Sync {
    /// Mails in the outbox not yet accepted by the SMTP server (tests wait for none).
    #[cfg(feature = "testing")]
    async fn unsent_mail(&self) -> StoreResult<i64>;

    /// Leases up to `limit` due, unsent mails until `lease_until`.
    async fn claim_mail(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<OutboxMail>>;

    async fn mail_sent(&self, id: i64, at: OffsetDateTime) -> StoreResult<()>;

    /// Counts a failed try and sets when to try again.
    async fn mail_failed(&self, id: i64, error: &str, retry_at: OffsetDateTime) -> StoreResult<()>;

    /// Deletes events accepted before `cutoff` with their payloads, deliveries and attempts,
    /// unless a delivery of theirs is still pending, and mail sent before `cutoff`; in bounded
    /// batches. Returns how many events.
    async fn purge_events(&self, cutoff: OffsetDateTime) -> StoreResult<u64>;

    /// Deletes hourly health counters of hours starting before `cutoff`.
    async fn purge_health_counters(&self, cutoff: OffsetDateTime) -> StoreResult<u64>;

    /// Deletes audit entries recorded before `cutoff` (in bounded batches, so a large backlog
    /// never holds a long write); returns how many.
    async fn purge_audit(&self, cutoff: OffsetDateTime) -> StoreResult<u64>;
}
