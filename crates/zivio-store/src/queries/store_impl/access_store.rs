//! `AccessStore` on this backend.

use time::OffsetDateTime;
use zivio_core::audit::AuditEntry;
use zivio_core::directory::ApiKey;
use zivio_core::ids::{TenantId, UserId};

use crate::{AccessStore, AdminSession, KeyHolder, LinkHolder, StoreResult};

use super::{BackendStore, directory, history, keys, sessions};

#[async_trait::async_trait]
impl AccessStore for BackendStore {
    async fn create_api_key(
        &self,
        tenant: &TenantId,
        key: &ApiKey,
        digest: &[u8],
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        directory::lock_tenant(&mut tx, tenant).await?;
        keys::create_api_key(&mut tx, tenant, key, digest).await?;
        directory::record_audit(&mut tx, audit).await?;
        Ok(tx.commit().await?)
    }

    async fn api_keys(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Vec<ApiKey>> {
        keys::api_keys(self.reader(), tenant, user).await
    }

    async fn revoke_api_key(
        &self,
        tenant: &TenantId,
        user: &UserId,
        key: &str,
        audit: &AuditEntry,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let revoked = keys::revoke_api_key(&mut tx, tenant, user, key, audit.at).await?;
        if revoked {
            directory::record_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(revoked)
    }

    async fn api_key_holder(&self, digest: &[u8]) -> StoreResult<Option<KeyHolder>> {
        keys::api_key_holder(self.reader(), digest).await
    }

    async fn touch_api_key(&self, digest: &[u8], now: OffsetDateTime) -> StoreResult<()> {
        keys::touch_api_key(self.writer(), digest, now).await
    }

    async fn create_sign_in_link(
        &self,
        tenant: &TenantId,
        user: &UserId,
        digest: &[u8],
        expires_at: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        keys::create_sign_in_link(&mut tx, tenant, user, digest, expires_at, audit.at).await?;
        directory::record_audit(&mut tx, audit).await?;
        Ok(tx.commit().await?)
    }

    async fn user_by_email(&self, tenant: &TenantId, email: &str) -> StoreResult<Option<UserId>> {
        sessions::user_by_email(self.reader(), tenant, email).await
    }

    async fn consume_sign_in_link(
        &self,
        digest: &[u8],
        now: OffsetDateTime,
    ) -> StoreResult<Option<LinkHolder>> {
        let mut tx = self.begin_write().await?;
        let owner = sessions::consume_sign_in_link(&mut tx, digest, now).await?;
        tx.commit().await?;
        Ok(owner)
    }

    async fn create_session(
        &self,
        digest: &[u8],
        tenant: &TenantId,
        user: &UserId,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        directory::lock_tenant(&mut tx, tenant).await?;
        sessions::create_session(&mut tx, digest, tenant, user, now).await?;
        directory::record_audit(&mut tx, audit).await?;
        Ok(tx.commit().await?)
    }

    async fn session(&self, digest: &[u8]) -> StoreResult<Option<AdminSession>> {
        sessions::session(self.reader(), digest).await
    }

    async fn touch_session(&self, digest: &[u8], now: OffsetDateTime) -> StoreResult<()> {
        let mut tx = self.begin_uncounted_write().await?;
        sessions::touch_session(&mut tx, digest, now).await?;
        Ok(tx.commit().await?)
    }

    async fn delete_session(&self, digest: &[u8]) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sessions::delete_session(&mut tx, digest).await?;
        Ok(tx.commit().await?)
    }

    async fn set_pending_secret(
        &self,
        digest: &[u8],
        webhook: &str,
        sealed: &[u8],
    ) -> StoreResult<()> {
        let mut tx = self.begin_uncounted_write().await?;
        sessions::set_pending_secret(&mut tx, digest, webhook, sealed).await?;
        Ok(tx.commit().await?)
    }

    async fn take_pending_secret(
        &self,
        digest: &[u8],
        webhook: &str,
    ) -> StoreResult<Option<Vec<u8>>> {
        let mut tx = self.begin_uncounted_write().await?;
        let sealed = sessions::take_pending_secret(&mut tx, digest, webhook).await?;
        tx.commit().await?;
        Ok(sealed)
    }

    async fn purge_sessions(&self, cutoff: OffsetDateTime) -> StoreResult<u64> {
        self.purge_in_batches(
            cutoff,
            1_000,
            history::Purge::Rows(sessions::PURGE_SESSIONS),
        )
        .await
    }
}
