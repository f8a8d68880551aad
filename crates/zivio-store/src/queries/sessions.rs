//! Admin UI sessions, password sign-in lookups and single-use sign-in links.

use sqlx::Row as _;
use time::OffsetDateTime;
use zivio_core::ids::{TenantId, UserId};

use crate::{AdminSession, LinkHolder, StoreError, StoreResult, stored};

use super::{Connection, DbTime, Pool, from_db, to_db};

pub(crate) async fn user_by_email(
    pool: &Pool,
    tenant: &TenantId,
    email: &str,
) -> StoreResult<Option<UserId>> {
    let id: Option<String> = sqlx::query_scalar(
        "SELECT id FROM users WHERE tenant_id = $1 AND lower(email) = lower($2)",
    )
    .bind(tenant.as_str())
    .bind(email)
    .fetch_optional(pool)
    .await?;
    id.map(|id| stored(UserId::parse(&id))).transpose()
}

/// Marks the link used if it is unused and unexpired; returns whose it was.
pub(crate) async fn consume_sign_in_link(
    tx: &mut Connection,
    digest: &[u8],
    now: OffsetDateTime,
) -> StoreResult<Option<LinkHolder>> {
    let row = sqlx::query(
        "UPDATE sign_in_links SET used_at = $2
         WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2
         RETURNING tenant_id, user_id",
    )
    .bind(digest)
    .bind(to_db(now))
    .fetch_optional(&mut *tx)
    .await?;
    row.map(|row| {
        Ok(LinkHolder {
            tenant: stored(TenantId::parse(row.get("tenant_id")))?,
            user: stored(UserId::parse(row.get("user_id")))?,
        })
    })
    .transpose()
}

/// Opens a session for an active user (the caller holds the tenant's lock, so a
/// deactivation cannot commit between the check and the insert): `NotFound` without the
/// user, `Conflict` when they are inactive.
pub(crate) async fn create_session(
    tx: &mut Connection,
    digest: &[u8],
    tenant: &TenantId,
    user: &UserId,
    now: OffsetDateTime,
) -> StoreResult<()> {
    let inserted = sqlx::query(
        "INSERT INTO admin_sessions (id_hash, tenant_id, user_id, created_at, last_seen_at)
         SELECT $1, tenant_id, id, $4, $4 FROM users WHERE tenant_id = $2 AND id = $3 AND active",
    )
    .bind(digest)
    .bind(tenant.as_str())
    .bind(user.as_str())
    .bind(to_db(now))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(
            match super::keys::inactive_or_missing(tx, tenant, user).await? {
                StoreError::NotFound { .. } => StoreError::NotFound { what: "user" },
                other => other,
            },
        );
    }
    Ok(())
}

pub(crate) async fn session(pool: &Pool, digest: &[u8]) -> StoreResult<Option<AdminSession>> {
    let row = sqlx::query(
        "SELECT tenant_id, user_id, created_at, last_seen_at FROM admin_sessions WHERE id_hash = $1",
    )
    .bind(digest)
    .fetch_optional(pool)
    .await?;
    row.map(|row| {
        Ok(AdminSession {
            tenant: stored(TenantId::parse(row.get("tenant_id")))?,
            user: stored(UserId::parse(row.get("user_id")))?,
            created_at: from_db(row.get::<DbTime, _>("created_at")),
            last_seen_at: from_db(row.get::<DbTime, _>("last_seen_at")),
        })
    })
    .transpose()
}

pub(crate) async fn touch_session(
    tx: &mut Connection,
    digest: &[u8],
    now: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query("UPDATE admin_sessions SET last_seen_at = $2 WHERE id_hash = $1")
        .bind(digest)
        .bind(to_db(now))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

pub(crate) async fn delete_session(tx: &mut Connection, digest: &[u8]) -> StoreResult<()> {
    sqlx::query("DELETE FROM admin_sessions WHERE id_hash = $1")
        .bind(digest)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

pub(crate) async fn set_pending_secret(
    tx: &mut Connection,
    digest: &[u8],
    webhook: &str,
    sealed: &[u8],
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE admin_sessions SET pending_webhook = $2, pending_secret = $3 WHERE id_hash = $1",
    )
    .bind(digest)
    .bind(webhook)
    .bind(sealed)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The sealed secret waiting for this webhook, removed as it is read: of two concurrent
/// readers only the one whose update clears it gets it.
pub(crate) async fn take_pending_secret(
    tx: &mut Connection,
    digest: &[u8],
    webhook: &str,
) -> StoreResult<Option<Vec<u8>>> {
    let sealed: Option<Option<Vec<u8>>> = sqlx::query_scalar(
        "SELECT pending_secret FROM admin_sessions WHERE id_hash = $1 AND pending_webhook = $2",
    )
    .bind(digest)
    .bind(webhook)
    .fetch_optional(&mut *tx)
    .await?;
    let cleared = sqlx::query(
        "UPDATE admin_sessions SET pending_webhook = NULL, pending_secret = NULL
         WHERE id_hash = $1 AND pending_webhook = $2 AND pending_secret IS NOT NULL",
    )
    .bind(digest)
    .bind(webhook)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    Ok(sealed.flatten().filter(|_| cleared))
}

pub(crate) const PURGE_SESSIONS: &str = "DELETE FROM admin_sessions WHERE id_hash IN (
     SELECT id_hash FROM admin_sessions WHERE last_seen_at < $1 LIMIT $2)";
