//! Retention (PRODUCT.md §4, §8): old audit entries are deleted after their own retention
//! period (default one year). Events and attempts get theirs with the delivery engine.

use std::time::Duration;

use crate::{AppResult, Services};

/// Deletes audit entries older than `retention`; returns how many.
pub async fn purge_audit(services: &Services, retention: Duration) -> AppResult<u64> {
    let retention = time::Duration::try_from(retention).unwrap_or(time::Duration::MAX);
    let cutoff = services
        .now()
        .checked_sub(retention)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    Ok(services.store.purge_audit(cutoff).await?)
}
