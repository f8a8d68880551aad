//! Recovery (docs/product.md §7): after a receiver's outage, everything that failed to one
//! webhook in a window of time is resent, each as a new event, in the background. The rules
//! here are pure: states, why a recovery ended, the window, and how fast resends may go.

use std::fmt;

use time::OffsetDateTime;

use crate::audit::AuditEntry;
use crate::ids::UserId;
use crate::rate_limit::RateLimit;

/// At most this many recoveries run at once per tenant.
pub const MAX_RUNNING_PER_TENANT: i64 = 10;

/// Resends of one recovery that may be waiting for delivery at once. New events to the webhook
/// queue behind at most these, so they arrive within moments however large the recovery.
pub const OUTSTANDING_RESENDS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecoveryState {
    Running,
    Done,
    Cancelled,
    /// Ended because the webhook was disabled or its owner became inactive.
    Stopped,
}

impl RecoveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryState::Running => "running",
            RecoveryState::Done => "done",
            RecoveryState::Cancelled => "cancelled",
            RecoveryState::Stopped => "stopped",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            RecoveryState::Running,
            RecoveryState::Done,
            RecoveryState::Cancelled,
            RecoveryState::Stopped,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }
}

/// Why a recovery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Done,
    CancelledBy(UserId),
    WebhookDisabled,
    OwnerInactive,
}

impl Ending {
    pub fn state(&self) -> RecoveryState {
        match self {
            Ending::Done => RecoveryState::Done,
            Ending::CancelledBy(_) => RecoveryState::Cancelled,
            Ending::WebhookDisabled | Ending::OwnerInactive => RecoveryState::Stopped,
        }
    }
}

/// The `ended_reason` of the API: `done`, `cancelled by <user id>`, `webhook disabled`,
/// `owner inactive`.
impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::Done => f.write_str("done"),
            Ending::CancelledBy(user) => write!(f, "cancelled by {user}"),
            Ending::WebhookDisabled => f.write_str("webhook disabled"),
            Ending::OwnerInactive => f.write_str("owner inactive"),
        }
    }
}

/// Whether a recovery may run for the webhook now: `None` if it may, else why it ends.
pub fn must_end(webhook_enabled: bool, owner_active: bool) -> Option<Ending> {
    match (webhook_enabled, owner_active) {
        (false, _) => Some(Ending::WebhookDisabled),
        (true, false) => Some(Ending::OwnerInactive),
        (true, true) => None,
    }
}

/// Checks the window `[since, until)` against `now` and the retention period: events older
/// than retention are gone, so such a window cannot be recovered.
pub fn check_window(
    since: OffsetDateTime,
    until: OffsetDateTime,
    now: OffsetDateTime,
    retention: time::Duration,
) -> Result<(), String> {
    if since > until {
        return Err("`since` must not be after `until`".to_owned());
    }
    if since < now - retention {
        return Err(format!(
            "`since` is older than the retention window ({} days): those events are no longer stored",
            retention.whole_days()
        ));
    }
    Ok(())
}

/// The time between two resends of a recovery: with a rate limit, half of it (one resend every
/// two of the limit's intervals), so that new events keep the other half; without one, no pace
/// beyond [`OUTSTANDING_RESENDS`].
pub fn resend_interval(limit: Option<RateLimit>) -> Option<std::time::Duration> {
    limit.map(|limit| std::time::Duration::from_secs(2) / limit.per_second())
}

/// Resends of one recovery that may wait for delivery at once: [`OUTSTANDING_RESENDS`], and
/// with a rate limit no more than half a second's worth of it, so that a new event never waits
/// long behind them.
pub fn outstanding_bound(limit: Option<RateLimit>) -> usize {
    let half = limit.map_or(usize::MAX, |limit| {
        usize::try_from(limit.per_second() / 2)
            .unwrap_or(usize::MAX)
            .max(1)
    });
    OUTSTANDING_RESENDS.min(half)
}

/// How many resends a recovery paced by `interval` may have published `elapsed` after it began
/// publishing (one at once, then one per interval).
pub fn resends_due(interval: std::time::Duration, elapsed: std::time::Duration) -> u64 {
    let due = elapsed.as_nanos() / interval.as_nanos().max(1) + 1;
    u64::try_from(due).unwrap_or(u64::MAX)
}

/// What a recovery has found and done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub selected: i64,
    pub resent: i64,
    pub skipped: i64,
}

/// A recovery's audit entry (start or end) with its counts as committed beside it.
pub fn audited(mut entry: AuditEntry, counts: &Counts) -> AuditEntry {
    if !entry.changes.is_object() {
        entry.changes = serde_json::Value::Object(serde_json::Map::new());
    }
    if let Some(changes) = entry.changes.as_object_mut() {
        changes.insert("selected".into(), counts.selected.into());
        changes.insert("resent".into(), counts.resent.into());
        changes.insert("skipped".into(), counts.skipped.into());
    }
    entry
}

/// A recovery id: `rcv_` and 32 time-ordered hex digits.
pub fn new_id(unix_millis: u64, random: [u8; 10]) -> String {
    format!(
        "rcv_{}",
        crate::webhook::time_ordered_hex(unix_millis, random)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn audit_entries_carry_the_counts() {
        let tenant = crate::ids::TenantId::parse("acme").unwrap();
        let entry = AuditEntry::new(
            &tenant,
            at(0),
            "u1",
            crate::audit::AuditAction::RecoveryEnded,
        )
        .changes(serde_json::json!({"reason": "done"}));
        let counts = Counts {
            selected: 5,
            resent: 3,
            skipped: 2,
        };
        assert_eq!(
            audited(entry, &counts).changes,
            serde_json::json!({"reason": "done", "selected": 5, "resent": 3, "skipped": 2})
        );
    }

    #[test]
    fn states_round_trip() {
        for state in [
            RecoveryState::Running,
            RecoveryState::Done,
            RecoveryState::Cancelled,
            RecoveryState::Stopped,
        ] {
            assert_eq!(RecoveryState::parse(state.as_str()), Some(state));
        }
        assert_eq!(RecoveryState::parse("paused"), None);
    }

    #[test]
    fn endings_say_why_in_the_apis_words() {
        let user = UserId::parse("u7").unwrap();
        assert_eq!(Ending::Done.to_string(), "done");
        assert_eq!(Ending::CancelledBy(user).to_string(), "cancelled by u7");
        assert_eq!(Ending::WebhookDisabled.to_string(), "webhook disabled");
        assert_eq!(Ending::OwnerInactive.state(), RecoveryState::Stopped);
        assert_eq!(must_end(true, true), None);
        assert_eq!(must_end(false, false), Some(Ending::WebhookDisabled));
        assert_eq!(must_end(true, false), Some(Ending::OwnerInactive));
    }

    #[test]
    fn windows_must_be_ordered_and_within_retention() {
        let retention = time::Duration::days(30);
        let now = at(0);
        assert!(check_window(at(-60), at(-60), now, retention).is_ok());
        assert!(check_window(at(-60), at(60), now, retention).is_ok());
        let backwards = check_window(at(-10), at(-20), now, retention).unwrap_err();
        assert!(backwards.contains("after `until`"), "{backwards}");
        let old = check_window(now - time::Duration::days(31), now, now, retention).unwrap_err();
        assert!(old.contains("retention window (30 days)"), "{old}");
    }

    #[test]
    fn resends_take_at_most_half_a_limit() {
        use std::time::Duration;
        assert_eq!(resend_interval(None), None);
        let every = |limit| resend_interval(Some(RateLimit::new(limit).unwrap())).unwrap();
        assert_eq!(every(1), Duration::from_secs(2));
        assert_eq!(every(10_000), Duration::from_micros(200));
        // Over ten seconds at a limit of 5/s: at most 25 resends (and the first at once).
        assert_eq!(resends_due(every(5), Duration::ZERO), 1);
        assert_eq!(resends_due(every(5), Duration::from_millis(399)), 1);
        assert_eq!(resends_due(every(5), Duration::from_secs(10)), 26);
        let bound = |limit| outstanding_bound(Some(RateLimit::new(limit).unwrap()));
        assert_eq!(
            (bound(1), bound(5), bound(10_000)),
            (1, 2, OUTSTANDING_RESENDS)
        );
        assert_eq!(outstanding_bound(None), OUTSTANDING_RESENDS);
    }
}
