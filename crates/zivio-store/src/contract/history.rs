//! What happened: the deliveries log, health and the audit log.

use time::OffsetDateTime;
use zivio_core::delivery::AttemptId;
use zivio_core::ids::TenantId;
use zivio_core::webhook::WebhookId;

use crate::{
    AttemptDetail, AttemptFilter, AttemptSummary, AuditCursor, AuditRecord, HealthCounts,
    HourlyCounts, StoreResult,
};

#[async_trait::async_trait]
pub trait HistoryStore: Send + Sync {
    /// A page of the tenant's attempts, newest first.
    async fn delivery_attempts(
        &self,
        tenant: &TenantId,
        filter: &AttemptFilter,
    ) -> StoreResult<Vec<AttemptSummary>>;

    /// The database's plan for that page (tests check that an index serves it).
    #[cfg(feature = "testing")]
    async fn explain_delivery_attempts(
        &self,
        tenant: &TenantId,
        filter: &AttemptFilter,
    ) -> StoreResult<String>;

    async fn delivery_attempt(
        &self,
        tenant: &TenantId,
        id: &AttemptId,
    ) -> StoreResult<Option<AttemptDetail>>;

    /// Health facts of the tenant's webhooks (all of them, or `only` one), counting attempts
    /// in the hours starting at or after `since_7d` and `since_24h`.
    async fn webhook_health(
        &self,
        tenant: &TenantId,
        only: Option<&WebhookId>,
        since_7d: OffsetDateTime,
        since_24h: OffsetDateTime,
    ) -> StoreResult<std::collections::HashMap<WebhookId, HealthCounts>>;

    /// The hourly attempt counters of the tenant's webhooks since `since`, for the health
    /// charts.
    async fn webhook_hours(
        &self,
        tenant: &TenantId,
        since: OffsetDateTime,
    ) -> StoreResult<Vec<HourlyCounts>>;

    /// Newest first, strictly older than `before` when given.
    async fn audit_entries(
        &self,
        tenant: &TenantId,
        before: Option<AuditCursor>,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>>;

    /// The newest entries about one webhook (also after it was deleted).
    async fn webhook_audit_entries(
        &self,
        tenant: &TenantId,
        webhook: &str,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>>;
}
