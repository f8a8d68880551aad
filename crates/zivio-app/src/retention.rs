//! Retention (docs/product.md §4, §8): events with their payloads and attempts are deleted after
//! `retention` (counted from acceptance, never while work is pending), audit entries after their
//! own, longer period, health counters once they are older than the 7-day window, and idle admin
//! sessions.

use std::time::Duration;

use time::OffsetDateTime;

use crate::{AppResult, Services};

/// Health counts attempts of the last 7 days; a day more is kept for clock skew.
const HEALTH_WINDOW: time::Duration = time::Duration::days(8);

/// What one retention pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub events: u64,
    pub audit_entries: u64,
}

/// Runs one retention pass.
pub async fn purge(
    services: &Services,
    retention: Duration,
    audit_retention: Duration,
) -> AppResult<Purged> {
    let now = services.now();
    let before = |period: Duration| {
        let period = time::Duration::try_from(period).unwrap_or(time::Duration::MAX);
        now.checked_sub(period)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    };
    let events = services.store.purge_events(before(retention)).await?;
    let audit_entries = services.store.purge_audit(before(audit_retention)).await?;
    services
        .store
        .purge_health_counters(now - HEALTH_WINDOW)
        .await?;
    // Idle sessions cannot be resumed anyway; their rows go.
    let idle =
        time::Duration::try_from(crate::sessions::IDLE_TIMEOUT).unwrap_or(time::Duration::HOUR);
    services.store.purge_sessions(now - idle).await?;
    // Rate-limit counts matter only for the current second; a minute's margin for slow clocks.
    let past = zivio_core::rate_limit::second_of(now) - 60;
    services.store.purge_rate_seconds(past).await?;
    Ok(Purged {
        events,
        audit_entries,
    })
}
