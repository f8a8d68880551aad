//! Events as receivers get them (docs/product.md §5): `evt_` ids, unique and time-sortable, and the
//! compact envelope `{"id","type","occurred_at","api_version":"v4","data"}` whose bytes are
//! stored once and are exactly what is signed and sent.

use std::fmt;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::delivery::is_prefixed_id;
use crate::webhook::time_ordered_hex;

/// An event: `evt_` and a UUIDv7 in hex (`evt_test_` for a webhook's test event).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct EventId(String);

impl EventId {
    /// A new id from the time and 10 random bytes.
    pub fn new(unix_millis: u64, random: [u8; 10]) -> Self {
        Self(format!("evt_{}", time_ordered_hex(unix_millis, random)))
    }

    /// A test event's id: `evt_test_...`, fresh each time.
    pub fn new_test(unix_millis: u64, random: [u8; 10]) -> Self {
        Self(format!(
            "evt_test_{}",
            time_ordered_hex(unix_millis, random)
        ))
    }

    /// `evt_` and 1 to 64 lowercase letters, digits or `_`.
    pub fn parse(text: &str) -> Option<Self> {
        is_prefixed_id(text, "evt_").then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An id equals its text (the API and the tests hold ids as text).
impl PartialEq<&str> for EventId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// RFC 3339 in UTC (`2026-03-14T09:30:00Z`, fractions only when present).
pub fn format_time(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .expect("UTC times format as RFC 3339")
}

#[derive(Serialize)]
struct Envelope<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    occurred_at: String,
    api_version: &'static str,
    data: &'a Value,
}

/// The compact JSON body of one event for one access profile.
pub fn envelope(id: &str, event_type: &str, occurred_at: OffsetDateTime, data: &Value) -> Vec<u8> {
    serde_json::to_vec(&Envelope {
        id,
        event_type,
        occurred_at: format_time(occurred_at),
        api_version: "v4",
        data,
    })
    .expect("JSON values serialise")
}

/// A digest of what a producer published, independent of key order in its JSON: tells a
/// repeated idempotency key (same event) from a conflicting one.
pub fn fingerprint(published: &Value) -> [u8; 32] {
    let mut canonical = Vec::with_capacity(1024);
    write_canonical(published, &mut canonical);
    Sha256::digest(&canonical).into()
}

/// Compact JSON with object keys sorted. Stored fingerprints depend on these exact bytes.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by_key(|(key, _)| *key);
            out.push(b'{');
            for (index, (key, value)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key).expect("writing to memory");
                out.push(b':');
                write_canonical(value, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar).expect("writing to memory"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;

    #[test]
    fn envelope_is_compact_and_ordered() {
        let body = envelope(
            "evt_1",
            "invoice.paid",
            datetime!(2026-03-14 09:30 +02:00),
            &json!({"id": "12345", "b": 1, "a": 2}),
        );
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"id":"evt_1","type":"invoice.paid","occurred_at":"2026-03-14T07:30:00Z","api_version":"v4","data":{"id":"12345","b":1,"a":2}}"#
        );
    }

    #[test]
    fn ids_are_prefixed_and_time_ordered() {
        let early = EventId::new(1_000, [9; 10]);
        let late = EventId::new(2_000, [0; 10]);
        assert!(early.as_str().starts_with("evt_") && early < late);
        assert_eq!(EventId::parse(early.as_str()), Some(early));
        let test = EventId::new_test(1, [0; 10]);
        assert!(test.as_str().starts_with("evt_test_"));
        assert_eq!(EventId::parse(test.as_str()), Some(test));
        for bad in [
            "",
            "evt_",
            "dlv_1",
            "evt_A",
            "evt_../x",
            &"evt_1".repeat(30),
        ] {
            assert_eq!(EventId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn canonical_form_is_compact_sorted_json() {
        let value = json!({"b": [1, 2.5, null, true], "a": {"z": "é\"\n", "y": -3}, "": "x"});
        let mut out = Vec::new();
        write_canonical(&value, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"":"x","a":{"y":-3,"z":"é\"\n"},"b":[1,2.5,null,true]}"#
        );
    }

    #[test]
    fn fingerprints_ignore_key_order_but_not_values() {
        let a = fingerprint(
            &json!({"type": "x", "resource": {"id": "1", "data": {"a": 1, "b": [1, 2]}}}),
        );
        let b = fingerprint(
            &json!({"resource": {"data": {"b": [1, 2], "a": 1}, "id": "1"}, "type": "x"}),
        );
        let c = fingerprint(
            &json!({"resource": {"data": {"b": [2, 1], "a": 1}, "id": "1"}, "type": "x"}),
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
