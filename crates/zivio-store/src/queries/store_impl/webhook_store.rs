//! `WebhookStore` on this backend.

use zivio_core::audit::AuditEntry;
use zivio_core::ids::TenantId;
use zivio_core::webhook::{Webhook, WebhookId};

use crate::{StoreResult, WebhookStore};

use super::{BackendStore, directory, webhooks};

#[async_trait::async_trait]
impl WebhookStore for BackendStore {
    async fn create_webhook(
        &self,
        webhook: &Webhook,
        limit: u32,
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        directory::lock_tenant(&mut tx, &webhook.tenant).await?;
        if webhooks::count_webhooks(&mut tx, &webhook.tenant).await? >= i64::from(limit) {
            return Err(crate::StoreError::Conflict {
                what: "webhook limit",
            });
        }
        webhooks::insert_webhook(&mut tx, webhook).await?;
        directory::record_audit(&mut tx, audit).await?;
        Ok(tx.commit().await?)
    }

    async fn webhooks(&self, tenant: &TenantId) -> StoreResult<Vec<Webhook>> {
        webhooks::webhooks(self.reader(), tenant).await
    }

    async fn webhook(&self, tenant: &TenantId, id: &WebhookId) -> StoreResult<Option<Webhook>> {
        webhooks::webhook(self.reader(), tenant, id).await
    }

    async fn update_webhook(&self, webhook: &Webhook, audit: &AuditEntry) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        webhooks::update_webhook(&mut tx, webhook).await?;
        directory::record_audit(&mut tx, audit).await?;
        Ok(tx.commit().await?)
    }

    async fn delete_webhook(
        &self,
        tenant: &TenantId,
        id: &WebhookId,
        audit: &AuditEntry,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let deleted = webhooks::delete_webhook(&mut tx, tenant, id).await?;
        if deleted {
            directory::record_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }
}
