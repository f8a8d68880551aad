//! Tenants, roles, users and their passwords: the directory the platform API keeps in step with Zivio.

use time::OffsetDateTime;
use zivio_core::directory::{Role, Tenant, User};
use zivio_core::ids::{RoleName, TenantId, UserId};

use crate::{StoreResult, UserWithRoles};

#[async_trait::async_trait]
pub trait DirectoryStore: Send + Sync {
    async fn upsert_tenant(&self, tenant: &Tenant, now: OffsetDateTime) -> StoreResult<()>;

    /// Deletes the tenant and everything it owns. `false` when there was no such tenant.
    async fn delete_tenant(&self, tenant: &TenantId) -> StoreResult<bool>;

    async fn tenant(&self, tenant: &TenantId) -> StoreResult<Option<Tenant>>;

    /// Creates or replaces a role and its permissions. `NotFound` without the tenant. Users who
    /// lose `webhooks:manage` by it have their admin sessions deleted and API keys revoked in
    /// the same transaction (`zivio_core::directory::access_ended`), audited.
    async fn upsert_role(
        &self,
        tenant: &TenantId,
        role: &Role,
        now: OffsetDateTime,
    ) -> StoreResult<()>;

    /// Deletes a role; users who lose `webhooks:manage` by it lose their sessions and keys, as
    /// with `upsert_role`. `false` when there was no such role (or tenant).
    async fn delete_role(
        &self,
        tenant: &TenantId,
        name: &RoleName,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;

    async fn role(&self, tenant: &TenantId, name: &RoleName) -> StoreResult<Option<Role>>;

    /// Creates or replaces a user and their role names (never their password). `NotFound`
    /// without the tenant; `Conflict` when another user of the tenant has the email. A user
    /// deactivated, or losing `webhooks:manage`, by it has their admin sessions deleted and API
    /// keys revoked in the same transaction (`zivio_core::directory::access_ended`), audited;
    /// regaining access later does not revive them.
    async fn upsert_user(
        &self,
        tenant: &TenantId,
        user: &User,
        now: OffsetDateTime,
    ) -> StoreResult<()>;

    /// Deletes the user with their sign-in links and admin sessions; their API keys stay listed,
    /// revoked (`user_deleted`), so a user created later with the same id cannot use them.
    /// Audited when it ended any key or session. `false` when there was no such user.
    async fn delete_user(
        &self,
        tenant: &TenantId,
        user: &UserId,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;

    async fn user(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Option<User>>;

    /// The user and the roles they hold that exist: everything access is computed from.
    async fn user_with_roles(
        &self,
        tenant: &TenantId,
        user: &UserId,
    ) -> StoreResult<Option<UserWithRoles>>;

    /// Sets the argon2id hash; `false` when there is no such user.
    async fn set_password(
        &self,
        tenant: &TenantId,
        user: &UserId,
        hash: &str,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;

    /// The user's argon2id password hash, if a password was set.
    async fn password_hash(&self, tenant: &TenantId, user: &UserId) -> StoreResult<Option<String>>;
}
