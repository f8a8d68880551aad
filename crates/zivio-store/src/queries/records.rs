//! Recording finished attempts: moving their deliveries on, the webhooks' latest attempt and
//! hourly counters, auto-disable and its notices.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Row as _;
use time::OffsetDateTime;
use zivio_core::delivery::{DeliveryState, QueueEntryId};
use zivio_core::error_kind::ErrorKind;
use zivio_core::notice::AutoDisabledNotice;
use zivio_core::permission::Permission;
use zivio_core::webhook::WebhookId;

use crate::{AttemptOutcome, AttemptRecord, FinishedAttempt, StoreResult};

use super::{Connection, Db, DbTime, LOCK_WEBHOOKS, from_db, to_db};

/// Records a batch of finished attempts as `QueueStore::record_attempts` describes, in the
/// caller's transaction. `changes` counts writes that change what sends depend on (SQLite):
/// disabling a webhook is one.
pub(crate) async fn record_finished(
    tx: &mut Connection,
    attempts: &[FinishedAttempt],
    changes: Option<&AtomicU64>,
) -> StoreResult<Vec<AttemptOutcome>> {
    let records: Vec<&AttemptRecord> = attempts
        .iter()
        .map(|finished| &finished.record)
        .filter(|attempt| about_receiver(attempt))
        .collect();
    note_latest_attempts(&mut *tx, &records).await?;
    let rows: Vec<(&str, &AttemptRecord)> = attempts
        .iter()
        .map(|finished| (finished.lease.as_str(), &finished.record))
        .collect();
    let recorded = record_attempt_rows(&mut *tx, &rows).await?;
    let Tally {
        mut outcomes,
        counts,
        latest_failures,
    } = tally(attempts, &recorded);
    count_attempts(&mut *tx, &counts).await?;
    for index in latest_failures {
        if disable_if_failing(&mut *tx, &attempts[index], changes).await? {
            outcomes[index].auto_disabled = true;
        }
    }
    Ok(outcomes)
}

/// Whether an attempt says something of its receiver: a delivery its rate limit held back too
/// long does not.
fn about_receiver(attempt: &AttemptRecord) -> bool {
    attempt
        .error_kind
        .is_none_or(ErrorKind::counts_toward_health)
}

/// What a recorded batch adds up to before auto-disable.
struct Tally<'a> {
    /// Per attempt, in order: whether its delivery moved on.
    outcomes: Vec<AttemptOutcome>,
    /// Successes and failures per webhook and hour.
    counts: Vec<(&'a str, OffsetDateTime, i32, i32)>,
    /// Per webhook, the index of its latest recorded failure: the one that may disable it.
    latest_failures: Vec<usize>,
}

/// Adds up a batch whose rows `record_attempt_rows` answered with `recorded` (moved, stored).
fn tally<'a>(attempts: &'a [FinishedAttempt], recorded: &[(bool, bool)]) -> Tally<'a> {
    let mut outcomes = Vec::with_capacity(attempts.len());
    let mut counts: BTreeMap<(&str, OffsetDateTime), (i32, i32)> = BTreeMap::new();
    let mut failures: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, (finished, &(moved, stored))) in attempts.iter().zip(recorded).enumerate() {
        let attempt = &finished.record;
        outcomes.push(AttemptOutcome {
            moved,
            auto_disabled: false,
        });
        if !stored || !about_receiver(attempt) {
            continue;
        }
        let webhook = attempt.webhook_id.as_str();
        let count = counts
            .entry((webhook, hour_of(attempt.created_at)))
            .or_default();
        if attempt.succeeded {
            count.0 += 1;
        } else {
            count.1 += 1;
            let latest = failures.entry(webhook).or_insert(index);
            if attempts[*latest].record.created_at <= attempt.created_at {
                *latest = index;
            }
        }
    }
    Tally {
        outcomes,
        counts: counts
            .into_iter()
            .map(|((webhook, hour), (succeeded, failed))| (webhook, hour, succeeded, failed))
            .collect(),
        latest_failures: failures.into_values().collect(),
    }
}

/// Disables the attempt's webhook if it has failed since before the attempt's auto-disable
/// threshold: cancels its pending work, audits it and queues the notices. Says whether it did.
async fn disable_if_failing(
    tx: &mut Connection,
    finished: &FinishedAttempt,
    changes: Option<&AtomicU64>,
) -> StoreResult<bool> {
    let FinishedAttempt {
        record: attempt,
        auto_disable,
        ..
    } = finished;
    let Some(notice) = auto_disable_webhook(
        &mut *tx,
        &attempt.webhook_id,
        attempt.created_at,
        auto_disable.failing_before,
    )
    .await?
    else {
        return Ok(false);
    };
    // Disabling changes what sends depend on (under the writer connection).
    if let Some(changes) = changes {
        changes.fetch_add(1, Ordering::SeqCst);
    }
    super::webhooks::cancel_pending(&mut *tx, &attempt.webhook_id, attempt.created_at).await?;
    super::directory::record_audit(&mut *tx, &notice.audit_entry(&attempt.tenant)).await?;
    if auto_disable.mail {
        let text = serde_json::to_string(&notice).expect("notices serialise");
        for recipient in webhook_managers(&mut *tx, &notice.tenant_id).await? {
            queue_mail(
                &mut *tx,
                &notice.tenant_id,
                &recipient,
                &text,
                attempt.created_at,
            )
            .await?;
        }
    }
    Ok(true)
}

/// Records finished attempts, `(lease, record)` each, in two statements per chunk: every
/// delivery still pending under its lease moves on (retried, succeeded or failed), and
/// every attempt whose delivery still exists is stored, once by id. Returns, in order,
/// whether each delivery moved on and whether each attempt was stored (a cancelled
/// delivery gets its attempt but no next one; a deleted one no record at all).
pub(crate) async fn record_attempt_rows(
    tx: &mut Connection,
    attempts: &[(&str, &AttemptRecord)],
) -> StoreResult<Vec<(bool, bool)>> {
    let moved = move_deliveries(&mut *tx, attempts).await?;
    let stored = store_attempts(&mut *tx, attempts, &moved).await?;
    Ok(attempts
        .iter()
        .map(|(_, attempt)| {
            (
                moved.contains(&attempt.queue_entry),
                stored.contains(attempt.id.as_str()),
            )
        })
        .collect())
}

/// Moves on every delivery still pending under its attempt's lease; returns their ids.
async fn move_deliveries(
    tx: &mut Connection,
    attempts: &[(&str, &AttemptRecord)],
) -> StoreResult<HashSet<QueueEntryId>> {
    let mut moved = HashSet::new();
    for chunk in crate::common::fixed_chunks(attempts) {
        let mut update = move_statement("", chunk);
        let ids: Vec<i64> = update.build_query_scalar().fetch_all(&mut *tx).await?;
        moved.extend(ids.into_iter().map(QueueEntryId));
    }
    Ok(moved)
}

/// Stores every attempt whose delivery still exists, once by id (a next attempt only for a
/// delivery that `moved`); returns the ids stored.
async fn store_attempts(
    tx: &mut Connection,
    attempts: &[(&str, &AttemptRecord)],
    moved: &HashSet<QueueEntryId>,
) -> StoreResult<HashSet<String>> {
    let mut stored = HashSet::new();
    for chunk in crate::common::fixed_chunks(attempts) {
        let mut insert = store_statement("", chunk, moved);
        let ids: Vec<String> = insert.build_query_scalar().fetch_all(&mut *tx).await?;
        stored.extend(ids);
    }
    Ok(stored)
}

/// The statement that moves a chunk of deliveries on, behind `prefix` (`EXPLAIN` in tests).
pub(crate) fn move_statement(
    prefix: &str,
    chunk: &[(&str, &AttemptRecord)],
) -> sqlx::QueryBuilder<Db> {
    // The state a delivery must still be in comes through `v`, not as a constant: with
    // a constant, PostgreSQL may scan its whole partial index of pending deliveries
    // (as large as the backlog, and planned from statistics taken when it was small)
    // instead of looking each id up.
    let mut update = sqlx::QueryBuilder::<Db>::new(format!(
        "{prefix}WITH v (id, lease, pending, state, next) AS ("
    ));
    update.push_values(chunk, |mut row, (lease, attempt)| {
        let state =
            DeliveryState::after_attempt(attempt.succeeded, attempt.next_attempt_at.is_some());
        row.push_bind(attempt.queue_entry.0)
            .push_bind(*lease)
            .push_bind(DeliveryState::Pending.as_str())
            .push_bind(state.as_str())
            .push_bind(attempt.next_attempt_at.map(to_db));
    });
    update.push(
        ") UPDATE deliveries SET attempts = attempts + 1, state = v.state,
             next_attempt_at = v.next, lease_owner = NULL, lease_expires_at = NULL
         FROM v
         WHERE deliveries.id = v.id AND deliveries.lease_owner = v.lease
           AND deliveries.state = v.pending
         RETURNING deliveries.id",
    );
    update
}

/// The statement that stores a chunk of attempts, behind `prefix` (`EXPLAIN` in tests).
pub(crate) fn store_statement(
    prefix: &str,
    chunk: &[(&str, &AttemptRecord)],
    moved: &HashSet<QueueEntryId>,
) -> sqlx::QueryBuilder<Db> {
    let mut insert = sqlx::QueryBuilder::<Db>::new(format!(
        "{prefix}WITH v (id, tenant_id, delivery_id, webhook_id, event_id, event_type, attempt,
                 succeeded, request_url, request_headers, response_status,
                 response_headers, response_body, response_truncated, duration_ms,
                 error_kind, error_detail, next_attempt_at, created_at) AS ("
    ));
    insert.push_values(chunk, |mut row, (_, attempt)| {
        let next = if moved.contains(&attempt.queue_entry) {
            attempt.next_attempt_at.map(to_db)
        } else {
            None
        };
        row.push_bind(attempt.id.as_str())
            .push_bind(attempt.tenant.as_str())
            .push_bind(attempt.queue_entry.0)
            .push_bind(attempt.webhook_id.as_str())
            .push_bind(attempt.event_id.as_str())
            .push_bind(attempt.event_type.as_str())
            .push_bind(i32::try_from(attempt.attempt).unwrap_or(i32::MAX))
            .push_bind(attempt.succeeded)
            .push_bind(attempt.request_url.as_str())
            .push_bind(attempt.request_headers.as_str())
            .push_bind(attempt.response_status.map(i32::from))
            .push_bind(attempt.response_headers.as_deref())
            .push_bind(attempt.response_body.as_deref())
            .push_bind(attempt.response_truncated)
            .push_bind(attempt.duration_ms)
            .push_bind(attempt.error_kind.map(ErrorKind::as_str))
            .push_bind(attempt.error_detail.as_deref())
            .push_bind(next)
            .push_bind(to_db(attempt.created_at));
    });
    insert.push(
        ") INSERT INTO delivery_attempts (id, tenant_id, delivery_id, webhook_id, event_id,
             event_type, attempt, succeeded, request_url, request_headers,
             response_status, response_headers, response_body, response_truncated,
             duration_ms, error_kind, error_detail, next_attempt_at, created_at)
         SELECT id, tenant_id, delivery_id, webhook_id, event_id, event_type, attempt,
                succeeded, request_url, request_headers, response_status,
                response_headers, response_body, response_truncated, duration_ms,
                error_kind, error_detail, next_attempt_at, created_at
         FROM v
         WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.id = v.delivery_id)
         ON CONFLICT (id) DO NOTHING
         RETURNING id",
    );
    insert
}

/// Notes each webhook's latest attempt of the batch on the webhook (unless a later one is
/// already noted) and moves `failing_since` as the attempts did in order (set by the
/// first failure after a success, cleared by a success). It runs first in the
/// transaction, webhooks in id order: every write that touches a webhook and its
/// deliveries locks the webhook row first (as disabling does), so recording and
/// disabling cannot deadlock on PostgreSQL.
/// Locks the webhook rows, in id order (where rows are locked at all: SQLite's one writer
/// excludes everyone already). Every write that touches a webhook's deliveries locks the
/// webhook first, so such writes cannot deadlock on PostgreSQL. `webhooks` is sorted.
pub(crate) async fn lock_webhooks(tx: &mut Connection, webhooks: &[&str]) -> StoreResult<()> {
    let lock: Option<&str> = LOCK_WEBHOOKS;
    for chunk in lock.map_or(Vec::new(), |_| crate::common::fixed_chunks(webhooks)) {
        let mut select = sqlx::QueryBuilder::<Db>::new("SELECT id FROM webhooks WHERE id IN (");
        let mut list = select.separated(", ");
        for webhook in chunk {
            list.push_bind(*webhook);
        }
        select.push(lock.unwrap_or_default());
        select.build().execute(&mut *tx).await?;
    }
    Ok(())
}

pub(crate) async fn note_latest_attempts(
    tx: &mut Connection,
    attempts: &[&AttemptRecord],
) -> StoreResult<()> {
    let mut by_webhook: std::collections::BTreeMap<&str, Vec<&AttemptRecord>> =
        std::collections::BTreeMap::new();
    for attempt in attempts {
        by_webhook
            .entry(attempt.webhook_id.as_str())
            .or_default()
            .push(attempt);
    }
    // Locked whether or not the update below changes them.
    let webhooks: Vec<&str> = by_webhook.keys().copied().collect();
    lock_webhooks(&mut *tx, &webhooks).await?;
    let notes: Vec<(&str, &AttemptRecord, bool, Option<DbTime>)> = by_webhook
        .into_iter()
        .map(|(webhook, mut attempts)| {
            attempts.sort_by_key(|attempt| attempt.created_at);
            let latest = attempts[attempts.len() - 1];
            // The failures since the batch's last success (all of them without one).
            let trailing = attempts
                .iter()
                .rposition(|attempt| attempt.succeeded)
                .map_or(0, |last| last + 1);
            let first_failure = attempts
                .get(trailing)
                .map(|attempt| to_db(attempt.created_at));
            (webhook, latest, trailing > 0, first_failure)
        })
        .collect();
    for chunk in crate::common::fixed_chunks(&notes) {
        let mut update = sqlx::QueryBuilder::<Db>::new(
            "WITH v (id, at, succeeded, error_kind, error_detail, delivery, failing, first_failure) AS (",
        );
        update.push_values(
            chunk,
            |mut row, (webhook, latest, failing, first_failure)| {
                row.push_bind(*webhook)
                    .push_bind(to_db(latest.created_at))
                    .push_bind(latest.succeeded)
                    .push_bind(latest.error_kind.map(ErrorKind::as_str))
                    .push_bind(latest.error_detail.as_deref())
                    .push_bind(latest.queue_entry.0)
                    .push_bind(*failing)
                    .push_bind(*first_failure);
            },
        );
        update.push(
            ") UPDATE webhooks SET last_attempt_at = v.at, last_attempt_succeeded = v.succeeded,
                 last_error_kind = v.error_kind, last_error_detail = v.error_detail,
                 failing_since = CASE WHEN v.succeeded THEN NULL WHEN v.failing THEN v.first_failure
                                      ELSE COALESCE(webhooks.failing_since, v.first_failure) END
             FROM v
             WHERE webhooks.id = v.id
               AND (webhooks.last_attempt_at IS NULL OR webhooks.last_attempt_at <= v.at)
               AND EXISTS (SELECT 1 FROM deliveries WHERE deliveries.id = v.delivery)",
        );
        update.build().execute(&mut *tx).await?;
    }
    Ok(())
}

/// The start of the hour `at` falls in (the health counters' bucket).
pub(crate) fn hour_of(at: OffsetDateTime) -> OffsetDateTime {
    at - time::Duration::seconds(at.unix_timestamp().rem_euclid(3600))
        - time::Duration::nanoseconds(i64::from(at.nanosecond()))
}

/// Adds attempts to webhooks' hourly health counters: `(webhook, hour, succeeded, failed)`,
/// each webhook and hour once.
pub(crate) async fn count_attempts(
    tx: &mut Connection,
    counts: &[(&str, OffsetDateTime, i32, i32)],
) -> StoreResult<()> {
    for chunk in crate::common::fixed_chunks(counts) {
        let mut upsert = sqlx::QueryBuilder::<Db>::new(
            "INSERT INTO webhook_attempt_hours (webhook_id, hour_start, succeeded, failed) ",
        );
        upsert.push_values(
            chunk,
            |mut row, (webhook, hour_start, succeeded, failed)| {
                row.push_bind(*webhook)
                    .push_bind(to_db(*hour_start))
                    .push_bind(*succeeded)
                    .push_bind(*failed);
            },
        );
        upsert.push(
            " ON CONFLICT (webhook_id, hour_start) DO UPDATE
             SET succeeded = webhook_attempt_hours.succeeded + excluded.succeeded,
                 failed = webhook_attempt_hours.failed + excluded.failed",
        );
        upsert.build().execute(&mut *tx).await?;
    }
    Ok(())
}

/// Disables the webhook if it is enabled and has been failing since before
/// `failing_before`: one conditional update, so it happens once however many instances
/// record failures. Returns the facts of the notice when it did.
async fn auto_disable_webhook(
    tx: &mut Connection,
    webhook: &WebhookId,
    now: OffsetDateTime,
    failing_before: OffsetDateTime,
) -> StoreResult<Option<AutoDisabledNotice>> {
    let disabled = sqlx::query(
        "UPDATE webhooks SET enabled = FALSE, disabled_reason = 'auto', disabled_by = NULL,
             disabled_at = $2, updated_at = $2, version = version + 1
         WHERE id = $1 AND enabled AND failing_since IS NOT NULL AND failing_since <= $3",
    )
    .bind(webhook.as_str())
    .bind(to_db(now))
    .bind(to_db(failing_before))
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !disabled {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT tenant_id, name, url, failing_since, last_error_kind, last_error_detail
         FROM webhooks WHERE id = $1",
    )
    .bind(webhook.as_str())
    .fetch_one(&mut *tx)
    .await?;
    let url: String = row.get("url");
    Ok(Some(AutoDisabledNotice {
        tenant_id: row.get("tenant_id"),
        webhook_id: webhook.to_string(),
        webhook_name: row.get("name"),
        url: zivio_core::url_policy::mask_str(&url),
        failing_since: from_db(row.get::<DbTime, _>("failing_since")),
        disabled_at: now,
        last_error_kind: row.get("last_error_kind"),
        last_error_detail: row.get("last_error_detail"),
    }))
}

/// The emails of the tenant's active users who may manage webhooks.
pub(crate) async fn webhook_managers(
    tx: &mut Connection,
    tenant: &str,
) -> StoreResult<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT u.email FROM users u
         JOIN user_roles ur ON ur.tenant_id = u.tenant_id AND ur.user_id = u.id
         JOIN role_permissions rp ON rp.tenant_id = ur.tenant_id AND rp.role_name = ur.role_name
         WHERE u.tenant_id = $1 AND u.active AND rp.permission = $2
         ORDER BY u.email",
    )
    .bind(tenant)
    .bind(Permission::ManageWebhooks.to_string())
    .fetch_all(&mut *tx)
    .await?)
}

pub(crate) async fn queue_mail(
    tx: &mut Connection,
    tenant: &str,
    recipient: &str,
    notice: &str,
    now: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO mail_outbox (tenant_id, recipient, notice, created_at, next_attempt_at)
         VALUES ($1, $2, $3, $4, $4)",
    )
    .bind(tenant)
    .bind(recipient)
    .bind(notice)
    .bind(to_db(now))
    .execute(&mut *tx)
    .await?;
    Ok(())
}
