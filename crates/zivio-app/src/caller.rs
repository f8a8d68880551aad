//! Who is calling the v4 API: a user of a tenant, authenticated by one of their API keys, with
//! the access their roles give them now (not when the key was issued).

use zivio_core::access::Access;
use zivio_core::ids::{TenantId, UserId};
use zivio_core::keys::ApiKeyFormat;
use zivio_store::{KeyHolder, UserWithRoles};

use crate::{AppError, AppResult, Services, digest};

#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: TenantId,
    pub user: UserId,
    pub access: Access,
}

/// Authenticates `X-API-Key` + `zivio-tenant-id`. An unknown key, a key of another tenant, or
/// a key whose user is gone or inactive is a 401; a user without `webhooks:manage` gets 403.
pub async fn authenticate_api_key(
    services: &Services,
    key: &str,
    tenant: &str,
) -> AppResult<Caller> {
    const REFUSED: &str = "The API key is not valid for this tenant.";
    let tenant = TenantId::parse(tenant).map_err(|_| AppError::Unauthenticated(REFUSED))?;
    // A key that does not have the form of an issued key cannot be in the directory.
    if !ApiKeyFormat::is_well_formed(key) {
        return Err(AppError::Unauthenticated(REFUSED));
    }
    let key_digest = digest(key);
    services.metrics.api_key_looked_up();
    let holder = services.store.api_key_holder(&key_digest).await?;
    let Some(KeyHolder {
        tenant: key_tenant,
        user,
        last_used_at: last_used,
    }) = holder
    else {
        return Err(AppError::Unauthenticated(REFUSED));
    };
    if key_tenant != tenant {
        return Err(AppError::Unauthenticated(REFUSED));
    }
    let Some(UserWithRoles {
        user: record,
        roles,
    }) = services.store.user_with_roles(&tenant, &user).await?
    else {
        return Err(AppError::Unauthenticated(REFUSED));
    };
    if !record.active {
        return Err(AppError::Unauthenticated(REFUSED));
    }
    let access = Access::of(&record, &roles);
    if !access.can_manage_webhooks() {
        return Err(AppError::Forbidden(
            "Managing webhooks needs the webhooks:manage permission; ask your platform administrator."
                .to_owned(),
        ));
    }
    // Only successful uses count, and at most one write a minute per key.
    let now = services.now();
    if last_used.is_none_or(|at| now - at > time::Duration::minutes(1)) {
        services.store.touch_api_key(&key_digest, now).await?;
    }
    Ok(Caller {
        tenant,
        user,
        access,
    })
}

/// The access of a webhook's owner and whether they are active. Coverage counts the owner's
/// roles even while they are inactive (`Access` keeps them; only its own checks need
/// activity). A deleted owner counts as having had every access: nobody but an all-access
/// admin covers them, so their webhook's URL and data stay guarded (and a later user with the
/// same id cannot inherit a redirected webhook).
pub async fn owner_access(
    services: &Services,
    tenant: &TenantId,
    owner: &UserId,
) -> AppResult<(Access, bool)> {
    Ok(match services.store.user_with_roles(tenant, owner).await? {
        Some(UserWithRoles { user, roles }) => (Access::of(&user, &roles), user.active),
        None => (Access::deleted_user(owner), false),
    })
}
