//! The delivery queue: leasing due work, checking it before a send, giving it back; the claim's
//! statements differ per backend (`SKIP LOCKED` on PostgreSQL): `CLAIM` and `TAKE_OVER_ENDED_LEASES`.

use sqlx::Row as _;
use time::OffsetDateTime;
use zivio_core::delivery::{DeliveryState, QueueEntryId};
use zivio_core::event::EventId;
use zivio_core::ids::TenantId;
use zivio_core::webhook::{WebhookId, may_send};

use crate::{
    AttemptRecord, ClaimedDelivery, StoreResult, attempt_id, event_id, stored, webhook_id,
};

use super::{CLAIM, Connection, Db, DbTime, Pool, Row, TAKE_OVER_ENDED_LEASES, from_db, to_db};

pub(crate) async fn claim(
    tx: &mut Connection,
    lease: &str,
    now: OffsetDateTime,
    lease_until: OffsetDateTime,
    limit: u32,
    per_webhook: u32,
    skip: &[WebhookId],
) -> StoreResult<Vec<(ClaimedDelivery, bool)>> {
    let skip = serde_json::to_string(&skip.iter().map(WebhookId::as_str).collect::<Vec<_>>())
        .expect("strings serialise");
    // Ended leases first (a share at a time), then free deliveries. Only what this claim
    // takes leaves its holder: a stalled holder that records late records the rest.
    let taken_over = sqlx::query(TAKE_OVER_ENDED_LEASES)
        .bind(lease)
        .bind(to_db(now))
        .bind(to_db(lease_until))
        .bind(i64::from(limit.min(per_webhook)))
        .bind(&skip)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let limit = u64::from(limit).saturating_sub(taken_over);
    if limit > 0 {
        sqlx::query(CLAIM)
            .bind(lease)
            .bind(to_db(now))
            .bind(to_db(lease_until))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(&skip)
            .bind(i64::from(per_webhook))
            .execute(&mut *tx)
            .await?;
    }
    // Planned per token: a generic plan would read every held delivery (tests/plans.rs).
    let rows = sqlx::query(crate::common::claims::CLAIMED)
        .persistent(false)
        .bind(lease)
        .fetch_all(&mut *tx)
        .await?;
    let mut claimed = Vec::with_capacity(rows.len());
    for row in rows {
        let id = QueueEntryId(row.get("id"));
        let decoded = claimed_from_row(&row, id, now);
        match decoded {
            Ok(delivery) => {
                let may_send = may_send(
                    row.get("enabled"),
                    &delivery.event_type,
                    row.get("owner_active"),
                );
                claimed.push((delivery, may_send));
            }
            Err(error) => {
                // One corrupt row must not stop every other delivery: it fails alone.
                tracing::error!(delivery = id.0, error = %error, "a queued delivery cannot be read; marked failed");
                sqlx::query("UPDATE deliveries SET state = 'failed', next_attempt_at = NULL, lease_owner = NULL WHERE id = $1")
                    .bind(id.0)
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    Ok(claimed)
}

/// A claimed delivery as `CLAIMED` reads it (`now` stands in for a missing due time).
fn claimed_from_row(
    row: &Row,
    id: QueueEntryId,
    now: OffsetDateTime,
) -> StoreResult<ClaimedDelivery> {
    Ok(ClaimedDelivery {
        id,
        tenant: stored(TenantId::parse(row.get("tenant_id")))?,
        webhook_id: webhook_id(row.get("webhook_id"))?,
        url: row.get("url"),
        secret_ciphertext: row.get("secret_ciphertext"),
        headers: stored(zivio_core::custom_header::decode(row.get("custom_headers")))?,
        rate_limit: crate::common::rate_limit_of(row.get("rate_limit"))?,
        due_at: row
            .get::<Option<DbTime>, _>("next_attempt_at")
            .map(from_db)
            .unwrap_or(now),
        event_id: event_id(row.get("event_id"))?,
        event_type: row.get("type"),
        attempt: u32::try_from(row.get::<i32, _>("attempts")).unwrap_or(0) + 1,
        body: bytes::Bytes::from(row.get::<Vec<u8>, _>("body")),
        generation: None,
        background: false,
    })
}

/// The webhook's current URL and secret, and whether it may still send (enabled or a test
/// event, owner active); `None` when the delivery is no longer pending under this lease.
/// The webhook's current URL and sealed secret for a delivery leased to `lease`, whether
/// it may be sent (webhook enabled or a test event, owner active), and until when the
/// lease runs.
pub(crate) async fn current_target(
    pool: &Pool,
    lease: &str,
    delivery: QueueEntryId,
) -> StoreResult<Option<crate::SendTarget>> {
    Ok(current_targets(pool, &[(lease.to_owned(), delivery)])
        .await?
        .remove(&delivery))
}

/// [`current_target`] for many deliveries in one statement per chunk: those still pending
/// under the given lease, by id.
pub(crate) async fn current_targets(
    pool: &Pool,
    deliveries: &[(String, QueueEntryId)],
) -> StoreResult<std::collections::HashMap<QueueEntryId, crate::SendTarget>> {
    let mut targets = std::collections::HashMap::with_capacity(deliveries.len());
    for chunk in crate::common::fixed_chunks(deliveries) {
        let mut select = targets_statement("", chunk);
        for row in select.build().fetch_all(pool).await? {
            let pending = DeliveryState::parse(row.get("state")) == Some(DeliveryState::Pending);
            if !pending || !row.get::<Option<bool>, _>("ours").unwrap_or(false) {
                continue;
            }
            let id = QueueEntryId(row.get("id"));
            let headers = stored(zivio_core::custom_header::decode(row.get("custom_headers")));
            let (Ok(headers), Ok(rate_limit)) =
                (headers, crate::common::rate_limit_of(row.get("rate_limit")))
            else {
                // Left to its lease: the claim after it marks the delivery failed.
                tracing::error!(
                    delivery = id.0,
                    "a webhook's headers or rate limit cannot be read"
                );
                continue;
            };
            targets.insert(
                id,
                crate::SendTarget {
                    webhook_id: row.get("webhook_id"),
                    url: row.get("url"),
                    secret_ciphertext: row.get("secret_ciphertext"),
                    headers,
                    rate_limit,
                    may_send: may_send(
                        row.get("enabled"),
                        row.get("event_type"),
                        row.get::<Option<bool>, _>("owner_active").unwrap_or(false),
                    ),
                    leased_until: row
                        .get::<Option<DbTime>, _>("lease_expires_at")
                        .map(from_db)
                        .unwrap_or(OffsetDateTime::UNIX_EPOCH),
                },
            );
        }
    }
    Ok(targets)
}

/// The pre-send read of a chunk of `(lease, delivery)`, behind `prefix` (`EXPLAIN` in tests).
pub(crate) fn targets_statement(
    prefix: &str,
    chunk: &[(String, QueueEntryId)],
) -> sqlx::QueryBuilder<Db> {
    let mut select = sqlx::QueryBuilder::<Db>::new(format!("{prefix}WITH v (id, lease) AS ("));
    select.push_values(chunk, |mut row, (lease, id)| {
        row.push_bind(id.0).push_bind(lease.as_str());
    });
    // Looked up by id only, state and lease compared here: a constant state would let
    // PostgreSQL scan every pending delivery instead (see `record_attempt_rows`).
    select.push(
        ") SELECT d.id, d.webhook_id, d.state, d.lease_owner = v.lease AS ours, w.url,
                  w.secret_ciphertext, w.custom_headers, w.rate_limit,
                  w.enabled, e.type AS event_type,
                  u.active AS owner_active, d.lease_expires_at
           FROM v
           JOIN deliveries d ON d.id = v.id
           JOIN events e ON e.id = d.event_id
           JOIN webhooks w ON w.id = d.webhook_id
           LEFT JOIN users u ON u.tenant_id = w.tenant_id AND u.id = w.owner_id",
    );
    select
}

/// Extends a live lease; `false` when it was lost or has expired.
pub(crate) async fn renew(
    tx: &mut Connection,
    lease: &str,
    delivery: QueueEntryId,
    now: OffsetDateTime,
    lease_until: OffsetDateTime,
) -> StoreResult<bool> {
    let renewed = sqlx::query(
        "UPDATE deliveries SET lease_expires_at = $4
         WHERE id = $1 AND lease_owner = $2 AND state = 'pending' AND lease_expires_at > $3",
    )
    .bind(delivery.0)
    .bind(lease)
    .bind(to_db(now))
    .bind(to_db(lease_until))
    .execute(&mut *tx)
    .await?;
    Ok(renewed.rows_affected() == 1)
}

/// [`renew`] for many deliveries, `(lease, delivery)` each, of the given (sorted)
/// webhooks, which are locked first; returns those renewed.
pub(crate) async fn renew_many(
    tx: &mut Connection,
    deliveries: &[(String, QueueEntryId)],
    webhooks: &[&str],
    now: OffsetDateTime,
    lease_until: OffsetDateTime,
) -> StoreResult<std::collections::HashSet<QueueEntryId>> {
    super::records::lock_webhooks(&mut *tx, webhooks).await?;
    let mut renewed = std::collections::HashSet::new();
    for chunk in crate::common::fixed_chunks(deliveries) {
        // State through `v`, for the reason given in `record_attempt_rows`.
        let mut update = sqlx::QueryBuilder::<Db>::new("WITH v (id, lease, pending) AS (");
        update.push_values(chunk, |mut row, (lease, id)| {
            row.push_bind(id.0)
                .push_bind(lease.as_str())
                .push_bind(DeliveryState::Pending.as_str());
        });
        update
            .push(") UPDATE deliveries SET lease_expires_at = ")
            .push_bind(to_db(lease_until))
            .push(
                " FROM v WHERE deliveries.id = v.id AND deliveries.lease_owner = v.lease
                   AND deliveries.state = v.pending AND deliveries.lease_expires_at > ",
            )
            .push_bind(to_db(now))
            .push(" RETURNING deliveries.id");
        let ids: Vec<i64> = update.build_query_scalar().fetch_all(&mut *tx).await?;
        renewed.extend(ids.into_iter().map(QueueEntryId));
    }
    Ok(renewed)
}

pub(crate) async fn cancel(
    tx: &mut Connection,
    lease: &str,
    delivery: QueueEntryId,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE deliveries SET state = 'cancelled', next_attempt_at = NULL, lease_owner = NULL,
             lease_expires_at = NULL
         WHERE id = $1 AND lease_owner = $2 AND state = 'pending'",
    )
    .bind(delivery.0)
    .bind(lease)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Gives deliveries still pending under `lease` back to the queue, one statement per
/// chunk.
pub(crate) async fn release(
    tx: &mut Connection,
    lease: &str,
    ids: &[QueueEntryId],
) -> StoreResult<()> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    for chunk in crate::common::fixed_chunks(&ids) {
        let mut update = sqlx::QueryBuilder::<Db>::new(
            "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL
             WHERE state = 'pending' AND lease_owner = ",
        );
        update.push_bind(lease).push(" AND id IN (");
        let mut list = update.separated(", ");
        for id in chunk {
            list.push_bind(id.0);
        }
        update.push(")");
        update.build().execute(&mut *tx).await?;
    }
    Ok(())
}

pub(crate) async fn release_all(tx: &mut Connection) -> StoreResult<u64> {
    let released = sqlx::query(
        "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner IS NOT NULL",
    )
    .execute(&mut *tx)
    .await?;
    Ok(released.rows_affected())
}

pub(crate) async fn next_due(pool: &Pool) -> StoreResult<Option<OffsetDateTime>> {
    let due: Option<DbTime> = sqlx::query_scalar(crate::common::claims::NEXT_DUE)
        .fetch_one(pool)
        .await?;
    Ok(due.map(from_db))
}

pub(crate) async fn pending(pool: &Pool) -> StoreResult<i64> {
    Ok(pending_statement("")
        .build_query_scalar()
        .fetch_one(pool)
        .await?)
}

/// The count of pending deliveries, behind `prefix` (`EXPLAIN` in tests).
pub(crate) fn pending_statement(prefix: &str) -> sqlx::QueryBuilder<Db> {
    sqlx::QueryBuilder::<Db>::new(format!(
        "{prefix}SELECT count(*) FROM deliveries WHERE state = 'pending'"
    ))
}

fn attempt_from_row(row: &Row) -> StoreResult<AttemptRecord> {
    Ok(AttemptRecord {
        id: attempt_id(row.get("id"))?,
        queue_entry: QueueEntryId(row.get("delivery_id")),
        tenant: stored(TenantId::parse(row.get("tenant_id")))?,
        webhook_id: webhook_id(row.get("webhook_id"))?,
        event_id: event_id(row.get("event_id"))?,
        event_type: row.get("event_type"),
        attempt: u32::try_from(row.get::<i32, _>("attempt")).unwrap_or(0),
        succeeded: row.get("succeeded"),
        request_url: row.get("request_url"),
        request_headers: row.get("request_headers"),
        response_status: row
            .get::<Option<i32>, _>("response_status")
            .and_then(|s| u16::try_from(s).ok()),
        response_headers: row.get("response_headers"),
        response_body: row.get("response_body"),
        response_truncated: row.get("response_truncated"),
        duration_ms: row.get("duration_ms"),
        error_kind: crate::common::error_kind_of(row.get("error_kind")),
        error_detail: row.get("error_detail"),
        created_at: from_db(row.get::<DbTime, _>("created_at")),
        next_attempt_at: row.get::<Option<DbTime>, _>("next_attempt_at").map(from_db),
    })
}

/// An event's attempts to one webhook. Both its attempts and its delivery name the event:
/// SQLite reads its index of attempts by event, PostgreSQL the delivery's attempts.
pub(crate) async fn attempts_of(
    pool: &Pool,
    tenant: &TenantId,
    event_id: &EventId,
    webhook: &WebhookId,
) -> StoreResult<Vec<AttemptRecord>> {
    let rows = sqlx::query(
        "SELECT id, delivery_id, tenant_id, webhook_id, event_id, event_type, attempt, succeeded,
                request_url, request_headers, response_status, response_headers, response_body,
                response_truncated, duration_ms, error_kind, error_detail, created_at, next_attempt_at
         FROM delivery_attempts
         WHERE tenant_id = $1 AND event_id = $2 AND webhook_id = $3
           AND delivery_id = (SELECT id FROM deliveries WHERE event_id = $2 AND webhook_id = $3)
         ORDER BY attempt",
    )
    .bind(tenant.as_str())
    .bind(event_id.as_str())
    .bind(webhook.as_str())
    .fetch_all(pool)
    .await?;
    rows.iter().map(attempt_from_row).collect()
}
