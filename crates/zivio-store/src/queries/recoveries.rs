//! Recoveries (docs/product.md §7): the exact selection, fixed when a recovery starts; steps that
//! publish resends and settle the selected events together; a lease per recovery, so that one
//! instance works on it at a time. The same SQL on both backends.

use sqlx::Row as _;
use time::OffsetDateTime;
use zivio_core::delivery::DeliveryState;
use zivio_core::event::EventId;
use zivio_core::ids::TenantId;
use zivio_core::recovery::{Ending, RecoveryState};
use zivio_core::webhook::WebhookId;

use crate::{Recovery, StoreError, StoreResult, event_id, stored};

use super::{Connection, Db, DbTime, Pool, Row, from_db, to_db};

/// The events of tenant `$1` that a recovery of webhook `$2` over `[$3, $4)` resends: accepted
/// in the window, not test events (`$5` is their type), with at least one attempt to the
/// webhook, none of which succeeded and none still due, and no resend of it to the webhook that
/// succeeded or is still pending. A failed resend whose original failed in the window too is
/// left out: the original goes, so the resource is sent once.
pub(crate) const RECOVERABLE: &str = "FROM events e
     JOIN deliveries d ON d.event_id = e.id AND d.webhook_id = $2
     WHERE e.tenant_id = $1 AND e.accepted_at >= $3 AND e.accepted_at < $4 AND e.type <> $5
       AND d.state IN ('failed', 'cancelled') AND d.attempts > 0
       AND NOT EXISTS (
           SELECT 1 FROM events r JOIN deliveries rd ON rd.event_id = r.id AND rd.webhook_id = $2
           WHERE r.resend_of = e.id AND rd.state IN ('succeeded', 'pending'))
       AND NOT EXISTS (
           SELECT 1 FROM events o JOIN deliveries od ON od.event_id = o.id AND od.webhook_id = $2
           WHERE o.id = e.resend_of AND o.accepted_at >= $3 AND o.accepted_at < $4
             AND od.state IN ('failed', 'cancelled') AND od.attempts > 0)";

pub(crate) const RECOVERY_COLUMNS: &str = "id, tenant_id, webhook_id, since_at, until_at, state,
    ended_reason, selected, resent, skipped, created_by, created_at, finished_at";

fn recovery_from_row(row: &Row) -> StoreResult<Recovery> {
    let state: String = row.get("state");
    Ok(Recovery {
        id: row.get("id"),
        tenant: stored(TenantId::parse(row.get("tenant_id")))?,
        webhook_id: WebhookId::parse(row.get("webhook_id"))
            .ok_or_else(|| StoreError::Corrupt("recovery webhook id".to_owned()))?,
        since: from_db(row.get::<DbTime, _>("since_at")),
        until: from_db(row.get::<DbTime, _>("until_at")),
        state: RecoveryState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("recovery state `{state}`")))?,
        ended_reason: row.get("ended_reason"),
        selected: i64::from(row.get::<i32, _>("selected")),
        resent: i64::from(row.get::<i32, _>("resent")),
        skipped: i64::from(row.get::<i32, _>("skipped")),
        created_by: row.get("created_by"),
        created_at: from_db(row.get::<DbTime, _>("created_at")),
        finished_at: row.get::<Option<DbTime>, _>("finished_at").map(from_db),
    })
}

pub(crate) async fn count_recoverable(
    pool: &Pool,
    tenant: &TenantId,
    webhook: &WebhookId,
    since: OffsetDateTime,
    until: OffsetDateTime,
) -> StoreResult<i64> {
    let sql = format!("SELECT count(*) {RECOVERABLE}");
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(tenant.as_str())
        .bind(webhook.as_str())
        .bind(to_db(since))
        .bind(to_db(until))
        .bind(zivio_core::catalog::TEST_EVENT_TYPE)
        .fetch_one(pool)
        .await?)
}

/// Inserts the recovery (running) with its selection; refuses while another recovery of
/// the webhook runs or the tenant runs `max_running`. The caller holds the tenant's lock.
pub(crate) async fn insert_recovery(
    tx: &mut Connection,
    recovery: &Recovery,
    max_running: i64,
) -> StoreResult<Recovery> {
    let (same_webhook, in_tenant): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE webhook_id = $2), count(*) FROM recoveries
         WHERE tenant_id = $1 AND state = 'running'",
    )
    .bind(recovery.tenant.as_str())
    .bind(recovery.webhook_id.as_str())
    .fetch_one(&mut *tx)
    .await?;
    if same_webhook > 0 {
        return Err(StoreError::Conflict {
            what: "another recovery of this webhook is running",
        });
    }
    if in_tenant >= max_running {
        return Err(StoreError::Conflict {
            what: "the tenant runs the most recoveries at once",
        });
    }
    sqlx::query(
        "INSERT INTO recoveries (id, tenant_id, webhook_id, since_at, until_at, state, created_by, created_at)
         VALUES ($1, $2, $3, $4, $5, 'running', $6, $7)",
    )
    .bind(recovery.id.as_str())
    .bind(recovery.tenant.as_str())
    .bind(recovery.webhook_id.as_str())
    .bind(to_db(recovery.since))
    .bind(to_db(recovery.until))
    .bind(recovery.created_by.as_str())
    .bind(to_db(recovery.created_at))
    .execute(&mut *tx)
    .await?;
    let select = format!(
        "INSERT INTO recovery_items (recovery_id, event_id, state) SELECT $6, e.id, 'pending' {RECOVERABLE}"
    );
    let selected = sqlx::query(sqlx::AssertSqlSafe(select))
        .bind(recovery.tenant.as_str())
        .bind(recovery.webhook_id.as_str())
        .bind(to_db(recovery.since))
        .bind(to_db(recovery.until))
        .bind(zivio_core::catalog::TEST_EVENT_TYPE)
        .bind(recovery.id.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("UPDATE recoveries SET selected = $2 WHERE id = $1")
        .bind(recovery.id.as_str())
        .bind(i32::try_from(selected).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await?;
    Ok(Recovery {
        selected: i64::try_from(selected).unwrap_or(i64::MAX),
        ..recovery.clone()
    })
}

pub(crate) async fn recoveries(
    pool: &Pool,
    tenant: &TenantId,
    webhook: &WebhookId,
) -> StoreResult<Vec<Recovery>> {
    let sql = format!(
        "SELECT {RECOVERY_COLUMNS} FROM recoveries WHERE tenant_id = $1 AND webhook_id = $2
         ORDER BY created_at DESC, id DESC"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant.as_str())
        .bind(webhook.as_str())
        .fetch_all(pool)
        .await?;
    rows.iter().map(recovery_from_row).collect()
}

pub(crate) async fn recovery(
    executor: impl sqlx::Executor<'_, Database = Db>,
    tenant: &TenantId,
    id: &str,
) -> StoreResult<Option<Recovery>> {
    let sql = format!("SELECT {RECOVERY_COLUMNS} FROM recoveries WHERE tenant_id = $1 AND id = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(recovery_from_row).transpose()
}

/// Ends a running recovery; `None` when it is not running (already ended).
pub(crate) async fn end(
    tx: &mut Connection,
    tenant: &TenantId,
    id: &str,
    ending: &Ending,
    now: OffsetDateTime,
) -> StoreResult<Option<Recovery>> {
    let ended = sqlx::query(
        "UPDATE recoveries SET state = $3, ended_reason = $4, finished_at = $5,
             lease_owner = NULL, lease_expires_at = NULL
         WHERE tenant_id = $1 AND id = $2 AND state = 'running'",
    )
    .bind(tenant.as_str())
    .bind(id)
    .bind(ending.state().as_str())
    .bind(ending.to_string())
    .bind(to_db(now))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if ended == 0 {
        return Ok(None);
    }
    recovery(&mut *tx, tenant, id).await
}

/// Leases a running recovery nobody works on (or whose worker's lease expired).
pub(crate) async fn claim(
    tx: &mut Connection,
    lease: &str,
    now: OffsetDateTime,
    lease_until: OffsetDateTime,
    skip_locked: &str,
) -> StoreResult<Option<Recovery>> {
    let sql = format!(
        "UPDATE recoveries SET lease_owner = $1, lease_expires_at = $3
         WHERE id = (SELECT id FROM recoveries
                     WHERE state = 'running' AND (lease_owner IS NULL OR lease_expires_at <= $2)
                     ORDER BY created_at LIMIT 1{skip_locked})
         RETURNING {RECOVERY_COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(lease)
        .bind(to_db(now))
        .bind(to_db(lease_until))
        .fetch_optional(&mut *tx)
        .await?;
    row.as_ref().map(recovery_from_row).transpose()
}

pub(crate) async fn pending_items(
    pool: &Pool,
    recovery: &str,
    limit: i64,
) -> StoreResult<Vec<EventId>> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT event_id FROM recovery_items WHERE recovery_id = $1 AND state = 'pending'
         ORDER BY event_id LIMIT $2",
    )
    .bind(recovery)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    ids.into_iter().map(event_id).collect()
}

/// Counts a step on the recovery and extends its lease, if it is still running under
/// `lease`; `false` otherwise (the step must not be written).
pub(crate) async fn advance(tx: &mut Connection, step: &crate::RecoveryStep) -> StoreResult<bool> {
    let resent = step
        .settled
        .iter()
        .filter(|(_, resend)| resend.is_some())
        .count();
    let skipped = step.settled.len() - resent;
    let advanced = sqlx::query(
        "UPDATE recoveries SET resent = resent + $3, skipped = skipped + $4, lease_expires_at = $5
         WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
    )
    .bind(step.recovery.as_str())
    .bind(step.lease.as_str())
    .bind(i32::try_from(resent).unwrap_or(i32::MAX))
    .bind(i32::try_from(skipped).unwrap_or(i32::MAX))
    .bind(to_db(step.lease_until))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(advanced == 1)
}

pub(crate) async fn settle_items(
    tx: &mut Connection,
    step: &crate::RecoveryStep,
) -> StoreResult<()> {
    for chunk in crate::common::fixed_chunks(&step.settled) {
        let mut update =
            sqlx::QueryBuilder::<Db>::new("WITH v (event_id, state, new_event_id) AS (");
        update.push_values(chunk, |mut row, (event, resend)| {
            row.push_bind(event.as_str())
                .push_bind(if resend.is_some() {
                    "resent"
                } else {
                    "skipped"
                })
                .push_bind(resend.as_ref().map(EventId::as_str));
        });
        update.push(
            ") UPDATE recovery_items SET state = v.state, new_event_id = v.new_event_id FROM v
             WHERE recovery_items.recovery_id = ",
        );
        update
            .push_bind(step.recovery.as_str())
            .push(" AND recovery_items.event_id = v.event_id");
        update.build().execute(&mut *tx).await?;
    }
    Ok(())
}

/// Those of the given events that still have a pending delivery.
pub(crate) async fn still_pending(pool: &Pool, events: &[EventId]) -> StoreResult<Vec<EventId>> {
    let mut pending = std::collections::BTreeSet::new();
    for chunk in crate::common::fixed_chunks(events) {
        // States compared here, not in SQL: a constant state would let PostgreSQL scan
        // every pending delivery instead of looking each event up.
        let mut select = sqlx::QueryBuilder::<Db>::new(
            "SELECT event_id, state FROM deliveries WHERE event_id IN (",
        );
        let mut list = select.separated(", ");
        for event in chunk {
            list.push_bind(event.as_str());
        }
        select.push(")");
        for row in select.build().fetch_all(pool).await? {
            if DeliveryState::parse(row.get("state")) == Some(DeliveryState::Pending) {
                pending.insert(row.get::<String, _>("event_id"));
            }
        }
    }
    pending.into_iter().map(event_id).collect()
}

pub(crate) async fn running(pool: &Pool) -> StoreResult<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM recoveries WHERE state = 'running'")
            .fetch_one(pool)
            .await?,
    )
}

pub(crate) async fn release_all(tx: &mut Connection) -> StoreResult<()> {
    sqlx::query("UPDATE recoveries SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner IS NOT NULL")
        .execute(&mut *tx)
        .await?;
    Ok(())
}
