//! Accepting events: each committed with its payload and its deliveries in one transaction.

use time::OffsetDateTime;
use zivio_core::audit::AuditEntry;
use zivio_core::event::EventId;
use zivio_core::ids::TenantId;

use crate::{
    KeyedEvent, LeasedDelivery, NewEvent, PublishLease, QueuedDelivery, StoreResult, StoredEvent,
};

#[async_trait::async_trait]
pub trait EventStore: Send + Sync {
    /// The tenant's events stored under any of these producer keys.
    async fn events_by_key(
        &self,
        tenant: &TenantId,
        keys: &[String],
    ) -> StoreResult<Vec<KeyedEvent>>;

    /// Stores events, their distinct payloads and their queued deliveries in one transaction.
    /// Deliveries are queued only to webhooks that are still enabled at commit. A producer key
    /// accepted before `key_cutoff` is free again; one taken meanwhile is a `Conflict` and
    /// nothing is stored.
    async fn publish_events(
        &self,
        tenant: &TenantId,
        events: &[NewEvent],
        key_cutoff: OffsetDateTime,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<()>;

    /// Publishes like [`Store::publish_events`], but stores the deliveries leased to `lease`
    /// (the publishing instance hands them to its engine at once, without a claim) and returns
    /// them. Other instances are not told: the work is taken. `audit` is recorded with them.
    async fn publish_leased(
        &self,
        tenant: &TenantId,
        events: &[NewEvent],
        key_cutoff: OffsetDateTime,
        lease: &PublishLease,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Vec<LeasedDelivery>>;

    /// One event of the tenant.
    async fn event(&self, tenant: &TenantId, id: &EventId) -> StoreResult<Option<StoredEvent>>;

    /// Those of the events `ids` that are stored, in no particular order.
    async fn events(&self, tenant: &TenantId, ids: &[EventId]) -> StoreResult<Vec<StoredEvent>>;

    /// The deliveries of one event, by webhook id.
    async fn deliveries_of_event(
        &self,
        tenant: &TenantId,
        event_id: &EventId,
    ) -> StoreResult<Vec<QueuedDelivery>>;
}
