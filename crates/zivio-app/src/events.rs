//! Publishing events (docs/product.md §3, §5): validate, deduplicate by producer key, fan out to
//! the webhooks whose subscription matches and whose active owner may see the resource, shape one
//! payload per distinct access profile, and store everything in one transaction. A 202 is only
//! answered after that commit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zivio_core::access::{Access, ResourceMeta};
use zivio_core::catalog::Catalog;
use zivio_core::directory::Placement;
use zivio_core::event::{EventId, envelope, fingerprint};
use zivio_core::ids::{TenantId, UserId};
use zivio_core::shaping::{ShapeProfile, shape};
use zivio_core::subscription::EventFilter;
use zivio_core::webhook::WebhookId;
use zivio_store::{ClaimedDelivery, LeasedDelivery, NewEvent, StoreError};

use crate::{AppError, AppResult, FieldError, Services, random, unix_millis};

mod fanout;

use fanout::Fanout;
pub use fanout::FanoutCache;

/// At most this many events in one batch.
pub const MAX_BATCH: usize = 1_000;
const MAX_KEY_LENGTH: usize = 255;

/// One event as the platform publishes it.
#[derive(Debug, Clone)]
pub struct EventInput {
    pub key: Option<String>,
    pub event_type: String,
    pub occurred_at: Option<String>,
    pub resource_id: String,
    pub placement: Placement,
    pub owner_ids: Vec<String>,
    pub data: Value,
}

/// A validated event, ready for fan-out.
pub struct Accepted {
    key: Option<String>,
    event_type: String,
    collection: String,
    occurred_at: OffsetDateTime,
    resource_id: String,
    meta: ResourceMeta,
    data: Value,
    /// Only with a producer key (nothing else compares it).
    fingerprint: Option<[u8; 32]>,
}

/// Publishes one event (`batch` false) or a batch; returns the event ids in input order.
/// Nothing of a refused batch is stored.
pub async fn publish(
    services: &Services,
    tenant: &str,
    inputs: Vec<EventInput>,
    batch: bool,
) -> AppResult<Vec<EventId>> {
    let tenant = crate::directory::existing_tenant(tenant)?;
    let now = services.now();
    let accepted = accept(services.catalog, inputs, batch, now)?;
    let events = accepted.iter().map(|e| (e.event_type.as_str(), &e.data));
    crate::contracts::check(services, events, batch)?;
    let Some(fanout) = Fanout::current(services, &tenant).await? else {
        return Err(AppError::NotFound("tenant"));
    };
    // A concurrent publish may take a key between our check and our commit: look again once.
    if let Some(ids) = store_new(services, &tenant, &fanout, &accepted, now).await? {
        return Ok(ids);
    }
    store_new(services, &tenant, &fanout, &accepted, now)
        .await?
        .ok_or_else(|| {
            AppError::Conflict("A producer key is being used concurrently; retry.".to_owned())
        })
}

/// Validates one event (`batch` false) or a batch without any I/O: every field error at once
/// (batch fields named `events[i].…`), or the events ready for fan-out.
pub fn accept(
    catalog: &Catalog,
    inputs: Vec<EventInput>,
    batch: bool,
    now: OffsetDateTime,
) -> AppResult<Vec<Accepted>> {
    if batch && (inputs.is_empty() || inputs.len() > MAX_BATCH) {
        return Err(AppError::invalid(
            "events",
            format!("must hold 1 to {MAX_BATCH} events"),
        ));
    }
    let field = |index: usize, name: &str| {
        if batch {
            format!("events[{index}].{name}")
        } else {
            name.to_owned()
        }
    };
    let mut errors = Vec::new();
    let accepted: Vec<Option<Accepted>> = inputs
        .into_iter()
        .enumerate()
        .map(|(index, input)| validate(catalog, input, now, &mut errors, |name| field(index, name)))
        .collect();
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    Ok(accepted
        .into_iter()
        .map(|event| event.expect("no errors"))
        .collect())
}

fn validate(
    catalog: &Catalog,
    input: EventInput,
    now: OffsetDateTime,
    errors: &mut Vec<FieldError>,
    field: impl Fn(&str) -> String,
) -> Option<Accepted> {
    let before = errors.len();
    let mut fail = |name: &str, message: &str| errors.push(FieldError::new(field(name), message));
    check_type_and_key(catalog, &input, &mut fail);
    let occurred_at = occurred_at_of(&input, now, &mut fail);
    check_resource(&input, &mut fail);
    let collection = catalog
        .collection_of_type(&input.event_type)
        .map(|c| c.name.clone());
    if errors.len() > before {
        return None;
    }
    let fingerprint = input.key.is_some().then(|| {
        fingerprint(&json!({
            "type": input.event_type,
            "occurred_at": input.occurred_at,
            "resource": {
                "id": input.resource_id,
                "placement": [&input.placement.business_unit, &input.placement.division, &input.placement.department],
                "owner_ids": input.owner_ids,
                "data": input.data,
            },
        }))
    });
    Some(Accepted {
        key: input.key,
        fingerprint,
        collection: collection.expect("catalog types have a collection"),
        event_type: input.event_type,
        occurred_at: truncate_to_millis(occurred_at),
        resource_id: input.resource_id,
        meta: ResourceMeta {
            placement: input.placement,
            owner_ids: input.owner_ids,
        },
        data: input.data,
    })
}

/// The event type is one of the catalog's; a producer key is 1 to 255 characters without
/// control characters.
fn check_type_and_key(catalog: &Catalog, input: &EventInput, fail: &mut impl FnMut(&str, &str)) {
    if catalog.event_type(&input.event_type).is_none() {
        fail(
            "type",
            &format!("`{}` is not an event type of the catalog", input.event_type),
        );
    }
    if let Some(key) = &input.key
        && (key.is_empty()
            || key.chars().count() > MAX_KEY_LENGTH
            || key.chars().any(char::is_control))
    {
        fail(
            "key",
            "must be 1 to 255 characters without control characters",
        );
    }
}

/// When the event occurred: `occurred_at` if given (RFC 3339, in UTC), otherwise `now`.
fn occurred_at_of(
    input: &EventInput,
    now: OffsetDateTime,
    fail: &mut impl FnMut(&str, &str),
) -> OffsetDateTime {
    match &input.occurred_at {
        None => now,
        Some(text) => match OffsetDateTime::parse(text, &Rfc3339) {
            Ok(at) => at.to_offset(time::UtcOffset::UTC),
            Err(_) => {
                fail(
                    "occurred_at",
                    "must be an RFC 3339 time such as 2026-03-14T09:30:00Z",
                );
                now
            }
        },
    }
}

/// The resource: an id of 1 to 255 characters, placement levels null or non-empty, owner ids
/// non-empty, data an object.
fn check_resource(input: &EventInput, fail: &mut impl FnMut(&str, &str)) {
    if input.resource_id.is_empty() || input.resource_id.chars().count() > MAX_KEY_LENGTH {
        fail("resource.id", "must be 1 to 255 characters");
    }
    for (name, level) in [
        (
            "resource.placement.business_unit",
            &input.placement.business_unit,
        ),
        ("resource.placement.division", &input.placement.division),
        ("resource.placement.department", &input.placement.department),
    ] {
        if level.as_ref().is_some_and(String::is_empty) {
            fail(name, "must be null or a non-empty string");
        }
    }
    if let Some(index) = input.owner_ids.iter().position(String::is_empty) {
        fail(&format!("resource.owner_ids[{index}]"), "must not be empty");
    }
    if !input.data.is_object() {
        fail("resource.data", "must be an object");
    }
}

/// Resolves producer keys (earlier events and repeats inside the batch), fans out the rest
/// and stores them. `None`: a key was taken by a concurrent publish before the commit.
async fn store_new(
    services: &Services,
    tenant: &TenantId,
    fanout: &Arc<Fanout>,
    events: &[Accepted],
    now: OffsetDateTime,
) -> AppResult<Option<Vec<EventId>>> {
    let retention =
        time::Duration::try_from(services.settings.retention).unwrap_or(time::Duration::MAX);
    let cutoff = now
        .checked_sub(retention)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let keys: Vec<String> = events
        .iter()
        .filter_map(|event| event.key.clone())
        .collect();
    let mut known: HashMap<String, (EventId, Vec<u8>)> = services
        .store
        .events_by_key(tenant, &keys)
        .await?
        .into_iter()
        .filter(|event| event.accepted_at >= cutoff)
        .map(|event| (event.key, (event.id, event.fingerprint)))
        .collect();
    let mut ids = Vec::with_capacity(events.len());
    let mut new = Vec::new();
    for (index, event) in events.iter().enumerate() {
        if let Some(key) = &event.key
            && let Some((id, stored)) = known.get(key)
        {
            if event
                .fingerprint
                .is_none_or(|print| stored.as_slice() != print.as_slice())
            {
                return Err(AppError::Conflict(format!(
                    "Event {index} reuses producer key `{key}` of event {id} with different content."
                )));
            }
            ids.push(id.clone());
            continue;
        }
        let id = EventId::new(unix_millis(now), random());
        if let Some(key) = &event.key {
            let print = event
                .fingerprint
                .map(|print| print.to_vec())
                .unwrap_or_default();
            known.insert(key.clone(), (id.clone(), print));
        }
        new.push(fanout.event(services, &id, event, now));
        ids.push(id);
    }
    if new.is_empty() {
        return Ok(Some(ids));
    }
    match commit_new(services, tenant, fanout, new, cutoff, now).await {
        Ok(()) => Ok(Some(ids)),
        Err(StoreError::Conflict { .. }) => Ok(None),
        Err(other) => Err(other.into()),
    }
}

/// Commits new events; their deliveries are handed to this instance's engine when it has room
/// for them, otherwise left to be claimed.
async fn commit_new(
    services: &Services,
    tenant: &TenantId,
    fanout: &Arc<Fanout>,
    new: Vec<NewEvent>,
    cutoff: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let deliveries = new
        .iter()
        .map(|event| event.deliveries.len())
        .sum::<usize>();
    if deliveries == 0 {
        return services
            .store
            .publish_events(tenant, &new, cutoff, None)
            .await;
    }
    match services.handoff.reserve(now, deliveries) {
        Some(reservation) => {
            // Run to the end even if the request is dropped meanwhile: committed work must
            // reach the engine, or it would wait for its lease to expire.
            let (store, tenant, fanout) = (services.store.clone(), tenant.clone(), fanout.clone());
            tokio::spawn(async move {
                let leased = store
                    .publish_leased(&tenant, &new, cutoff, &reservation.lease, None)
                    .await?;
                reservation.hand_over(fanout.claimed(&tenant, &new, leased));
                Ok(())
            })
            .await
            .unwrap_or_else(|error| Err(StoreError::Commit(format!("publishing stopped: {error}"))))
        }
        None => {
            let stored = services
                .store
                .publish_events(tenant, &new, cutoff, None)
                .await;
            if stored.is_ok() {
                services.deliveries_queued.notify_one();
            }
            stored
        }
    }
}

/// The request body for one access profile: the event's envelope around the shaped data.
pub(crate) fn shaped_envelope(
    services: &Services,
    profile: &ShapeProfile,
    collection: &str,
    id: &str,
    event_type: &str,
    occurred_at: OffsetDateTime,
    data: &Value,
) -> Vec<u8> {
    let data = shape(services.catalog, collection, data, profile);
    envelope(id, event_type, occurred_at, &data)
}

/// The resource as published, stored with the event so that a resend can be shaped again with
/// the owner's access at that time.
pub(crate) struct Source {
    pub meta: ResourceMeta,
    pub data: Value,
}

impl Source {
    fn encode(meta: &ResourceMeta, data: &Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "placement": {
                "business_unit": meta.placement.business_unit,
                "division": meta.placement.division,
                "department": meta.placement.department,
            },
            "owner_ids": meta.owner_ids,
            "data": data,
        }))
        .expect("JSON values serialise")
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let value: Value = serde_json::from_slice(bytes).ok()?;
        let level = |name: &str| value["placement"][name].as_str().map(str::to_owned);
        Some(Self {
            meta: ResourceMeta {
                placement: Placement {
                    business_unit: level("business_unit"),
                    division: level("division"),
                    department: level("department"),
                },
                owner_ids: value["owner_ids"]
                    .as_array()?
                    .iter()
                    .map(|id| id.as_str().map(str::to_owned))
                    .collect::<Option<_>>()?,
            },
            data: value.get("data")?.clone(),
        })
    }
}

/// A `webhook.test` event for one webhook: `{"test": true}`, a fresh `evt_test_` id, queued even
/// while the webhook is disabled.
pub(crate) fn test_event(webhook: &WebhookId, now: OffsetDateTime) -> NewEvent {
    let id = EventId::new_test(unix_millis(now), random());
    let data = json!({"test": true});
    NewEvent {
        payloads: vec![envelope(id.as_str(), TEST_EVENT_TYPE, now, &data)],
        deliveries: vec![(webhook.clone(), 0)],
        fingerprint: None,
        event_type: TEST_EVENT_TYPE.to_owned(),
        occurred_at: now,
        accepted_at: now,
        key: None,
        resource_id: webhook.to_string(),
        source: None,
        is_test: true,
        resend_of: None,
        id,
    }
}

/// The type of test events; not in the catalog, so nobody can subscribe to it.
pub use zivio_core::catalog::TEST_EVENT_TYPE;

fn truncate_to_millis(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_millisecond(at.millisecond()).unwrap_or(at)
}
