//! The delivery queue: leasing due work, recording attempts, giving work back. Only the claim
//! statement differs per backend (`FOR UPDATE SKIP LOCKED` on PostgreSQL), passed in as `$claim`.

macro_rules! queue_queries {
    ($db:ty, $to:path, $from:path, $t:ty, $claim:expr) => {
        use sqlx::Row as _;
        use time::OffsetDateTime;
        use zivio_core::ids::TenantId;
        use zivio_core::webhook::WebhookId;

        use $crate::{AttemptRecord, ClaimedDelivery, StoreError, StoreResult, stored};

        type Pool = sqlx::Pool<$db>;
        type Connection = <$db as sqlx::Database>::Connection;
        type Row = <$db as sqlx::Database>::Row;

        fn webhook_id(text: String) -> StoreResult<WebhookId> {
            WebhookId::parse(&text).ok_or_else(|| StoreError::Corrupt(format!("webhook id `{text}`")))
        }

        pub(crate) async fn claim(
            tx: &mut Connection,
            lease: &str,
            now: OffsetDateTime,
            lease_until: OffsetDateTime,
            limit: u32,
            per_webhook: u32,
            skip: &[WebhookId],
        ) -> StoreResult<Vec<ClaimedDelivery>> {
            let skip: Vec<&str> = skip.iter().map(WebhookId::as_str).collect();
            sqlx::query($claim)
                .bind(lease)
                .bind($to(now))
                .bind($to(lease_until))
                .bind(i64::from(limit))
                .bind(serde_json::to_string(&skip).expect("strings serialise"))
                .bind(i64::from(per_webhook))
                .execute(&mut *tx)
                .await?;
            let rows = sqlx::query(
                "SELECT d.id, d.tenant_id, d.webhook_id, d.event_id, d.attempts, e.type, p.body, w.url,
                        w.secret_ciphertext
                 FROM deliveries d
                 JOIN events e ON e.id = d.event_id
                 JOIN payloads p ON p.id = d.payload_id
                 JOIN webhooks w ON w.id = d.webhook_id
                 WHERE d.lease_owner = $1 AND d.state = 'pending'
                 ORDER BY d.next_attempt_at, d.id",
            )
            .bind(lease)
            .fetch_all(&mut *tx)
            .await?;
            let mut claimed = Vec::with_capacity(rows.len());
            for row in rows {
                let id: i64 = row.get("id");
                let decoded = (|| {
                    Ok::<_, StoreError>(ClaimedDelivery {
                        id,
                        tenant: stored(TenantId::parse(row.get("tenant_id")))?,
                        webhook_id: webhook_id(row.get("webhook_id"))?,
                        url: row.get("url"),
                        secret_ciphertext: row.get("secret_ciphertext"),
                        event_id: row.get("event_id"),
                        event_type: row.get("type"),
                        attempt: u32::try_from(row.get::<i32, _>("attempts")).unwrap_or(0) + 1,
                        body: row.get("body"),
                    })
                })();
                match decoded {
                    Ok(delivery) => claimed.push(delivery),
                    Err(error) => {
                        // One corrupt row must not stop every other delivery: it fails alone.
                        tracing::error!(delivery = id, error = %error, "a queued delivery cannot be read; marked failed");
                        sqlx::query("UPDATE deliveries SET state = 'failed', next_attempt_at = NULL, lease_owner = NULL WHERE id = $1")
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
            Ok(claimed)
        }

        pub(crate) async fn record_attempt(tx: &mut Connection, lease: &str, attempt: &AttemptRecord) -> StoreResult<bool> {
            let state = match (attempt.next_attempt_at, attempt.succeeded) {
                (Some(_), _) => "pending",
                (None, true) => "succeeded",
                (None, false) => "failed",
            };
            let moved = sqlx::query(
                "UPDATE deliveries SET attempts = attempts + 1, state = $3, next_attempt_at = $4,
                     lease_owner = NULL, lease_expires_at = NULL
                 WHERE id = $1 AND lease_owner = $2 AND state = 'pending'",
            )
            .bind(attempt.delivery_id)
            .bind(lease)
            .bind(state)
            .bind(attempt.next_attempt_at.map($to))
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            // A cancelled delivery gets no next attempt; a deleted one no record at all.
            let next = if moved { attempt.next_attempt_at.map($to) } else { None };
            sqlx::query(
                "INSERT INTO delivery_attempts (id, tenant_id, delivery_id, webhook_id, event_id, event_type,
                     attempt, succeeded, request_url, request_headers, response_status, response_headers,
                     response_body, response_truncated, duration_ms, error_kind, error_detail,
                     next_attempt_at, created_at)
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19
                 WHERE EXISTS (SELECT 1 FROM deliveries WHERE id = $3)",
            )
            .bind(&attempt.id)
            .bind(attempt.tenant.as_str())
            .bind(attempt.delivery_id)
            .bind(attempt.webhook_id.as_str())
            .bind(&attempt.event_id)
            .bind(&attempt.event_type)
            .bind(i32::try_from(attempt.attempt).unwrap_or(i32::MAX))
            .bind(attempt.succeeded)
            .bind(&attempt.request_url)
            .bind(&attempt.request_headers)
            .bind(attempt.response_status.map(i32::from))
            .bind(&attempt.response_headers)
            .bind(&attempt.response_body)
            .bind(attempt.response_truncated)
            .bind(attempt.duration_ms)
            .bind(&attempt.error_kind)
            .bind(&attempt.error_detail)
            .bind(next)
            .bind($to(attempt.created_at))
            .execute(&mut *tx)
            .await?;
            Ok(moved)
        }

        /// The webhook's current URL and secret, and whether it may still send (enabled, owner
        /// active); `None` when the delivery is no longer pending under this lease.
        pub(crate) async fn current_target(pool: &Pool, lease: &str, delivery: i64) -> StoreResult<Option<(String, Vec<u8>, bool)>> {
            let row = sqlx::query(
                "SELECT w.url, w.secret_ciphertext, w.enabled, u.active AS owner_active
                 FROM deliveries d
                 JOIN webhooks w ON w.id = d.webhook_id
                 LEFT JOIN users u ON u.tenant_id = w.tenant_id AND u.id = w.owner_id
                 WHERE d.id = $1 AND d.lease_owner = $2 AND d.state = 'pending'",
            )
            .bind(delivery)
            .bind(lease)
            .fetch_optional(pool)
            .await?;
            Ok(row.map(|row| {
                let may_send = row.get::<bool, _>("enabled") && row.get::<Option<bool>, _>("owner_active").unwrap_or(false);
                (row.get("url"), row.get("secret_ciphertext"), may_send)
            }))
        }

        /// Extends a live lease; `false` when it was lost or has expired.
        pub(crate) async fn renew(
            tx: &mut Connection,
            lease: &str,
            delivery: i64,
            now: OffsetDateTime,
            lease_until: OffsetDateTime,
        ) -> StoreResult<bool> {
            let renewed = sqlx::query(
                "UPDATE deliveries SET lease_expires_at = $4
                 WHERE id = $1 AND lease_owner = $2 AND state = 'pending' AND lease_expires_at > $3",
            )
            .bind(delivery)
            .bind(lease)
            .bind($to(now))
            .bind($to(lease_until))
            .execute(&mut *tx)
            .await?;
            Ok(renewed.rows_affected() == 1)
        }

        pub(crate) async fn cancel(tx: &mut Connection, lease: &str, delivery: i64) -> StoreResult<()> {
            sqlx::query(
                "UPDATE deliveries SET state = 'cancelled', next_attempt_at = NULL, lease_owner = NULL,
                     lease_expires_at = NULL
                 WHERE id = $1 AND lease_owner = $2 AND state = 'pending'",
            )
            .bind(delivery)
            .bind(lease)
            .execute(&mut *tx)
            .await?;
            Ok(())
        }

        pub(crate) async fn release(tx: &mut Connection, lease: &str, id: i64) -> StoreResult<()> {
            sqlx::query(
                "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL
                 WHERE id = $1 AND lease_owner = $2 AND state = 'pending'",
            )
            .bind(id)
            .bind(lease)
            .execute(&mut *tx)
            .await?;
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
            let due: Option<$t> = sqlx::query_scalar(
                "SELECT min(CASE WHEN lease_owner IS NULL THEN next_attempt_at ELSE lease_expires_at END)
                 FROM deliveries WHERE state = 'pending'",
            )
                .fetch_one(pool)
                .await?;
            Ok(due.map($from))
        }

        pub(crate) async fn pending(pool: &Pool) -> StoreResult<i64> {
            Ok(sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE state = 'pending'")
                .fetch_one(pool)
                .await?)
        }

        fn attempt_from_row(row: &Row) -> StoreResult<AttemptRecord> {
            Ok(AttemptRecord {
                id: row.get("id"),
                delivery_id: row.get("delivery_id"),
                tenant: stored(TenantId::parse(row.get("tenant_id")))?,
                webhook_id: webhook_id(row.get("webhook_id"))?,
                event_id: row.get("event_id"),
                event_type: row.get("event_type"),
                attempt: u32::try_from(row.get::<i32, _>("attempt")).unwrap_or(0),
                succeeded: row.get("succeeded"),
                request_url: row.get("request_url"),
                request_headers: row.get("request_headers"),
                response_status: row.get::<Option<i32>, _>("response_status").and_then(|s| u16::try_from(s).ok()),
                response_headers: row.get("response_headers"),
                response_body: row.get("response_body"),
                response_truncated: row.get("response_truncated"),
                duration_ms: row.get("duration_ms"),
                error_kind: row.get("error_kind"),
                error_detail: row.get("error_detail"),
                created_at: $from(row.get::<$t, _>("created_at")),
                next_attempt_at: row.get::<Option<$t>, _>("next_attempt_at").map($from),
            })
        }

        pub(crate) async fn attempts_of(pool: &Pool, tenant: &TenantId, event_id: &str, webhook: &WebhookId) -> StoreResult<Vec<AttemptRecord>> {
            let rows = sqlx::query(
                "SELECT id, delivery_id, tenant_id, webhook_id, event_id, event_type, attempt, succeeded,
                        request_url, request_headers, response_status, response_headers, response_body,
                        response_truncated, duration_ms, error_kind, error_detail, created_at, next_attempt_at
                 FROM delivery_attempts WHERE tenant_id = $1 AND event_id = $2 AND webhook_id = $3
                 ORDER BY attempt",
            )
            .bind(tenant.as_str())
            .bind(event_id)
            .bind(webhook.as_str())
            .fetch_all(pool)
            .await?;
            rows.iter().map(attempt_from_row).collect()
        }
    };
}

pub(crate) use queue_queries;
