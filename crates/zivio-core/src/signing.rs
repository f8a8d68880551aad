//! Standard Webhooks signatures (docs/product.md §5): `v1,` + base64 HMAC-SHA256 over
//! `{webhook-id}.{webhook-timestamp}.{body}` with the base64-decoded part of the `whsec_` secret.
//! Receivers verify with the official `standardwebhooks` libraries as they are.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

use crate::secret::SigningSecret;

/// The `webhook-signature` header value for one attempt.
pub fn sign(secret: &SigningSecret, message_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&secret.key_bytes())
        .expect("HMAC takes any key length");
    mac.update(message_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Why a request's signature does not verify, in the order the checks run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the `{0}` header is missing")]
    MissingHeader(&'static str),
    #[error("`webhook-timestamp` is not a Unix time in seconds: `{0}`")]
    BadTimestamp(String),
    #[error(
        "the timestamp is {age_seconds} s away from now, more than the {tolerance_seconds} s allowed (a replay, or a clock off)"
    )]
    StaleTimestamp {
        age_seconds: i64,
        tolerance_seconds: i64,
    },
    #[error("no `v1` signature in `webhook-signature` matches this secret and body")]
    NoMatchingSignature,
}

/// Checks a received request as a receiver would: the three headers are present, the
/// timestamp is within `tolerance_seconds` of `now` (Unix seconds), and one of the
/// space-separated `v1,` signatures matches (compared in constant time).
pub fn verify(
    secret: &SigningSecret,
    id: Option<&str>,
    timestamp: Option<&str>,
    signatures: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance_seconds: i64,
) -> Result<(), VerifyError> {
    let id = id.ok_or(VerifyError::MissingHeader("webhook-id"))?;
    let timestamp = timestamp.ok_or(VerifyError::MissingHeader("webhook-timestamp"))?;
    let signatures = signatures.ok_or(VerifyError::MissingHeader("webhook-signature"))?;
    let at: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp(timestamp.to_owned()))?;
    let age = now.saturating_sub(at);
    if age.abs() > tolerance_seconds {
        return Err(VerifyError::StaleTimestamp {
            age_seconds: age,
            tolerance_seconds,
        });
    }
    let expected = sign(secret, id, at, body);
    let matches = signatures.split_whitespace().any(|candidate| {
        candidate.starts_with("v1,")
            && subtle::ConstantTimeEq::ct_eq(candidate.as_bytes(), expected.as_bytes()).into()
    });
    if matches {
        Ok(())
    } else {
        Err(VerifyError::NoMatchingSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_names_the_failed_check() {
        let secret = SigningSecret::generate([7; 32]);
        let body = br#"{"id":"evt_1"}"#;
        let good = sign(&secret, "evt_1", 1_000, body);
        let check = |id, ts, sig, body: &[u8], now| verify(&secret, id, ts, sig, body, now, 300);
        assert_eq!(
            check(Some("evt_1"), Some("1000"), Some(&good), body, 1_100),
            Ok(())
        );
        let rotated = format!("v1,bm90IHRoaXMgb25l {good}");
        assert_eq!(
            check(Some("evt_1"), Some("1000"), Some(&rotated), body, 1_000),
            Ok(()),
            "one of several"
        );
        assert_eq!(
            check(None, Some("1000"), Some(&good), body, 1_000),
            Err(VerifyError::MissingHeader("webhook-id"))
        );
        assert_eq!(
            check(Some("evt_1"), None, Some(&good), body, 1_000),
            Err(VerifyError::MissingHeader("webhook-timestamp"))
        );
        assert_eq!(
            check(Some("evt_1"), Some("1000"), None, body, 1_000),
            Err(VerifyError::MissingHeader("webhook-signature"))
        );
        assert_eq!(
            check(Some("evt_1"), Some("soon"), Some(&good), body, 1_000),
            Err(VerifyError::BadTimestamp("soon".into()))
        );
        assert_eq!(
            check(Some("evt_1"), Some("1000"), Some(&good), body, 1_301),
            Err(VerifyError::StaleTimestamp {
                age_seconds: 301,
                tolerance_seconds: 300
            })
        );
        assert_eq!(
            check(Some("evt_1"), Some("1000"), Some(&good), b"{}", 1_000),
            Err(VerifyError::NoMatchingSignature)
        );
        let other = SigningSecret::generate([8; 32]);
        assert_eq!(
            verify(
                &other,
                Some("evt_1"),
                Some("1000"),
                Some(&good),
                body,
                1_000,
                300
            ),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // From the Standard Webhooks specification's test vectors.
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = sign(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn any_change_changes_the_signature() {
        let secret = SigningSecret::generate([1; 32]);
        let base = sign(&secret, "evt_1", 100, b"{}");
        assert_ne!(base, sign(&secret, "evt_2", 100, b"{}"));
        assert_ne!(base, sign(&secret, "evt_1", 101, b"{}"));
        assert_ne!(base, sign(&secret, "evt_1", 100, b"{ }"));
        assert_ne!(
            base,
            sign(&SigningSecret::generate([2; 32]), "evt_1", 100, b"{}")
        );
    }
}
