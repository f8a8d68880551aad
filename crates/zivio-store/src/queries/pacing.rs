//! Rate limits across instances: requests started per webhook and second of the clock, and the
//! deliveries waiting for them. The same SQL on both backends.

use sqlx::Row as _;
use time::OffsetDateTime;
use zivio_core::rate_limit::RateLimit;
use zivio_core::webhook::WebhookId;

use crate::StoreResult;

use super::{Connection, Db, Pool, to_db};

/// Takes up to `$3` of the `$4` requests that may start to webhook `$1` in second `$2`, in one
/// conditional upsert (atomic under concurrent instances: the conflicting row is locked).
/// Returns the number granted; no row when the second's allowance is used up.
pub(crate) const TAKE_TOKENS: &str =
    "INSERT INTO rate_limit_seconds (webhook_id, second, started, last_grant)
     VALUES ($1, $2, $3, $3)
     ON CONFLICT (webhook_id, second) DO UPDATE
     SET last_grant = CASE WHEN $3 < $4 - rate_limit_seconds.started THEN $3
                           ELSE $4 - rate_limit_seconds.started END,
         started = rate_limit_seconds.started
                   + CASE WHEN $3 < $4 - rate_limit_seconds.started THEN $3
                          ELSE $4 - rate_limit_seconds.started END
     WHERE rate_limit_seconds.started < $4
     RETURNING last_grant";

pub(crate) async fn take_tokens(
    tx: &mut Connection,
    webhook: &WebhookId,
    second: i64,
    want: u32,
    limit: RateLimit,
) -> StoreResult<u32> {
    let limit = i32::try_from(limit.per_second()).unwrap_or(i32::MAX);
    let want = i32::try_from(want).unwrap_or(i32::MAX).clamp(1, limit);
    let granted: Option<i32> = sqlx::query_scalar(TAKE_TOKENS)
        .bind(webhook.as_str())
        .bind(second)
        .bind(want)
        .bind(limit)
        .fetch_optional(&mut *tx)
        .await?;
    Ok(granted.map_or(0, |granted| u32::try_from(granted).unwrap_or(0)))
}

/// Per webhook, its pending deliveries due by `now` (whatever their lease).
pub(crate) async fn due_per_webhook(
    pool: &Pool,
    webhooks: &[WebhookId],
    now: OffsetDateTime,
) -> StoreResult<std::collections::HashMap<WebhookId, i64>> {
    let mut due = std::collections::HashMap::new();
    for chunk in crate::common::fixed_chunks(webhooks) {
        let mut select = sqlx::QueryBuilder::<Db>::new(
            "SELECT webhook_id, count(*) AS due FROM deliveries
             WHERE state = 'pending' AND next_attempt_at <= ",
        );
        select.push_bind(to_db(now)).push(" AND webhook_id IN (");
        let mut list = select.separated(", ");
        for webhook in chunk {
            list.push_bind(webhook.as_str());
        }
        select.push(") GROUP BY webhook_id");
        for row in select.build().fetch_all(pool).await? {
            if let Some(webhook) = WebhookId::parse(row.get("webhook_id")) {
                due.insert(webhook, row.get::<i64, _>("due"));
            }
        }
    }
    Ok(due)
}

/// Deletes the counts of seconds before `before`, in bounded batches.
pub(crate) async fn purge_seconds(tx: &mut Connection, before: i64) -> StoreResult<u64> {
    Ok(sqlx::query(
        "DELETE FROM rate_limit_seconds WHERE (webhook_id, second) IN (
             SELECT webhook_id, second FROM rate_limit_seconds WHERE second < $1 LIMIT 10000)",
    )
    .bind(before)
    .execute(&mut *tx)
    .await?
    .rows_affected())
}
