//! Reading the audit log, newest first, with opaque cursors.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use zivio_store::AuditCursor;

use crate::webhooks::rfc3339;
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
    let limit = match limit {
        None => 50,
        Some(limit @ 1..=MAX_PAGE) => limit,
        Some(_) => {
            return Err(AppError::InvalidParameter(FieldError::new(
                "limit",
                format!("must be 1 to {MAX_PAGE}"),
            )));
        }
    };
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
        entries: records
            .into_iter()
            .map(|record| AuditEntryView {
                at: rfc3339(record.entry.at),
                actor_id: record.entry.actor_id,
                action: record.entry.action,
                webhook_id: record.entry.webhook_id,
                changes: record.entry.changes,
            })
            .collect(),
        next_cursor,
    })
}

fn encode_cursor(at: OffsetDateTime, id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{id}", at.unix_timestamp_nanos() / 1_000))
}

fn decode_cursor(text: &str) -> AppResult<AuditCursor> {
    let invalid = || {
        AppError::InvalidParameter(FieldError::new(
            "cursor",
            "is not a cursor this service returned",
        ))
    };
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (micros, id) = text.split_once(':').ok_or_else(invalid)?;
    let micros: i128 = micros.parse().map_err(|_| invalid())?;
    Ok(AuditCursor {
        at: OffsetDateTime::from_unix_timestamp_nanos(micros * 1_000).map_err(|_| invalid())?,
        id: id.parse().map_err(|_| invalid())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let cursor = decode_cursor(&encode_cursor(at, 42)).unwrap();
        assert_eq!((cursor.at, cursor.id), (at, 42));
        for bad in [
            "",
            "!!",
            &URL_SAFE_NO_PAD.encode("x:y"),
            &URL_SAFE_NO_PAD.encode("12"),
        ] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }
}
