//! Reading the audit log, newest first, with opaque cursors.

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use zivio_store::AuditCursor;

use crate::rfc3339;
use crate::{AppError, AppResult, Caller, FieldError, Services};

pub const MAX_PAGE: u32 = 100;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = AuditEntry)]
pub struct AuditEntryView {
    #[schema(format = DateTime)]
    pub at: String,
    pub actor_id: String,
    pub action: String,
    pub webhook_id: Option<String>,
    /// What changed: `{"field": {"from": old, "to": new}}` for edits; never a secret, URLs masked.
    #[schema(value_type = Object)]
    pub changes: Value,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntryView>,
    pub next_cursor: Option<String>,
}

pub async fn list(
    services: &Services,
    caller: &Caller,
    cursor: Option<&str>,
    limit: Option<u32>,
) -> AppResult<AuditPage> {
    let limit = crate::cursor::limit(limit, 50, MAX_PAGE)?;
    let before = cursor.map(decode_cursor).transpose()?;
    let mut records = services
        .store
        .audit_entries(&caller.tenant, before, limit + 1)
        .await?;
    let more = records.len() > limit as usize;
    records.truncate(limit as usize);
    let next_cursor = more
        .then(|| {
            records
                .last()
                .map(|record| encode_cursor(record.entry.at, record.id))
        })
        .flatten();
    Ok(AuditPage {
        entries: records.into_iter().map(view).collect(),
        next_cursor,
    })
}

/// The newest entries about one webhook of the caller's tenant.
pub async fn of_webhook(
    services: &Services,
    caller: &Caller,
    webhook: &str,
    limit: u32,
) -> AppResult<Vec<AuditEntryView>> {
    let records = services
        .store
        .webhook_audit_entries(&caller.tenant, webhook, limit.min(MAX_PAGE))
        .await?;
    Ok(records.into_iter().map(view).collect())
}

fn view(record: zivio_store::AuditRecord) -> AuditEntryView {
    AuditEntryView {
        at: rfc3339(record.entry.at),
        actor_id: record.entry.actor_id,
        action: record.entry.action,
        webhook_id: record.entry.webhook_id,
        changes: record.entry.changes,
    }
}

fn encode_cursor(at: OffsetDateTime, id: i64) -> String {
    crate::cursor::encode(at, &id.to_string())
}

fn decode_cursor(text: &str) -> AppResult<AuditCursor> {
    let (at, id) = crate::cursor::decode(text)?;
    let id = id.parse().map_err(|_| {
        AppError::InvalidParameter(FieldError::new(
            "cursor",
            "is not a cursor this service returned",
        ))
    })?;
    Ok(AuditCursor { at, id })
}
