//! Webhooks and their subscriptions, as admins configure them.

use zivio_core::audit::AuditEntry;
use zivio_core::ids::TenantId;
use zivio_core::webhook::{Webhook, WebhookId};

use crate::StoreResult;

#[async_trait::async_trait]
pub trait WebhookStore: Send + Sync {
    /// Stores a new webhook unless the tenant already has `limit`: `Conflict` then.
    async fn create_webhook(
        &self,
        webhook: &Webhook,
        limit: u32,
        audit: &AuditEntry,
    ) -> StoreResult<()>;

    /// The tenant's webhooks, oldest first.
    async fn webhooks(&self, tenant: &TenantId) -> StoreResult<Vec<Webhook>>;

    async fn webhook(&self, tenant: &TenantId, id: &WebhookId) -> StoreResult<Option<Webhook>>;

    /// Replaces the webhook's mutable fields if it is still at `webhook.version` (`Conflict`
    /// otherwise: someone changed it since it was read). When it is disabled, queued
    /// deliveries are cancelled in the same transaction. `NotFound` when it does not exist.
    async fn update_webhook(&self, webhook: &Webhook, audit: &AuditEntry) -> StoreResult<()>;

    /// Deletes the webhook and its history; the audit entry stays.
    async fn delete_webhook(
        &self,
        tenant: &TenantId,
        id: &WebhookId,
        audit: &AuditEntry,
    ) -> StoreResult<bool>;
}
