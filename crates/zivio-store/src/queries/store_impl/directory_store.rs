//! `DirectoryStore` on this backend.

use time::OffsetDateTime;
use zivio_core::directory::{Role, Tenant, User};
use zivio_core::ids::{RoleName, TenantId, UserId};

use crate::{DirectoryStore, StoreResult, UserWithRoles};

use super::{BackendStore, directory};

#[async_trait::async_trait]
impl DirectoryStore for BackendStore {
    async fn upsert_tenant(&self, tenant: &Tenant, now: OffsetDateTime) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        directory::upsert_tenant(&mut tx, tenant, now).await?;
        Ok(tx.commit().await?)
    }

    async fn delete_tenant(&self, tenant: &TenantId) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let deleted = directory::delete_tenant(&mut tx, tenant).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn tenant(&self, tenant: &TenantId) -> StoreResult<Option<Tenant>> {
        directory::tenant(self.reader(), tenant).await
    }

    async fn upsert_role(
        &self,
        tenant: &TenantId,
        role: &Role,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        directory::upsert_role(&mut tx, tenant, role, now).await?;
        Ok(tx.commit().await?)
    }

    async fn delete_role(
        &self,
        tenant: &TenantId,
        name: &RoleName,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let deleted = directory::delete_role(&mut tx, tenant, name, now).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn role(&self, tenant: &TenantId, name: &RoleName) -> StoreResult<Option<Role>> {
        directory::role(self.reader(), tenant, name).await
    }

    async fn upsert_user(
        &self,
        tenant: &TenantId,
        user: &User,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        directory::upsert_user(&mut tx, tenant, user, now).await?;
        Ok(tx.commit().await?)
    }

    async fn delete_user(
        &self,
        tenant: &TenantId,
        user: &UserId,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let deleted = directory::delete_user(&mut tx, tenant, user, now).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn user(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Option<User>> {
        directory::user(self.reader(), tenant, user).await
    }

    async fn user_with_roles(
        &self,
        tenant: &TenantId,
        user: &UserId,
    ) -> StoreResult<Option<UserWithRoles>> {
        directory::user_with_roles(self.reader(), tenant, user).await
    }

    async fn set_password(
        &self,
        tenant: &TenantId,
        user: &UserId,
        hash: &str,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let updated = directory::set_password(&mut tx, tenant, user, hash, now).await?;
        tx.commit().await?;
        Ok(updated)
    }

    async fn password_hash(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Option<String>> {
        directory::password_hash(self.reader(), tenant, user).await
    }
}
