//! `EventStore` on this backend.

use time::OffsetDateTime;
use zivio_core::audit::AuditEntry;
use zivio_core::event::EventId;
use zivio_core::ids::TenantId;

use crate::{
    EventStore, KeyedEvent, LeasedDelivery, NewEvent, PublishLease, QueuedDelivery, StoreResult,
    StoredEvent,
};

use super::{BackendStore, announce_work, directory, events};

#[async_trait::async_trait]
impl EventStore for BackendStore {
    async fn events_by_key(
        &self,
        tenant: &TenantId,
        keys: &[String],
    ) -> StoreResult<Vec<KeyedEvent>> {
        events::events_by_key(self.reader(), tenant, keys).await
    }

    async fn publish_events(
        &self,
        tenant: &TenantId,
        batch: &[NewEvent],
        key_cutoff: OffsetDateTime,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<()> {
        let (tenant, batch, audit) = (tenant.clone(), batch.to_vec(), audit.cloned());
        self.write_grouped(move |tx| {
            Box::pin(async move {
                events::insert_events(&mut *tx, &tenant, &batch, key_cutoff, None).await?;
                if let Some(audit) = &audit {
                    directory::record_audit(&mut *tx, audit).await?;
                }
                announce_work(&mut *tx).await
            })
        })
        .await
    }

    async fn publish_leased(
        &self,
        tenant: &TenantId,
        batch: &[NewEvent],
        key_cutoff: OffsetDateTime,
        lease: &PublishLease,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Vec<LeasedDelivery>> {
        let (tenant, batch, lease, audit) = (
            tenant.clone(),
            batch.to_vec(),
            lease.clone(),
            audit.cloned(),
        );
        self.write_grouped(move |tx| {
            Box::pin(async move {
                let leased =
                    events::insert_events(&mut *tx, &tenant, &batch, key_cutoff, Some(&lease))
                        .await?;
                if let Some(audit) = &audit {
                    directory::record_audit(&mut *tx, audit).await?;
                }
                Ok(leased)
            })
        })
        .await
    }

    async fn event(&self, tenant: &TenantId, id: &EventId) -> StoreResult<Option<StoredEvent>> {
        events::event(self.reader(), tenant, id).await
    }

    async fn events(&self, tenant: &TenantId, ids: &[EventId]) -> StoreResult<Vec<StoredEvent>> {
        events::events(self.reader(), tenant, ids).await
    }

    async fn deliveries_of_event(
        &self,
        tenant: &TenantId,
        event_id: &EventId,
    ) -> StoreResult<Vec<QueuedDelivery>> {
        events::deliveries_of_event(self.reader(), tenant, event_id).await
    }
}
