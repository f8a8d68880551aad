//! A webhook as stored (docs/product.md §4) and the validation of the fields admins edit.

use std::fmt;

use time::OffsetDateTime;

use crate::custom_header::SealedHeader;
use crate::ids::{TenantId, UserId};
use crate::rate_limit::RateLimit;

pub const MAX_NAME_LENGTH: usize = 100;
pub const MAX_DESCRIPTION_LENGTH: usize = 1_000;

/// `wh_` followed by a time-ordered UUID (v7) in hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WebhookId(String);

impl WebhookId {
    /// A new id from the current time and 10 random bytes.
    pub fn new(unix_millis: u64, random: [u8; 10]) -> Self {
        Self(format!("wh_{}", time_ordered_hex(unix_millis, random)))
    }

    pub fn parse(text: &str) -> Option<Self> {
        is_prefixed_hex(text, "wh_").then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WebhookId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// 32 lowercase hex digits of a UUIDv7: sortable by creation time.
pub fn time_ordered_hex(unix_millis: u64, random: [u8; 10]) -> String {
    uuid::Builder::from_unix_timestamp_millis(unix_millis, &random)
        .into_uuid()
        .simple()
        .to_string()
}

/// Whether a delivery may be sent now: its webhook is enabled (a test event goes to a disabled
/// one too, so that an admin can check it before enabling it) and its owner is active (the
/// privilege boundary acts for the owner; an inactive owner sends nothing).
pub fn may_send(webhook_enabled: bool, event_type: &str, owner_active: bool) -> bool {
    (webhook_enabled || event_type == crate::catalog::TEST_EVENT_TYPE) && owner_active
}

/// Whether `text` is `prefix` followed by 32 lowercase hex digits.
pub fn is_prefixed_hex(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix).is_some_and(|hex| {
        hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisabledReason {
    Manual,
    Auto,
}

impl DisabledReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DisabledReason::Manual => "manual",
            DisabledReason::Auto => "auto",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "manual" => Some(DisabledReason::Manual),
            "auto" => Some(DisabledReason::Auto),
            _ => None,
        }
    }
}

/// Why and when a webhook was disabled; `by` is empty when it was automatic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disabled {
    pub reason: DisabledReason,
    pub by: Option<UserId>,
    pub at: OffsetDateTime,
}

/// The signing secret as stored: sealed under the secrets key `key_id`.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret {
    pub ciphertext: Vec<u8>,
    pub key_id: String,
    pub hint: String,
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedSecret(key {}, …{})", self.key_id, self.hint)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: WebhookId,
    pub tenant: TenantId,
    pub owner: UserId,
    pub name: String,
    pub url: String,
    pub description: String,
    /// Canonical subscription filters (`*`, `<collection>.*`, exact types).
    pub events: Vec<String>,
    pub secret: SealedSecret,
    /// Custom request headers, values sealed (docs/product.md §4).
    pub headers: Vec<SealedHeader>,
    /// Requests per second the receiver takes at most; `None`: no limit.
    pub rate_limit: Option<RateLimit>,
    pub disabled: Option<Disabled>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// The stored version this copy was read at; an update succeeds only on that version.
    pub version: i64,
}

impl Webhook {
    pub fn is_enabled(&self) -> bool {
        self.disabled.is_none()
    }
}

/// A name: trimmed, 1 to 100 characters, no control characters (it appears in mail subjects).
pub fn validate_name(text: &str) -> Result<String, String> {
    let name = text.trim();
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if name.chars().count() > MAX_NAME_LENGTH {
        return Err(format!("must be at most {MAX_NAME_LENGTH} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters such as line breaks".to_owned());
    }
    Ok(name.to_owned())
}

/// A description: trimmed, at most 1,000 characters; line breaks allowed.
pub fn validate_description(text: &str) -> Result<String, String> {
    let description = text.trim();
    if description.chars().count() > MAX_DESCRIPTION_LENGTH {
        return Err(format!(
            "must be at most {MAX_DESCRIPTION_LENGTH} characters"
        ));
    }
    if description
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
    {
        return Err("must not contain control characters".to_owned());
    }
    Ok(description.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_may_be_sent_to_an_enabled_webhook_of_an_active_owner_or_as_a_test() {
        assert!(may_send(true, "invoice.paid", true));
        assert!(!may_send(false, "invoice.paid", true), "disabled");
        assert!(
            may_send(false, "webhook.test", true),
            "a test event reaches a disabled webhook"
        );
        assert!(!may_send(true, "invoice.paid", false), "owner inactive");
        assert!(
            !may_send(false, "webhook.test", false),
            "not even a test without the owner"
        );
    }

    #[test]
    fn ids_are_prefixed_time_ordered_hex() {
        let early = WebhookId::new(1_000, [0xff; 10]);
        let late = WebhookId::new(2_000, [0; 10]);
        assert!(early < late);
        assert_eq!(WebhookId::parse(early.as_str()), Some(early.clone()));
        assert!(WebhookId::parse("wh_123").is_none());
        assert!(WebhookId::parse(&early.as_str().replace("wh_", "ev_")).is_none());
        assert!(WebhookId::parse(&early.as_str().to_uppercase()).is_none());
    }

    #[test]
    fn names_and_descriptions_are_bounded() {
        assert_eq!(validate_name("  ERP sync "), Ok("ERP sync".into()));
        assert!(validate_name(" ").is_err());
        assert!(validate_name(&"n".repeat(100)).is_ok());
        assert!(validate_name(&"n".repeat(101)).is_err());
        assert!(validate_name("a\r\nBcc: x").is_err());
        assert_eq!(validate_description(""), Ok(String::new()));
        assert!(validate_description("line one\nline two").is_ok());
        assert!(validate_description(&"d".repeat(1_000)).is_ok());
        assert!(validate_description(&"d".repeat(1_001)).is_err());
        assert!(validate_description("bell\u{7}").is_err());
    }
}
