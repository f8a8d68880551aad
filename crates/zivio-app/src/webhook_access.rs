//! A webhook as a caller may reach it: found in the caller's tenant, and changed only by those
//! whose access covers its owner's (the privilege boundary).

use zivio_core::webhook::{Webhook, WebhookId};

use crate::caller::owner_access;
use crate::{AppError, AppResult, Caller, Services};

/// The caller's tenant's webhook, or 404 (also for another tenant's id: never confirm it).
pub(crate) async fn find(services: &Services, caller: &Caller, id: &str) -> AppResult<Webhook> {
    let id = WebhookId::parse(id).ok_or(AppError::NotFound("webhook"))?;
    services
        .store
        .webhook(&caller.tenant, &id)
        .await?
        .ok_or(AppError::NotFound("webhook"))
}

pub(crate) async fn require_cover(
    services: &Services,
    caller: &Caller,
    webhook: &Webhook,
    action: &str,
) -> AppResult<()> {
    let (owner, _) = owner_access(services, &caller.tenant, &webhook.owner).await?;
    match caller.access.coverage_gap(&owner) {
        None => Ok(()),
        Some(gap) => Err(AppError::Forbidden(format!(
            "Only the owner ({}) or an admin whose access covers the owner's may {action} this webhook: {gap}.",
            webhook.owner
        ))),
    }
}
