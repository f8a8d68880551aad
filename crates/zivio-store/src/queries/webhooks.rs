//! Webhooks and the audit log.

use sqlx::Row as _;
use time::OffsetDateTime;
use zivio_core::audit::AuditEntry;
use zivio_core::ids::{TenantId, UserId};
use zivio_core::webhook::{Disabled, DisabledReason, SealedSecret, Webhook, WebhookId};

use crate::{AuditCursor, AuditRecord, StoreError, StoreResult, stored};

use super::{Connection, Db, DbTime, Pool, Row, from_db, to_db};

const WEBHOOK_COLUMNS: &str = "id, tenant_id, owner_id, name, url, description, events,
    secret_ciphertext, secret_key_id, secret_hint, custom_headers, rate_limit, disabled_reason,
    disabled_by, disabled_at, created_at, updated_at, version";

fn webhook_from_row(row: &Row) -> StoreResult<Webhook> {
    let events: String = row.get("events");
    let disabled = match row.get::<Option<String>, _>("disabled_reason") {
        None => None,
        Some(reason) => Some(Disabled {
            reason: DisabledReason::parse(&reason)
                .ok_or_else(|| StoreError::Corrupt(format!("disabled_reason `{reason}`")))?,
            by: row
                .get::<Option<String>, _>("disabled_by")
                .map(|by| stored(UserId::parse(&by)))
                .transpose()?,
            at: row
                .get::<Option<DbTime>, _>("disabled_at")
                .map(from_db)
                .ok_or_else(|| StoreError::Corrupt("disabled_at missing".to_owned()))?,
        }),
    };
    Ok(Webhook {
        id: WebhookId::parse(row.get("id"))
            .ok_or_else(|| StoreError::Corrupt("webhook id".to_owned()))?,
        tenant: stored(TenantId::parse(row.get("tenant_id")))?,
        owner: stored(UserId::parse(row.get("owner_id")))?,
        name: row.get("name"),
        url: row.get("url"),
        description: row.get("description"),
        events: stored(serde_json::from_str(&events))?,
        secret: SealedSecret {
            ciphertext: row.get("secret_ciphertext"),
            key_id: row.get("secret_key_id"),
            hint: row.get("secret_hint"),
        },
        headers: stored(zivio_core::custom_header::decode(row.get("custom_headers")))?,
        rate_limit: crate::common::rate_limit_of(row.get("rate_limit"))?,
        disabled,
        created_at: from_db(row.get::<DbTime, _>("created_at")),
        updated_at: from_db(row.get::<DbTime, _>("updated_at")),
        version: row.get("version"),
    })
}

pub(crate) async fn count_webhooks(tx: &mut Connection, tenant: &TenantId) -> StoreResult<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM webhooks WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_one(&mut *tx)
            .await?,
    )
}

/// The editable columns, bound in the order both the insert and the update list them
/// (`name` through `disabled_at`).
trait BindMutableFields<'q> {
    fn bind_mutable_fields(self, webhook: &'q Webhook) -> Self;
}

impl<'q> BindMutableFields<'q> for sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments> {
    fn bind_mutable_fields(self, webhook: &'q Webhook) -> Self {
        let disabled = webhook.disabled.as_ref();
        self.bind(&webhook.name)
            .bind(&webhook.url)
            .bind(&webhook.description)
            .bind(serde_json::Value::from(webhook.events.clone()).to_string())
            .bind(&webhook.secret.ciphertext)
            .bind(&webhook.secret.key_id)
            .bind(&webhook.secret.hint)
            .bind(zivio_core::custom_header::encode(&webhook.headers))
            .bind(
                webhook
                    .rate_limit
                    .map(|limit| i32::try_from(limit.per_second()).unwrap_or(i32::MAX)),
            )
            .bind(webhook.is_enabled())
            .bind(disabled.map(|d| d.reason.as_str()))
            .bind(disabled.and_then(|d| d.by.as_ref()).map(UserId::as_str))
            .bind(disabled.map(|d| to_db(d.at)))
    }
}

pub(crate) async fn insert_webhook(tx: &mut Connection, webhook: &Webhook) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO webhooks (id, tenant_id, owner_id, name, url, description, events,
             secret_ciphertext, secret_key_id, secret_hint, custom_headers, rate_limit, enabled,
             disabled_reason, disabled_by, disabled_at, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
    )
    .bind(webhook.id.as_str())
    .bind(webhook.tenant.as_str())
    .bind(webhook.owner.as_str())
    .bind_mutable_fields(webhook)
    .bind(to_db(webhook.created_at))
    .bind(to_db(webhook.updated_at))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub(crate) async fn webhooks(pool: &Pool, tenant: &TenantId) -> StoreResult<Vec<Webhook>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id = $1 ORDER BY created_at, id"
    )))
    .bind(tenant.as_str())
    .fetch_all(pool)
    .await?;
    rows.iter().map(webhook_from_row).collect()
}

pub(crate) async fn webhook(
    pool: &Pool,
    tenant: &TenantId,
    id: &WebhookId,
) -> StoreResult<Option<Webhook>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id = $1 AND id = $2"
    )))
    .bind(tenant.as_str())
    .bind(id.as_str())
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(webhook_from_row).transpose()
}

pub(crate) async fn update_webhook(tx: &mut Connection, webhook: &Webhook) -> StoreResult<()> {
    let updated = sqlx::query(
        "UPDATE webhooks SET name = $3, url = $4, description = $5, events = $6,
             secret_ciphertext = $7, secret_key_id = $8, secret_hint = $9,
             custom_headers = $10, rate_limit = $11, enabled = $12, disabled_reason = $13,
             disabled_by = $14, disabled_at = $15, updated_at = $16, version = version + 1,
             -- Enabling starts afresh: the failure streak of before does not count.
             failing_since = CASE WHEN $12 AND NOT enabled THEN NULL ELSE failing_since END
         WHERE tenant_id = $1 AND id = $2 AND version = $17",
    )
    .bind(webhook.tenant.as_str())
    .bind(webhook.id.as_str())
    .bind_mutable_fields(webhook)
    .bind(to_db(webhook.updated_at))
    .bind(webhook.version)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM webhooks WHERE tenant_id = $1 AND id = $2)",
        )
        .bind(webhook.tenant.as_str())
        .bind(webhook.id.as_str())
        .fetch_one(&mut *tx)
        .await?;
        return Err(if exists {
            StoreError::Conflict {
                what: "the webhook was changed concurrently",
            }
        } else {
            StoreError::NotFound { what: "webhook" }
        });
    }
    if let Some(disabled) = &webhook.disabled {
        cancel_pending(tx, &webhook.id, disabled.at).await?;
    }
    Ok(())
}

/// Disabling cancels the work queued until then, leased or not; an attempt already in
/// flight may finish, but its result cannot revive a cancelled delivery. Test events
/// queued later (they reach disabled webhooks) survive later edits of the webhook.
pub(crate) async fn cancel_pending(
    tx: &mut Connection,
    webhook: &WebhookId,
    disabled_at: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE deliveries SET state = 'cancelled', next_attempt_at = NULL
         WHERE webhook_id = $1 AND state = 'pending' AND created_at <= $2",
    )
    .bind(webhook.as_str())
    .bind(to_db(disabled_at))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub(crate) async fn delete_webhook(
    tx: &mut Connection,
    tenant: &TenantId,
    id: &WebhookId,
) -> StoreResult<bool> {
    let deleted = sqlx::query("DELETE FROM webhooks WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.as_str())
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(deleted.rows_affected() > 0)
}

fn audit_from_row(row: &Row) -> StoreResult<AuditRecord> {
    let changes: String = row.get("changes");
    Ok(AuditRecord {
        id: row.get("id"),
        entry: AuditEntry {
            tenant: stored(TenantId::parse(row.get("tenant_id")))?,
            at: from_db(row.get::<DbTime, _>("at")),
            actor_id: row.get("actor_id"),
            action: row.get("action"),
            webhook_id: row.get("webhook_id"),
            changes: stored(serde_json::from_str(&changes))?,
        },
    })
}

pub(crate) async fn audit_entries(
    pool: &Pool,
    tenant: &TenantId,
    before: Option<AuditCursor>,
    limit: u32,
) -> StoreResult<Vec<AuditRecord>> {
    let rows = match before {
        None => {
            sqlx::query(
                "SELECT id, tenant_id, at, actor_id, action, webhook_id, changes FROM audit_log
                 WHERE tenant_id = $1 ORDER BY at DESC, id DESC LIMIT $2",
            )
            .bind(tenant.as_str())
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        }
        Some(cursor) => {
            sqlx::query(
                "SELECT id, tenant_id, at, actor_id, action, webhook_id, changes FROM audit_log
                 WHERE tenant_id = $1 AND (at < $2 OR (at = $2 AND id < $3))
                 ORDER BY at DESC, id DESC LIMIT $4",
            )
            .bind(tenant.as_str())
            .bind(to_db(cursor.at))
            .bind(cursor.id)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        }
    };
    rows.iter().map(audit_from_row).collect()
}

pub(crate) async fn webhook_audit_entries(
    pool: &Pool,
    tenant: &TenantId,
    webhook: &str,
    limit: u32,
) -> StoreResult<Vec<AuditRecord>> {
    let rows = sqlx::query(
        "SELECT id, tenant_id, at, actor_id, action, webhook_id, changes FROM audit_log
         WHERE tenant_id = $1 AND webhook_id = $2 ORDER BY at DESC, id DESC LIMIT $3",
    )
    .bind(tenant.as_str())
    .bind(webhook)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(audit_from_row).collect()
}
