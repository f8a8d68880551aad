//! Signing in to the admin UI (PRODUCT.md §8): by tenant, email and password, or by a
//! single-use link the platform issued. A session is a random id in an `HttpOnly` cookie; the
//! store keeps only its digest. Every request resumes the session against the directory *now*:
//! an inactive user's sessions stop working at once; for a user without `webhooks:manage` the
//! session ends with a page saying they need it.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use zivio_core::access::Access;
use zivio_core::audit::{AuditAction, AuditEntry};
use zivio_core::ids::{TenantId, UserId};
use zivio_core::secret::SigningSecret;

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
    // right password), off the async workers, so timing tells nothing.
    let has_password = stored.is_some();
    let hash = stored.unwrap_or_else(|| unmatchable_hash().to_owned());
    let password = password.to_owned();
    let verified =
        tokio::task::spawn_blocking(move || zivio_core::password::verify(&password, &hash))
            .await
            .unwrap_or(false);
    match user {
        // A user without a password cannot sign in with one (not even an empty one).
        Some(user) if has_password && verified => open(services, &tenant, &user, "password").await,
        _ => Err(AppError::Unauthenticated(REFUSED)),
    }
}

/// A hash no password is checked against successfully by the code above (it is only used when
/// there is no stored hash, and then the result is ignored); computed once.
fn unmatchable_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| zivio_core::password::hash("", random()))
}

/// Uses a sign-in link (once) and opens a session; returns the session id for the cookie.
pub async fn sign_in_with_link(services: &Services, token: &str) -> AppResult<String> {
    const EXPIRED: &str =
        "This sign-in link is not valid: it was used already, has expired, or never existed.";
    let now = services.now();
    let Some((tenant, user)) = services
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
    let Some((record, _)) = services.store.user_with_roles(tenant, user).await? else {
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
        .await?;
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
        .filter(|(user, _)| user.active);
    let Some((user, roles)) = user.filter(|_| !expired) else {
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
