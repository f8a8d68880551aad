//! Custom request headers of a webhook (docs/product.md §4): credentials that a receiver's
//! gateway wants besides the signature. Values are sealed like signing secrets (AES-256-GCM
//! under the secrets key, bound to the webhook id and the header name), never shown again
//! (only names, and the last four characters of values of 16 characters or more), and masked
//! in stored requests. `Debug` never shows a value.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::keys::SecretsKey;
use crate::secret::{NONCE_LENGTH, SecretError, open_bytes, seal_bytes};
use crate::webhook::WebhookId;

pub const MAX_HEADERS: usize = 10;
pub const MAX_VALUE_LENGTH: usize = 4096;
/// Values at least this long show their last four characters; shorter ones nothing.
const HINT_FROM_LENGTH: usize = 16;
/// What stored requests show in place of a value (followed by the hint).
pub const MASK: &str = "****";

/// Names the service sets itself, or that HTTP or proxies give a meaning to.
const RESERVED: &[&str] = &[
    "host",
    "user-agent",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "date",
    "forwarded",
    "x-real-ip",
    "true-client-ip",
    "x-forwarded-client-cert",
];
const RESERVED_PREFIXES: &[&str] = &[
    "content-",
    "webhook-",
    "proxy-",
    "x-forwarded-",
    "x-ssl-client-",
    "x-amzn-mtls-",
];
/// Besides: headers in which proxies pass on a client certificate (RFC 9440 and common
/// gateways), so that no tenant can pose as a certificate to a receiver behind such a proxy.
const CERTIFICATE_HEADERS: &[&str] = &[
    "client-cert",
    "client-cert-chain",
    "x-client-cert",
    "ssl-client-cert",
    "x-ssl-cert",
    "x-arr-clientcert",
];
pub const MAX_NAME_LENGTH: usize = 256;

/// Headers as an admin sends them (`{"<name>": "<value>", ...}`), in their order and with
/// repeated names kept, so that validation can refuse what a map would silently merge.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HeaderInput(pub Vec<(String, String)>);

impl fmt::Debug for HeaderInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| name))
            .finish()
    }
}

/// Deserialisation errors that never repeat what was sent: serde's own messages quote the
/// offending value, which may be a credential.
const NOT_AN_OBJECT: &str = "must be an object of header names and string values";

impl<'de> Deserialize<'de> for HeaderInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = HeaderInput;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(NOT_AN_OBJECT)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HeaderInput, A::Error> {
                let mut pairs = Vec::new();
                // Bounded by the request body limit; validation refuses more than ten.
                while let Some((name, value)) = map.next_entry::<String, serde_json::Value>()? {
                    let serde_json::Value::String(value) = value else {
                        return Err(serde::de::Error::custom("header values must be strings"));
                    };
                    pairs.push((name, value));
                }
                Ok(HeaderInput(pairs))
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<HeaderInput, E> {
                Err(E::custom(NOT_AN_OBJECT))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<HeaderInput, E> {
                Err(E::custom(NOT_AN_OBJECT))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<HeaderInput, E> {
                Err(E::custom(NOT_AN_OBJECT))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<HeaderInput, E> {
                Err(E::custom(NOT_AN_OBJECT))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<HeaderInput, E> {
                Err(E::custom(NOT_AN_OBJECT))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                _: A,
            ) -> Result<HeaderInput, A::Error> {
                Err(serde::de::Error::custom(NOT_AN_OBJECT))
            }
        }
        deserializer.deserialize_any(Pairs)
    }
}

/// A valid header with its value in clear, for sealing or sending.
#[derive(Clone)]
pub struct CustomHeader {
    name: String,
    value: String,
}

impl fmt::Debug for CustomHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CustomHeader({}: {MASK})", self.name)
    }
}

impl CustomHeader {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value in clear, for the request only.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// The last four characters of a value of 16 characters or more.
    pub fn hint(&self) -> Option<String> {
        let count = self.value.chars().count();
        (count >= HINT_FROM_LENGTH).then(|| self.value.chars().skip(count - 4).collect())
    }

    /// Encrypts the value for storage; the nonce must be fresh randomness.
    pub fn seal(
        &self,
        key: &SecretsKey,
        webhook: &WebhookId,
        nonce: [u8; NONCE_LENGTH],
    ) -> SealedHeader {
        SealedHeader {
            ciphertext: seal_bytes(
                key,
                &associated_data(webhook, &self.name),
                self.value.as_bytes(),
                nonce,
            ),
            key_id: key.id(),
            hint: self.hint(),
            name: self.name.clone(),
        }
    }
}

/// A header as stored: its name in clear, its value sealed under the secrets key `key_id`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedHeader {
    pub name: String,
    #[serde(with = "base64_bytes")]
    pub ciphertext: Vec<u8>,
    pub key_id: String,
    pub hint: Option<String>,
}

impl fmt::Debug for SealedHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedHeader({}: {})", self.name, self.masked())
    }
}

impl SealedHeader {
    /// Decrypts the value sealed for this webhook and name with this key.
    pub fn open(&self, key: &SecretsKey, webhook: &WebhookId) -> Result<CustomHeader, SecretError> {
        let plain = open_bytes(key, &associated_data(webhook, &self.name), &self.ciphertext)?;
        Ok(CustomHeader {
            name: self.name.clone(),
            value: String::from_utf8(plain).map_err(|_| SecretError::Undecryptable)?,
        })
    }

    /// What stored requests and logs show in place of the value: `****` and the hint.
    pub fn masked(&self) -> String {
        format!("{MASK}{}", self.hint.as_deref().unwrap_or_default())
    }
}

/// The webhook and the header name (case-insensitive, as HTTP treats it): a value cannot be
/// moved to another webhook, to another header, or into the signing secret's place.
fn associated_data(webhook: &WebhookId, name: &str) -> Vec<u8> {
    format!("{webhook}\nheader\n{}", name.to_ascii_lowercase()).into_bytes()
}

/// The stored form of a webhook's headers: a JSON list.
pub fn encode(headers: &[SealedHeader]) -> String {
    serde_json::to_string(headers).expect("sealed headers serialise")
}

/// Reads what [`encode`] wrote.
pub fn decode(text: &str) -> Result<Vec<SealedHeader>, serde_json::Error> {
    serde_json::from_str(text)
}

/// One refused header: `field` is `headers` or `headers.<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderError {
    pub field: String,
    pub message: String,
}

/// Checks a whole replacement set: at most ten, valid names and values, no reserved name, no
/// two names equal but for case.
pub fn validate(input: &HeaderInput) -> Result<Vec<CustomHeader>, Vec<HeaderError>> {
    let mut errors = Vec::new();
    if input.0.len() > MAX_HEADERS {
        errors.push(HeaderError {
            field: "headers".to_owned(),
            message: format!(
                "at most {MAX_HEADERS} custom headers; {} given",
                input.0.len()
            ),
        });
    }
    let mut headers: Vec<CustomHeader> = Vec::with_capacity(input.0.len());
    for (index, (name, value)) in input.0.iter().enumerate() {
        if let Err(message) = check_name(name) {
            // An invalid name is not repeated: it may be a credential pasted in the wrong place.
            errors.push(HeaderError {
                field: "headers".to_owned(),
                message: format!("header {} of {}: {message}", index + 1, input.0.len()),
            });
            continue;
        }
        let mut refuse = |message: String| {
            errors.push(HeaderError {
                field: format!("headers.{name}"),
                message,
            });
        };
        if is_reserved(name) {
            refuse(format!(
                "`{name}` is set by the service or has a meaning to HTTP or proxies; it cannot be a custom header"
            ));
        } else if let Some(earlier) = headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)) {
            refuse(format!(
                "`{name}` and `{}` name the same header (names are case-insensitive); set it once",
                earlier.name
            ));
        } else if let Err(message) = check_value(value) {
            refuse(format!("the value of `{name}` {message}"));
        } else {
            headers.push(CustomHeader {
                name: name.clone(),
                value: value.clone(),
            });
        }
    }
    if errors.is_empty() {
        Ok(headers)
    } else {
        Err(errors)
    }
}

/// Whether `name` may not be set: the service sets it, or HTTP or proxies give it a meaning.
pub fn is_reserved(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    RESERVED.contains(&name.as_str())
        || CERTIFICATE_HEADERS.contains(&name.as_str())
        || RESERVED_PREFIXES
            .iter()
            .any(|prefix| name.starts_with(prefix))
}

/// RFC 9110 §5.1: a field name is a token.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".to_owned());
    }
    if name.len() > MAX_NAME_LENGTH {
        return Err(format!(
            "the name is longer than {MAX_NAME_LENGTH} characters"
        ));
    }
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !name.chars().all(token) {
        return Err(
            "the name is not a valid header name: letters, digits and !#$%&'*+-.^_`|~ only"
                .to_owned(),
        );
    }
    Ok(())
}

fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if value.len() > MAX_VALUE_LENGTH {
        return Err(format!("must be at most {MAX_VALUE_LENGTH} bytes"));
    }
    // RFC 9110 §5.5 without obsolete text: visible ASCII, spaces and tabs inside.
    if !value
        .chars()
        .all(|c| c == ' ' || c == '\t' || c.is_ascii_graphic())
    {
        return Err(
            "must be printable ASCII: no line breaks, NUL or other control characters".to_owned(),
        );
    }
    if value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']) {
        return Err("must not begin or end with whitespace".to_owned());
    }
    Ok(())
}

/// Whether two URLs share scheme, host and port: credentials set for one may go to the other.
pub fn same_origin(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(pairs: &[(&str, &str)]) -> HeaderInput {
        HeaderInput(
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn webhook(n: u8) -> WebhookId {
        WebhookId::new(1_000, [n; 10])
    }

    #[test]
    fn input_keeps_order_and_repeated_names() {
        let parsed: HeaderInput =
            serde_json::from_str(r#"{"B": "1", "a": "2", "B": "3"}"#).unwrap();
        assert_eq!(parsed, input(&[("B", "1"), ("a", "2"), ("B", "3")]));
        for sent in [
            r#"{"a": 1234}"#,
            r#""Bearer s3cr3t""#,
            r#"["s3cr3t"]"#,
            "7777",
            "true",
        ] {
            let error = serde_json::from_str::<HeaderInput>(sent)
                .unwrap_err()
                .to_string();
            for quoted in ["1234", "s3cr3t", "7777", "true"] {
                assert!(!error.contains(quoted), "{sent}: {error}");
            }
        }
        assert_eq!(format!("{parsed:?}"), r#"["B", "a", "B"]"#, "names only");
    }

    #[test]
    fn valid_headers_pass_with_hints_only_for_long_values() {
        let headers = validate(&input(&[
            ("Authorization", "Bearer abcdefghijklmnop-WXYZ"),
            ("X-Api-Key", "short"),
        ]))
        .unwrap();
        assert_eq!(headers[0].hint().as_deref(), Some("WXYZ"));
        assert_eq!(headers[1].hint(), None);
        assert!(!format!("{headers:?}").contains("short"));
        assert_eq!(validate(&input(&[])).unwrap().len(), 0);
    }

    #[test]
    fn reserved_names_are_refused_in_any_case() {
        for name in [
            "Host",
            "user-agent",
            "Connection",
            "keep-alive",
            "Transfer-Encoding",
            "TE",
            "trailer",
            "Upgrade",
            "expect",
            "Date",
            "Content-Type",
            "content-length",
            "Webhook-Signature",
            "webhook-anything",
            "Proxy-Authorization",
            "forwarded",
            "X-Forwarded-For",
            "x-forwarded-host",
            "X-Real-IP",
            "True-Client-IP",
            "X-Forwarded-Client-Cert",
            "X-SSL-Client-Verify",
            "Client-Cert",
            "client-cert-chain",
            "X-Client-Cert",
            "SSL-Client-Cert",
            "X-SSL-Cert",
            "X-ARR-ClientCert",
            "X-Amzn-Mtls-Clientcert",
        ] {
            let errors = validate(&input(&[(name, "v")])).unwrap_err();
            assert_eq!(errors[0].field, format!("headers.{name}"));
            assert!(
                errors[0].message.contains("cannot be a custom header"),
                "{name}"
            );
        }
        for allowed in [
            "Authorization",
            "X-Api-Key",
            "Cookie",
            "X-Tenant",
            "Contents",
        ] {
            assert!(validate(&input(&[(allowed, "v")])).is_ok(), "{allowed}");
        }
    }

    #[test]
    fn names_equal_but_for_case_are_refused() {
        let errors = validate(&input(&[("X-Api-Key", "a"), ("x-api-key", "b")])).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "headers.x-api-key");
        assert!(
            errors[0].message.contains("X-Api-Key"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn invalid_names_are_refused_without_repeating_them() {
        let errors = validate(&input(&[
            ("X-Ok", "v"),
            ("Authorization: Bearer s3cr3t", "v"),
        ]))
        .unwrap_err();
        assert_eq!(errors[0].field, "headers");
        assert!(
            errors[0].message.starts_with("header 2 of 2:"),
            "{}",
            errors[0].message
        );
        assert!(!errors[0].message.contains("s3cr3t"));
        assert!(validate(&input(&[(&"X".repeat(MAX_NAME_LENGTH + 1), "v")])).is_err());
    }

    #[test]
    fn invalid_names_values_and_counts_are_refused() {
        for (name, value) in [
            ("", "v"),
            ("X Api", "v"),
            ("X:Api", "v"),
            ("X-Ä", "v"),
            ("X-Line\r\nInjected", "v"),
            ("X-Api", ""),
            ("X-Api", "a\r\nInjected: yes"),
            ("X-Api", "nul\0"),
            ("X-Api", "é"),
            ("X-Api", " padded"),
        ] {
            assert!(
                validate(&input(&[(name, value)])).is_err(),
                "{name:?}: {value:?}"
            );
        }
        let long = "v".repeat(MAX_VALUE_LENGTH + 1);
        assert!(validate(&input(&[("X-Api", &long)])).is_err());
        assert!(validate(&input(&[("X-Api", &long[1..])])).is_ok());
        let many: Vec<(String, String)> = (0..=MAX_HEADERS)
            .map(|i| (format!("X-{i}"), "v".to_owned()))
            .collect();
        let errors = validate(&HeaderInput(many.clone())).unwrap_err();
        assert_eq!(errors[0].field, "headers");
        assert!(validate(&HeaderInput(many[..MAX_HEADERS].to_vec())).is_ok());
    }

    #[test]
    fn sealed_values_open_only_for_their_webhook_name_and_key() {
        let key = SecretsKey::from_bytes([1; 32]);
        let header = &validate(&input(&[("X-Api-Key", "key-0123456789-ABCD")])).unwrap()[0];
        let sealed = header.seal(&key, &webhook(1), [5; 12]);
        let stored = encode(std::slice::from_ref(&sealed));
        assert!(!stored.contains("0123456789"), "{stored}");
        let read = decode(&stored).unwrap();
        assert_eq!(read, vec![sealed.clone()]);
        assert_eq!(
            read[0].open(&key, &webhook(1)).unwrap().expose(),
            "key-0123456789-ABCD"
        );
        assert_eq!(sealed.masked(), "****ABCD");
        assert!(!format!("{sealed:?}").contains("0123456789"));
        assert!(
            sealed.open(&key, &webhook(2)).is_err(),
            "bound to its webhook"
        );
        let renamed = SealedHeader {
            name: "Authorization".to_owned(),
            ..sealed.clone()
        };
        assert!(
            renamed.open(&key, &webhook(1)).is_err(),
            "bound to its name"
        );
        let other = SecretsKey::from_bytes([2; 32]);
        assert!(sealed.open(&other, &webhook(1)).is_err());
    }

    #[test]
    fn origins_are_scheme_host_and_port() {
        assert!(same_origin(
            "https://a.example/x?q=1",
            "https://a.example:443/y"
        ));
        assert!(!same_origin("https://a.example/", "https://b.example/"));
        assert!(!same_origin(
            "https://a.example/",
            "https://a.example:8443/"
        ));
        assert!(!same_origin("https://a.example/", "http://a.example/"));
        assert!(!same_origin("https://a.example/", "not a url"));
    }
}
