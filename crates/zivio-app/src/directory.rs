//! The platform's side of the directory (docs/product.md §3, §8): tenants, roles and users pushed
//! by the Zivio platform, passwords, API keys and sign-in links. The service never invents access.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use zivio_core::audit::{AuditAction, AuditEntry, PLATFORM_ACTOR};
use zivio_core::directory::{ApiKey, Placement, RevokedReason, Role, Tenant, User};
use zivio_core::ids::{RoleName, TenantId, UserId};
use zivio_core::keys::ApiKeyFormat;
use zivio_core::password;
use zivio_core::permission::Permission;
use zivio_core::webhook::time_ordered_hex;
use zivio_store::StoreError;

use crate::passwords::HashingPool;
use crate::rfc3339;
use crate::{AppError, AppResult, FieldError, Services, digest, random, unix_millis};

const MAX_TEXT_LENGTH: usize = 200;

/// A user as the platform pushes it.
#[derive(Debug, Clone, Default)]
pub struct UserInput {
    pub email: String,
    pub name: String,
    pub active: bool,
    pub placement: Placement,
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ApiKey)]
pub struct ApiKeyView {
    pub id: String,
    /// The key's last four characters.
    pub hint: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub last_used_at: Option<String>,
    /// When the key was revoked; null while it is live. A revoked key stays listed and never
    /// works again.
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
    /// Why it was revoked; null while it is live.
    pub revoked_reason: Option<RevokedReasonView>,
}

/// Why an API key was revoked: `revoked` through the platform API; `user_deactivated`,
/// `user_deleted` or `permission_removed` (the user lost `webhooks:manage` by a change of
/// their roles, of a role's permissions, or a role's deletion) by a directory change, which
/// also ends the user's admin sessions. Regaining access needs a new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = RevokedReason)]
pub enum RevokedReasonView {
    Revoked,
    UserDeactivated,
    UserDeleted,
    PermissionRemoved,
}

impl From<RevokedReason> for RevokedReasonView {
    fn from(reason: RevokedReason) -> Self {
        match reason {
            RevokedReason::Revoked => RevokedReasonView::Revoked,
            RevokedReason::UserDeactivated => RevokedReasonView::UserDeactivated,
            RevokedReason::UserDeleted => RevokedReasonView::UserDeleted,
            RevokedReason::PermissionRemoved => RevokedReasonView::PermissionRemoved,
        }
    }
}

/// A new API key: `key` is shown this once.
#[derive(Debug)]
pub struct IssuedKey {
    pub id: String,
    pub key: String,
}

// Ids in paths: one that cannot be valid cannot name anything that exists (404), except
// where the request would create it (422 naming the field).

fn new_tenant_id(text: &str) -> AppResult<TenantId> {
    TenantId::parse(text).map_err(|error| AppError::invalid("tenant_id", error.to_string()))
}

fn new_user_id(text: &str) -> AppResult<UserId> {
    UserId::parse(text).map_err(|error| AppError::invalid("user_id", error.to_string()))
}

/// A tenant id that must name an existing tenant.
pub fn existing_tenant(text: &str) -> AppResult<TenantId> {
    TenantId::parse(text).map_err(|_| AppError::NotFound("tenant"))
}

fn existing_user(text: &str) -> AppResult<UserId> {
    UserId::parse(text).map_err(|_| AppError::NotFound("user"))
}

pub async fn put_tenant(services: &Services, tenant: &str, name: &str) -> AppResult<()> {
    let id = new_tenant_id(tenant)?;
    let name = bounded_text("name", name)?;
    services
        .store
        .upsert_tenant(&Tenant { id, name }, services.now())
        .await?;
    Ok(())
}

pub async fn delete_tenant(services: &Services, tenant: &str) -> AppResult<()> {
    let id = existing_tenant(tenant)?;
    found(services.store.delete_tenant(&id).await?, "tenant")
}

/// Every permission must parse; the error names each unknown collection, scope or group.
pub async fn put_role(
    services: &Services,
    tenant: &str,
    role: &str,
    permissions: &[String],
) -> AppResult<()> {
    let tenant = existing_tenant(tenant)?;
    let name =
        RoleName::parse(role).map_err(|error| AppError::invalid("role", error.to_string()))?;
    let errors: Vec<FieldError> = permissions
        .iter()
        .enumerate()
        .filter_map(|(index, text)| {
            Permission::parse(text)
                .err()
                .map(|error| FieldError::new(format!("permissions[{index}]"), error.to_string()))
        })
        .collect();
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let role = Role {
        name,
        permissions: permissions.to_vec(),
    };
    services
        .store
        .upsert_role(&tenant, &role, services.now())
        .await
        .map_err(tenant_missing)
}

pub async fn delete_role(services: &Services, tenant: &str, role: &str) -> AppResult<()> {
    let tenant = existing_tenant(tenant)?;
    let name = RoleName::parse(role).map_err(|_| AppError::NotFound("role"))?;
    let deleted = services
        .store
        .delete_role(&tenant, &name, services.now())
        .await?;
    found(deleted, "role")
}

pub async fn put_user(
    services: &Services,
    tenant: &str,
    user: &str,
    input: UserInput,
) -> AppResult<()> {
    let tenant = existing_tenant(tenant)?;
    let id = new_user_id(user)?;
    let mut errors = Vec::new();
    let email = input.email.trim().to_owned();
    let valid_email = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && (domain.contains('.') || domain == "localhost")
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if !valid_email {
        errors.push(FieldError::new("email", "must be an email address"));
    }
    if let Err(AppError::Validation(mut more)) = bounded_text("name", &input.name) {
        errors.append(&mut more);
    }
    for (field, level) in [
        ("placement.business_unit", &input.placement.business_unit),
        ("placement.division", &input.placement.division),
        ("placement.department", &input.placement.department),
    ] {
        if level
            .as_ref()
            .is_some_and(|value| value.is_empty() || value.chars().count() > MAX_TEXT_LENGTH)
        {
            errors.push(FieldError::new(
                field,
                "must be null or 1 to 200 characters",
            ));
        }
    }
    let roles: Vec<RoleName> = input
        .roles
        .iter()
        .enumerate()
        .filter_map(|(index, role)| {
            RoleName::parse(role)
                .map_err(|error| {
                    errors.push(FieldError::new(
                        format!("roles[{index}]"),
                        error.to_string(),
                    ))
                })
                .ok()
        })
        .collect();
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let user = User {
        id,
        email,
        name: input.name.trim().to_owned(),
        active: input.active,
        placement: input.placement,
        roles,
    };
    services
        .store
        .upsert_user(&tenant, &user, services.now())
        .await
        .map_err(|error| match error {
            StoreError::Conflict { .. } => {
                AppError::invalid("email", "another user of this tenant has this email")
            }
            other => tenant_missing(other),
        })
}

pub async fn delete_user(services: &Services, tenant: &str, user: &str) -> AppResult<()> {
    let tenant = existing_tenant(tenant)?;
    let user = existing_user(user)?;
    let deleted = services
        .store
        .delete_user(&tenant, &user, services.now())
        .await?;
    found(deleted, "user")
}

pub async fn set_password(
    services: &Services,
    tenant: &str,
    user: &str,
    password: String,
) -> AppResult<()> {
    let tenant = existing_tenant(tenant)?;
    let user = existing_user(user)?;
    let length = password.chars().count();
    if length < password::MIN_LENGTH || password.len() > password::MAX_LENGTH {
        return Err(AppError::invalid(
            "password",
            format!(
                "must be {} to {} characters",
                password::MIN_LENGTH,
                password::MAX_LENGTH
            ),
        ));
    }
    // Argon2id takes tens of milliseconds of CPU and 19 MiB: on the hashing threads.
    let hash = HashingPool::global().hash(password).await?;
    found(
        services
            .store
            .set_password(&tenant, &user, &hash, services.now())
            .await?,
        "user",
    )
}

pub async fn issue_api_key(services: &Services, tenant: &str, user: &str) -> AppResult<IssuedKey> {
    let (tenant, user) = active_user(services, tenant, user).await?;
    let now = services.now();
    let key = ApiKeyFormat::generate(random());
    let record = ApiKey {
        id: format!("key_{}", time_ordered_hex(unix_millis(now), random())),
        user: user.clone(),
        hint: key[key.len() - 4..].to_owned(),
        created_at: now,
        last_used_at: None,
        revoked: None,
    };
    let audit = AuditEntry::new(&tenant, now, PLATFORM_ACTOR, AuditAction::ApiKeyCreated).changes(
        serde_json::json!({"user_id": user.as_str(), "api_key_id": record.id, "hint": record.hint}),
    );
    services
        .store
        .create_api_key(&tenant, &record, &digest(&key), &audit)
        .await
        .map_err(|error| match error {
            // Deactivated since it was read above.
            StoreError::Conflict { what } if what == zivio_store::INACTIVE_USER => {
                AppError::Conflict(format!("User {user} is inactive."))
            }
            other => other.into(),
        })?;
    Ok(IssuedKey { id: record.id, key })
}

pub async fn api_keys(services: &Services, tenant: &str, user: &str) -> AppResult<Vec<ApiKeyView>> {
    let tenant = existing_tenant(tenant)?;
    let user = existing_user(user)?;
    if services.store.user(&tenant, &user).await?.is_none() {
        return Err(AppError::NotFound("user"));
    }
    let keys = services.store.api_keys(&tenant, &user).await?;
    Ok(keys
        .into_iter()
        .map(|key| ApiKeyView {
            id: key.id,
            hint: key.hint,
            created_at: rfc3339(key.created_at),
            last_used_at: key.last_used_at.map(rfc3339),
            revoked_at: key.revoked.map(|revoked| rfc3339(revoked.at)),
            revoked_reason: key.revoked.map(|revoked| revoked.reason.into()),
        })
        .collect())
}

/// Revokes a live key (`revoked`); it stays listed. 404 when the user has no live key `key`.
pub async fn revoke_api_key(
    services: &Services,
    tenant: &str,
    user: &str,
    key: &str,
) -> AppResult<()> {
    let tenant = existing_tenant(tenant)?;
    let user = existing_user(user)?;
    let audit = AuditEntry::new(
        &tenant,
        services.now(),
        PLATFORM_ACTOR,
        AuditAction::ApiKeyRevoked,
    )
    .changes(serde_json::json!({"user_id": user.as_str(), "api_key_id": key}));
    found(
        services
            .store
            .revoke_api_key(&tenant, &user, key, &audit)
            .await?,
        "API key",
    )
}

/// A single-use link that signs the user in to the admin UI; valid for a few minutes.
pub async fn issue_sign_in_link(
    services: &Services,
    tenant: &str,
    user: &str,
) -> AppResult<String> {
    let (tenant, user) = active_user(services, tenant, user).await?;
    let now = services.now();
    let token = URL_SAFE_NO_PAD.encode(random::<32>());
    let ttl = time::Duration::try_from(services.settings.sign_in_link_ttl)
        .unwrap_or(time::Duration::minutes(10));
    let audit = AuditEntry::new(&tenant, now, PLATFORM_ACTOR, AuditAction::SignInLinkIssued)
        .changes(serde_json::json!({"user_id": user.as_str(), "expires_at": rfc3339(now + ttl)}));
    services
        .store
        .create_sign_in_link(&tenant, &user, &digest(&token), now + ttl, &audit)
        .await?;
    let url = services
        .settings
        .public_url
        .join(&format!("admin/sign-in/link/{token}"))
        .expect("a token is a valid path segment");
    Ok(url.to_string())
}

/// The user, who must exist and be active (keys and links are refused for inactive users).
async fn active_user(
    services: &Services,
    tenant: &str,
    user: &str,
) -> AppResult<(TenantId, UserId)> {
    let tenant = existing_tenant(tenant)?;
    let user = existing_user(user)?;
    match services.store.user(&tenant, &user).await? {
        None => Err(AppError::NotFound("user")),
        Some(record) if !record.active => {
            Err(AppError::Conflict(format!("User {user} is inactive.")))
        }
        Some(_) => Ok((tenant, user)),
    }
}

fn bounded_text(field: &str, text: &str) -> AppResult<String> {
    let text = text.trim();
    if text.is_empty()
        || text.chars().count() > MAX_TEXT_LENGTH
        || text.chars().any(char::is_control)
    {
        return Err(AppError::invalid(
            field,
            "must be 1 to 200 characters without control characters",
        ));
    }
    Ok(text.to_owned())
}

fn found(found: bool, what: &'static str) -> AppResult<()> {
    if found {
        Ok(())
    } else {
        Err(AppError::NotFound(what))
    }
}

fn tenant_missing(error: StoreError) -> AppError {
    match error {
        StoreError::NotFound { .. } => AppError::NotFound("tenant"),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_reasons_are_listed_by_their_core_names() {
        for reason in RevokedReason::ALL {
            let listed = serde_json::to_value(RevokedReasonView::from(reason)).unwrap();
            assert_eq!(listed, reason.as_str());
        }
    }
}
