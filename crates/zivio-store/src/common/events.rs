//! Events, payloads and the queue rows a publish creates.

macro_rules! event_queries {
    ($db:ty, $to:path, $from:path, $t:ty) => {
        use sqlx::Row as _;
        use time::OffsetDateTime;
        use zivio_core::ids::TenantId;
        use zivio_core::webhook::WebhookId;

        use $crate::{KeyedEvent, NewEvent, QueuedDelivery, StoreError, StoreResult, StoredEvent, conflict_on_unique};

        type Pool = sqlx::Pool<$db>;
        type Connection = <$db as sqlx::Database>::Connection;

        pub(crate) async fn events_by_key(pool: &Pool, tenant: &TenantId, keys: &[String]) -> StoreResult<Vec<KeyedEvent>> {
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
                        id: row.get("id"),
                        fingerprint: row.get("fingerprint"),
                        accepted_at: $from(row.get::<$t, _>("accepted_at")),
                    });
                }
            }
            Ok(found)
        }

        pub(crate) async fn insert_event(
            tx: &mut Connection,
            tenant: &TenantId,
            event: &NewEvent,
            key_cutoff: OffsetDateTime,
        ) -> StoreResult<()> {
            if let Some(key) = &event.key {
                // A key older than the retention window is free again.
                sqlx::query(
                    "UPDATE events SET producer_key = NULL
                     WHERE tenant_id = $1 AND producer_key = $2 AND accepted_at < $3",
                )
                .bind(tenant.as_str())
                .bind(key)
                .bind($to(key_cutoff))
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "INSERT INTO events (id, tenant_id, type, occurred_at, accepted_at, producer_key,
                                     fingerprint, resource_id, source)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&event.id)
            .bind(tenant.as_str())
            .bind(&event.event_type)
            .bind($to(event.occurred_at))
            .bind($to(event.accepted_at))
            .bind(&event.key)
            .bind(event.fingerprint.as_slice())
            .bind(&event.resource_id)
            .bind(&event.source)
            .execute(&mut *tx)
            .await
            .map_err(|error| match conflict_on_unique(error, "producer key") {
                StoreError::NotFound { .. } => StoreError::NotFound { what: "tenant" },
                other => other,
            })?;
            let mut payload_ids = Vec::with_capacity(event.payloads.len());
            for body in &event.payloads {
                let id: i64 = sqlx::query_scalar("INSERT INTO payloads (event_id, body) VALUES ($1, $2) RETURNING id")
                    .bind(&event.id)
                    .bind(body.as_slice())
                    .fetch_one(&mut *tx)
                    .await?;
                payload_ids.push(id);
            }
            for (webhook, payload) in &event.deliveries {
                let payload_id = *payload_ids
                    .get(*payload)
                    .ok_or_else(|| StoreError::Corrupt(format!("payload index {payload} out of range")))?;
                // A webhook disabled or deleted, or whose owner became inactive, since the fan-out was
                // computed gets nothing (the engine checks again before sending); a test event
                // reaches a disabled webhook too.
                sqlx::query(
                    "INSERT INTO deliveries (tenant_id, webhook_id, event_id, payload_id, state, attempts,
                                             next_attempt_at, created_at)
                     SELECT $1, $2, $3, $4, 'pending', 0, $5, $5
                     WHERE EXISTS (SELECT 1 FROM webhooks w
                                   JOIN users u ON u.tenant_id = w.tenant_id AND u.id = w.owner_id
                                   WHERE w.id = $2 AND w.tenant_id = $1 AND (w.enabled OR $6) AND u.active)",
                )
                .bind(tenant.as_str())
                .bind(webhook.as_str())
                .bind(&event.id)
                .bind(payload_id)
                .bind($to(event.accepted_at))
                .bind(event.is_test)
                .execute(&mut *tx)
                .await?;
            }
            Ok(())
        }

        pub(crate) async fn event(pool: &Pool, tenant: &TenantId, id: &str) -> StoreResult<Option<StoredEvent>> {
            let row = sqlx::query(
                "SELECT id, type, occurred_at, resource_id, source FROM events WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant.as_str())
            .bind(id)
            .fetch_optional(pool)
            .await?;
            Ok(row.map(|row| StoredEvent {
                id: row.get("id"),
                event_type: row.get("type"),
                occurred_at: $from(row.get::<$t, _>("occurred_at")),
                resource_id: row.get("resource_id"),
                source: row.get("source"),
            }))
        }

        pub(crate) async fn deliveries_of_event(pool: &Pool, tenant: &TenantId, event_id: &str) -> StoreResult<Vec<QueuedDelivery>> {
            let rows = sqlx::query(
                "SELECT d.webhook_id, d.state, p.body FROM deliveries d JOIN payloads p ON p.id = d.payload_id
                 WHERE d.tenant_id = $1 AND d.event_id = $2 ORDER BY d.webhook_id",
            )
            .bind(tenant.as_str())
            .bind(event_id)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(QueuedDelivery {
                        webhook_id: WebhookId::parse(row.get("webhook_id"))
                            .ok_or_else(|| StoreError::Corrupt("webhook id".to_owned()))?,
                        state: row.get("state"),
                        body: row.get("body"),
                    })
                })
                .collect()
        }
    };
}

pub(crate) use event_queries;
