//! A resend: a stored event sent again to one webhook as a new event (new id, same type and
//! `occurred_at`), shaped from its stored source with the owner's access now. Shared by single
//! resends and recoveries.

use time::OffsetDateTime;
use zivio_core::access::Access;
use zivio_core::event::EventId;
use zivio_core::shaping::ShapeProfile;
use zivio_core::webhook::WebhookId;
use zivio_store::{NewEvent, StoredEvent};

use crate::events::{Source, shaped_envelope};
use crate::{Services, random, unix_millis};

/// Why an event is not resent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotResent {
    /// Retention deleted it (or its source).
    Gone,
    /// The webhook's owner can no longer see the resource.
    NotVisible,
}

/// The resend of the stored event `original` (`None`: no longer stored) to `webhook`, shaped
/// for `owner`.
pub(crate) fn resend_event(
    services: &Services,
    original: Option<StoredEvent>,
    webhook: &WebhookId,
    owner: &Access,
    now: OffsetDateTime,
) -> Result<NewEvent, NotResent> {
    let stored = original.ok_or(NotResent::Gone)?;
    let source = stored.source.as_deref().and_then(Source::decode);
    let collection = services
        .catalog
        .collection_of_type(&stored.event_type)
        .map(|collection| collection.name.clone());
    let (Some(source), Some(collection)) = (source, collection) else {
        return Err(NotResent::Gone);
    };
    if !owner.can_read(&collection, &source.meta) {
        return Err(NotResent::NotVisible);
    }
    let id = EventId::new(unix_millis(now), random());
    let profile = ShapeProfile::of(owner, services.catalog, &collection);
    let body = shaped_envelope(
        services,
        &profile,
        &collection,
        id.as_str(),
        &stored.event_type,
        stored.occurred_at,
        &source.data,
    );
    Ok(NewEvent {
        payloads: vec![body],
        deliveries: vec![(webhook.clone(), 0)],
        fingerprint: None,
        event_type: stored.event_type,
        occurred_at: stored.occurred_at,
        accepted_at: now,
        key: None,
        resource_id: stored.resource_id,
        source: stored.source,
        is_test: false,
        resend_of: Some(stored.id),
        id,
    })
}
