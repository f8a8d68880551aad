//! The deliveries log, webhook health, the mail outbox and retention.

use sqlx::Row as _;
use time::OffsetDateTime;
use zivio_core::delivery::AttemptId;
use zivio_core::ids::TenantId;
use zivio_core::webhook::WebhookId;

use crate::{
    AttemptDetail, AttemptFilter, AttemptSummary, EventTypeFilter, HealthCounts, HourlyCounts,
    OutboxMail, StoreResult, attempt_id, event_id, webhook_id,
};

use super::{Connection, Db, DbTime, Pool, Row, from_db, to_db};
#[cfg(feature = "testing")]
use super::{EXPLAIN, PLAN_COLUMN};

/// The columns of a summary. `next_attempt_at` only while this is the latest attempt of
/// a pending delivery: a cancelled delivery has no next attempt.
const SUMMARY_COLUMNS: &str = "a.id, a.webhook_id, a.event_id, a.event_type, a.attempt, a.succeeded,
    a.response_status, a.duration_ms, a.error_kind, a.error_detail, a.created_at,
    CASE WHEN d.state = 'pending' AND d.attempts = a.attempt THEN d.next_attempt_at END AS next_attempt_at";

fn summary_from_row(row: &Row) -> StoreResult<AttemptSummary> {
    Ok(AttemptSummary {
        id: attempt_id(row.get("id"))?,
        webhook_id: webhook_id(row.get("webhook_id"))?,
        event_id: event_id(row.get("event_id"))?,
        event_type: row.get("event_type"),
        attempt: u32::try_from(row.get::<i32, _>("attempt")).unwrap_or(0),
        succeeded: row.get("succeeded"),
        response_status: row
            .get::<Option<i32>, _>("response_status")
            .and_then(|s| u16::try_from(s).ok()),
        duration_ms: row.get("duration_ms"),
        error_kind: crate::common::error_kind_of(row.get("error_kind")),
        error_detail: row.get("error_detail"),
        created_at: from_db(row.get::<DbTime, _>("created_at")),
        next_attempt_at: row.get::<Option<DbTime>, _>("next_attempt_at").map(from_db),
    })
}

/// One statement per combination of filters, each condition a plain comparison on a
/// column, so that the planner can serve it from an index led by the tenant, in page order.
/// Filters that one index cannot serve in that order are split into legs, each a page read
/// from its index in order, and the legs' pages are merged: a webhook without a status reads
/// its index once per status, a category the type index once per type of the category (none:
/// no type is empty, so an empty category matches nothing). An event's attempts are read by
/// event on SQLite; PostgreSQL, which keeps no such index, finds them through the event's
/// deliveries (a few per webhook) and sorts them.
fn attempts_query(
    tenant: &TenantId,
    filter: &AttemptFilter,
    prefix: &str,
) -> sqlx::QueryBuilder<Db> {
    let statuses = match (&filter.webhook, filter.succeeded) {
        (_, Some(succeeded)) => vec![Some(succeeded)],
        (Some(_), None) => vec![Some(true), Some(false)],
        (None, None) => vec![None],
    };
    let types: Vec<Option<&str>> = match &filter.event_type {
        None => vec![None],
        Some(EventTypeFilter::Exact(event_type)) => vec![Some(event_type.as_str())],
        Some(EventTypeFilter::AnyOf(types)) if types.is_empty() => vec![Some("")],
        Some(EventTypeFilter::AnyOf(types)) => types.iter().map(|t| Some(t.as_str())).collect(),
    };
    let legs: Vec<(Option<bool>, Option<&str>)> = statuses
        .iter()
        .flat_map(|status| types.iter().map(move |event_type| (*status, *event_type)))
        .collect();
    let mut query = sqlx::QueryBuilder::<Db>::new(prefix);
    if let [(succeeded, event_type)] = legs[..] {
        push_leg(&mut query, tenant, filter, succeeded, event_type);
        return query;
    }
    // Each leg is a subquery with its own order and limit: SQLite allows no LIMIT on a member
    // of a compound select, and PostgreSQL plans a member with a join or a WHERE as a subquery
    // of its own, whose rows come in page order only if it asks for them.
    query.push("SELECT * FROM (");
    for (index, (succeeded, event_type)) in legs.into_iter().enumerate() {
        if index > 0 {
            query.push(" UNION ALL ");
        }
        query.push("SELECT * FROM (");
        push_leg(&mut query, tenant, filter, succeeded, event_type);
        query.push(") leg");
    }
    query
        .push(") page ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(i64::from(filter.limit));
    query
}

/// One leg of `attempts_query`: a page of the attempts that match the filter's conditions with
/// one status and one event type.
fn push_leg(
    query: &mut sqlx::QueryBuilder<Db>,
    tenant: &TenantId,
    filter: &AttemptFilter,
    succeeded: Option<bool>,
    event_type: Option<&str>,
) {
    query.push(format_args!(
        "SELECT {SUMMARY_COLUMNS} FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
         WHERE a.tenant_id = "
    ));
    query.push_bind(tenant.as_str().to_owned());
    if let Some(webhook) = &filter.webhook {
        query
            .push(" AND a.webhook_id = ")
            .push_bind(webhook.as_str().to_owned());
    }
    if let Some(succeeded) = succeeded {
        query.push(" AND a.succeeded = ").push_bind(succeeded);
    }
    if let Some(event_type) = event_type {
        query
            .push(" AND a.event_type = ")
            .push_bind(event_type.to_owned());
    }
    if let Some(event_id) = &filter.event_id {
        // Both sides name the event: SQLite reads its index of attempts by event, PostgreSQL
        // the event's deliveries.
        query
            .push(" AND a.event_id = ")
            .push_bind(event_id.as_str().to_owned())
            .push(" AND d.event_id = ")
            .push_bind(event_id.as_str().to_owned());
    }
    if let Some(from) = filter.from {
        query.push(" AND a.created_at >= ").push_bind(to_db(from));
    }
    if let Some(to) = filter.to {
        query.push(" AND a.created_at <= ").push_bind(to_db(to));
    }
    if let Some(cursor) = &filter.before {
        query
            .push(" AND (a.created_at, a.id) < (")
            .push_bind(to_db(cursor.at));
        query
            .push(", ")
            .push_bind(cursor.id.as_str().to_owned())
            .push(")");
    }
    query
        .push(" ORDER BY a.created_at DESC, a.id DESC LIMIT ")
        .push_bind(i64::from(filter.limit));
}

pub(crate) async fn attempts(
    pool: &Pool,
    tenant: &TenantId,
    filter: &AttemptFilter,
) -> StoreResult<Vec<AttemptSummary>> {
    let rows = attempts_query(tenant, filter, "")
        .build()
        .fetch_all(pool)
        .await?;
    rows.iter().map(summary_from_row).collect()
}

#[cfg(feature = "testing")]
pub(crate) async fn explain_attempts(
    pool: &Pool,
    tenant: &TenantId,
    filter: &AttemptFilter,
) -> StoreResult<String> {
    let rows = attempts_query(tenant, filter, EXPLAIN)
        .build()
        .fetch_all(pool)
        .await?;
    Ok(rows
        .iter()
        .map(|row| row.get::<String, _>(PLAN_COLUMN))
        .collect::<Vec<_>>()
        .join("\n"))
}

pub(crate) async fn attempt(
    pool: &Pool,
    tenant: &TenantId,
    id: &AttemptId,
) -> StoreResult<Option<AttemptDetail>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLUMNS}, a.request_url, a.request_headers, p.body AS request_body,
                a.response_headers, a.response_body, a.response_truncated, e.resend_of
         FROM delivery_attempts a
         JOIN deliveries d ON d.id = a.delivery_id
         JOIN payloads p ON p.id = d.payload_id
         JOIN events e ON e.id = d.event_id
         WHERE a.tenant_id = $1 AND a.id = $2"
    )))
    .bind(tenant.as_str())
    .bind(id.as_str())
    .fetch_optional(pool)
    .await?;
    row.map(|row| {
        Ok(AttemptDetail {
            summary: summary_from_row(&row)?,
            request_url: row.get("request_url"),
            request_headers: row.get("request_headers"),
            request_body: row.get("request_body"),
            response_headers: row.get("response_headers"),
            response_body: row.get("response_body"),
            response_truncated: row.get("response_truncated"),
            resend_of: row
                .get::<Option<String>, _>("resend_of")
                .map(event_id)
                .transpose()?,
        })
    })
    .transpose()
}

pub(crate) async fn health(
    pool: &Pool,
    tenant: &TenantId,
    only: Option<&WebhookId>,
    since_7d: OffsetDateTime,
    since_24h: OffsetDateTime,
) -> StoreResult<std::collections::HashMap<WebhookId, HealthCounts>> {
    let rows = sqlx::query(
        "SELECT w.id, w.last_attempt_at, w.last_attempt_succeeded, w.failing_since,
                COALESCE(SUM(CASE WHEN h.hour_start >= $3 THEN h.succeeded ELSE 0 END), 0) AS succeeded_24h,
                COALESCE(SUM(CASE WHEN h.hour_start >= $3 THEN h.succeeded + h.failed ELSE 0 END), 0) AS attempts_24h,
                COALESCE(SUM(h.succeeded), 0) AS succeeded_7d,
                COALESCE(SUM(h.succeeded + h.failed), 0) AS attempts_7d
         FROM webhooks w
         LEFT JOIN webhook_attempt_hours h ON h.webhook_id = w.id AND h.hour_start >= $2
         WHERE w.tenant_id = $1 AND (CAST($4 AS TEXT) IS NULL OR w.id = $4)
         GROUP BY w.id, w.last_attempt_at, w.last_attempt_succeeded, w.failing_since",
    )
    .bind(tenant.as_str())
    .bind(to_db(since_7d))
    .bind(to_db(since_24h))
    .bind(only.map(WebhookId::as_str))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                webhook_id(row.get("id"))?,
                HealthCounts {
                    last_attempt_at: row.get::<Option<DbTime>, _>("last_attempt_at").map(from_db),
                    last_succeeded: row.get("last_attempt_succeeded"),
                    failing_since: row.get::<Option<DbTime>, _>("failing_since").map(from_db),
                    succeeded_24h: row.get("succeeded_24h"),
                    attempts_24h: row.get("attempts_24h"),
                    succeeded_7d: row.get("succeeded_7d"),
                    attempts_7d: row.get("attempts_7d"),
                },
            ))
        })
        .collect()
}

pub(crate) async fn hourly(
    pool: &Pool,
    tenant: &TenantId,
    since: OffsetDateTime,
) -> StoreResult<Vec<HourlyCounts>> {
    let rows = sqlx::query(
        "SELECT h.webhook_id, h.hour_start, h.succeeded, h.failed
         FROM webhook_attempt_hours h JOIN webhooks w ON w.id = h.webhook_id
         WHERE w.tenant_id = $1 AND h.hour_start >= $2
         ORDER BY h.webhook_id, h.hour_start",
    )
    .bind(tenant.as_str())
    .bind(to_db(since))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(HourlyCounts {
                webhook_id: webhook_id(row.get("webhook_id"))?,
                hour: from_db(row.get::<DbTime, _>("hour_start")),
                succeeded: i64::from(row.get::<i32, _>("succeeded")),
                failed: i64::from(row.get::<i32, _>("failed")),
            })
        })
        .collect()
}

pub(crate) async fn claim_mail(
    tx: &mut Connection,
    now: OffsetDateTime,
    lease_until: OffsetDateTime,
    limit: u32,
) -> StoreResult<Vec<OutboxMail>> {
    // The conditions are repeated outside the subquery: on PostgreSQL a row another
    // instance leased meanwhile is checked again after its lock, and skipped.
    let rows = sqlx::query(
        "UPDATE mail_outbox SET lease_expires_at = $2
         WHERE id IN (SELECT id FROM mail_outbox
                      WHERE sent_at IS NULL AND next_attempt_at <= $1
                        AND (lease_expires_at IS NULL OR lease_expires_at <= $1)
                      ORDER BY next_attempt_at LIMIT $3)
           AND sent_at IS NULL AND (lease_expires_at IS NULL OR lease_expires_at <= $1)
         RETURNING id, recipient, notice, attempts",
    )
    .bind(to_db(now))
    .bind(to_db(lease_until))
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .iter()
        .map(|row| OutboxMail {
            id: row.get("id"),
            recipient: row.get("recipient"),
            notice: row.get("notice"),
            attempts: u32::try_from(row.get::<i32, _>("attempts")).unwrap_or(0),
        })
        .collect())
}

pub(crate) async fn mail_sent(tx: &mut Connection, id: i64, at: OffsetDateTime) -> StoreResult<()> {
    sqlx::query("UPDATE mail_outbox SET sent_at = $2, attempts = attempts + 1, lease_expires_at = NULL WHERE id = $1 AND sent_at IS NULL")
        .bind(id)
        .bind(to_db(at))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

pub(crate) async fn mail_failed(
    tx: &mut Connection,
    id: i64,
    error: &str,
    retry_at: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE mail_outbox SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3,
             lease_expires_at = NULL
         WHERE id = $1 AND sent_at IS NULL",
    )
    .bind(id)
    .bind(error)
    .bind(to_db(retry_at))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Old events without pending work: up to `$2` accepted before `$1`.
const OLD_EVENTS: &str = "SELECT e.id FROM events e
     WHERE e.accepted_at < $1
       AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.state = 'pending')
     LIMIT $2";

/// Deletes up to `batch` old events without pending work, with everything that hangs off them:
/// their deliveries first (attempts cascade; on PostgreSQL no key ties a delivery to its event,
/// see migration 0011), then the events (payloads cascade).
async fn purge_events_batch(
    tx: &mut Connection,
    cutoff: OffsetDateTime,
    batch: i64,
) -> StoreResult<u64> {
    let old: Vec<String> = sqlx::query_scalar(OLD_EVENTS)
        .bind(to_db(cutoff))
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
    let mut events = 0;
    for chunk in crate::common::fixed_chunks(&old) {
        delete_listed(tx, "DELETE FROM deliveries WHERE event_id IN (", chunk).await?;
        events += delete_listed(tx, "DELETE FROM events WHERE id IN (", chunk).await?;
    }
    Ok(events)
}

/// Runs `delete` (ending in `IN (`) for the ids of `chunk`.
async fn delete_listed(tx: &mut Connection, delete: &str, chunk: &[String]) -> StoreResult<u64> {
    let mut delete = sqlx::QueryBuilder::<Db>::new(delete);
    let mut list = delete.separated(", ");
    for id in chunk {
        list.push_bind(id.as_str());
    }
    delete.push(")");
    Ok(delete.build().execute(&mut *tx).await?.rows_affected())
}

/// Mail older than the retention period, sent or not: a notice that old is no news.
pub(crate) const PURGE_MAIL: &str = "DELETE FROM mail_outbox WHERE id IN (
     SELECT id FROM mail_outbox WHERE created_at < $1 LIMIT $2)";
pub(crate) const PURGE_HEALTH_COUNTERS: &str = "DELETE FROM webhook_attempt_hours
     WHERE (webhook_id, hour_start) IN (
         SELECT webhook_id, hour_start FROM webhook_attempt_hours WHERE hour_start < $1 LIMIT $2)";
pub(crate) const PURGE_AUDIT: &str =
    "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at < $1 LIMIT $2)";

/// What a purge deletes.
#[derive(Clone, Copy)]
pub(crate) enum Purge {
    /// Old events, with their payloads, deliveries and attempts (`purge_events_batch`).
    Events,
    /// What the statement deletes: at most `$2` rows older than `$1`.
    Rows(&'static str),
}

/// One batch of a purge of what is older than `cutoff`: at most `batch` rows.
pub(crate) async fn purge_batch(
    tx: &mut Connection,
    purge: Purge,
    cutoff: OffsetDateTime,
    batch: i64,
) -> StoreResult<u64> {
    let sql = match purge {
        Purge::Events => return purge_events_batch(tx, cutoff, batch).await,
        Purge::Rows(sql) => sql,
    };
    let deleted = sqlx::query(sql)
        .bind(to_db(cutoff))
        .bind(batch)
        .execute(&mut *tx)
        .await?;
    Ok(deleted.rows_affected())
}
