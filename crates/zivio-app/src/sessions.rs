//! Signing in to the admin UI (docs/product.md §8): by tenant, email and password, or by a
//! single-use link the platform issued. A session is a random id in an `HttpOnly` cookie; the
//! store keeps only its digest. Deactivating or deleting a user, or taking `webhooks:manage`
//! from them, deletes their sessions in the same transaction (the store does it with the
//! directory change), so regaining access later needs a new sign-in. Every request also resumes
//! the session against the directory *now*: an inactive user's sessions stop working at once;
//! for a user without `webhooks:manage` the session ends with a page saying they need it.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use zivio_core::access::Access;
use zivio_core::audit::{AuditAction, AuditEntry};
use zivio_core::ids::{TenantId, UserId};
use zivio_core::secret::SigningSecret;
use zivio_store::{LinkHolder, StoreError, UserWithRoles};

use crate::passwords::HashingPool;
use crate::{AppError, AppResult, Caller, Services, digest, random};

/// A session ends after this long without a request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// And after this long in any case.
pub const ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(12 * 60 * 60);
/// `last_seen_at` is written at most this often (a write per page view is waste).
const TOUCH_EVERY: time::Duration = time::Duration::minutes(1);

const REFUSED: &str = "The tenant, email or password is not right.";

/// Who a resumed session belongs to.
#[derive(Debug, Clone)]
pub enum Signed {
    /// A user who may manage webhooks.
    Manager(Caller),
    /// Signed in, active, but without `webhooks:manage`.
    WithoutPermission { tenant: TenantId, user: UserId },
}

/// Checks the password and opens a session; returns the session id for the cookie.
pub async fn sign_in_with_password(
    services: &Services,
    tenant: &str,
    email: &str,
    password: &str,
) -> AppResult<String> {
    let tenant = TenantId::parse(tenant.trim()).map_err(|_| AppError::Unauthenticated(REFUSED))?;
    let user = services.store.user_by_email(&tenant, email.trim()).await?;
    let stored = match &user {
        Some(user) => services.store.password_hash(&tenant, user).await?,
        None => None,
    };
    // One Argon2 verification whatever the case (unknown email, no password set, wrong or
    // right password), on the hashing threads, so timing tells nothing. When they are busy the
    // answer is 503 (`Busy`), whatever the case as well.
    let has_password = stored.is_some();
    let hash = stored.unwrap_or_else(|| UNMATCHABLE_HASH.to_owned());
    // A password longer than any that can be set matches nothing; it is not carried further.
    let fits = password.len() <= zivio_core::password::MAX_LENGTH;
    let candidate = if fits {
        password.to_owned()
    } else {
        String::new()
    };
    let verified = HashingPool::global().verify(candidate, hash).await?;
    match user {
        // A user without a password cannot sign in with one (not even an empty one).
        Some(user) if has_password && fits && verified => {
            open(services, &tenant, &user, "password").await
        }
        _ => Err(AppError::Unauthenticated(REFUSED)),
    }
}

/// Verified against when there is no stored hash (and the result ignored), so that the work is
/// the same: the default parameters with a random output that is the hash of no known password.
const UNMATCHABLE_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$Sx5jVzmFq2Ojl3k0Y8VQWw$\
                                Zp6cQ0bKf2mT8yH1dR7uW3xN9aL5eJ4gV6sB0oC2iXk";

/// Uses a sign-in link (once) and opens a session; returns the session id for the cookie.
pub async fn sign_in_with_link(services: &Services, token: &str) -> AppResult<String> {
    const EXPIRED: &str =
        "This sign-in link is not valid: it was used already, has expired, or never existed.";
    let now = services.now();
    let Some(LinkHolder { tenant, user }) = services
        .store
        .consume_sign_in_link(&digest(token), now)
        .await?
    else {
        return Err(AppError::Unauthenticated(EXPIRED));
    };
    open(services, &tenant, &user, "link").await
}

async fn open(
    services: &Services,
    tenant: &TenantId,
    user: &UserId,
    method: &str,
) -> AppResult<String> {
    let Some(UserWithRoles { user: record, .. }) =
        services.store.user_with_roles(tenant, user).await?
    else {
        return Err(AppError::Unauthenticated(REFUSED));
    };
    if !record.active {
        return Err(AppError::Unauthenticated(REFUSED));
    }
    // A fresh id at every sign-in: an id planted before signing in is worth nothing.
    let id = URL_SAFE_NO_PAD.encode(random::<32>());
    let now = services.now();
    let audit = AuditEntry::new(tenant, now, user.as_str(), AuditAction::SignedIn)
        .changes(json!({"method": method}));
    services
        .store
        .create_session(&digest(&id), tenant, user, now, &audit)
        .await
        .map_err(|error| match error {
            // Deactivated or deleted since it was read above.
            StoreError::Conflict { .. } | StoreError::NotFound { .. } => {
                AppError::Unauthenticated(REFUSED)
            }
            other => other.into(),
        })?;
    tracing::info!(tenant = %tenant, user = %user, method, "signed in to the admin UI");
    Ok(id)
}

/// The session's user as of now, or `None` when the session does not exist, has expired, or
/// its user is gone or inactive.
pub async fn resume(services: &Services, id: &str) -> AppResult<Option<Signed>> {
    let key = digest(id);
    let Some(session) = services.store.session(&key).await? else {
        return Ok(None);
    };
    let now = services.now();
    let expired =
        now - session.last_seen_at > IDLE_TIMEOUT || now - session.created_at > ABSOLUTE_TIMEOUT;
    let user = services
        .store
        .user_with_roles(&session.tenant, &session.user)
        .await?
        .filter(|found| found.user.active);
    let Some(UserWithRoles { user, roles }) = user.filter(|_| !expired) else {
        services.store.delete_session(&key).await?;
        return Ok(None);
    };
    if now - session.last_seen_at > TOUCH_EVERY {
        services.store.touch_session(&key, now).await?;
    }
    let access = Access::of(&user, &roles);
    if !access.can_manage_webhooks() {
        // The session ends here: this answer shows the "you need the permission" page once,
        // and a later grant of the permission does not revive it.
        services.store.delete_session(&key).await?;
        return Ok(Some(Signed::WithoutPermission {
            tenant: session.tenant,
            user: session.user,
        }));
    }
    Ok(Some(Signed::Manager(Caller {
        tenant: session.tenant,
        user: session.user,
        access,
    })))
}

pub async fn sign_out(services: &Services, id: &str) -> AppResult<()> {
    Ok(services.store.delete_session(&digest(id)).await?)
}

/// The token forms carry: derived from the session id, which only the session's browser has.
pub fn form_token(id: &str) -> String {
    hex::encode(digest(&format!("form-token:{id}")))
}

/// A new value for the sign-in form's pre-session cookie: the form carries a token derived from
/// it (double submit), so another site cannot sign a browser in to an account of its choosing.
pub fn new_sign_in_nonce() -> String {
    URL_SAFE_NO_PAD.encode(random::<32>())
}

/// Whether `nonce` has the form of a value [`new_sign_in_nonce`] made.
pub fn is_sign_in_nonce(nonce: &str) -> bool {
    nonce.len() == 43
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The sign-in form's token for the pre-session cookie's value.
pub fn sign_in_token(nonce: &str) -> String {
    form_token(&format!("sign-in:{nonce}"))
}

/// Keeps a new signing secret with the session (sealed) until the one-time page shows it.
pub async fn keep_secret(
    services: &Services,
    id: &str,
    webhook: &str,
    secret: &SigningSecret,
) -> AppResult<()> {
    let sealed = secret.seal(&services.secrets_key, &pending_label(id, webhook), random());
    Ok(services
        .store
        .set_pending_secret(&digest(id), webhook, &sealed)
        .await?)
}

/// The secret kept for this webhook, once: reading it removes it.
pub async fn take_secret(
    services: &Services,
    id: &str,
    webhook: &str,
) -> AppResult<Option<SigningSecret>> {
    let sealed = services
        .store
        .take_pending_secret(&digest(id), webhook)
        .await?;
    Ok(sealed.and_then(|sealed| {
        SigningSecret::open(&sealed, &services.secrets_key, &pending_label(id, webhook)).ok()
    }))
}

/// Binds a kept secret to its session and webhook, so it cannot be opened anywhere else.
fn pending_label(id: &str, webhook: &str) -> String {
    format!("pending:{}:{webhook}", hex::encode(digest(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unmatchable_hash_costs_what_a_stored_one_does() {
        let stored = zivio_core::password::hash("correct horse battery", [7; 16]);
        let parameters = |phc: &str| phc.split('$').take(4).collect::<Vec<_>>().join("$");
        assert_eq!(parameters(UNMATCHABLE_HASH), parameters(&stored));
        let mut memory = zivio_core::password::Memory::new();
        assert!(!zivio_core::password::verify_in(
            "",
            UNMATCHABLE_HASH,
            &mut memory
        ));
        assert_eq!(memory.bytes(), 19 << 20, "a whole verification ran");
    }
}
