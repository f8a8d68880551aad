//! Recovery (docs/product.md §7): resend everything that failed to one webhook in a window of
//! time, in the background. Starting one (and its dry run) needs access that covers the owner;
//! any manager may cancel one. The work itself is done by [`worker`].

use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;
use zivio_core::audit::{AuditAction, AuditEntry};
use zivio_core::recovery::{self, Ending};
use zivio_store::{Recovery, StoreError};

use crate::caller::owner_access;
use crate::webhook_access::{find, require_cover};
use crate::{AppError, AppResult, Caller, FieldError, Services, random, rfc3339, unix_millis};

pub mod worker;

/// A recovery as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Recovery)]
pub struct RecoveryView {
    /// `rcv_...`
    pub id: String,
    pub webhook_id: String,
    #[schema(format = DateTime)]
    pub since: String,
    #[schema(format = DateTime)]
    pub until: String,
    /// `running`, `done`, `cancelled` or `stopped`.
    pub state: &'static str,
    /// Null while running; `done`, `cancelled by <user id>`, `webhook disabled`, `owner inactive`.
    pub ended_reason: Option<String>,
    /// Events found when it started.
    pub selected: i64,
    /// New events published so far.
    pub resent: i64,
    /// Events the owner can no longer see (or no longer stored).
    pub skipped: i64,
    pub created_by: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub finished_at: Option<String>,
}

/// What `recover` was asked for.
#[derive(Debug, Clone)]
pub struct RecoverRequest {
    pub since: OffsetDateTime,
    /// Now when absent.
    pub until: Option<OffsetDateTime>,
    pub dry_run: bool,
}

/// What `recover` did.
#[derive(Debug, Clone)]
pub enum Recovered {
    /// A dry run: how many events a recovery would resend now.
    WouldResend(i64),
    Started(Box<RecoveryView>),
}

pub async fn recover(
    services: &Services,
    caller: &Caller,
    webhook_id: &str,
    request: RecoverRequest,
) -> AppResult<Recovered> {
    let webhook = find(services, caller, webhook_id).await?;
    require_cover(services, caller, &webhook, "recover events of").await?;
    if !webhook.is_enabled() {
        return Err(AppError::Conflict(
            "The webhook is disabled: enable it before recovering its events.".to_owned(),
        ));
    }
    let (_, owner_active) = owner_access(services, &caller.tenant, &webhook.owner).await?;
    if !owner_active {
        return Err(crate::deliveries::owner_inactive());
    }
    let now = services.now();
    let until = request.until.unwrap_or(now);
    let retention =
        time::Duration::try_from(services.settings.retention).unwrap_or(time::Duration::MAX);
    if let Err(message) = recovery::check_window(request.since, until, now, retention) {
        return Err(AppError::BadRequest(vec![FieldError::new(
            "since", message,
        )]));
    }
    if request.dry_run {
        let count = services
            .store
            .count_recoverable(&caller.tenant, &webhook.id, request.since, until)
            .await?;
        return Ok(Recovered::WouldResend(count));
    }
    let started = Recovery {
        id: recovery::new_id(unix_millis(now), random()),
        tenant: caller.tenant.clone(),
        webhook_id: webhook.id.clone(),
        since: request.since,
        until,
        state: recovery::RecoveryState::Running,
        ended_reason: None,
        selected: 0,
        resent: 0,
        skipped: 0,
        created_by: caller.user.to_string(),
        created_at: now,
        finished_at: None,
    };
    let audit = AuditEntry::new(
        &caller.tenant,
        now,
        caller.user.as_str(),
        AuditAction::RecoveryStarted,
    )
    .webhook(webhook.id.as_str())
    .changes(json!({"recovery_id": started.id, "since": rfc3339(started.since), "until": rfc3339(until)}));
    let started = services
        .store
        .start_recovery(&started, recovery::MAX_RUNNING_PER_TENANT, &audit)
        .await
        .map_err(|error| match error {
            StoreError::Conflict { what } => AppError::Conflict(format!(
                "A recovery cannot start now: {what} (at most {} per tenant, one per webhook).",
                recovery::MAX_RUNNING_PER_TENANT
            )),
            other => other.into(),
        })?;
    tracing::info!(recovery = %started.id, webhook = %webhook.id, selected = started.selected, "recovery started");
    Ok(Recovered::Started(Box::new(view(&started))))
}

pub async fn list(
    services: &Services,
    caller: &Caller,
    webhook_id: &str,
) -> AppResult<Vec<RecoveryView>> {
    let webhook = find(services, caller, webhook_id).await?;
    let recoveries = services
        .store
        .recoveries(&caller.tenant, &webhook.id)
        .await?;
    Ok(recoveries.iter().map(view).collect())
}

pub async fn get(
    services: &Services,
    caller: &Caller,
    webhook_id: &str,
    id: &str,
) -> AppResult<RecoveryView> {
    Ok(view(&of_webhook(services, caller, webhook_id, id).await?))
}

/// Open to every manager: cancelling is a safety valve, like disabling. Cancelling an ended
/// recovery changes nothing.
pub async fn cancel(
    services: &Services,
    caller: &Caller,
    webhook_id: &str,
    id: &str,
) -> AppResult<RecoveryView> {
    let recovery = of_webhook(services, caller, webhook_id, id).await?;
    let now = services.now();
    let ending = Ending::CancelledBy(caller.user.clone());
    let audit = ended_entry(&recovery, caller.user.as_str(), now, &ending);
    let ended = services
        .store
        .end_recovery(&caller.tenant, &recovery.id, &ending, now, &audit)
        .await?;
    Ok(view(ended.as_ref().unwrap_or(&recovery)))
}

/// The audit entry of a recovery's end (the store adds the final counts).
pub(crate) fn ended_entry(
    recovery: &Recovery,
    actor: &str,
    at: OffsetDateTime,
    ending: &Ending,
) -> AuditEntry {
    AuditEntry::new(&recovery.tenant, at, actor, AuditAction::RecoveryEnded)
        .webhook(recovery.webhook_id.as_str())
        .changes(json!({"recovery_id": recovery.id, "reason": ending.to_string()}))
}

/// The recovery `id` of the caller's webhook `webhook_id`, or 404.
async fn of_webhook(
    services: &Services,
    caller: &Caller,
    webhook_id: &str,
    id: &str,
) -> AppResult<Recovery> {
    let webhook = find(services, caller, webhook_id).await?;
    services
        .store
        .recovery(&caller.tenant, id)
        .await?
        .filter(|recovery| recovery.webhook_id == webhook.id)
        .ok_or(AppError::NotFound("recovery"))
}

fn view(recovery: &Recovery) -> RecoveryView {
    RecoveryView {
        id: recovery.id.clone(),
        webhook_id: recovery.webhook_id.to_string(),
        since: rfc3339(recovery.since),
        until: rfc3339(recovery.until),
        state: recovery.state.as_str(),
        ended_reason: recovery.ended_reason.clone(),
        selected: recovery.selected,
        resent: recovery.resent,
        skipped: recovery.skipped,
        created_by: recovery.created_by.clone(),
        created_at: rfc3339(recovery.created_at),
        finished_at: recovery.finished_at.map(rfc3339),
    }
}
