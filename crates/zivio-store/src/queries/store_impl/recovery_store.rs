//! `RecoveryStore` on this backend.

use time::OffsetDateTime;
use zivio_core::audit::AuditEntry;
use zivio_core::event::EventId;
use zivio_core::ids::TenantId;
use zivio_core::recovery::{Ending, audited};
use zivio_core::webhook::WebhookId;

use crate::{AttemptRecord, LeasedDelivery, Recovery, RecoveryStep, RecoveryStore, StoreResult};

use super::{BackendStore, SKIP_LOCKED, announce_work, directory, events, queue, recoveries};

#[async_trait::async_trait]
impl RecoveryStore for BackendStore {
    async fn count_recoverable(
        &self,
        tenant: &TenantId,
        webhook: &WebhookId,
        since: OffsetDateTime,
        until: OffsetDateTime,
    ) -> StoreResult<i64> {
        recoveries::count_recoverable(self.reader(), tenant, webhook, since, until).await
    }

    async fn start_recovery(
        &self,
        recovery: &Recovery,
        max_running: i64,
        audit: &AuditEntry,
    ) -> StoreResult<Recovery> {
        let mut tx = self.begin_uncounted_write().await?;
        directory::lock_tenant(&mut tx, &recovery.tenant).await?;
        let started = recoveries::insert_recovery(&mut tx, recovery, max_running).await?;
        let audit = audited(audit.clone(), &started.counts());
        directory::record_audit(&mut tx, &audit).await?;
        tx.commit().await?;
        Ok(started)
    }

    async fn recoveries(
        &self,
        tenant: &TenantId,
        webhook: &WebhookId,
    ) -> StoreResult<Vec<Recovery>> {
        recoveries::recoveries(self.reader(), tenant, webhook).await
    }

    async fn recovery(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<Recovery>> {
        recoveries::recovery(self.reader(), tenant, id).await
    }

    async fn end_recovery(
        &self,
        tenant: &TenantId,
        id: &str,
        ending: &Ending,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<Option<Recovery>> {
        let mut tx = self.begin_uncounted_write().await?;
        let Some(ended) = recoveries::end(&mut tx, tenant, id, ending, now).await? else {
            return Ok(None);
        };
        let audit = audited(audit.clone(), &ended.counts());
        directory::record_audit(&mut tx, &audit).await?;
        tx.commit().await?;
        Ok(Some(ended))
    }

    async fn claim_recovery(
        &self,
        lease: &str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> StoreResult<Option<Recovery>> {
        let mut tx = self.begin_uncounted_write().await?;
        let claimed = recoveries::claim(&mut tx, lease, now, lease_until, SKIP_LOCKED).await?;
        tx.commit().await?;
        Ok(claimed)
    }

    async fn pending_recovery_items(
        &self,
        recovery: &str,
        limit: i64,
    ) -> StoreResult<Vec<EventId>> {
        recoveries::pending_items(self.reader(), recovery, limit).await
    }

    async fn record_recovery_step(
        &self,
        step: RecoveryStep,
    ) -> StoreResult<Option<Vec<LeasedDelivery>>> {
        let mut tx = self.begin_uncounted_write().await?;
        if !recoveries::advance(&mut tx, &step).await? {
            return Ok(None);
        }
        let lease = step.deliveries_lease.as_ref();
        let leased = events::insert_events(
            &mut tx,
            &step.tenant,
            &step.resends,
            OffsetDateTime::UNIX_EPOCH,
            lease,
        )
        .await?;
        recoveries::settle_items(&mut tx, &step).await?;
        if lease.is_none() && !step.resends.is_empty() {
            announce_work(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(Some(leased))
    }

    async fn still_pending(&self, events: &[EventId]) -> StoreResult<Vec<EventId>> {
        recoveries::still_pending(self.reader(), events).await
    }

    async fn running_recoveries(&self) -> StoreResult<i64> {
        recoveries::running(self.reader()).await
    }

    async fn attempts_of(
        &self,
        tenant: &TenantId,
        event_id: &EventId,
        webhook: &WebhookId,
    ) -> StoreResult<Vec<AttemptRecord>> {
        queue::attempts_of(self.reader(), tenant, event_id, webhook).await
    }
}
