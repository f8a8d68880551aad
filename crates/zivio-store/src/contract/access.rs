//! API keys, sign-in links and admin sessions: how callers prove who they are.

use time::OffsetDateTime;
use zivio_core::audit::AuditEntry;
use zivio_core::directory::ApiKey;
use zivio_core::ids::{TenantId, UserId};

use crate::{AdminSession, KeyHolder, LinkHolder, StoreResult};

#[async_trait::async_trait]
pub trait AccessStore: Send + Sync {
    /// Stores a new key (only its SHA-256 digest) and the audit entry. `NotFound` without the
    /// user, `Conflict` when the user is inactive.
    async fn create_api_key(
        &self,
        tenant: &TenantId,
        key: &ApiKey,
        digest: &[u8],
        audit: &AuditEntry,
    ) -> StoreResult<()>;

    /// The user's keys, revoked ones included, oldest first.
    async fn api_keys(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Vec<ApiKey>>;

    /// Revokes a live key of the user (`revoked`, at `audit.at`; it stays listed) with the
    /// audit entry. `false` when the user has no live key with this id.
    async fn revoke_api_key(
        &self,
        tenant: &TenantId,
        user: &UserId,
        id: &str,
        audit: &AuditEntry,
    ) -> StoreResult<bool>;

    /// Who holds the live (unrevoked) key with this digest, and when it was last used.
    async fn api_key_holder(&self, digest: &[u8]) -> StoreResult<Option<KeyHolder>>;

    /// Records that the key with this digest was used now.
    async fn touch_api_key(&self, digest: &[u8], now: OffsetDateTime) -> StoreResult<()>;

    /// Stores a single-use sign-in link (only its token's digest) and the audit entry.
    async fn create_sign_in_link(
        &self,
        tenant: &TenantId,
        user: &UserId,
        digest: &[u8],
        expires_at: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<()>;

    /// The user of the tenant with this email (case-insensitive).
    async fn user_by_email(&self, tenant: &TenantId, email: &str) -> StoreResult<Option<UserId>>;

    /// Uses a sign-in link: if it is unused and unexpired at `now` it becomes used and its
    /// tenant and user are returned; otherwise `None`. Single use even under races.
    async fn consume_sign_in_link(
        &self,
        digest: &[u8],
        now: OffsetDateTime,
    ) -> StoreResult<Option<LinkHolder>>;

    /// Stores a new session under the digest of its id, with the sign-in's audit entry.
    /// `NotFound` without the user, `Conflict` when the user is inactive.
    async fn create_session(
        &self,
        digest: &[u8],
        tenant: &TenantId,
        user: &UserId,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<()>;

    async fn session(&self, digest: &[u8]) -> StoreResult<Option<AdminSession>>;

    async fn touch_session(&self, digest: &[u8], now: OffsetDateTime) -> StoreResult<()>;

    async fn delete_session(&self, digest: &[u8]) -> StoreResult<()>;

    /// Keeps a sealed signing secret with the session until it is shown once.
    async fn set_pending_secret(
        &self,
        digest: &[u8],
        webhook: &str,
        sealed: &[u8],
    ) -> StoreResult<()>;

    /// The sealed secret kept for this webhook, removed as it is read.
    async fn take_pending_secret(
        &self,
        digest: &[u8],
        webhook: &str,
    ) -> StoreResult<Option<Vec<u8>>>;

    /// Deletes sessions idle since before `cutoff`.
    async fn purge_sessions(&self, cutoff: OffsetDateTime) -> StoreResult<u64>;
}
