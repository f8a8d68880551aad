//! The delivery queue: claiming due deliveries, checking them before a send, recording
//! outcomes, pacing.

use time::OffsetDateTime;
use zivio_core::delivery::QueueEntryId;
use zivio_core::webhook::WebhookId;

use crate::{
    AttemptOutcome, AttemptRecord, AutoDisable, ClaimedDelivery, FinishedAttempt, StoreResult,
    Target,
};

#[async_trait::async_trait]
pub trait QueueStore: Send + Sync {
    /// The plans of the hot statements outside a claim (recording, the pre-send read, queueing
    /// a publish's deliveries) for one row each: tests check that none reads a whole table.
    #[cfg(feature = "testing")]
    async fn hot_statement_plans(&self) -> StoreResult<Vec<crate::StatementPlan>>;

    /// Leases up to `limit` due deliveries to `lease` until `lease_until` (expired leases count
    /// as free), oldest first but at most `per_webhook` of any one webhook (a backlog cannot
    /// crowd the others out), skipping the webhooks in `skip` (those the caller cannot take more
    /// work for). `lease` must be unique per claim.
    async fn claim_deliveries(
        &self,
        lease: &str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
        per_webhook: u32,
        skip: &[WebhookId],
    ) -> StoreResult<Vec<ClaimedDelivery>>;

    /// Records an attempt and moves its delivery on (next due time, or finished), if the
    /// delivery is still pending under `lease`. A delivery cancelled or deleted meanwhile keeps
    /// its state (the attempt is still recorded while the delivery exists). The webhook's
    /// health counters move with it; a failure of a webhook failing since before
    /// `auto_disable.failing_before` disables it (one conditional update), cancels its pending
    /// work, audits it and queues the notices, all in the same transaction.
    async fn record_attempt(
        &self,
        lease: &str,
        attempt: &AttemptRecord,
        auto_disable: AutoDisable,
    ) -> StoreResult<AttemptOutcome> {
        let finished = FinishedAttempt {
            lease: lease.to_owned(),
            record: attempt.clone(),
            auto_disable,
        };
        let mut outcomes = self.record_attempts(vec![finished]).await?;
        Ok(outcomes.remove(0))
    }

    /// Records several attempts as `record_attempt` does each, in one transaction (outcomes in
    /// the same order): the webhook's latest attempt and hourly counters are written once per
    /// webhook, and only a webhook's latest failure of the batch may disable it.
    async fn record_attempts(
        &self,
        attempts: Vec<FinishedAttempt>,
    ) -> StoreResult<Vec<AttemptOutcome>>;

    /// Just before sending: extends the lease to `lease_until` if it is still held and not
    /// expired at `now` (so the attempt cannot outlive it; no write when the lease already runs
    /// that long), and returns the webhook's current URL
    /// and sealed secret (a rotation or URL change since the claim applies). A lease lost or
    /// expired, or a delivery no longer pending: `None`. A webhook disabled meanwhile, or one
    /// whose owner is inactive or gone, has the delivery cancelled: `None` too. `None` means send
    /// nothing.
    async fn begin_attempt(
        &self,
        lease: &str,
        delivery: QueueEntryId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> StoreResult<Option<Target>>;

    /// [`Store::begin_attempt`] for many deliveries, `(lease, delivery)` each, with one read for
    /// all of them (the rare cancellation or lease extension runs one by one); answers in order.
    async fn begin_attempts(
        &self,
        attempts: &[(String, QueueEntryId)],
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> StoreResult<Vec<Option<Target>>>;

    /// Gives leased deliveries back to the queue as they were (no attempt counted).
    async fn release_deliveries(&self, lease: &str, ids: &[QueueEntryId]) -> StoreResult<()>;

    /// Where one process owns the database (SQLite): its count of writes that may change
    /// webhooks or the directory, each counted when it takes the writer and again when it ends.
    /// While the count holds, what was read at that count is current: a claim's URL and secret
    /// (so [`Store::begin_attempt`]'s read can be skipped), a tenant's webhooks and their owners'
    /// access. `None` where other processes write too (PostgreSQL).
    fn change_generation(&self) -> Option<u64>;

    /// Frees every lease (a restarted single-instance SQLite service owns them all).
    async fn release_all_leases(&self) -> StoreResult<u64>;

    /// When pending work next becomes claimable (due, or its lease expiring), if any.
    async fn next_due(&self) -> StoreResult<Option<OffsetDateTime>>;

    /// Calls `wake` whenever another instance stores new work (PostgreSQL `LISTEN`); returns
    /// at once where there are no other instances (SQLite). Runs until the store closes.
    async fn listen_for_work(&self, wake: std::sync::Arc<tokio::sync::Notify>) -> StoreResult<()>;

    /// How many deliveries are pending (the queue depth).
    async fn pending_deliveries(&self) -> StoreResult<i64>;

    /// Takes up to `want` (at least one) of the `limit` requests that may start to `webhook` in
    /// `second` of the clock, counted over every instance; returns how many it got (none once
    /// the second's allowance is used up).
    async fn take_rate_tokens(
        &self,
        webhook: &WebhookId,
        second: i64,
        want: u32,
        limit: zivio_core::rate_limit::RateLimit,
    ) -> StoreResult<u32>;

    /// Per webhook of `webhooks`, its pending deliveries due by `now` (absent: none).
    async fn due_deliveries(
        &self,
        webhooks: &[WebhookId],
        now: OffsetDateTime,
    ) -> StoreResult<std::collections::HashMap<WebhookId, i64>>;

    /// Deletes the rate-limit counts of seconds before `before`.
    async fn purge_rate_seconds(&self, before: i64) -> StoreResult<u64>;
}
