//! `HistoryStore` on this backend.

use time::OffsetDateTime;
use zivio_core::delivery::AttemptId;
use zivio_core::ids::TenantId;
use zivio_core::webhook::WebhookId;

use crate::{
    AttemptDetail, AttemptFilter, AttemptSummary, AuditCursor, AuditRecord, HealthCounts,
    HistoryStore, HourlyCounts, StoreResult,
};

use super::{BackendStore, history, webhooks};

#[async_trait::async_trait]
impl HistoryStore for BackendStore {
    async fn delivery_attempts(
        &self,
        tenant: &TenantId,
        filter: &AttemptFilter,
    ) -> StoreResult<Vec<AttemptSummary>> {
        history::attempts(self.reader(), tenant, filter).await
    }

    #[cfg(feature = "testing")]
    async fn explain_delivery_attempts(
        &self,
        tenant: &TenantId,
        filter: &AttemptFilter,
    ) -> StoreResult<String> {
        history::explain_attempts(self.reader(), tenant, filter).await
    }

    async fn delivery_attempt(
        &self,
        tenant: &TenantId,
        id: &AttemptId,
    ) -> StoreResult<Option<AttemptDetail>> {
        history::attempt(self.reader(), tenant, id).await
    }

    async fn webhook_health(
        &self,
        tenant: &TenantId,
        only: Option<&WebhookId>,
        since_7d: OffsetDateTime,
        since_24h: OffsetDateTime,
    ) -> StoreResult<std::collections::HashMap<WebhookId, HealthCounts>> {
        history::health(self.reader(), tenant, only, since_7d, since_24h).await
    }

    async fn webhook_hours(
        &self,
        tenant: &TenantId,
        since: OffsetDateTime,
    ) -> StoreResult<Vec<HourlyCounts>> {
        history::hourly(self.reader(), tenant, since).await
    }

    async fn audit_entries(
        &self,
        tenant: &TenantId,
        before: Option<AuditCursor>,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>> {
        webhooks::audit_entries(self.reader(), tenant, before, limit).await
    }

    async fn webhook_audit_entries(
        &self,
        tenant: &TenantId,
        webhook: &str,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>> {
        webhooks::webhook_audit_entries(self.reader(), tenant, webhook, limit).await
    }
}
