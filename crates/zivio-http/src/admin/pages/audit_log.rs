//! The audit log.

use askama::Template;
use axum::extract::{Query, State};
use serde::Deserialize;
use zivio_app::audit;

use crate::AppState;
use crate::admin::{Admin, PageResult};

use super::{Layout, pretty, render};
#[derive(Deserialize)]
pub struct AuditQuery {
    cursor: Option<String>,
}

#[derive(Template)]
#[template(path = "audit_log.html")]
struct AuditLogPage {
    layout: Layout,
    entries: Vec<(audit::AuditEntryView, String)>,
    next: Option<String>,
}

pub async fn audit_log(
    State(state): State<AppState>,
    admin: Admin,
    Query(query): Query<AuditQuery>,
) -> PageResult {
    let page = audit::list(
        &state.services,
        &admin.caller,
        query.cursor.as_deref().filter(|c| !c.is_empty()),
        Some(50),
    )
    .await?;
    let entries = page.entries.into_iter().map(|entry| {
        let changes = pretty(&entry.changes);
        (entry, changes)
    });
    Ok(render(&AuditLogPage {
        layout: Layout::of(&admin, "Audit log", "audit-log"),
        entries: entries.collect(),
        next: page
            .next_cursor
            .map(|cursor| format!("/admin/audit-log?cursor={cursor}")),
    }))
}
