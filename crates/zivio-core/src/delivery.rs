//! Deliveries (docs/product.md §5–6): an event queued for one webhook is a queue entry with a
//! state, and every request sent for it is an attempt. The API calls attempts "deliveries" and
//! names them with `dlv_` ids; queue entries stay internal.

use std::fmt;

use crate::webhook::time_ordered_hex;

/// The row that queues one event for one webhook (the store's `deliveries` table): its state,
/// lease and next attempt. Internal: the API never shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueEntryId(pub i64);

impl fmt::Display for QueueEntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a queue entry stands: pending until it succeeds, fails for good or is cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    Pending,
    Succeeded,
    Failed,
    /// Its webhook was disabled, or its owner became inactive or was removed, before it ended.
    Cancelled,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Succeeded => "succeeded",
            DeliveryState::Failed => "failed",
            DeliveryState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            DeliveryState::Pending,
            DeliveryState::Succeeded,
            DeliveryState::Failed,
            DeliveryState::Cancelled,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }

    /// The state after an attempt: pending while another is scheduled, else how it ended.
    pub fn after_attempt(succeeded: bool, retry_scheduled: bool) -> Self {
        match (retry_scheduled, succeeded) {
            (true, _) => DeliveryState::Pending,
            (false, true) => DeliveryState::Succeeded,
            (false, false) => DeliveryState::Failed,
        }
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request sent for a queue entry: `dlv_` and a time-ordered UUID in hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct AttemptId(String);

impl AttemptId {
    /// A new id from the current time and 10 random bytes.
    pub fn new(unix_millis: u64, random: [u8; 10]) -> Self {
        Self(format!("dlv_{}", time_ordered_hex(unix_millis, random)))
    }

    /// `dlv_` and 1 to 64 lowercase letters, digits or `_`.
    pub fn parse(text: &str) -> Option<Self> {
        is_prefixed_id(text, "dlv_").then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AttemptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `text` is `prefix` and 1 to 64 lowercase letters, digits or `_`: ids this service
/// makes (a prefix and a UUID in hex), and the shorter ones tests use.
pub(crate) fn is_prefixed_id(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix).is_some_and(|rest| {
        (1..=64).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_back_as_written() {
        for state in [
            DeliveryState::Pending,
            DeliveryState::Succeeded,
            DeliveryState::Failed,
            DeliveryState::Cancelled,
        ] {
            assert_eq!(DeliveryState::parse(state.as_str()), Some(state));
        }
        assert_eq!(DeliveryState::parse("running"), None);
    }

    #[test]
    fn an_attempt_ends_its_entry_unless_another_is_scheduled() {
        use DeliveryState::*;
        assert_eq!(DeliveryState::after_attempt(false, true), Pending);
        assert_eq!(DeliveryState::after_attempt(true, false), Succeeded);
        assert_eq!(DeliveryState::after_attempt(false, false), Failed);
    }

    #[test]
    fn attempt_ids_are_prefixed_and_safe() {
        let id = AttemptId::new(1_000, [1; 10]);
        assert_eq!(AttemptId::parse(id.as_str()), Some(id.clone()));
        assert!(id.as_str().starts_with("dlv_"));
        for bad in [
            "",
            "dlv_",
            "evt_1",
            "dlv_A",
            "dlv_1/2",
            "dlv_ 1",
            &"dlv_1".repeat(30),
        ] {
            assert_eq!(AttemptId::parse(bad), None, "{bad}");
        }
    }
}
