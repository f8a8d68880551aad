//! Events, payloads and the queue rows a publish creates.

use sqlx::Row as _;
use time::OffsetDateTime;
use zivio_core::delivery::QueueEntryId;
use zivio_core::event::EventId;
use zivio_core::ids::TenantId;

use crate::{
    KeyedEvent, LeasedDelivery, NewEvent, PublishLease, QueuedDelivery, StoreError, StoreResult,
    StoredEvent, conflict_on_unique, delivery_state, event_id, webhook_id,
};

use super::{Connection, Db, DbTime, INSERT_PAYLOADS, PAYLOAD_IDS, Pool, Row, from_db, to_db};

pub(crate) async fn events_by_key(
    pool: &Pool,
    tenant: &TenantId,
    keys: &[String],
) -> StoreResult<Vec<KeyedEvent>> {
    let mut found = Vec::new();
    for key in keys {
        let row = sqlx::query(
            "SELECT id, fingerprint, accepted_at FROM events WHERE tenant_id = $1 AND producer_key = $2",
        )
        .bind(tenant.as_str())
        .bind(key)
        .fetch_optional(pool)
        .await?;
        if let Some(row) = row {
            found.push(KeyedEvent {
                key: key.clone(),
                id: event_id(row.get("id"))?,
                fingerprint: row.get("fingerprint"),
                accepted_at: from_db(row.get::<DbTime, _>("accepted_at")),
            });
        }
    }
    Ok(found)
}

/// Stores a batch of events with their payloads and queued deliveries in a few multi-row
/// statements (a handful per chunk, whatever the batch's size): producer keys older than
/// `key_cutoff` are freed, events inserted (a key still taken is a conflict), payload ids
/// drawn in advance so that deliveries can name them, payloads and deliveries inserted.
/// With a `lease`, the deliveries are stored leased to it and returned.
pub(crate) async fn insert_events(
    tx: &mut Connection,
    tenant: &TenantId,
    batch: &[NewEvent],
    key_cutoff: OffsetDateTime,
    lease: Option<&PublishLease>,
) -> StoreResult<Vec<LeasedDelivery>> {
    free_expired_keys(&mut *tx, tenant, batch, key_cutoff).await?;
    insert_event_rows(&mut *tx, tenant, batch).await?;
    let count = batch
        .iter()
        .map(|event| event.payloads.len())
        .sum::<usize>();
    if count == 0 {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = sqlx::query_scalar(PAYLOAD_IDS)
        .bind(i64::try_from(count).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
    if ids.len() != count {
        return Err(StoreError::Corrupt(format!(
            "{} payload ids drawn for {count}",
            ids.len()
        )));
    }
    let (payloads, deliveries) = rows_of(batch, &ids)?;
    for chunk in crate::common::fixed_chunks(&payloads) {
        let mut insert = sqlx::QueryBuilder::<Db>::new(INSERT_PAYLOADS);
        insert.push_values(chunk, |mut row, payload| {
            row.push_bind(payload.id)
                .push_bind(payload.event_id)
                .push_bind(payload.body);
        });
        insert.build().execute(&mut *tx).await?;
    }
    let mut leased = Vec::new();
    for chunk in crate::common::fixed_chunks(&deliveries) {
        leased.extend(insert_deliveries(&mut *tx, tenant, chunk, lease).await?);
    }
    Ok(leased)
}

/// A payload row to insert, its id drawn in advance.
struct PayloadRow<'a> {
    id: i64,
    event_id: &'a str,
    body: &'a [u8],
}

/// A delivery row to insert: an event's payload queued for a webhook.
pub(crate) struct DeliveryRow<'a> {
    pub(crate) webhook_id: &'a str,
    pub(crate) event_id: &'a str,
    pub(crate) payload_id: i64,
    pub(crate) accepted_at: OffsetDateTime,
    pub(crate) is_test: bool,
}

/// Frees the batch's producer keys that are older than the retention window.
async fn free_expired_keys(
    tx: &mut Connection,
    tenant: &TenantId,
    batch: &[NewEvent],
    key_cutoff: OffsetDateTime,
) -> StoreResult<()> {
    let keys: Vec<&str> = batch
        .iter()
        .filter_map(|event| event.key.as_deref())
        .collect();
    for chunk in crate::common::fixed_chunks(&keys) {
        let mut free = sqlx::QueryBuilder::<Db>::new(
            "UPDATE events SET producer_key = NULL WHERE tenant_id = ",
        );
        free.push_bind(tenant.as_str())
            .push(" AND accepted_at < ")
            .push_bind(to_db(key_cutoff))
            .push(" AND producer_key IN (");
        let mut list = free.separated(", ");
        for key in chunk {
            list.push_bind(*key);
        }
        free.push(")");
        free.build().execute(&mut *tx).await?;
    }
    Ok(())
}

/// Inserts the events themselves; a producer key still taken is a conflict.
async fn insert_event_rows(
    tx: &mut Connection,
    tenant: &TenantId,
    batch: &[NewEvent],
) -> StoreResult<()> {
    for chunk in crate::common::fixed_chunks(batch) {
        let mut insert = sqlx::QueryBuilder::<Db>::new(
            "INSERT INTO events (id, tenant_id, type, occurred_at, accepted_at, producer_key,
                                 fingerprint, resource_id, source, resend_of) ",
        );
        insert.push_values(chunk, |mut row, event| {
            row.push_bind(event.id.as_str())
                .push_bind(tenant.as_str())
                .push_bind(event.event_type.as_str())
                .push_bind(to_db(event.occurred_at))
                .push_bind(to_db(event.accepted_at))
                .push_bind(event.key.as_deref())
                .push_bind(
                    event
                        .fingerprint
                        .as_ref()
                        .map_or(&[][..], |print| print.as_slice()),
                )
                .push_bind(event.resource_id.as_str())
                .push_bind(event.source.as_deref())
                .push_bind(event.resend_of.as_ref().map(EventId::as_str));
        });
        insert.build().execute(&mut *tx).await.map_err(|error| {
            match conflict_on_unique(error, "producer key") {
                StoreError::NotFound { .. } => StoreError::NotFound { what: "tenant" },
                other => other,
            }
        })?;
    }
    Ok(())
}

/// Each event's payloads, in order, under the `ids` drawn for them, and its deliveries naming
/// them.
fn rows_of<'a>(
    batch: &'a [NewEvent],
    ids: &[i64],
) -> StoreResult<(Vec<PayloadRow<'a>>, Vec<DeliveryRow<'a>>)> {
    let mut payloads = Vec::with_capacity(ids.len());
    let mut deliveries = Vec::new();
    let mut next = ids.iter();
    for event in batch {
        let first = payloads.len();
        for body in &event.payloads {
            let id = *next.next().expect("as many ids as payloads");
            payloads.push(PayloadRow {
                id,
                event_id: event.id.as_str(),
                body: body.as_slice(),
            });
        }
        for (webhook, payload) in &event.deliveries {
            let payload_row = payloads
                .get(first + payload)
                .filter(|_| *payload < event.payloads.len())
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("payload index {payload} out of range"))
                })?;
            deliveries.push(DeliveryRow {
                webhook_id: webhook.as_str(),
                event_id: event.id.as_str(),
                payload_id: payload_row.id,
                accepted_at: event.accepted_at,
                is_test: event.is_test,
            });
        }
    }
    Ok((payloads, deliveries))
}

/// Inserts a chunk of deliveries, leased to `lease` if given (and then returned). A webhook
/// disabled or deleted, or whose owner became inactive, since the fan-out was computed gets
/// nothing (the engine checks again before sending); a test event reaches a disabled webhook
/// too.
async fn insert_deliveries(
    tx: &mut Connection,
    tenant: &TenantId,
    chunk: &[DeliveryRow<'_>],
    lease: Option<&PublishLease>,
) -> StoreResult<Vec<LeasedDelivery>> {
    let mut insert = deliveries_statement("", tenant, chunk, lease);
    if lease.is_none() {
        insert.build().execute(&mut *tx).await?;
        return Ok(Vec::new());
    }
    insert.push(" RETURNING id, webhook_id, event_id");
    let mut leased = Vec::new();
    for row in insert.build().fetch_all(&mut *tx).await? {
        leased.push(LeasedDelivery {
            id: QueueEntryId(row.get("id")),
            webhook_id: webhook_id(row.get("webhook_id"))?,
            event_id: event_id(row.get("event_id"))?,
        });
    }
    Ok(leased)
}

/// The insert of a chunk of deliveries, behind `prefix` (`EXPLAIN` in tests), leased to `lease`
/// if given.
pub(crate) fn deliveries_statement(
    prefix: &str,
    tenant: &TenantId,
    chunk: &[DeliveryRow<'_>],
    lease: Option<&PublishLease>,
) -> sqlx::QueryBuilder<Db> {
    let (lease_owner, lease_until) = match lease {
        Some(lease) => (Some(lease.token.as_str()), Some(to_db(lease.until))),
        None => (None, None),
    };
    let mut insert = sqlx::QueryBuilder::<Db>::new(format!(
        "{prefix}WITH v (webhook_id, event_id, payload_id, accepted_at, is_test) AS ("
    ));
    insert.push_values(chunk, |mut row, delivery| {
        row.push_bind(delivery.webhook_id)
            .push_bind(delivery.event_id)
            .push_bind(delivery.payload_id)
            .push_bind(to_db(delivery.accepted_at))
            .push_bind(delivery.is_test);
    });
    insert
        .push(
            ") INSERT INTO deliveries (tenant_id, webhook_id, event_id, payload_id, state,
                                      attempts, next_attempt_at, created_at,
                                      lease_owner, lease_expires_at)
             SELECT w.tenant_id, v.webhook_id, v.event_id, v.payload_id, 'pending', 0,
                    v.accepted_at, v.accepted_at, ",
        )
        .push_bind(lease_owner)
        .push(", ")
        .push_bind(lease_until)
        .push(
            " FROM v
             JOIN webhooks w ON w.id = v.webhook_id
             JOIN users u ON u.tenant_id = w.tenant_id AND u.id = w.owner_id
             WHERE w.tenant_id = ",
        )
        .push_bind(tenant.as_str())
        .push(" AND (w.enabled OR v.is_test) AND u.active");
    insert
}

pub(crate) async fn event(
    pool: &Pool,
    tenant: &TenantId,
    id: &EventId,
) -> StoreResult<Option<StoredEvent>> {
    let row = sqlx::query(
        "SELECT id, type, occurred_at, resource_id, source FROM events WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.as_str())
    .bind(id.as_str())
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(stored_event_from_row).transpose()
}

fn stored_event_from_row(row: &Row) -> StoreResult<StoredEvent> {
    Ok(StoredEvent {
        id: event_id(row.get("id"))?,
        event_type: row.get("type"),
        occurred_at: from_db(row.get::<DbTime, _>("occurred_at")),
        resource_id: row.get("resource_id"),
        source: row.get("source"),
    })
}

pub(crate) async fn events(
    pool: &Pool,
    tenant: &TenantId,
    ids: &[EventId],
) -> StoreResult<Vec<StoredEvent>> {
    let mut found = Vec::with_capacity(ids.len());
    for chunk in crate::common::fixed_chunks(ids) {
        let mut select = sqlx::QueryBuilder::<Db>::new(
            "SELECT id, type, occurred_at, resource_id, source FROM events WHERE tenant_id = ",
        );
        select.push_bind(tenant.as_str()).push(" AND id IN (");
        let mut list = select.separated(", ");
        for id in chunk {
            list.push_bind(id.as_str());
        }
        select.push(")");
        for row in select.build().fetch_all(pool).await? {
            found.push(stored_event_from_row(&row)?);
        }
    }
    Ok(found)
}

pub(crate) async fn deliveries_of_event(
    pool: &Pool,
    tenant: &TenantId,
    event: &EventId,
) -> StoreResult<Vec<QueuedDelivery>> {
    let rows = sqlx::query(
        "SELECT d.webhook_id, d.state, p.body FROM deliveries d JOIN payloads p ON p.id = d.payload_id
         WHERE d.tenant_id = $1 AND d.event_id = $2 ORDER BY d.webhook_id",
    )
    .bind(tenant.as_str())
    .bind(event.as_str())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(QueuedDelivery {
                webhook_id: webhook_id(row.get("webhook_id"))?,
                state: delivery_state(row.get("state"))?,
                body: row.get("body"),
            })
        })
        .collect()
}
