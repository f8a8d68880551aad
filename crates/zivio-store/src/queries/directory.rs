//! Settings, bootstrap, tenants, roles and users.

use std::collections::BTreeMap;

use sqlx::Row as _;
use time::OffsetDateTime;
use zivio_core::access::Access;
use zivio_core::audit::{AuditAction, AuditEntry, PLATFORM_ACTOR};
use zivio_core::directory::{
    BootstrapSeed, Placement, RevokedReason, Role, Tenant, User, access_ended,
};
use zivio_core::ids::{RoleName, TenantId, UserId};

use crate::{KeyCheck, StoreError, StoreResult, UserWithRoles, conflict_on_unique, stored};

use super::{Connection, Db, Pool, to_db};

pub(crate) async fn claim_key_check(pool: &Pool, check: &str) -> StoreResult<KeyCheck> {
    let inserted = sqlx::query(
        "INSERT INTO settings (name, value) VALUES ('secrets_key_check', $1)
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(check)
    .execute(pool)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(KeyCheck::Recorded);
    }
    let recorded: String =
        sqlx::query_scalar("SELECT value FROM settings WHERE name = 'secrets_key_check'")
            .fetch_one(pool)
            .await?;
    Ok(if recorded == check {
        KeyCheck::Matches
    } else {
        KeyCheck::Mismatch
    })
}

pub(crate) async fn bootstrap(
    tx: &mut Connection,
    seed: &BootstrapSeed,
    now: OffsetDateTime,
) -> StoreResult<bool> {
    let first = sqlx::query(
        "INSERT INTO settings (name, value) VALUES ('bootstrapped', $1)
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(now.unix_timestamp().to_string())
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let has_tenants: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants)")
        .fetch_one(&mut *tx)
        .await?;
    // The marker stays either way: a database that held data is never bootstrapped.
    if !first || has_tenants {
        return Ok(false);
    }
    upsert_tenant(tx, &seed.tenant, now).await?;
    upsert_role(tx, &seed.tenant.id, &seed.role, now).await?;
    upsert_user(tx, &seed.tenant.id, &seed.admin, now).await?;
    set_password(
        tx,
        &seed.tenant.id,
        &seed.admin.id,
        &seed.password_hash,
        now,
    )
    .await?;
    Ok(true)
}

pub(crate) async fn upsert_tenant(
    tx: &mut Connection,
    tenant: &Tenant,
    now: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO tenants (id, name, created_at, updated_at) VALUES ($1, $2, $3, $3)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, updated_at = excluded.updated_at",
    )
    .bind(tenant.id.as_str())
    .bind(&tenant.name)
    .bind(to_db(now))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub(crate) async fn delete_tenant(tx: &mut Connection, tenant: &TenantId) -> StoreResult<bool> {
    let deleted = sqlx::query("DELETE FROM tenants WHERE id = $1")
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(deleted.rows_affected() > 0)
}

pub(crate) async fn tenant(pool: &Pool, tenant: &TenantId) -> StoreResult<Option<Tenant>> {
    let row = sqlx::query("SELECT id, name FROM tenants WHERE id = $1")
        .bind(tenant.as_str())
        .fetch_optional(pool)
        .await?;
    row.map(|row| {
        Ok(Tenant {
            id: stored(TenantId::parse(row.get("id")))?,
            name: row.get("name"),
        })
    })
    .transpose()
}

/// Takes the tenant's row lock (PostgreSQL; SQLite has one writer anyway) and says
/// whether the tenant exists: serialises per-tenant limits and refuses orphans. Every
/// directory change and every grant of a key or session takes it first, so access read
/// in such a transaction cannot change under it (a key or session granted while a
/// deactivation commits is either seen and ended by it, or refused).
pub(crate) async fn lock_tenant(tx: &mut Connection, tenant: &TenantId) -> StoreResult<()> {
    if !lock_tenant_if_exists(tx, tenant).await? {
        return Err(StoreError::NotFound { what: "tenant" });
    }
    Ok(())
}

async fn lock_tenant_if_exists(tx: &mut Connection, tenant: &TenantId) -> StoreResult<bool> {
    let found = sqlx::query("UPDATE tenants SET updated_at = updated_at WHERE id = $1")
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    Ok(found > 0)
}

/// Whose access a directory change may take away: one user, or everyone holding a role.
enum Affected<'a> {
    User(&'a UserId),
    HoldersOf(&'a RoleName),
}

/// The access of the affected users as this transaction sees it (users that do not
/// exist are left out). The store only loads: what access is and when a change ends it
/// are `zivio_core`'s rules (`Access::of`, `access_ended`).
async fn accesses(
    tx: &mut Connection,
    tenant: &TenantId,
    affected: &Affected<'_>,
) -> StoreResult<Vec<Access>> {
    let (users_sql, held_sql, key) = match affected {
        Affected::User(user) => (
            "SELECT id, email, name, active, business_unit, division, department
             FROM users WHERE tenant_id = $1 AND id = $2",
            "SELECT user_id, role_name FROM user_roles WHERE tenant_id = $1 AND user_id = $2",
            user.as_str(),
        ),
        Affected::HoldersOf(role) => (
            "SELECT id, email, name, active, business_unit, division, department
             FROM users WHERE tenant_id = $1
               AND id IN (SELECT user_id FROM user_roles WHERE tenant_id = $1 AND role_name = $2)
             ORDER BY id",
            "SELECT user_id, role_name FROM user_roles WHERE tenant_id = $1
               AND user_id IN (SELECT user_id FROM user_roles WHERE tenant_id = $1 AND role_name = $2)",
            role.as_str(),
        ),
    };
    let mut held: BTreeMap<String, Vec<RoleName>> = BTreeMap::new();
    let rows = sqlx::query(held_sql)
        .bind(tenant.as_str())
        .bind(key)
        .fetch_all(&mut *tx)
        .await?;
    for row in &rows {
        held.entry(row.get("user_id"))
            .or_default()
            .push(stored(RoleName::parse(row.get("role_name")))?);
    }
    let roles = tenant_roles(tx, tenant).await?;
    let rows = sqlx::query(users_sql)
        .bind(tenant.as_str())
        .bind(key)
        .fetch_all(&mut *tx)
        .await?;
    rows.iter()
        .map(|row| {
            let roles_held = held.remove(row.get::<&str, _>("id")).unwrap_or_default();
            Ok(Access::of(&user_of(row, roles_held)?, &roles))
        })
        .collect()
}

/// Every role of the tenant with its permissions.
async fn tenant_roles(tx: &mut Connection, tenant: &TenantId) -> StoreResult<Vec<Role>> {
    let rows = sqlx::query(
        "SELECT r.name, rp.permission FROM roles r
         LEFT JOIN role_permissions rp ON rp.tenant_id = r.tenant_id AND rp.role_name = r.name
         WHERE r.tenant_id = $1 ORDER BY r.name, rp.permission",
    )
    .bind(tenant.as_str())
    .fetch_all(&mut *tx)
    .await?;
    let mut roles: Vec<Role> = Vec::new();
    for row in &rows {
        let name = stored(RoleName::parse(row.get("name")))?;
        if roles.last().is_none_or(|role| role.name != name) {
            roles.push(Role {
                name,
                permissions: Vec::new(),
            });
        }
        if let (Some(role), Some(permission)) =
            (roles.last_mut(), row.get::<Option<String>, _>("permission"))
        {
            role.permissions.push(permission);
        }
    }
    Ok(roles)
}

/// Ends, for good, the admin sessions and API keys of every user whose access the change
/// from `before` to `after` takes away (`access_ended` decides; a user missing from
/// `after` was deleted).
async fn end_lost_access(
    tx: &mut Connection,
    tenant: &TenantId,
    before: &[Access],
    after: &[Access],
    now: OffsetDateTime,
) -> StoreResult<()> {
    let after: BTreeMap<&UserId, &Access> =
        after.iter().map(|access| (access.user(), access)).collect();
    for old in before {
        let new = after.get(old.user()).copied();
        if let Some(reason) = access_ended(Some(old), new) {
            end_access(tx, tenant, old.user(), reason, now).await?;
        }
    }
    Ok(())
}

/// Revokes the user's live API keys (they stay listed, with when and why; their digests
/// are erased, so nothing matches them again) and deletes their admin sessions; audited
/// when it ended anything (ids and counts, never a key).
async fn end_access(
    tx: &mut Connection,
    tenant: &TenantId,
    user: &UserId,
    reason: RevokedReason,
    now: OffsetDateTime,
) -> StoreResult<()> {
    let mut revoked: Vec<String> = sqlx::query_scalar(
        "UPDATE api_keys SET revoked_at = $3, revoked_reason = $4, key_hash = NULL
         WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL
         RETURNING id",
    )
    .bind(tenant.as_str())
    .bind(user.as_str())
    .bind(to_db(now))
    .bind(reason.as_str())
    .fetch_all(&mut *tx)
    .await?;
    revoked.sort();
    let sessions = sqlx::query("DELETE FROM admin_sessions WHERE tenant_id = $1 AND user_id = $2")
        .bind(tenant.as_str())
        .bind(user.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    // Unused sign-in links go too: one issued before the loss must not open a session
    // once access is back.
    let links = sqlx::query("DELETE FROM sign_in_links WHERE tenant_id = $1 AND user_id = $2")
        .bind(tenant.as_str())
        .bind(user.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if revoked.is_empty() && sessions == 0 && links == 0 {
        return Ok(());
    }
    // Directory changes come from the platform (the service never invents access).
    let audit = AuditEntry::new(tenant, now, PLATFORM_ACTOR, AuditAction::UserAccessEnded).changes(
        serde_json::json!({
            "user_id": user.as_str(),
            "reason": reason.as_str(),
            "api_keys_revoked": revoked.len(),
            "api_key_ids": revoked,
            "sessions_ended": sessions,
            "sign_in_links_deleted": links,
        }),
    );
    record_audit(tx, &audit).await
}

pub(crate) async fn upsert_role(
    tx: &mut Connection,
    tenant: &TenantId,
    role: &Role,
    now: OffsetDateTime,
) -> StoreResult<()> {
    lock_tenant(tx, tenant).await?;
    let holders = Affected::HoldersOf(&role.name);
    let before = accesses(tx, tenant, &holders).await?;
    sqlx::query(
        "INSERT INTO roles (tenant_id, name, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id, name) DO UPDATE SET updated_at = excluded.updated_at",
    )
    .bind(tenant.as_str())
    .bind(role.name.as_str())
    .bind(to_db(now))
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM role_permissions WHERE tenant_id = $1 AND role_name = $2")
        .bind(tenant.as_str())
        .bind(role.name.as_str())
        .execute(&mut *tx)
        .await?;
    for permission in &role.permissions {
        sqlx::query(
            "INSERT INTO role_permissions (tenant_id, role_name, permission) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(role.name.as_str())
        .bind(permission)
        .execute(&mut *tx)
        .await?;
    }
    let after = accesses(tx, tenant, &holders).await?;
    end_lost_access(tx, tenant, &before, &after, now).await
}

pub(crate) async fn delete_role(
    tx: &mut Connection,
    tenant: &TenantId,
    name: &RoleName,
    now: OffsetDateTime,
) -> StoreResult<bool> {
    if !lock_tenant_if_exists(tx, tenant).await? {
        return Ok(false);
    }
    let holders = Affected::HoldersOf(name);
    let before = accesses(tx, tenant, &holders).await?;
    let deleted = sqlx::query("DELETE FROM roles WHERE tenant_id = $1 AND name = $2")
        .bind(tenant.as_str())
        .bind(name.as_str())
        .execute(&mut *tx)
        .await?;
    // Users keep the role's name (it may be defined again); it grants nothing now.
    let after = accesses(tx, tenant, &holders).await?;
    end_lost_access(tx, tenant, &before, &after, now).await?;
    Ok(deleted.rows_affected() > 0)
}

pub(crate) async fn role(
    pool: &Pool,
    tenant: &TenantId,
    name: &RoleName,
) -> StoreResult<Option<Role>> {
    let mut roles = roles_named(pool, tenant, std::slice::from_ref(name)).await?;
    Ok(roles.pop())
}

/// The roles among `names` that exist, with their permissions.
async fn roles_named(pool: &Pool, tenant: &TenantId, names: &[RoleName]) -> StoreResult<Vec<Role>> {
    let mut roles = Vec::new();
    for name in names {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM roles WHERE tenant_id = $1 AND name = $2)",
        )
        .bind(tenant.as_str())
        .bind(name.as_str())
        .fetch_one(pool)
        .await?;
        if !exists {
            continue;
        }
        let permissions = sqlx::query_scalar(
            "SELECT permission FROM role_permissions WHERE tenant_id = $1 AND role_name = $2
             ORDER BY permission",
        )
        .bind(tenant.as_str())
        .bind(name.as_str())
        .fetch_all(pool)
        .await?;
        roles.push(Role {
            name: name.clone(),
            permissions,
        });
    }
    Ok(roles)
}

pub(crate) async fn upsert_user(
    tx: &mut Connection,
    tenant: &TenantId,
    user: &User,
    now: OffsetDateTime,
) -> StoreResult<()> {
    lock_tenant(tx, tenant).await?;
    let affected = Affected::User(&user.id);
    let before = accesses(tx, tenant, &affected).await?;
    sqlx::query(
        "INSERT INTO users (tenant_id, id, email, name, active, business_unit, division,
                            department, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
         ON CONFLICT (tenant_id, id) DO UPDATE SET
             email = excluded.email, name = excluded.name, active = excluded.active,
             business_unit = excluded.business_unit, division = excluded.division,
             department = excluded.department, updated_at = excluded.updated_at",
    )
    .bind(tenant.as_str())
    .bind(user.id.as_str())
    .bind(&user.email)
    .bind(&user.name)
    .bind(user.active)
    .bind(&user.placement.business_unit)
    .bind(&user.placement.division)
    .bind(&user.placement.department)
    .bind(to_db(now))
    .execute(&mut *tx)
    .await
    .map_err(|error| conflict_on_unique(error, "another user of this tenant has this email"))?;
    if !user.active {
        cancel_work_of_owner(tx, tenant, &user.id).await?;
    }
    sqlx::query("DELETE FROM user_roles WHERE tenant_id = $1 AND user_id = $2")
        .bind(tenant.as_str())
        .bind(user.id.as_str())
        .execute(&mut *tx)
        .await?;
    for role in &user.roles {
        sqlx::query(
            "INSERT INTO user_roles (tenant_id, user_id, role_name) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(user.id.as_str())
        .bind(role.as_str())
        .execute(&mut *tx)
        .await?;
    }
    let after = accesses(tx, tenant, &affected).await?;
    end_lost_access(tx, tenant, &before, &after, now).await
}

/// An owner who is inactive or gone stops all sending at once: their webhooks' pending
/// work is cancelled (never resumed).
async fn cancel_work_of_owner(
    tx: &mut Connection,
    tenant: &TenantId,
    owner: &UserId,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE deliveries SET state = 'cancelled', next_attempt_at = NULL
         WHERE state = 'pending'
           AND webhook_id IN (SELECT id FROM webhooks WHERE tenant_id = $1 AND owner_id = $2)",
    )
    .bind(tenant.as_str())
    .bind(owner.as_str())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Deletes the user (their sign-in links and sessions go with them); their API keys stay,
/// revoked, so that a user created later with the same id does not inherit them.
pub(crate) async fn delete_user(
    tx: &mut Connection,
    tenant: &TenantId,
    user: &UserId,
    now: OffsetDateTime,
) -> StoreResult<bool> {
    if !lock_tenant_if_exists(tx, tenant).await? {
        return Ok(false);
    }
    let before = accesses(tx, tenant, &Affected::User(user)).await?;
    end_lost_access(tx, tenant, &before, &[], now).await?;
    cancel_work_of_owner(tx, tenant, user).await?;
    let deleted = sqlx::query("DELETE FROM users WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.as_str())
        .bind(user.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(deleted.rows_affected() > 0)
}

pub(crate) async fn user(
    pool: &Pool,
    tenant: &TenantId,
    user: &UserId,
) -> StoreResult<Option<User>> {
    let Some(row) = sqlx::query(
        "SELECT id, email, name, active, business_unit, division, department
         FROM users WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.as_str())
    .bind(user.as_str())
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let roles: Vec<String> = sqlx::query_scalar(
        "SELECT role_name FROM user_roles WHERE tenant_id = $1 AND user_id = $2 ORDER BY role_name",
    )
    .bind(tenant.as_str())
    .bind(user.as_str())
    .fetch_all(pool)
    .await?;
    let roles = roles
        .iter()
        .map(|role| stored(RoleName::parse(role)))
        .collect::<StoreResult<_>>()?;
    Ok(Some(user_of(&row, roles)?))
}

/// A user from a row of `users` (id, email, name, active and placement) and their roles.
fn user_of(row: &<Db as sqlx::Database>::Row, roles: Vec<RoleName>) -> StoreResult<User> {
    Ok(User {
        id: stored(UserId::parse(row.get("id")))?,
        email: row.get("email"),
        name: row.get("name"),
        active: row.get("active"),
        placement: Placement {
            business_unit: row.get("business_unit"),
            division: row.get("division"),
            department: row.get("department"),
        },
        roles,
    })
}

pub(crate) async fn user_with_roles(
    pool: &Pool,
    tenant: &TenantId,
    id: &UserId,
) -> StoreResult<Option<UserWithRoles>> {
    let Some(user) = user(pool, tenant, id).await? else {
        return Ok(None);
    };
    let roles = roles_named(pool, tenant, &user.roles).await?;
    Ok(Some(UserWithRoles { user, roles }))
}

pub(crate) async fn set_password(
    tx: &mut Connection,
    tenant: &TenantId,
    user: &UserId,
    hash: &str,
    now: OffsetDateTime,
) -> StoreResult<bool> {
    let updated = sqlx::query(
        "UPDATE users SET password_hash = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.as_str())
    .bind(user.as_str())
    .bind(hash)
    .bind(to_db(now))
    .execute(&mut *tx)
    .await?;
    Ok(updated.rows_affected() > 0)
}

pub(crate) async fn password_hash(
    pool: &Pool,
    tenant: &TenantId,
    user: &UserId,
) -> StoreResult<Option<String>> {
    let hash: Option<Option<String>> =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(user.as_str())
            .fetch_optional(pool)
            .await?;
    Ok(hash.flatten())
}

pub(crate) async fn record_audit(tx: &mut Connection, entry: &AuditEntry) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_log (tenant_id, at, actor_id, action, webhook_id, changes)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(entry.tenant.as_str())
    .bind(to_db(entry.at))
    .bind(&entry.actor_id)
    .bind(&entry.action)
    .bind(&entry.webhook_id)
    .bind(entry.changes.to_string())
    .execute(&mut *tx)
    .await?;
    Ok(())
}
