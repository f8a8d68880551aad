//! Recoveries: resending, as new events, what failed to a webhook over a window.

use time::OffsetDateTime;
use zivio_core::audit::AuditEntry;
use zivio_core::event::EventId;
use zivio_core::ids::TenantId;
use zivio_core::webhook::WebhookId;

use crate::{AttemptRecord, LeasedDelivery, Recovery, RecoveryStep, StoreResult};

#[async_trait::async_trait]
pub trait RecoveryStore: Send + Sync {
    /// How many events a recovery of `webhook` over `[since, until)` would resend now.
    async fn count_recoverable(
        &self,
        tenant: &TenantId,
        webhook: &WebhookId,
        since: OffsetDateTime,
        until: OffsetDateTime,
    ) -> StoreResult<i64>;

    /// Starts `recovery` with its selection fixed now, and records `audit` (its changes gain
    /// the number selected). [`StoreError::Conflict`] while another recovery of the webhook
    /// runs or the tenant runs `max_running`.
    async fn start_recovery(
        &self,
        recovery: &Recovery,
        max_running: i64,
        audit: &AuditEntry,
    ) -> StoreResult<Recovery>;

    /// The webhook's recoveries, newest first.
    async fn recoveries(
        &self,
        tenant: &TenantId,
        webhook: &WebhookId,
    ) -> StoreResult<Vec<Recovery>>;

    async fn recovery(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<Recovery>>;

    /// Ends a running recovery and records `audit` (its changes gain the final counts); `None`
    /// when it is not running.
    async fn end_recovery(
        &self,
        tenant: &TenantId,
        id: &str,
        ending: &zivio_core::recovery::Ending,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<Option<Recovery>>;

    /// Leases a running recovery that no live instance works on.
    async fn claim_recovery(
        &self,
        lease: &str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> StoreResult<Option<Recovery>>;

    /// Up to `limit` selected events of the recovery not yet settled, in a stable order.
    async fn pending_recovery_items(&self, recovery: &str, limit: i64)
    -> StoreResult<Vec<EventId>>;

    /// Publishes the step's resends and settles its events in one transaction, and extends the
    /// lease; `None` (nothing written) when the recovery no longer runs under this lease,
    /// otherwise the deliveries stored leased (with `deliveries_lease`).
    async fn record_recovery_step(
        &self,
        step: RecoveryStep,
    ) -> StoreResult<Option<Vec<LeasedDelivery>>>;

    /// Those of these events that still have a pending delivery.
    async fn still_pending(&self, events: &[EventId]) -> StoreResult<Vec<EventId>>;

    /// Recoveries running, over every tenant.
    async fn running_recoveries(&self) -> StoreResult<i64>;

    /// The attempts of one event to one webhook, oldest first.
    async fn attempts_of(
        &self,
        tenant: &TenantId,
        event_id: &EventId,
        webhook: &WebhookId,
    ) -> StoreResult<Vec<AttemptRecord>>;
}
