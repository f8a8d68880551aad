//! API keys and sign-in links.

use sqlx::Row as _;
use time::OffsetDateTime;
use zivio_core::directory::{ApiKey, Revocation, RevokedReason};
use zivio_core::ids::{TenantId, UserId};

use crate::{KeyHolder, StoreError, StoreResult, conflict_on_unique, stored};

use super::{Connection, DbTime, Pool, from_db, to_db};

/// Stores a key for an active user (the caller holds the tenant's lock): `NotFound`
/// without the user, `Conflict` when they are inactive.
pub(crate) async fn create_api_key(
    tx: &mut Connection,
    tenant: &TenantId,
    key: &ApiKey,
    digest: &[u8],
) -> StoreResult<()> {
    let inserted = sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, user_id, key_hash, hint, created_at)
         SELECT $1, tenant_id, id, $4, $5, $6 FROM users
         WHERE tenant_id = $2 AND id = $3 AND active",
    )
    .bind(&key.id)
    .bind(tenant.as_str())
    .bind(key.user.as_str())
    .bind(digest)
    .bind(&key.hint)
    .bind(to_db(key.created_at))
    .execute(&mut *tx)
    .await
    .map_err(|error| conflict_on_unique(error, "API key"))?
    .rows_affected();
    if inserted == 0 {
        return Err(inactive_or_missing(tx, tenant, &key.user).await?);
    }
    Ok(())
}

/// Why a grant to this user was refused: they do not exist, or they are inactive.
pub(crate) async fn inactive_or_missing(
    tx: &mut Connection,
    tenant: &TenantId,
    user: &UserId,
) -> StoreResult<StoreError> {
    let active: Option<bool> =
        sqlx::query_scalar("SELECT active FROM users WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(user.as_str())
            .fetch_optional(&mut *tx)
            .await?;
    Ok(match active {
        None => StoreError::NotFound { what: "user" },
        Some(_) => StoreError::Conflict {
            what: crate::INACTIVE_USER,
        },
    })
}

pub(crate) async fn api_keys(
    pool: &Pool,
    tenant: &TenantId,
    user: &UserId,
) -> StoreResult<Vec<ApiKey>> {
    let rows = sqlx::query(
        "SELECT id, user_id, hint, created_at, last_used_at, revoked_at, revoked_reason FROM api_keys
         WHERE tenant_id = $1 AND user_id = $2 ORDER BY created_at, id",
    )
    .bind(tenant.as_str())
    .bind(user.as_str())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let revoked = match (
                row.get::<Option<DbTime>, _>("revoked_at"),
                row.get::<Option<String>, _>("revoked_reason"),
            ) {
                (Some(at), Some(reason)) => Some(Revocation {
                    at: from_db(at),
                    reason: RevokedReason::parse(&reason).ok_or_else(|| {
                        StoreError::Corrupt(format!("unknown revocation reason `{reason}`"))
                    })?,
                }),
                (None, None) => None,
                _ => {
                    return Err(StoreError::Corrupt(
                        "a revocation without its time or reason".to_owned(),
                    ));
                }
            };
            Ok(ApiKey {
                id: row.get("id"),
                user: stored(UserId::parse(row.get("user_id")))?,
                hint: row.get("hint"),
                created_at: from_db(row.get::<DbTime, _>("created_at")),
                last_used_at: row.get::<Option<DbTime>, _>("last_used_at").map(from_db),
                revoked,
            })
        })
        .collect()
}

/// Revokes a live key (it stays listed, its digest erased); `false` when the user has no
/// live key `id`.
pub(crate) async fn revoke_api_key(
    tx: &mut Connection,
    tenant: &TenantId,
    user: &UserId,
    id: &str,
    now: OffsetDateTime,
) -> StoreResult<bool> {
    let revoked = sqlx::query(
        "UPDATE api_keys SET revoked_at = $4, revoked_reason = $5, key_hash = NULL
         WHERE tenant_id = $1 AND user_id = $2 AND id = $3 AND revoked_at IS NULL",
    )
    .bind(tenant.as_str())
    .bind(user.as_str())
    .bind(id)
    .bind(to_db(now))
    .bind(RevokedReason::Revoked.as_str())
    .execute(&mut *tx)
    .await?;
    Ok(revoked.rows_affected() > 0)
}

pub(crate) async fn api_key_holder(pool: &Pool, digest: &[u8]) -> StoreResult<Option<KeyHolder>> {
    let row = sqlx::query(
        "SELECT tenant_id, user_id, last_used_at FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
    )
        .bind(digest)
        .fetch_optional(pool)
        .await?;
    row.map(|row| {
        Ok(KeyHolder {
            tenant: stored(TenantId::parse(row.get("tenant_id")))?,
            user: stored(UserId::parse(row.get("user_id")))?,
            last_used_at: row.get::<Option<DbTime>, _>("last_used_at").map(from_db),
        })
    })
    .transpose()
}

pub(crate) async fn touch_api_key(
    pool: &Pool,
    digest: &[u8],
    now: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE key_hash = $1 AND revoked_at IS NULL")
        .bind(digest)
        .bind(to_db(now))
        .execute(pool)
        .await?;
    Ok(())
}

pub(crate) async fn create_sign_in_link(
    tx: &mut Connection,
    tenant: &TenantId,
    user: &UserId,
    digest: &[u8],
    expires_at: OffsetDateTime,
    now: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO sign_in_links (token_hash, tenant_id, user_id, expires_at, created_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(digest)
    .bind(tenant.as_str())
    .bind(user.as_str())
    .bind(to_db(expires_at))
    .bind(to_db(now))
    .execute(&mut *tx)
    .await
    .map_err(|error| conflict_on_unique(error, "sign-in link"))?;
    Ok(())
}
